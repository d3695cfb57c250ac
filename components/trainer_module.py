"""Module for the standard TFX Trainer: an evaluation network trained on the condensed examples.

The Trainer is given `run_fn="components.trainer_module.run_fn"` and M3DCondense's
`condensed_examples`. run_fn trains a fresh network (m3d_tf.networks; ConvNet-3 by default) on
Split-train (the decoded synthetic set) with the augmentation and SGD schedule of an
m3d_tf.evaluate protocol ("idc": M3D's; "dm"), exactly as m3d_tf.evaluate trains one run, logs
its accuracy on Split-eval, which M3DCondense copies from its input: real images held out of the
source's train split, never seen by the condensation. It exports a SavedModel whose serving_default
signature maps serialized tf.Example (the m3d_tf.io encoding: feature "image", float32 bytes in
[0, 1]) to {"probabilities": float32 (B, num_classes)}. The dataset's mean/std normalisation is
inside the signature, so the Evaluator and any server feed raw examples.

custom_config (all optional): epochs (300), protocol ("idc"), arch ("convnet"), seed (0),
flip (None: the choice recorded in the set's metadata, m3d_tf.io.set_flip: whether a horizontal
flip keeps the data's classes, from the catalogue or as declared when condensing).
"""

import json
import os

import numpy as np
import tensorflow as tf
from absl import logging

from m3d_tf import evaluate, io, networks

DEFAULTS = {"epochs": 300, "protocol": "idc", "arch": "convnet", "seed": 0, "flip": None}
METADATA_FILE = "metadata.json"  # components.condense.METADATA_FILE, beside the splits


def _read_files(patterns):
    """(float32 images, int64 labels) of every file matching the Trainer's glob patterns."""
    parts = [io.read_examples(pattern) for pattern in patterns]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _read_metadata(patterns):
    """The condensed set's metadata: {examples uri}/metadata.json, above Split-train/."""
    path = os.path.join(os.path.dirname(os.path.dirname(patterns[0])), METADATA_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} is missing: components.trainer_module trains on M3DCondense's "
            "condensed_examples, which carry the set's metadata (classes, mean, std) there."
        )
    with tf.io.gfile.GFile(path) as f:
        try:
            return json.load(f)
        except ValueError as error:
            raise ValueError(
                f"{path} is not valid JSON ({error}); rerun M3DCondense to write it again."
            ) from None


def _check_metadata(metadata, patterns):
    """Raises ValueError unless the set's metadata has num_classes >= 2 and a positive finite
    mean/std pair per channel (the normalisation baked into the serving signature)."""
    where = f"the condensed set's {METADATA_FILE} beside {os.path.dirname(patterns[0])}"
    if not isinstance(metadata, dict) or any(k not in metadata for k in ("num_classes", "mean",
                                                                          "std")):
        raise ValueError(
            f"{where} lacks num_classes, mean or std; rerun M3DCondense to write it again."
        )
    classes, mean, std = metadata["num_classes"], metadata["mean"], metadata["std"]
    numbers = lambda v: isinstance(v, list) and v and all(  # noqa: E731
        isinstance(x, (int, float)) and np.isfinite(x) for x in v)
    if not (isinstance(classes, int) and classes >= 2 and numbers(mean) and numbers(std)
            and len(mean) == len(std) and min(std) > 0):
        raise ValueError(
            f"{where} has num_classes={classes!r}, mean={mean!r}, std={std!r}; expected at least "
            "2 classes and finite mean/std per channel, std > 0. Rerun M3DCondense."
        )


def _check_split(images, labels, metadata, files, shape=None):
    """Raises ValueError unless a split holds finite pixels in [0, 1], labels among the set's
    classes, and (for Split-eval) images of Split-train's shape."""
    where = f"{files[0]}"
    channels = len(metadata["mean"])
    if images.shape[-1] != channels or (shape is not None and images.shape[1:] != shape):
        expected = shape or f"{channels} channel(s)"
        raise ValueError(
            f"{where} holds images of shape {images.shape[1:]}, expected {expected} as in the "
            "condensed set; train on M3DCondense's condensed_examples."
        )
    if not (np.all(np.isfinite(images)) and images.min() >= 0 and images.max() <= 1):
        raise ValueError(
            f"{where} holds pixels outside [0, 1] or not finite; the examples must hold float32 "
            "pixels in [0, 1] (m3d_tf.io.write_examples)."
        )
    if labels.min() < 0 or labels.max() >= metadata["num_classes"]:
        raise ValueError(
            f"{where} has labels in {labels.min()}..{labels.max()} but the set has "
            f"{metadata['num_classes']} classes; regenerate the examples from one source."
        )


def _check_config(config):
    """Raises ValueError unless epochs is a positive and seed a non-negative integer."""
    for key, low in (("epochs", 1), ("seed", 0)):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(
                f"trainer custom_config {key}={value!r}; it must be an integer >= {low}."
            )
    if config["flip"] is not None and not isinstance(config["flip"], bool):
        raise ValueError(
            f"trainer custom_config flip={config['flip']!r}; it must be true, false or null."
        )


def _check_held_out(images, eval_images, eval_files):
    """Raises ValueError if Split-eval is the synthetic Split-train again, not real images.

    Condensed examples written before M3DCondense copied the input's Split-eval held a second
    copy of the synthetic set there; an accuracy on it would be reported as a real one.
    """
    if eval_images.shape == images.shape and np.array_equal(eval_images, images):
        raise ValueError(
            f"{eval_files[0]} holds the same images as Split-train: the eval split must be "
            "real held-out images (M3DCondense copies its input's Split-eval); rerun "
            "M3DCondense on DatasetGen's examples."
        )


def _parse_images(serialized, image_shape):
    """float32 (B, H, W, C) pixels of serialized m3d_tf.io tf.Examples (labels not needed)."""
    features = tf.io.parse_example(serialized, {"image": tf.io.FixedLenFeature([], tf.string)})
    pixels = tf.io.decode_raw(features["image"], tf.float32, little_endian=True)
    return tf.reshape(pixels, (-1, *image_shape))


def _export(model, directory, image_shape, mean, std):
    """tf.saved_model.save with serving_default over serialized tf.Example (Keras 3)."""
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(serialized):
        images = _parse_images(serialized, image_shape)
        logits = model((images - mean) / std, training=False)
        return {"probabilities": tf.nn.softmax(logits, axis=-1)}

    tf.saved_model.save(model, directory, signatures={"serving_default": serve})


def train_network(images, labels, metadata, *, epochs, protocol, arch, seed, flip,
                  held_out=None, log_dir=None):
    """Trains run 0 of an m3d_tf.evaluate protocol on (decoded) synthetic images.

    The training loop is m3d_tf.evaluate's (train_and_test): the network, its initial weights,
    augmentation and schedule are exactly run 0 of `m3d evaluate` with the same seed.

    Args:
        images: float32 (N, H, W, C) in [0, 1]. labels: int (N,).
        metadata: the set's m3d_tf.io metadata (num_classes, mean, std).
        epochs, protocol, arch, seed, flip: as m3d_tf.evaluate.evaluate.
        held_out: None, or (float32 images in [0, 1], int labels) to test the trained network on.
        log_dir: None, or a TensorBoard directory for the per-epoch training loss.

    Returns:
        (evaluate.Trainer holding the trained keras.Model, its final epoch loss, its accuracy on
        held_out or None).
    """
    chosen = evaluate.check_choice("protocol", protocol, evaluate.PROTOCOLS)
    evaluate.check_choice("arch", arch, networks.NETWORKS)
    mean = np.asarray(metadata["mean"], np.float32)
    std = np.asarray(metadata["std"], np.float32)
    trainer = evaluate.Trainer(
        arch, images.shape[1:], metadata["num_classes"], chosen, flip=flip,
        batch_size=min(chosen.batch_size, len(images)), seed=seed,
    )
    writer = None if log_dir is None else tf.summary.create_file_writer(log_dir)
    losses = []

    def progress(epoch, loss):
        losses.append(loss)
        if writer is not None:
            with writer.as_default():
                tf.summary.scalar("train/loss", loss, step=epoch)

    test = None
    if held_out is not None:
        test = ((held_out[0] - mean) / std, np.asarray(held_out[1], np.int32))
    accuracy, *_ = evaluate.train_and_test(
        trainer, 0, ((images - mean) / std, labels.astype(np.int32)), test, epochs=epochs,
        progress=progress,
    )
    if writer is not None:
        writer.close()
    return trainer, losses[-1], accuracy


def run_fn(fn_args):
    """TFX Trainer will call this function.

    Args:
        fn_args: tfx.components.FnArgs: train_files (glob patterns of the condensed
            examples' synthetic Split-train), eval_files (their Split-eval: real held-out
            images), serving_model_dir, model_run_dir, custom_config (module docstring).

    Raises:
        ValueError: an unknown custom_config key, protocol or arch; a Split-eval that repeats
            Split-train instead of holding real held-out images.
        FileNotFoundError: examples without the condensed set's metadata.json.
    """
    config = dict(fn_args.custom_config or {})
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"trainer custom_config has unknown keys {unknown}; valid keys: {', '.join(DEFAULTS)}."
        )
    config = {**DEFAULTS, **config}
    _check_config(config)
    evaluate.check_choice("protocol", config["protocol"], evaluate.PROTOCOLS)
    evaluate.check_choice("arch", config["arch"], networks.NETWORKS)
    metadata = _read_metadata(fn_args.train_files)
    _check_metadata(metadata, fn_args.train_files)
    flip = io.set_flip(metadata) if config["flip"] is None else config["flip"]
    images, labels = _read_files(fn_args.train_files)
    eval_images, eval_labels = _read_files(fn_args.eval_files)
    _check_split(images, labels, metadata, fn_args.train_files)
    _check_split(eval_images, eval_labels, metadata, fn_args.eval_files, images.shape[1:])
    _check_held_out(images, eval_images, fn_args.eval_files)
    trainer, loss, accuracy = train_network(
        images, labels, metadata, epochs=int(config["epochs"]), protocol=config["protocol"],
        arch=config["arch"], seed=int(config["seed"]), flip=bool(flip),
        held_out=(eval_images, eval_labels), log_dir=fn_args.model_run_dir,
    )
    logging.info("trainer_module: %d epochs on %d synthetic images, final loss %.4f, accuracy "
                 "%.4f on %d real held-out images (Split-eval)", config["epochs"], len(labels),
                 loss, accuracy, len(eval_labels))
    _export(trainer.model, fn_args.serving_model_dir, tuple(images.shape[1:]),
            metadata["mean"], metadata["std"])

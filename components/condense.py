"""M3DCondense: standard Examples -> M3D condensation -> condensed Examples + a SyntheticSet.

Input `examples`: standard Examples whose Split-train and Split-eval hold tf.Examples in the
m3d_tf.io encoding (features image: float32 raw bytes in [0, 1], label, height, width, channels),
as DatasetGen writes them. Their "dataset_info" custom property, when present, gives the class
names and the normalisation (mean/std of the full train split); otherwise they are derived from
Split-train. The condensation is m3d_tf.recipes.condense with a named recipe ("m3d", "dm");
parameters given to the component replace the recipe's values, as the `m3d condense` command's
flags do.

Memory: Split-train is never loaded whole. One streaming pass, a file of Examples at a time,
writes it class by class into a temporary directory on local disk (about the size of the
split's pixels) while counting the classes and accumulating the mean and std
(m3d_tf.data.write_class_files); the condensation then reads its class-balanced batches from
those files (m3d_tf.data.streamed_batches) and starts from the set the in-memory path would
start from (m3d_tf.data.initialization_sample). Split-eval, small by design, is read whole.

Devices: the condenser is built and trained under a tf.distribute strategy chosen by the
`devices` parameter: empty, MirroredStrategy over every GPU the node sees (the default strategy
on a node without one); otherwise MirroredStrategy over exactly the named devices
("/gpu:0,/gpu:1", "/cpu:0,/cpu:1"). Every replica computes the whole MMD on the same synthetic
images from its shard of the real batch (m3d_tf.condenser), so the set matches a one-device run
up to float32 summation order.

Outputs:
    condensed_examples   standard Examples: Split-train holds the decoded synthetic set
                         (classes x ipc x factor^2 records, class-major); Split-eval is a byte
                         copy of the input's Split-eval, real images held out of the source's
                         train split, so what the standard Trainer reports on its eval split is
                         accuracy on real images the condensation never saw (the Evaluator
                         then measures the source's Split-test). metadata.json beside the splits
                         is the set's m3d_tf.io metadata (class names, mean, std), which the
                         Trainer module reads; the "split_sizes" custom property counts both
                         splits.
    synthetic_set        components.artifacts.SyntheticSet: the stored pixels in the m3d_tf.io
                         format (m3d_tf.io.load_set(uri) reads it) and logs/ with the TensorBoard
                         run of the condensation; ipc, kernel, final MMD, ... as properties, and
                         the strategy, replicas and devices that ran it (STRATEGY_PROPERTIES).

Every check (devices, splits, features, image size, empty or too small classes, parameters) runs
before anything is written, so a failing run leaves its output directories empty and publishes no
artifact.
"""

import dataclasses
import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components import dataset_gen
from components.artifacts import SyntheticSet, record_properties
from m3d_tf import data, io, recipes
from m3d_tf.callbacks import TensorBoardCallback
from m3d_tf.data import DatasetInfo

METADATA_FILE = "metadata.json"
LOG_DIR = "logs"


# === The work (no artifacts) ===


def check_class_sizes(counts, real_per_class):
    """Raises ValueError, naming the component's parameter, if a class is too small.

    Args:
        counts: int (C,), Split-train's images of each class. real_per_class: images of each
            class in every condensation batch.
    """
    counts = np.asarray(counts)
    if counts.min() < real_per_class:
        c = int(np.argmin(counts))
        raise ValueError(
            f"class {c} has {counts[c]} training images; real_per_class={real_per_class} needs "
            f"at least {real_per_class}. Lower real_per_class or give more images."
        )


def choose_strategy(devices):
    """The tf.distribute strategy for the `devices` parameter, and the devices it runs on.

    Args:
        devices: None or "": every visible GPU under MirroredStrategy, or the default strategy
            when there is none; else comma-separated local device names ("/gpu:0,/gpu:1",
            "/cpu:0,/cpu:1", "GPU:1"), each visible and named once, for MirroredStrategy over
            exactly those.

    Returns:
        (strategy, tuple of canonical device names "/device:GPU:0", ...; () for the default
        strategy, which places ops where TensorFlow does).

    Raises:
        ValueError: a name that is not a local device, is not visible here, or repeats; the
            message lists the visible devices.
    """
    if not devices:
        gpus = tuple(d.name for d in tf.config.list_logical_devices("GPU"))
        if gpus:
            return tf.distribute.MirroredStrategy(list(gpus)), gpus
        return tf.distribute.get_strategy(), ()
    visible = [d.name for d in tf.config.list_logical_devices()]
    chosen = []
    for name in devices.split(","):
        canonical = local_device(name.strip())
        if canonical not in visible or canonical in chosen:
            problem = "is named twice" if canonical in chosen else "is not a visible device"
            raise ValueError(
                f"M3DCondense: devices={devices!r}: {name.strip()!r} {problem}; visible devices: "
                f"{', '.join(visible)}. Name each device once (e.g. \"/gpu:0,/gpu:1\"), or leave "
                "devices empty for every visible GPU (the default strategy when there is none)."
            )
        chosen.append(canonical)
    return tf.distribute.MirroredStrategy(chosen), tuple(chosen)


def strategy_properties(condenser, devices):
    """STRATEGY_PROPERTIES of the strategy `condenser` was built and trained under.

    Read from the model (keras.Model.distribute_strategy), not from the parameter, so that they
    say how the set was made.
    """
    strategy = condenser.distribute_strategy
    mirrored = isinstance(strategy, tf.distribute.MirroredStrategy)
    return {"strategy": "MirroredStrategy" if mirrored else "default",
            "replicas": strategy.num_replicas_in_sync,
            "devices": ",".join(devices) if mirrored else ""}


def local_device(name):
    """"/device:TYPE:INDEX" for a local device name ("/gpu:0", "CPU:1"); None if it is not one."""
    try:
        spec = tf.DeviceSpec.from_string(name)
    except ValueError:
        return None
    if spec.device_type is None or spec.device_index is None or any(
            part is not None for part in (spec.job, spec.replica, spec.task)):
        return None
    return f"/device:{spec.device_type.upper()}:{spec.device_index}"


def check_split_names(examples):
    """Raises ValueError, naming the examples, unless they have a Split-train and a Split-eval."""
    splits = artifact_utils.decode_split_names(examples.split_names or "[]")
    for split, why in (("train", "to condense"),
                       ("eval", "of real held-out images for the Trainer's evaluation")):
        if split not in splits:
            raise ValueError(
                f"M3DCondense: input examples at {examples.uri} have splits {splits} but no "
                f"{split!r}; give Examples with a Split-{split} {why} (e.g. from DatasetGen)."
            )


_NEEDS = {
    "train": "The examples need features image (float32 bytes), label, height, width and "
             "channels, as DatasetGen writes them.",
    "eval": "Split-eval must hold real images held out of training (DatasetGen with "
            "eval_per_class >= 1), with features image (float32 bytes), label, height, width "
            "and channels.",
}


def _read_split(examples, split):
    """(images float32 (N, H, W, C), labels int64 (N,)) of one split, errors naming it."""
    try:
        return io.read_examples(artifact_utils.get_split_uri([examples], split))
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(
            f"M3DCondense: input examples at {examples.uri}, Split-{split}: {error} "
            f"{_NEEDS[split]}"
        ) from None


def _check_against_info(image_shape, labels, info, examples, split):
    """Raises ValueError if a split's image shape or labels (min, max) do not fit its info."""
    where = f"M3DCondense: input examples at {examples.uri}, Split-{split}"
    if tuple(image_shape) != tuple(info.image_shape):
        raise ValueError(
            f"{where} holds images of shape {tuple(image_shape)} but their dataset_info "
            f"({info.name}) says {tuple(info.image_shape)}; regenerate the examples from one "
            "source."
        )
    if labels[0] < 0 or labels[1] >= info.num_classes:
        raise ValueError(
            f"{where} has labels in {labels[0]}..{labels[1]} but {info.name} has "
            f"{info.num_classes} classes (0..{info.num_classes - 1}); fix the labels."
        )


def stream_training_examples(examples, directory):
    """Split-train written class by class into `directory` in one streaming pass, checked.

    The split is read one file at a time (m3d_tf.io.iter_examples) into per-class files
    (m3d_tf.data.write_class_files), which also count the classes and accumulate the mean and
    std; condensation then reads its batches from those files (m3d_tf.data.streamed_batches),
    so no more than one file of Examples (DatasetGen: 10,000 records) is ever in memory.

    Returns:
        (ClassFiles with one count per class of the info, DatasetInfo).

    Raises:
        ValueError, FileNotFoundError: a missing feature, mixed or wrong image sizes, pixels
            outside [0, 1], an empty split, labels outside the classes; each names the examples.
    """
    try:
        class_files = data.write_class_files(
            io.iter_examples(artifact_utils.get_split_uri([examples], "train")), directory,
            where="the records")
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(
            f"M3DCondense: input examples at {examples.uri}, Split-train: {error} "
            f"{_NEEDS['train']}"
        ) from None
    counts = np.asarray(class_files.counts)
    if examples.has_custom_property(dataset_gen.DATASET_INFO_KEY):
        try:
            info = dataset_gen.info_from_json(
                examples.get_string_custom_property(dataset_gen.DATASET_INFO_KEY),
                {"train": int(counts.sum())},
            )
        except ValueError as error:
            raise ValueError(
                f"M3DCondense: input examples at {examples.uri}: their property {error} "
                "Regenerate them with DatasetGen."
            ) from None
    else:
        info = streamed_info(class_files, examples.uri)
    _check_against_info(class_files.image_shape, (int(np.flatnonzero(counts)[0]), len(counts) - 1),
                        info, examples, "train")
    data.check_channel_stats(info.mean, info.std,
                             f"M3DCondense: input examples at {examples.uri}, Split-train")
    missing = info.num_classes - len(counts)  # classes above the largest label: no images
    class_files = dataclasses.replace(class_files, counts=class_files.counts + (0,) * missing)
    return class_files, info


def streamed_info(class_files, where):
    """A DatasetInfo for examples without "dataset_info", from the streaming pass's numbers."""
    num_classes = class_files.num_classes
    return DatasetInfo(
        name="examples", source=f"examples:{where}", num_classes=num_classes,
        image_shape=class_files.image_shape,
        class_names=tuple(str(c) for c in range(num_classes)),
        mean=class_files.mean, std=class_files.std,
        split_sizes={"train": int(sum(class_files.counts))},
    )


def declare_flip(info, flip):
    """The info with the component's flip parameter (1, 0 or None: the examples' own) applied;
    logs the one-line note when own data's mirroring stays undeclared (DatasetInfo.flip)."""
    if flip is not None:
        if isinstance(flip, bool) or flip not in (0, 1):
            raise ValueError(
                f"M3DCondense: flip must be 1 (a horizontal flip keeps an image's class), 0, or "
                f"None (the examples' own). Received flip={flip!r}."
            )
        info = dataclasses.replace(info, flip=bool(flip))
    note = data.undeclared_flip_note(info, how="flip=True")
    if note:
        logging.warning("M3DCondense: %s", note)
    return info


def check_eval_examples(examples, info):
    """Reads Split-eval once to check it as Split-train is checked; returns its record count.

    Its files are later copied byte for byte (`copy_split`), so they must already be what the
    Trainer module reads: images of the dataset's shape, labels among its classes.
    """
    images, labels = _read_split(examples, "eval")
    _check_against_info(images.shape[1:], (labels.min(), labels.max()), info, examples, "eval")
    return len(labels)


def copy_split(examples, split, directory):
    """Copies the files of one split of `examples` into `directory` (any tf.io.gfile path)."""
    source = artifact_utils.get_split_uri([examples], split)
    tf.io.gfile.makedirs(directory)
    for name in sorted(tf.io.gfile.listdir(source)):
        tf.io.gfile.copy(os.path.join(source, name), os.path.join(directory, name),
                         overwrite=True)


def _publish_set(synthetic, uri):
    """Saves the set (m3d_tf.io.save_set, local and atomic) and copies its files into uri."""
    with tempfile.TemporaryDirectory() as scratch:
        saved = io.save_set(os.path.join(scratch, "set"), synthetic)
        tf.io.gfile.makedirs(uri)
        for name in sorted(os.listdir(saved)):
            tf.io.gfile.copy(os.path.join(saved, name), os.path.join(uri, name), overwrite=True)


def _publish_examples(condensed, synthetic, examples, info, eval_size):
    """Writes condensed_examples (module docstring); returns the Split-train record count."""
    decoded_images, decoded_labels = synthetic.decoded()
    dataset_gen.write_split(
        os.path.join(condensed.uri, "Split-train"), decoded_images, decoded_labels
    )
    copy_split(examples, "eval", os.path.join(condensed.uri, "Split-eval"))
    with tf.io.gfile.GFile(os.path.join(condensed.uri, METADATA_FILE), "w") as f:
        f.write(json.dumps(synthetic.metadata, indent=2, sort_keys=True) + "\n")
    dataset_gen.describe_examples(condensed, ("train", "eval"), info)
    condensed.set_json_value_custom_property(
        "split_sizes", {"train": len(decoded_labels), "eval": eval_size}
    )
    return len(decoded_labels)


class _ProgressLog(keras.callbacks.Callback):
    """absl-logs the MMD (Keras' running mean over the run) about 20 times per run."""

    def __init__(self, iterations):
        super().__init__()
        self.iterations, self.every = iterations, max(1, iterations // 20)

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every == 0 or batch + 1 == self.iterations:
            logging.info("M3DCondense iteration %d/%d: mean mmd so far %.6g", batch + 1,
                         self.iterations, (logs or {}).get("mmd", float("nan")))


def check_parameters(exec_properties):
    """Raises ValueError naming the parameter unless the numeric parameters are usable (counts,
    seed, learning_rate); checked before the streaming pass, so a typo costs no pass over the
    data. kernel and init are checked by M3DCondenser, before any output is written."""

    def bad(name, expected):
        raise ValueError(
            f"M3DCondense: {name} must be {expected}. Received {name}="
            f"{exec_properties.get(name)!r}; fix the component's {name}= argument."
        )

    counts = (("ipc", 1, False), ("seed", 0, False), ("iterations", 1, True), ("factor", 1, True),
              ("real_per_class", 1, True), ("ipm", 1, True))
    for name, low, optional in counts:
        value = exec_properties.get(name)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            bad(name, "a positive integer" if low else "a non-negative integer")
    rate = exec_properties.get("learning_rate")
    if rate is not None and not 0 < rate < float("inf"):
        bad("learning_rate", "a positive finite number (or None for the recipe's)")


# === TFX ===

# Parameters that replace the recipe's value when given (M3DCondenser arguments).
OVERRIDES = {"factor": int, "kernel": str, "real_per_class": int, "ipm": int, "init": str}
# SyntheticSet custom properties of how the set was made, beside artifacts.PROPERTY_TYPES (which
# are the set's metadata.json keys): "MirroredStrategy" or "default", its replica count, and the
# devices of its replicas (comma-separated, "" for the default strategy).
STRATEGY_PROPERTIES = {"strategy": str, "replicas": int, "devices": str}


class M3DCondenseSpec(ComponentSpec):
    """M3DCondense's input, parameters and outputs."""

    PARAMETERS = {
        "recipe": ExecutionParameter(type=str),
        "ipc": ExecutionParameter(type=int),
        "iterations": ExecutionParameter(type=int, optional=True),
        "seed": ExecutionParameter(type=int),
        "learning_rate": ExecutionParameter(type=float, optional=True),
        "devices": ExecutionParameter(type=str, optional=True),
        "flip": ExecutionParameter(type=int, optional=True),
        **{name: ExecutionParameter(type=kind, optional=True) for name, kind in OVERRIDES.items()},
    }
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {
        "condensed_examples": ChannelParameter(type=standard_artifacts.Examples),
        "synthetic_set": ChannelParameter(type=SyntheticSet),
    }


class Executor(base_executor.BaseExecutor):
    """Condenses Split-train with m3d_tf.recipes under the chosen strategy; writes the set, its
    decoding as Split-train and the input's real Split-eval."""

    def Do(self, input_dict, output_dict, exec_properties):
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        condensed = artifact_utils.get_single_instance(output_dict["condensed_examples"])
        artifact = artifact_utils.get_single_instance(output_dict["synthetic_set"])
        strategy, devices = choose_strategy(exec_properties.get("devices"))
        recipe = recipes.get_recipe(exec_properties["recipe"])
        check_parameters(exec_properties)
        overrides = {name: exec_properties[name] for name in OVERRIDES
                     if exec_properties.get(name) is not None}
        check_split_names(examples)
        with tempfile.TemporaryDirectory() as scratch:  # the per-class files of Split-train
            class_files, info = stream_training_examples(examples, os.path.join(scratch, "c"))
            info = declare_flip(info, exec_properties.get("flip"))
            defaults = recipes.settings_for(recipe.name, exec_properties["ipc"], info.name)
            iterations = exec_properties.get("iterations")
            iterations = defaults["iterations"] if iterations is None else iterations
            real_per_class = overrides.get("real_per_class", defaults["real_per_class"])
            eval_size = check_eval_examples(examples, info)
            check_class_sizes(class_files.counts, real_per_class)
            if devices:
                logging.info("M3DCondense: MirroredStrategy, %d replicas on %s",
                             strategy.num_replicas_in_sync, ",".join(devices))
            else:
                logging.info("M3DCondense: default strategy, 1 replica (no devices given, no "
                             "GPU visible)")
            board = TensorBoardCallback(
                os.path.join(artifact.uri, LOG_DIR), class_names=info.class_names,
                image_every=max(1, iterations // 10),
                decoded=overrides.get("factor", defaults["factor"]) > 1,
            )
            condenser, history = recipes.condense(
                class_files, None, info, exec_properties["ipc"], recipe=recipe.name,
                iterations=iterations, learning_rate=exec_properties.get("learning_rate"),
                seed=exec_properties["seed"], callbacks=[board, _ProgressLog(iterations)],
                strategy=strategy, **overrides,
            )
        synthetic = io.SyntheticSet.from_condenser(
            condenser, info, iterations=iterations, final_mmd=history["mmd"][-1],
            method=recipe.method,
        )
        _publish_set(synthetic, artifact.uri)
        train_size = _publish_examples(condensed, synthetic, examples, info, eval_size)
        record_properties(artifact, synthetic.metadata)
        setters = {str: artifact.set_string_custom_property,
                   int: artifact.set_int_custom_property}
        for name, value in strategy_properties(condenser, devices).items():
            setters[STRATEGY_PROPERTIES[name]](name, value)
        logging.info("M3DCondense: %d decoded images in Split-train, %d real held-out images "
                     "copied to Split-eval, final mmd %.6g", train_size, eval_size,
                     synthetic.metadata["final_mmd"])


class M3DCondense(base_component.BaseComponent):
    """Condenses standard Examples into a few synthetic images per class (m3d_tf.recipes).

    Args:
        examples: a channel of standard Examples (DatasetGen's output).
        recipe: a key of m3d_tf.recipes.RECIPES: "m3d" or "dm".
        ipc: stored images per class.
        iterations: condensation iterations (None: the recipe's, or its values chosen for the
            dataset and IPC: m3d_tf.recipes.settings_for).
        seed: seed of every random draw.
        learning_rate: pixel learning rate (None: settings_for's, like iterations).
        factor, kernel, real_per_class, ipm, init: M3DCondenser arguments replacing the
            recipe's (None: the recipe's). factor must divide the image size.
        devices: None or "": MirroredStrategy over every GPU the node sees (the default
            strategy without one); else comma-separated device names ("/gpu:0,/gpu:1") for
            MirroredStrategy over exactly those.
        flip: whether a horizontal flip keeps an image's class, so augmentation may mirror
            (True, False; None: the examples' dataset_info, which knows it for catalogued
            datasets; own data left undeclared is not mirrored, m3d_tf.data.UNDECLARED_FLIP).
            Recorded in the set's metadata, which the Trainer module follows.

    Outputs: condensed_examples (Examples), synthetic_set (SyntheticSet); module docstring.
    """

    SPEC_CLASS = M3DCondenseSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, examples, *, recipe="m3d", ipc=10, iterations=None, seed=0,
                 learning_rate=None, factor=None, kernel=None, real_per_class=None, ipm=None,
                 init=None, devices=None, flip=None):
        if flip is not None and not isinstance(flip, bool):
            raise ValueError(f"flip must be True, False or None. Received flip={flip!r}.")
        super().__init__(spec=M3DCondenseSpec(
            examples=examples, recipe=recipe, ipc=ipc, iterations=iterations, seed=seed,
            learning_rate=learning_rate, devices=devices, factor=factor, kernel=kernel,
            flip=None if flip is None else int(flip),
            real_per_class=real_per_class, ipm=ipm, init=init,
            condensed_examples=types.Channel(type=standard_artifacts.Examples),
            synthetic_set=types.Channel(type=SyntheticSet),
        ))

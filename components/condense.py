"""M3DCondense: standard Examples -> M3D condensation -> condensed Examples + a SyntheticSet.

Input `examples`: standard Examples whose Split-train holds tf.Examples in the m3d_tf.io encoding
(features image: float32 raw bytes in [0, 1], label, height, width, channels), as DatasetGen
writes them. Their "dataset_info" custom property, when present, gives the class names and the
normalisation (mean/std of the full train split); otherwise they are derived from Split-train.
The condensation is m3d_tf.recipes.condense with a named recipe ("m3d", "dm"); parameters given
to the component replace the recipe's values, as the `m3d condense` command's flags do.

Outputs:
    condensed_examples   standard Examples: Split-train and Split-eval both hold the decoded
                         synthetic set (classes x ipc x factor^2 records, class-major), so the
                         standard Trainer reads it unchanged (Split-eval only satisfies its
                         eval-split contract; real evaluation is the Evaluator on the source's
                         Split-test). metadata.json beside the splits is the set's m3d_tf.io
                         metadata (class names, mean, std), which the Trainer module reads.
    synthetic_set        components.artifacts.SyntheticSet: the stored pixels in the m3d_tf.io
                         format (m3d_tf.io.load_set(uri) reads it) and logs/ with the TensorBoard
                         run of the condensation; ipc, kernel, final MMD, ... as properties.

Every check (features, image size, empty or too small classes, parameters) runs before anything
is written, so a failing run leaves its output directories empty and publishes no artifact.
"""

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
from m3d_tf import io, recipes
from m3d_tf.callbacks import TensorBoardCallback
from m3d_tf.data import DatasetInfo

METADATA_FILE = "metadata.json"
LOG_DIR = "logs"


# === The work (no artifacts) ===


def check_class_sizes(labels, num_classes, real_per_class):
    """Raises ValueError, naming the component's parameter, if a class is too small.

    Args:
        labels: int (N,) of Split-train. num_classes: C. real_per_class: images of each class
            in every condensation batch.
    """
    counts = np.bincount(labels, minlength=num_classes)
    if counts.min() < real_per_class:
        c = int(np.argmin(counts))
        raise ValueError(
            f"class {c} has {counts[c]} training images; real_per_class={real_per_class} needs "
            f"at least {real_per_class}. Lower real_per_class or give more images."
        )


def derived_info(images, labels, where):
    """A DatasetInfo for examples without "dataset_info": classes and statistics from the data.

    Args:
        images: float32 (N, H, W, C) in [0, 1]. labels: int64 (N,).
        where: the examples' location, recorded as the source.
    """
    num_classes = int(labels.max()) + 1
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return DatasetInfo(
        name="examples", source=f"examples:{where}", num_classes=num_classes,
        image_shape=tuple(int(d) for d in images.shape[1:]),
        class_names=tuple(str(c) for c in range(num_classes)),
        mean=tuple(pixels.mean(axis=0).tolist()), std=tuple(pixels.std(axis=0).tolist()),
        split_sizes={"train": len(labels)},
    )


def read_training_examples(examples):
    """(images float32 (N, H, W, C), labels int64 (N,), DatasetInfo) of Split-train, checked.

    Raises:
        ValueError, FileNotFoundError: no Split-train, a missing feature, mixed or wrong image
            sizes, an empty split, labels outside the classes; each names the examples.
    """
    where = f"input examples at {examples.uri}"
    splits = artifact_utils.decode_split_names(examples.split_names or "[]")
    if "train" not in splits:
        raise ValueError(
            f"M3DCondense: {where} have splits {splits} but no 'train'; give Examples with a "
            "Split-train (e.g. from DatasetGen)."
        )
    split_uri = artifact_utils.get_split_uri([examples], "train")
    try:
        images, labels = io.read_examples(split_uri)
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(
            f"M3DCondense: {where}, Split-train: {error} The examples need features image "
            "(float32 bytes), label, height, width and channels, as DatasetGen writes them."
        ) from None
    if examples.has_custom_property(dataset_gen.DATASET_INFO_KEY):
        info = dataset_gen.info_from_json(
            examples.get_string_custom_property(dataset_gen.DATASET_INFO_KEY),
            {"train": len(labels)},
        )
    else:
        info = derived_info(images, labels, examples.uri)
    if tuple(images.shape[1:]) != tuple(info.image_shape):
        raise ValueError(
            f"M3DCondense: {where}, Split-train holds images of shape {images.shape[1:]} but "
            f"their dataset_info ({info.name}) says {tuple(info.image_shape)}; regenerate the "
            "examples from one source."
        )
    if labels.min() < 0 or labels.max() >= info.num_classes:
        raise ValueError(
            f"M3DCondense: {where}, Split-train has labels in {labels.min()}..{labels.max()} but "
            f"{info.name} has {info.num_classes} classes (0..{info.num_classes - 1}); fix the "
            "labels."
        )
    return images, labels, info


def _publish_set(synthetic, uri):
    """Saves the set (m3d_tf.io.save_set, local and atomic) and copies its files into uri."""
    with tempfile.TemporaryDirectory() as scratch:
        saved = io.save_set(os.path.join(scratch, "set"), synthetic)
        tf.io.gfile.makedirs(uri)
        for name in sorted(os.listdir(saved)):
            tf.io.gfile.copy(os.path.join(saved, name), os.path.join(uri, name), overwrite=True)


class _ProgressLog(keras.callbacks.Callback):
    """absl-logs the MMD (Keras' running mean over the run) about 20 times per run."""

    def __init__(self, iterations):
        super().__init__()
        self.iterations, self.every = iterations, max(1, iterations // 20)

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every == 0 or batch + 1 == self.iterations:
            logging.info("M3DCondense iteration %d/%d: mean mmd so far %.6g", batch + 1,
                         self.iterations, (logs or {}).get("mmd", float("nan")))


# === TFX ===

# Parameters that replace the recipe's value when given (M3DCondenser arguments).
OVERRIDES = {"factor": int, "kernel": str, "real_per_class": int, "ipm": int, "init": str}


class M3DCondenseSpec(ComponentSpec):
    """M3DCondense's input, parameters and outputs."""

    PARAMETERS = {
        "recipe": ExecutionParameter(type=str),
        "ipc": ExecutionParameter(type=int),
        "iterations": ExecutionParameter(type=int, optional=True),
        "seed": ExecutionParameter(type=int),
        "learning_rate": ExecutionParameter(type=float, optional=True),
        **{name: ExecutionParameter(type=kind, optional=True) for name, kind in OVERRIDES.items()},
    }
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {
        "condensed_examples": ChannelParameter(type=standard_artifacts.Examples),
        "synthetic_set": ChannelParameter(type=SyntheticSet),
    }


class Executor(base_executor.BaseExecutor):
    """Reads Split-train, condenses it with m3d_tf.recipes, writes the set and its decoding."""

    def Do(self, input_dict, output_dict, exec_properties):
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        condensed = artifact_utils.get_single_instance(output_dict["condensed_examples"])
        artifact = artifact_utils.get_single_instance(output_dict["synthetic_set"])
        recipe = recipes.get_recipe(exec_properties["recipe"])
        overrides = {name: exec_properties[name] for name in OVERRIDES
                     if exec_properties.get(name) is not None}
        iterations = exec_properties.get("iterations") or recipe.iterations
        images, labels, info = read_training_examples(examples)
        check_class_sizes(labels, info.num_classes,
                          overrides.get("real_per_class", recipe.real_per_class))
        board = TensorBoardCallback(
            os.path.join(artifact.uri, LOG_DIR), class_names=info.class_names,
            image_every=max(1, iterations // 10),
            decoded=overrides.get("factor", recipe.factor) > 1,
        )
        condenser, history = recipes.condense(
            images, labels, info, exec_properties["ipc"], recipe=recipe.name,
            iterations=iterations, learning_rate=exec_properties.get("learning_rate"),
            seed=exec_properties["seed"], callbacks=[board, _ProgressLog(iterations)],
            **overrides,
        )
        synthetic = io.SyntheticSet.from_condenser(
            condenser, info, iterations=iterations, final_mmd=history["mmd"][-1],
            method=recipe.method,
        )
        _publish_set(synthetic, artifact.uri)
        decoded_images, decoded_labels = synthetic.decoded()
        for split in ("train", "eval"):
            dataset_gen.write_split(
                os.path.join(condensed.uri, f"Split-{split}"), decoded_images, decoded_labels
            )
        with tf.io.gfile.GFile(os.path.join(condensed.uri, METADATA_FILE), "w") as f:
            f.write(json.dumps(synthetic.metadata, indent=2, sort_keys=True) + "\n")
        dataset_gen.describe_examples(condensed, ("train", "eval"), info)
        record_properties(artifact, synthetic.metadata)
        logging.info("M3DCondense: %d decoded images, final mmd %.6g", len(decoded_labels),
                     synthetic.metadata["final_mmd"])


class M3DCondense(base_component.BaseComponent):
    """Condenses standard Examples into a few synthetic images per class (m3d_tf.recipes).

    Args:
        examples: a channel of standard Examples (DatasetGen's output).
        recipe: a key of m3d_tf.recipes.RECIPES: "m3d" or "dm".
        ipc: stored images per class.
        iterations: condensation iterations (None: the recipe's).
        seed: seed of every random draw.
        learning_rate: pixel learning rate (None: the recipe's for this ipc).
        factor, kernel, real_per_class, ipm, init: M3DCondenser arguments replacing the
            recipe's (None: the recipe's). factor must divide the image size.

    Outputs: condensed_examples (Examples), synthetic_set (SyntheticSet); module docstring.
    """

    SPEC_CLASS = M3DCondenseSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, examples, *, recipe="m3d", ipc=10, iterations=None, seed=0,
                 learning_rate=None, factor=None, kernel=None, real_per_class=None, ipm=None,
                 init=None):
        super().__init__(spec=M3DCondenseSpec(
            examples=examples, recipe=recipe, ipc=ipc, iterations=iterations, seed=seed,
            learning_rate=learning_rate, factor=factor, kernel=kernel,
            real_per_class=real_per_class, ipm=ipm, init=init,
            condensed_examples=types.Channel(type=standard_artifacts.Examples),
            synthetic_set=types.Channel(type=SyntheticSet),
        ))

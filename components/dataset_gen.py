"""DatasetGen: any m3d_tf.data source -> standard Examples with train, eval and the real test split.

Output layout (what ExampleGen writes, so Trainer, Evaluator and StatisticsGen read it as usual):

    {uri}/Split-train/data_tfrecord-00000-of-0000K.gz   the source's train split minus eval
    {uri}/Split-eval/...                                 eval_per_class images of every class,
                                                         held out of the source's train split
    {uri}/Split-test/...                                 the source's test split (the real one)

Records are gzipped TFRecords of tf.Example written by `m3d_tf.io.write_examples`, the encoding
the condensed examples use too, so one serving signature parses both:

    image     bytes: float32 little-endian pixels in [0, 1], row-major (H, W, C) (uint8 / 255,
              exact); raw floats because the condensed images are continuous
    label     int64 class index in 0..num_classes-1
    height, width, channels   int64

The artifact's custom property "dataset_info" (JSON) carries the source's DatasetInfo (name,
source, num_classes, image_shape, class_names, mean, std of the full train split, and flip: what
the catalogue knows about mirroring, null for own data) for the components downstream. Per-class limits make small runs: train_per_class, test_per_class.
"""

import json
import os

import numpy as np
import tensorflow as tf
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.proto import example_gen_pb2
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from m3d_tf import io
from m3d_tf.data import DatasetInfo, load_arrays, mirroring

SPLITS = ("train", "eval", "test")
DATASET_INFO_KEY = "dataset_info"
# Records per output file: bounds the float32 copy held while writing (10,000 28x28x1 images:
# 31 MB; CIFAR-sized: 123 MB).
SHARD_SIZE = 10_000
_INFO_FIELDS = ("name", "source", "num_classes", "image_shape", "class_names", "mean", "std")


# === The work (no artifacts) ===


def info_to_json(info):
    """The JSON text of a DatasetInfo, without split_sizes (those of the source, not ours)."""
    return json.dumps({
        "name": info.name, "source": info.source, "num_classes": info.num_classes,
        "image_shape": list(info.image_shape), "class_names": list(info.class_names),
        "mean": list(info.mean), "std": list(info.std), "flip": info.flip,
    }, sort_keys=True)


def info_from_json(text, split_sizes):
    """The DatasetInfo that `info_to_json` wrote, with the given split sizes.

    Raises:
        ValueError: not JSON, or fields missing.
    """
    try:
        fields = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{DATASET_INFO_KEY} is not valid JSON ({error}).") from None
    missing = [key for key in _INFO_FIELDS if key not in fields]
    if missing:
        raise ValueError(f"{DATASET_INFO_KEY} lacks {missing}; regenerate the examples.")
    return DatasetInfo(
        name=fields["name"], source=fields["source"], num_classes=int(fields["num_classes"]),
        image_shape=tuple(fields["image_shape"]), class_names=tuple(fields["class_names"]),
        mean=tuple(fields["mean"]), std=tuple(fields["std"]), split_sizes=dict(split_sizes),
        # Examples written before flip was recorded: what the catalogue knows of the name.
        flip=fields["flip"] if "flip" in fields else mirroring(fields["name"]),
    )


def _count(name, value, *, allow_none):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0. Received {name}={value!r}.")
    return int(value)


def select_splits(train_labels, test_labels, num_classes, *, eval_per_class,
                  train_per_class=None, test_per_class=None, seed=0):
    """Which source images go to Split-train, Split-eval and Split-test.

    Per class c, a permutation of its training images seeded by (seed, c) gives the first
    eval_per_class to eval and the next train_per_class (all the rest when None) to train; test
    takes the first test_per_class test images of c in file order (all when None). Indices come
    back sorted, so every split keeps the source's order.

    Args:
        train_labels, test_labels: int (N,), (M,) in 0..num_classes-1.
        num_classes: number of classes C.
        eval_per_class: int >= 0. train_per_class: int >= 1 or None. test_per_class: int >= 1
            or None.
        seed: int seed of the hold-out.

    Returns:
        {"train": int64 indices into the train split, "eval": same, "test": into the test split}.

    Raises:
        ValueError: bad counts, or a class with too few images for them.

    Example:
        >>> chosen = select_splits(y_train, y_test, 10, eval_per_class=5, train_per_class=20,
        ...                        test_per_class=10)
        >>> [len(chosen[s]) for s in ("train", "eval", "test")]
        [200, 50, 100]
    """
    eval_per_class = _count("eval_per_class", eval_per_class, allow_none=False)
    seed = _count("seed", seed, allow_none=False)
    train_per_class = _count("train_per_class", train_per_class, allow_none=True)
    test_per_class = _count("test_per_class", test_per_class, allow_none=True)
    if train_per_class == 0 or test_per_class == 0:
        raise ValueError(
            "train_per_class and test_per_class must be >= 1 (or None for all images). Received "
            f"train_per_class={train_per_class}, test_per_class={test_per_class}."
        )
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    picked = {split: [] for split in SPLITS}
    for c in range(num_classes):
        members = np.flatnonzero(train_labels == c)
        needed = eval_per_class + (train_per_class or 1)
        if len(members) < needed:
            raise ValueError(
                f"class {c} has {len(members)} training images; eval_per_class={eval_per_class} "
                f"and train_per_class={train_per_class} need {needed}. Lower them."
            )
        order = np.random.default_rng([seed, c]).permutation(members)
        picked["eval"].append(order[:eval_per_class])
        stop = None if train_per_class is None else eval_per_class + train_per_class
        picked["train"].append(order[eval_per_class:stop])
        tests = np.flatnonzero(test_labels == c)
        if len(tests) < (test_per_class or 1):
            raise ValueError(
                f"class {c} has {len(tests)} test images; test_per_class={test_per_class} needs "
                f"{test_per_class or 1}. Lower test_per_class."
            )
        picked["test"].append(tests[:test_per_class])
    return {split: np.sort(np.concatenate(parts)).astype(np.int64)
            for split, parts in picked.items()}


def write_split(directory, images, labels):
    """Writes images as gzipped tf.Example shards (module docstring) into `directory`.

    Args:
        directory: the split's directory (local or any tf.io.gfile filesystem); created.
        images: uint8 (N, H, W, C) (divided by 255) or float (N, H, W, C) in [0, 1], N >= 1.
        labels: int (N,).

    Returns:
        list of the files written, data_tfrecord-{i:05d}-of-{K:05d}.gz.
    """
    tf.io.gfile.makedirs(directory)
    shards = max(1, -(-len(images) // SHARD_SIZE))
    files = []
    for i in range(shards):
        part = slice(i * SHARD_SIZE, (i + 1) * SHARD_SIZE)
        path = os.path.join(directory, f"data_tfrecord-{i:05d}-of-{shards:05d}.gz")
        pixels = images[part]
        if pixels.dtype == np.uint8:
            pixels = pixels.astype(np.float32) / np.float32(255.0)
        files.append(io.write_examples(path, pixels, labels[part], compression="GZIP"))
    return files


def load_source(source, *, eval_per_class, train_per_class=None, test_per_class=None, seed=0,
                data_dir=None):
    """Reads a source and cuts the three splits (see `select_splits`).

    Returns:
        ({split: (uint8 images (N, H, W, C), int64 labels (N,))}, DatasetInfo of the source).

    Raises:
        ValueError, FileNotFoundError: from m3d_tf.data, or a source without a test split.
    """
    train_images, train_labels, info = load_arrays(source, "train", data_dir=data_dir)
    if "test" not in info.split_sizes:
        raise ValueError(
            f"{info.source} has no 'test' split (splits: {', '.join(info.split_sizes)}); the "
            "Evaluator needs the real test split, so give a source with train and test splits."
        )
    test_images, test_labels, _ = load_arrays(source, "test", data_dir=data_dir)
    chosen = select_splits(
        train_labels, test_labels, info.num_classes, eval_per_class=eval_per_class,
        train_per_class=train_per_class, test_per_class=test_per_class, seed=seed,
    )
    arrays = {"train": (train_images, train_labels), "eval": (train_images, train_labels),
              "test": (test_images, test_labels)}
    return {split: (arrays[split][0][index], arrays[split][1][index])
            for split, index in chosen.items()}, info


# === TFX ===


def describe_examples(examples, splits, info):
    """Sets what TFX readers and M3DCondense look for on an Examples artifact written here.

    Args:
        examples: the output standard_artifacts.Examples.
        splits: names of its splits, e.g. ("train", "eval", "test").
        info: m3d_tf.data.DatasetInfo of the data (stored as the "dataset_info" property).
    """
    examples.split_names = artifact_utils.encode_split_names(list(splits))
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
    examples.set_string_custom_property(DATASET_INFO_KEY, info_to_json(info))


class DatasetGenSpec(ComponentSpec):
    """DatasetGen's parameters and output."""

    PARAMETERS = {
        "source": ExecutionParameter(type=str),
        "eval_per_class": ExecutionParameter(type=int),
        "train_per_class": ExecutionParameter(type=int, optional=True),
        "test_per_class": ExecutionParameter(type=int, optional=True),
        "seed": ExecutionParameter(type=int),
        "data_dir": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {}
    OUTPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}


class Executor(base_executor.BaseExecutor):
    """Reads the source, checks it, then writes the three splits and records the dataset."""

    def Do(self, input_dict, output_dict, exec_properties):
        self._log_startup(input_dict, output_dict, exec_properties)
        splits, info = load_source(
            exec_properties["source"],
            eval_per_class=exec_properties["eval_per_class"],
            train_per_class=exec_properties.get("train_per_class"),
            test_per_class=exec_properties.get("test_per_class"),
            seed=exec_properties["seed"],
            data_dir=exec_properties.get("data_dir"),
        )
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        for split, (images, labels) in splits.items():
            write_split(os.path.join(examples.uri, f"Split-{split}"), images, labels)
        describe_examples(examples, SPLITS, info)
        examples.set_json_value_custom_property(
            "split_sizes", {split: len(labels) for split, (_, labels) in splits.items()}
        )


class DatasetGen(base_component.BaseComponent):
    """Turns an m3d_tf.data source into standard Examples (train, eval, test).

    Args:
        source: anything m3d_tf.data.load_arrays accepts with train and test splits:
            "fashion_mnist", "tfds:NAME", "idx:DIR", "npz:FILE", "folder:DIR", "tfrecord:GLOB".
        eval_per_class: images per class held out of the train split into Split-eval.
        train_per_class: at most this many per class in Split-train (None: all the rest).
        test_per_class: at most this many per class in Split-test (None: the whole test split).
        seed: seed of the eval hold-out.
        data_dir: TFDS data directory for TFDS sources (None: TFDS's default).

    Output `examples`: standard Examples (module docstring).
    """

    SPEC_CLASS = DatasetGenSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, source, *, eval_per_class=100, train_per_class=None, test_per_class=None,
                 seed=0, data_dir=None):
        super().__init__(spec=DatasetGenSpec(
            source=source, eval_per_class=eval_per_class, train_per_class=train_per_class,
            test_per_class=test_per_class, seed=seed, data_dir=data_dir,
            examples=types.Channel(type=standard_artifacts.Examples),
        ))

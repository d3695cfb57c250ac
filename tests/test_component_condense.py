"""components/condense.py: the M3DCondense executor on a small real Fashion-MNIST sample.

Do() runs on hand-built artifacts (the TFX example_validator executor_test pattern): record
counts, files, metadata, properties and TensorBoard logs of a good run; the same run under
MirroredStrategy on two logical CPUs (in a fresh interpreter); for bad input, the error text and
output directories left empty with no property set.
"""

import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap

import re

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tfx.types import standard_artifacts

from components import condense, dataset_gen
from components.artifacts import PROPERTY_TYPES, SyntheticSet
from m3d_tf import io, recipes
from m3d_tf.data import DatasetInfo, write_class_files

pytestmark = pytest.mark.tfx

PER_CLASS = 10  # real training images per class given to the executor
# The m3d recipe (factor 2, Gaussian mix, mix init) with a small batch, 2 iterations.
PARAMS = {"recipe": "m3d", "ipc": 2, "iterations": 2, "seed": 0, "real_per_class": 8,
          "learning_rate": 0.1}


def _info(fmnist_small, image_shape=(28, 28, 1)):
    return DatasetInfo(name="fashion_mnist", source="test", num_classes=10,
                       image_shape=image_shape, class_names=tuple(fmnist_small.class_names),
                       mean=(0.286,), std=(0.353,), split_sizes={}, flip=True)


def _examples(directory, images, labels, info, held_out=None):
    """Examples as DatasetGen writes them: Split-train, and Split-eval with `held_out` (images,
    labels) (default: the first 10 train images, enough for the executor's checks)."""
    examples = standard_artifacts.Examples()
    examples.uri = str(directory)
    dataset_gen.write_split(os.path.join(examples.uri, "Split-train"), images, labels)
    held_out = held_out or (images[:10], labels[:10])
    dataset_gen.write_split(os.path.join(examples.uri, "Split-eval"), *held_out)
    dataset_gen.describe_examples(examples, ("train", "eval"), info)
    return examples


def _held_out(fmnist_small):
    """3 real Fashion-MNIST test images of each class, none of them among the training ones."""
    keep = np.concatenate([np.flatnonzero(fmnist_small.y_test == c)[:3] for c in range(10)])
    return fmnist_small.x_test[keep], fmnist_small.y_test[keep]


def _sample(fmnist_small):
    keep = np.concatenate([np.flatnonzero(fmnist_small.y_train == c)[:PER_CLASS]
                           for c in range(10)])
    return fmnist_small.x_train[keep], fmnist_small.y_train[keep]


def _outputs(tmp_path):
    condensed = standard_artifacts.Examples()
    condensed.uri = str(tmp_path / "condensed")
    synthetic = SyntheticSet()
    synthetic.uri = str(tmp_path / "synthetic")
    return {"condensed_examples": [condensed], "synthetic_set": [synthetic]}


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(root) for f in names)


@pytest.fixture(scope="module")
def input_examples(tmp_path_factory, fmnist_small):
    """Split-train: 10 real images per class; Split-eval: 3 other real images per class."""
    images, labels = _sample(fmnist_small)
    return _examples(tmp_path_factory.mktemp("input") / "examples", images, labels,
                     _info(fmnist_small), _held_out(fmnist_small))


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, input_examples):
    """The executor with PARAMS and no devices: the default strategy on this CPU-only node."""
    tmp_path = tmp_path_factory.mktemp("condense")
    outputs = _outputs(tmp_path)
    condense.Executor().Do({"examples": [input_examples]}, outputs, dict(PARAMS))
    return outputs["condensed_examples"][0], outputs["synthetic_set"][0]


def test_condensed_train_split_holds_classes_x_ipc_x_factor_squared_records(good_run):
    condensed, synthetic = good_run
    assert condensed.split_names == '["train", "eval"]'
    saved = io.load_set(synthetic.uri)
    decoded_images, decoded_labels = saved.decoded()
    images, labels = io.read_examples(os.path.join(condensed.uri, "Split-train"))
    assert len(labels) == 10 * 2 * 2**2
    assert labels.tolist() == np.repeat(np.arange(10), 2 * 4).tolist()  # class-major
    np.testing.assert_array_equal(images, decoded_images)  # the float32 pixels, unrounded
    np.testing.assert_array_equal(labels, decoded_labels)
    metadata = json.loads(open(os.path.join(condensed.uri, "metadata.json")).read())
    assert metadata == saved.metadata
    assert json.loads(condensed.get_string_custom_property("dataset_info"))["num_classes"] == 10
    assert condensed.get_json_value_custom_property("split_sizes") == {"train": 80, "eval": 30}


def test_condensed_eval_split_is_the_input_real_held_out_split_byte_for_byte(
        good_run, input_examples, fmnist_small):
    condensed, _ = good_run
    source = os.path.join(input_examples.uri, "Split-eval")
    copied = os.path.join(condensed.uri, "Split-eval")
    assert os.listdir(copied) == os.listdir(source) == ["data_tfrecord-00000-of-00001.gz"]
    for name in os.listdir(source):
        assert open(os.path.join(copied, name), "rb").read() == \
            open(os.path.join(source, name), "rb").read()
    images, labels = io.read_examples(copied)
    held_images, held_labels = _held_out(fmnist_small)
    np.testing.assert_array_equal(images, held_images.astype(np.float32) / np.float32(255.0))
    np.testing.assert_array_equal(labels, held_labels)


def test_synthetic_set_artifact_metadata_and_properties(good_run, fmnist_small):
    _, synthetic = good_run
    assert sorted(os.listdir(synthetic.uri)) == ["grid.png", "images.npz", "logs",
                                                 "metadata.json"]
    saved = io.load_set(synthetic.uri)
    assert saved.images.shape == (10 * 2, 28, 28, 1)
    meta = saved.metadata
    assert (meta["ipc"], meta["factor"], meta["kernel"], meta["iterations"]) == (
        2, 2, "gaussian_mix", 2)
    assert meta["condenser_config"]["real_per_class"] == 8
    assert meta["class_names"] == list(fmnist_small.class_names)
    assert meta["flip"] is True  # the examples' dataset_info: Fashion-MNIST mirrors
    values = {name: synthetic.get_custom_property(name) for name in PROPERTY_TYPES}
    assert values == {"dataset": "fashion_mnist", "method": "m3d", "num_classes": 10, "ipc": 2,
                      "factor": 2, "kernel": "gaussian_mix", "iterations": 2, "seed": 0,
                      "final_mmd": pytest.approx(meta["final_mmd"], rel=1e-12)}
    ran_on = {name: synthetic.get_custom_property(name) for name in condense.STRATEGY_PROPERTIES}
    assert ran_on == {"strategy": "default", "replicas": 1, "devices": ""}
    assert np.isfinite(meta["final_mmd"]) and meta["final_mmd"] > 0


def test_tensorboard_logs_under_the_artifact_end_at_the_final_mmd(good_run):
    _, synthetic = good_run
    events = EventAccumulator(os.path.join(synthetic.uri, "logs"),
                              size_guidance={"tensors": 0}).Reload()
    scalars = {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in
                     events.Tensors(tag)] for tag in ("mmd/total", "learning_rate")}
    assert {"synthetic/grid", "synthetic/decoded"} <= set(events.Tags()["tensors"])
    assert [step for step, _ in scalars["mmd/total"]] == [1, 2]
    # The property is what the run logged last (history["mmd"][-1]).
    final = synthetic.get_float_custom_property("final_mmd")
    assert scalars["mmd/total"][-1][1] == pytest.approx(final, rel=1e-6)
    assert [step for step, _ in scalars["learning_rate"]] == [1, 2]
    assert scalars["learning_rate"][0][1] == pytest.approx(0.1)


_TWO_CPUS = textwrap.dedent(
    """
    import json
    import sys

    import tensorflow as tf
    from absl import logging

    logging.set_verbosity(logging.INFO)
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from tfx.types import standard_artifacts

    from components import condense
    from components.artifacts import SyntheticSet

    given = json.loads(sys.argv[1])
    examples = standard_artifacts.Examples()
    examples.uri, examples.split_names = given["examples"], given["split_names"]
    examples.set_string_custom_property("dataset_info", given["dataset_info"])
    condensed, synthetic = standard_artifacts.Examples(), SyntheticSet()
    condensed.uri, synthetic.uri = given["condensed"], given["synthetic"]
    condense.Executor().Do(
        {"examples": [examples]},
        {"condensed_examples": [condensed], "synthetic_set": [synthetic]}, given["params"])
    with open(given["properties"], "w") as f:
        json.dump({name: synthetic.get_custom_property(name)
                   for name in condense.STRATEGY_PROPERTIES}, f)
    """
)


def test_two_replicas_on_two_logical_cpus_give_the_one_device_set(tmp_path, input_examples,
                                                                  good_run):
    # Logical devices must be configured before TensorFlow initialises: a fresh interpreter.
    given = {
        "examples": input_examples.uri, "split_names": input_examples.split_names,
        "dataset_info": input_examples.get_string_custom_property("dataset_info"),
        "condensed": str(tmp_path / "condensed"), "synthetic": str(tmp_path / "synthetic"),
        "properties": str(tmp_path / "properties.json"),
        "params": {**PARAMS, "devices": "/cpu:0,/cpu:1"},
    }
    script = tmp_path / "two_cpus.py"
    script.write_text(_TWO_CPUS)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, str(script), json.dumps(given)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "M3DCondense: MirroredStrategy, 2 replicas on /device:CPU:0,/device:CPU:1" \
        in result.stderr
    assert json.load(open(tmp_path / "properties.json")) == {
        "strategy": "MirroredStrategy", "replicas": 2, "devices": "/device:CPU:0,/device:CPU:1"}

    one = io.load_set(good_run[1].uri)
    two = io.load_set(str(tmp_path / "synthetic"))
    # Each replica embeds its half of the real batch, the features are all-gathered, and every
    # replica takes the gradient of loss / 2 on the whole batch; the two halves sum exactly. What
    # may differ is the embedding of 40 images instead of 80 (oneDNN can pick other kernels for
    # another batch size: ~1e-7 relative), far below 1e-5 after 2 SGD steps of lr 0.1 (measured:
    # bitwise equal here). A replica counted twice or a shard lost shifts pixels by the order of
    # the step itself; the run moves its initial pixels by more than 100x the tolerance.
    np.testing.assert_allclose(two.images, one.images, rtol=0, atol=1e-5)
    images, labels = io.read_examples(os.path.join(input_examples.uri, "Split-train"))
    info = dataset_gen.info_from_json(input_examples.get_string_custom_property("dataset_info"),
                                      {})
    start = recipes.build_condenser(info, 2, recipe="m3d", seed=0, real_per_class=8)
    start.initialize((images, labels))
    moved = np.abs(one.images - start.synthetic_images()).max()  # measured: 0.0141
    assert moved > 100 * 1e-5
    assert two.metadata["final_mmd"] == pytest.approx(one.metadata["final_mmd"], rel=1e-4)
    differ = ("final_mmd", "created")

    def settings(metadata):  # the config's "name" is Keras' per-process counter (m3d_condenser_3)
        kept = {k: v for k, v in metadata.items() if k not in differ}
        kept["condenser_config"] = {k: v for k, v in kept["condenser_config"].items()
                                    if k != "name"}
        return kept

    assert settings(two.metadata) == settings(one.metadata)
    copied = os.path.join(tmp_path, "condensed", "Split-eval", "data_tfrecord-00000-of-00001.gz")
    original = os.path.join(good_run[0].uri, "Split-eval", "data_tfrecord-00000-of-00001.gz")
    assert open(copied, "rb").read() == open(original, "rb").read()


def _example(**features):
    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(
        feature={k: feature(v) for k, v in features.items()})).SerializeToString()


def _raw_examples(directory, records, info, split="train"):
    """Examples whose `split` holds the given records and whose other split is good."""
    examples = standard_artifacts.Examples()
    examples.uri = str(directory)
    good = "eval" if split == "train" else "train"
    dataset_gen.write_split(os.path.join(examples.uri, f"Split-{good}"),
                            np.zeros((10, 28, 28, 1), np.float32), np.arange(10))
    os.makedirs(os.path.join(examples.uri, f"Split-{split}"))
    path = os.path.join(examples.uri, f"Split-{split}", "data_tfrecord-00000-of-00001.gz")
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for record in records:
            writer.write(record)
    dataset_gen.describe_examples(examples, ("train", "eval"), info)
    return examples


PIXELS = np.zeros((28, 28, 1), "<f4").tobytes()


@pytest.mark.parametrize("records, message", [
    ([_example(label=1, height=28, width=28, channels=1)],
     r"Split-train: record 0 of .*data_tfrecord-00000-of-00001\.gz lacks the features "
     r"\['image'\]; .* The examples need features image \(float32 bytes\), label"),
    ([_example(image=PIXELS, height=28, width=28, channels=1)],
     r"record 0 of .* lacks the features \['label'\]"),
    ([_example(image=PIXELS[:-4], label=0, height=28, width=28, channels=1)],
     r"record 0 of .* holds 3132 bytes for a \(28, 28, 1\) image"),
    ([], r"Split-train: .* holds no records"),
], ids=["no_image", "no_label", "bytes_of_another_size", "empty_split"])
def test_bad_records_fail_before_any_output(tmp_path, fmnist_small, records, message):
    examples = _raw_examples(tmp_path / "examples", records, _info(fmnist_small))
    outputs = _outputs(tmp_path)
    with pytest.raises(ValueError, match=rf"^M3DCondense: input examples at .*{message}"):
        condense.Executor().Do({"examples": [examples]}, outputs, dict(PARAMS))
    _assert_nothing_published(tmp_path, outputs)


def _assert_nothing_published(tmp_path, outputs):
    """No file under either output uri, and no split names or properties on the artifacts."""
    assert _files(tmp_path / "condensed") == [] and _files(tmp_path / "synthetic") == []
    condensed, synthetic = outputs["condensed_examples"][0], outputs["synthetic_set"][0]
    assert not condensed.split_names and not condensed.has_custom_property("dataset_info")
    assert not condensed.has_custom_property("split_sizes")
    assert not any(synthetic.has_custom_property(name)
                   for name in [*PROPERTY_TYPES, *condense.STRATEGY_PROPERTIES])


@pytest.mark.parametrize("records, message", [
    ([_example(label=1, height=28, width=28, channels=1)],
     r"record 0 of .* lacks the features \['image'\]"),
    ([], r".*/Split-eval holds no records"),  # what DatasetGen writes with eval_per_class=0
], ids=["no_image", "empty_split"])
def test_bad_eval_records_fail_before_any_output(tmp_path, fmnist_small, records, message):
    examples = _raw_examples(tmp_path / "examples", records, _info(fmnist_small), split="eval")
    outputs = _outputs(tmp_path)
    with pytest.raises(ValueError, match=rf"^M3DCondense: input examples at .*, Split-eval: "
                                         rf"{message}.* Split-eval must hold real images held "
                                         r"out of training \(DatasetGen with eval_per_class "
                                         r">= 1\)"):
        condense.Executor().Do({"examples": [examples]}, outputs, dict(PARAMS))
    _assert_nothing_published(tmp_path, outputs)


def test_eval_images_of_the_wrong_size_fail(tmp_path, fmnist_small):
    images, labels = _sample(fmnist_small)
    held_images, held_labels = _held_out(fmnist_small)
    examples = _examples(tmp_path / "examples", images, labels, _info(fmnist_small),
                         (held_images[:, ::2, ::2], held_labels))
    outputs = _outputs(tmp_path)
    with pytest.raises(ValueError, match=r"Split-eval holds images of shape \(14, 14, 1\) but "
                                         r"their dataset_info \(fashion_mnist\) says "
                                         r"\(28, 28, 1\)"):
        condense.Executor().Do({"examples": [examples]}, outputs, dict(PARAMS))
    _assert_nothing_published(tmp_path, outputs)


def test_examples_without_eval_split_fail(tmp_path, fmnist_small):
    images, labels = _sample(fmnist_small)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    dataset_gen.write_split(os.path.join(examples.uri, "Split-train"), images, labels)
    dataset_gen.describe_examples(examples, ("train",), _info(fmnist_small))
    outputs = _outputs(tmp_path)
    with pytest.raises(ValueError, match=r"have splits \['train'\] but no 'eval'; give Examples "
                                         r"with a Split-eval of real held-out images for the "
                                         r"Trainer's evaluation \(e\.g\. from DatasetGen\)\.$"):
        condense.Executor().Do({"examples": [examples]}, outputs, dict(PARAMS))
    _assert_nothing_published(tmp_path, outputs)


@pytest.mark.parametrize("devices, named, problem", [
    ("/gpu:0", "/gpu:0", "is not a visible device"),
    ("/cpu:0,/cpu:1", "/cpu:1", "is not a visible device"),
    ("gpu0", "gpu0", "is not a visible device"),
    ("/job:worker/device:CPU:0", "/job:worker/device:CPU:0", "is not a visible device"),
    ("/cpu:0, CPU:0", "CPU:0", "is named twice"),
], ids=["no_gpu", "one_cpu_only", "not_a_device_name", "remote", "twice"])
def test_devices_that_are_not_visible_fail_before_any_output(tmp_path, input_examples, devices,
                                                             named, problem):
    # This process sees one CPU and no GPU (the two-CPU run below is a fresh interpreter).
    outputs = _outputs(tmp_path)
    with pytest.raises(ValueError, match=(
            rf"^M3DCondense: devices={re.escape(repr(devices))}: {re.escape(repr(named))} "
            rf"{problem}; visible devices: /device:CPU:0\. Name each device once \(e\.g\. "
            r'"/gpu:0,/gpu:1"\), or leave devices empty for every visible GPU \(the default '
            r"strategy when there is none\)\.$")):
        condense.Executor().Do({"examples": [input_examples]}, outputs,
                               {**PARAMS, "devices": devices})
    _assert_nothing_published(tmp_path, outputs)


def test_choose_strategy_on_a_cpu_only_node():
    strategy, devices = condense.choose_strategy(None)
    assert devices == () and strategy is tf.distribute.get_strategy()
    assert condense.choose_strategy("")[1] == ()
    strategy, devices = condense.choose_strategy("cpu:0")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert devices == ("/device:CPU:0",) and strategy.num_replicas_in_sync == 1


def test_images_of_the_wrong_size_fail(tmp_path, fmnist_small):
    images, labels = _sample(fmnist_small)
    examples = _examples(tmp_path / "examples", images[:, ::2, ::2], labels, _info(fmnist_small))
    outputs = _outputs(tmp_path)
    with pytest.raises(ValueError, match=r"Split-train holds images of shape \(14, 14, 1\) but "
                                         r"their dataset_info \(fashion_mnist\) says "
                                         r"\(28, 28, 1\); regenerate the examples"):
        condense.Executor().Do({"examples": [examples]}, outputs, dict(PARAMS))
    _assert_nothing_published(tmp_path, outputs)


def test_too_few_images_per_class_fail(tmp_path, fmnist_small):
    images, labels = _sample(fmnist_small)
    examples = _examples(tmp_path / "examples", images, labels, _info(fmnist_small))
    outputs = _outputs(tmp_path)
    with pytest.raises(ValueError, match=r"^class 0 has 10 training images; real_per_class=128 "
                                         r"needs at least 128\. Lower real_per_class"):
        condense.Executor().Do({"examples": [examples]}, outputs,
                               {**PARAMS, "real_per_class": 128})
    _assert_nothing_published(tmp_path, outputs)


def test_examples_without_train_split_fail(tmp_path, fmnist_small):
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    dataset_gen.describe_examples(examples, ("eval",), _info(fmnist_small))
    outputs = _outputs(tmp_path)
    with pytest.raises(ValueError, match=r"have splits \['eval'\] but no 'train'"):
        condense.Executor().Do({"examples": [examples]}, outputs, dict(PARAMS))
    _assert_nothing_published(tmp_path, outputs)


def test_unknown_recipe_fails(tmp_path, fmnist_small):
    images, labels = _sample(fmnist_small)
    examples = _examples(tmp_path / "examples", images, labels, _info(fmnist_small))
    outputs = _outputs(tmp_path)
    with pytest.raises(ValueError, match=r"^Unknown recipe 'm4d'\. Known recipes: dm, m3d\.$"):
        condense.Executor().Do({"examples": [examples]}, outputs, {**PARAMS, "recipe": "m4d"})
    _assert_nothing_published(tmp_path, outputs)


def test_labels_outside_the_classes_fail(tmp_path, fmnist_small):
    images, labels = _sample(fmnist_small)
    info = dataclasses.replace(_info(fmnist_small), num_classes=9)
    examples = _examples(tmp_path / "examples", images, labels, info)
    outputs = _outputs(tmp_path)
    with pytest.raises(ValueError, match=r"Split-train has labels in 0\.\.9 but fashion_mnist "
                                         r"has 9 classes \(0\.\.8\); fix the labels\."):
        condense.Executor().Do({"examples": [examples]}, outputs, dict(PARAMS))
    _assert_nothing_published(tmp_path, outputs)


def test_streamed_info_of_examples_without_dataset_info(tmp_path):
    # Two 1x2 images with pixels (0, 1) and (0.5, 0.5), labels 0 and 2: classes 0..2, mean 0.5,
    # std = sqrt(mean of the squared deviations (0.25, 0.25, 0, 0)) = 0.125 ** 0.5 = 0.5 ** 1.5.
    images = np.array([[[[0.0], [1.0]]], [[[0.5], [0.5]]]], np.float32)
    class_files = write_class_files([(images, np.array([0, 2]))], tmp_path / "c")
    info = condense.streamed_info(class_files, "/data/x")
    assert (info.num_classes, info.image_shape, info.class_names) == (3, (1, 2, 1),
                                                                      ("0", "1", "2"))
    assert info.mean == (0.5,) and info.std == pytest.approx((0.5**1.5,), rel=1e-12)
    assert info.source == "examples:/data/x"


def test_flip_parameter_declares_mirroring_and_undeclared_own_data_is_announced(caplog):
    own = DatasetInfo(name="mine", source="idx:/data/mine", num_classes=2, image_shape=(4, 4, 1),
                      class_names=("a", "b"), mean=(0.5,), std=(0.2,), split_sizes={})
    with caplog.at_level(logging.WARNING, logger="absl"):
        assert condense.declare_flip(own, None).flip is None
    assert caplog.messages == ["M3DCondense: own data idx:/data/mine: horizontal flips off "
                               "(declare with flip=True if mirroring keeps the class)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="absl"):
        assert condense.declare_flip(own, 1).flip is True
        assert condense.declare_flip(dataclasses.replace(own, flip=True), 0).flip is False
    assert caplog.messages == []
    with pytest.raises(ValueError, match=r"M3DCondense: flip must be 1 .* Received flip=2\."):
        condense.declare_flip(own, 2)
    # Examples written before dataset_info carried flip: what the catalogue knows of the name.
    for name, flip in (("fashion_mnist", True), ("mnist", False), ("mine", None)):
        text = json.dumps({**json.loads(dataset_gen.info_to_json(own)), "name": name})
        legacy = json.loads(text)
        del legacy["flip"]
        assert dataset_gen.info_from_json(json.dumps(legacy), {}).flip is flip
    assert dataset_gen.info_from_json(dataset_gen.info_to_json(
        dataclasses.replace(own, flip=False)), {}).flip is False


def test_synthetic_set_type_name_is_its_import_path_as_the_kfp_entrypoint_resolves_it():
    # The KFP v2 container entrypoint rebuilds an input artifact from its type schema's title
    # (the type name) by importing it as a class path; KFP allows only "<namespace>.<Title>".
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as utils
    from tfx.utils import import_utils

    schema = pipeline_spec_pb2.ArtifactTypeSchema(
        instance_schema=f"title: {SyntheticSet.TYPE_NAME}\ntype: object\n")
    path = utils._retrieve_class_path(schema)
    assert path == SyntheticSet.TYPE_NAME == "components.SyntheticSet"
    assert import_utils.import_class_by_path(path) is SyntheticSet
    namespace, title = path.split(".")
    assert namespace.isidentifier() and title[0].isupper()

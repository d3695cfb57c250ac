"""components/condense.py: the M3DCondense executor on a small real Fashion-MNIST sample.

Do() runs on hand-built artifacts (the TFX example_validator executor_test pattern): record
counts, files, metadata, properties and TensorBoard logs of a good run; for bad input, the
error text and output directories left empty with no property set.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tfx.types import standard_artifacts

from components import condense, dataset_gen
from components.artifacts import PROPERTY_TYPES, SyntheticSet
from m3d_tf import io
from m3d_tf.data import DatasetInfo

pytestmark = pytest.mark.tfx

PER_CLASS = 10  # real training images per class given to the executor
# The m3d recipe (factor 2, Gaussian mix, mix init) with a small batch, 2 iterations.
PARAMS = {"recipe": "m3d", "ipc": 2, "iterations": 2, "seed": 0, "real_per_class": 8,
          "learning_rate": 0.1}


def _info(fmnist_small, image_shape=(28, 28, 1)):
    return DatasetInfo(name="fashion_mnist", source="test", num_classes=10,
                       image_shape=image_shape, class_names=tuple(fmnist_small.class_names),
                       mean=(0.286,), std=(0.353,), split_sizes={})


def _examples(directory, images, labels, info):
    """Examples as DatasetGen writes them: Split-train (and a copy as Split-eval)."""
    examples = standard_artifacts.Examples()
    examples.uri = str(directory)
    for split in ("train", "eval"):
        dataset_gen.write_split(os.path.join(examples.uri, f"Split-{split}"), images, labels)
    dataset_gen.describe_examples(examples, ("train", "eval"), info)
    return examples


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
def good_run(tmp_path_factory, fmnist_small):
    tmp_path = tmp_path_factory.mktemp("condense")
    images, labels = _sample(fmnist_small)
    examples = _examples(tmp_path / "examples", images, labels, _info(fmnist_small))
    outputs = _outputs(tmp_path)
    condense.Executor().Do({"examples": [examples]}, outputs, dict(PARAMS))
    return outputs["condensed_examples"][0], outputs["synthetic_set"][0]


def test_condensed_examples_hold_classes_x_ipc_x_factor_squared_records(good_run):
    condensed, synthetic = good_run
    assert condensed.split_names == '["train", "eval"]'
    saved = io.load_set(synthetic.uri)
    decoded_images, decoded_labels = saved.decoded()
    for split in ("train", "eval"):
        images, labels = io.read_examples(os.path.join(condensed.uri, f"Split-{split}"))
        assert len(labels) == 10 * 2 * 2**2
        assert labels.tolist() == np.repeat(np.arange(10), 2 * 4).tolist()  # class-major
        np.testing.assert_array_equal(images, decoded_images)  # the float32 pixels, unrounded
        np.testing.assert_array_equal(labels, decoded_labels)
    metadata = json.loads(open(os.path.join(condensed.uri, "metadata.json")).read())
    assert metadata == saved.metadata
    assert json.loads(condensed.get_string_custom_property("dataset_info"))["num_classes"] == 10


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
    values = {name: synthetic.get_custom_property(name) for name in PROPERTY_TYPES}
    assert values == {"dataset": "fashion_mnist", "method": "m3d", "num_classes": 10, "ipc": 2,
                      "factor": 2, "kernel": "gaussian_mix", "iterations": 2, "seed": 0,
                      "final_mmd": pytest.approx(meta["final_mmd"], rel=1e-12)}
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


def _example(**features):
    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(
        feature={k: feature(v) for k, v in features.items()})).SerializeToString()


def _raw_examples(directory, records, info):
    examples = standard_artifacts.Examples()
    examples.uri = str(directory)
    os.makedirs(os.path.join(examples.uri, "Split-train"))
    path = os.path.join(examples.uri, "Split-train", "data_tfrecord-00000-of-00001.gz")
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for record in records:
            writer.write(record)
    dataset_gen.describe_examples(examples, ("train",), info)
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
    assert not any(synthetic.has_custom_property(name) for name in PROPERTY_TYPES)


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


def test_derived_info_of_examples_without_dataset_info():
    # Two 1x2 images with pixels (0, 1) and (0.5, 0.5), labels 0 and 2: classes 0..2, mean 0.5,
    # std = sqrt(mean of the squared deviations (0.25, 0.25, 0, 0)) = 0.125 ** 0.5 = 0.5 ** 1.5.
    images = np.array([[[[0.0], [1.0]]], [[[0.5], [0.5]]]], np.float32)
    info = condense.derived_info(images, np.array([0, 2]), "/data/x")
    assert (info.num_classes, info.image_shape, info.class_names) == (3, (1, 2, 1),
                                                                      ("0", "1", "2"))
    assert info.mean == (0.5,) and info.std == pytest.approx((0.5**1.5,), rel=1e-12)
    assert info.source == "examples:/data/x"


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

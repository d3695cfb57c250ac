"""Data validation as pipelines/pipeline.py wires it, with TFX's own executors on real data.

StatisticsGen and SchemaGen run on real Fashion-MNIST Examples written as DatasetGen writes them;
StatisticsGen and ExampleValidator then check condensed Examples against that schema. Do() runs
on hand-built artifacts (TFX's example_validator executor_test pattern), with the execution
properties the pipeline compiles (tests/test_pipeline_kubeflow.py checks those).
"""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.components.example_validator import executor as example_validator
from tfx.components.schema_gen import executor as schema_gen
from tfx.components.statistics_gen import executor as statistics_gen
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from components import dataset_gen
from pipelines import results

pytestmark = [pytest.mark.tfx, pytest.mark.slow]

EVERY_SPLIT = {"exclude_splits": "[]"}


def _examples(directory, splits):
    """Examples artifact with {split: (images, labels)} written by DatasetGen's writer."""
    examples = standard_artifacts.Examples()
    examples.uri = str(directory)
    for split, (images, labels) in splits.items():
        dataset_gen.write_split(os.path.join(examples.uri, f"Split-{split}"), images, labels)
    examples.split_names = artifact_utils.encode_split_names(list(splits))
    return examples


def _statistics(examples, directory):
    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = str(directory)
    statistics_gen.Executor().Do({"examples": [examples]}, {"statistics": [statistics]},
                                 EVERY_SPLIT)
    return statistics


def _validate(examples, schema, directory):
    """The ExampleAnomalies artifact of `examples` (statistics computed first) against schema."""
    statistics = _statistics(examples, directory / "statistics")
    anomalies = standard_artifacts.ExampleAnomalies()
    anomalies.uri = str(directory / "anomalies")
    example_validator.Executor().Do({"statistics": [statistics], "schema": [schema]},
                                    {"anomalies": [anomalies]}, EVERY_SPLIT)
    return anomalies


@pytest.fixture(scope="module")
def real(tmp_path_factory, fmnist_small):
    """(directory, real Split-eval arrays, Schema artifact inferred from the real Examples)."""
    root = tmp_path_factory.mktemp("validation")
    x, y = fmnist_small.x_train, fmnist_small.y_train
    held_out = (x[200:220], y[200:220])
    examples = _examples(root / "real", {"train": (x[:200], y[:200]), "eval": held_out,
                                         "test": (fmnist_small.x_test[:100],
                                                  fmnist_small.y_test[:100])})
    statistics = _statistics(examples, root / "real_statistics")
    schema = standard_artifacts.Schema()
    schema.uri = str(root / "schema")
    schema_gen.Executor().Do({"statistics": [statistics]}, {"schema": [schema]},
                             {"infer_feature_shape": 1, **EVERY_SPLIT})
    return root, held_out, schema


def _condensed(fmnist_small, ipc=4):
    """Continuous images like decoded synthetic ones: class means plus a little noise."""
    rng = np.random.default_rng(0)
    x = fmnist_small.x_train.astype(np.float32) / 255
    means = np.stack([x[fmnist_small.y_train == c].mean(axis=0) for c in range(10)])
    images = np.repeat(means, ipc, axis=0) + rng.normal(0, 0.05, (10 * ipc, 28, 28, 1))
    return np.clip(images, 0, 1).astype(np.float32), np.repeat(np.arange(10), ipc)


def test_schema_of_the_real_examples(real):
    _, _, schema_artifact = real
    schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema_artifact.uri))
    features = {f.name: f for f in schema.feature}
    assert {name: f.type for name, f in features.items()} == {
        "image": schema_pb2.BYTES, "label": schema_pb2.INT, "height": schema_pb2.INT,
        "width": schema_pb2.INT, "channels": schema_pb2.INT,
    }
    for feature in features.values():
        assert feature.presence.min_fraction == 1.0
        assert [d.size for d in feature.shape.dim] == [1]
    # Raw float32 bytes are not text: no value domain that new (condensed) pixels could break.
    assert features["image"].WhichOneof("domain_info") is None
    # Grayscale: every image has channels 1, which TFDV turns into a bool domain.
    assert features["channels"].WhichOneof("domain_info") == "bool_domain"


def test_correct_condensed_examples_raise_no_anomaly(real, fmnist_small):
    root, held_out, schema = real
    # As M3DCondense writes them: decoded images in Split-train, the real held-out Split-eval.
    condensed = _examples(root / "condensed", {"train": _condensed(fmnist_small),
                                               "eval": held_out})
    anomalies = _validate(condensed, schema, root / "condensed_validation")
    assert results.split_anomalies(anomalies.mlmd_artifact) == {"train": {}, "eval": {}}
    assert anomalies.get_json_value_custom_property("blessed") == {"train": 1, "eval": 1}
    assert results.format_anomalies({"train": {}, "eval": {}}) == (
        "condensed examples match the real data's schema (train, eval)"
    )


def _rewrite(directory, change):
    """Rewrites every tf.Example of a split in place through change(features) (a proto map)."""
    for path in glob.glob(os.path.join(directory, "*.gz")):
        records = [tf.train.Example.FromString(r.numpy())
                   for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
        with tf.io.TFRecordWriter(path, "GZIP") as writer:
            for example in records:
                change(example.features.feature)
                writer.write(example.SerializeToString())


def _pixels_as_floats(features):
    pixels = np.frombuffer(features["image"].bytes_list.value[0], "<f4")
    features["image"].CopyFrom(tf.train.Feature(float_list=tf.train.FloatList(value=pixels)))


def _three_channels(features):
    features["channels"].int64_list.value[:] = [3]


def _no_label(features):
    del features["label"]


# How condensed examples can go wrong -> the anomaly ExampleValidator reports.
WRONG = [
    (_pixels_as_floats, "image",
     "The feature has fixed value length 784 but it's not compatible with the specified shape. "
     "Expected data of type: BYTES but got FLOAT"),
    (_three_channels, "channels", "Integers (such as 3) not in {0, 1}: converting to an integer."),
    (_no_label, "label", "Column is completely missing"),
]


@pytest.mark.parametrize("change, feature, description", WRONG,
                         ids=[change.__name__ for change, _, _ in WRONG])
def test_a_wrong_feature_raises_an_anomaly(real, fmnist_small, tmp_path, change, feature,
                                           description):
    _, _, schema = real
    condensed = _examples(tmp_path / "condensed", {"train": _condensed(fmnist_small)})
    _rewrite(os.path.join(condensed.uri, "Split-train"), change)
    anomalies = _validate(condensed, schema, tmp_path)
    assert results.split_anomalies(anomalies.mlmd_artifact) == {"train": {feature: description}}
    assert anomalies.get_json_value_custom_property("blessed") == {"train": 0}
    assert results.format_anomalies({"train": {feature: description}}) == (
        f"ANOMALIES in the condensed examples: train: {feature} ({description})"
    )

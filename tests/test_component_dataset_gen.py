"""components/dataset_gen.py: the split selection, and the executor on Fashion-MNIST IDX files."""

import json
import os

import numpy as np
import pytest
from tfx.types import artifact_utils, standard_artifacts

from components import dataset_gen
from m3d_tf import io
from m3d_tf.data import load_arrays
from m3d_tf.data.catalog import DEBIAN_FASHION_MNIST_DIR

pytestmark = pytest.mark.tfx
SOURCE = f"idx:{DEBIAN_FASHION_MNIST_DIR}"


def test_select_splits_hand_worked():
    # Class 0 at train positions 0, 2, 4; class 1 at 1, 3, 5; test: 1, 0, 0, 1.
    train = np.array([0, 1, 0, 1, 0, 1])
    test = np.array([1, 0, 0, 1])
    chosen = dataset_gen.select_splits(train, test, 2, eval_per_class=1, train_per_class=1,
                                       test_per_class=1)
    assert chosen["test"].tolist() == [0, 1]  # the first test image of each class, in file order
    for split in ("train", "eval"):
        assert sorted(train[chosen[split]].tolist()) == [0, 1]
    assert not set(chosen["train"]) & set(chosen["eval"])
    # The hold-out is the seeded permutation's head: same seed, same split; all the rest trains.
    everything = dataset_gen.select_splits(train, test, 2, eval_per_class=1, seed=0)
    assert everything["eval"].tolist() == chosen["eval"].tolist()
    assert sorted(everything["train"].tolist() + everything["eval"].tolist()) == list(range(6))
    assert everything["test"].tolist() == [0, 1, 2, 3]


def test_select_splits_errors():
    train, test = np.array([0, 1, 0, 1]), np.array([0, 1])
    with pytest.raises(ValueError, match=r"class 0 has 2 training images; eval_per_class=2 and "
                                         r"train_per_class=None need 3\. Lower them\."):
        dataset_gen.select_splits(train, test, 2, eval_per_class=2)
    with pytest.raises(ValueError, match=r"class 0 has 1 test images; test_per_class=2 needs 2"):
        dataset_gen.select_splits(train, test, 2, eval_per_class=0, test_per_class=2)
    with pytest.raises(ValueError, match=r"eval_per_class must be an integer >= 0\. "
                                         r"Received eval_per_class=-1\."):
        dataset_gen.select_splits(train, test, 2, eval_per_class=-1)


def _run(tmp_path, **params):
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    properties = {"eval_per_class": 2, "seed": 0, **params}
    dataset_gen.Executor().Do({}, {"examples": [examples]}, properties)
    return examples


def test_executor_writes_three_splits_of_exact_pixels(tmp_path):
    examples = _run(tmp_path, source=SOURCE, train_per_class=5, test_per_class=3, seed=7)
    assert artifact_utils.decode_split_names(examples.split_names) == ["train", "eval", "test"]
    x_train, y_train, info = load_arrays(SOURCE, "train")
    x_test, y_test, _ = load_arrays(SOURCE, "test")
    chosen = dataset_gen.select_splits(y_train, y_test, 10, eval_per_class=2, train_per_class=5,
                                       test_per_class=3, seed=7)
    sources = {"train": (x_train, y_train), "eval": (x_train, y_train), "test": (x_test, y_test)}
    for split, per_class in (("train", 5), ("eval", 2), ("test", 3)):
        directory = os.path.join(examples.uri, f"Split-{split}")
        assert os.listdir(directory) == ["data_tfrecord-00000-of-00001.gz"]
        images, labels = io.read_examples(directory)
        assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
        x, y = sources[split]
        np.testing.assert_array_equal(labels, y[chosen[split]])
        # float32 pixels are exactly uint8 / 255, so the source bytes come back.
        np.testing.assert_array_equal(np.round(images * 255).astype(np.uint8), x[chosen[split]])
        np.testing.assert_array_equal(images, x[chosen[split]].astype(np.float32) / 255)
    recorded = json.loads(examples.get_string_custom_property("dataset_info"))
    assert recorded["num_classes"] == 10 and recorded["image_shape"] == [28, 28, 1]
    assert recorded["mean"] == list(info.mean) and recorded["std"] == list(info.std)
    assert examples.get_json_value_custom_property("split_sizes") == {
        "train": 50, "eval": 20, "test": 30}
    assert examples.get_string_custom_property("payload_format") == "FORMAT_TF_EXAMPLE"


def test_executor_rejects_a_source_without_test_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "one_split.npz", images=rng.integers(0, 256, (20, 8, 8), np.uint8),
             labels=np.arange(20) % 2)
    with pytest.raises(ValueError, match=r"has no 'test' split \(splits: train\); the Evaluator "
                                         r"needs the real test split"):
        _run(tmp_path, source=f"npz:{tmp_path / 'one_split.npz'}")
    assert not (tmp_path / "examples").exists()

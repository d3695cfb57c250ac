"""components/trainer_module.py: run_fn trains on condensed examples, reports its accuracy on
their real held-out Split-eval and exports serving_default."""

import json
import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from tfx import v1 as tfx

from components import dataset_gen, trainer_module
from m3d_tf import io

pytestmark = pytest.mark.tfx

MEAN, STD = [0.3], [0.2]
CONFIG = {"epochs": 2, "protocol": "dm", "seed": 3}


def _held_out(fmnist_small):
    """3 real Fashion-MNIST test images of each class, as M3DCondense's copied Split-eval."""
    keep = np.concatenate([np.flatnonzero(fmnist_small.y_test == c)[:3] for c in range(10)])
    return fmnist_small.x_test[keep].astype(np.float32) / 255.0, fmnist_small.y_test[keep]


def _condensed(directory, eval_images, eval_labels):
    """A stand-in for M3DCondense's output: Split-train with 2 synthetic images of each of 10
    classes, Split-eval with the given real images, metadata.json."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (20, 28, 28, 1)).astype(np.float32)
    labels = np.repeat(np.arange(10), 2)
    dataset_gen.write_split(os.path.join(directory, "Split-train"), images, labels)
    dataset_gen.write_split(os.path.join(directory, "Split-eval"), eval_images, eval_labels)
    with open(os.path.join(directory, "metadata.json"), "w") as f:
        json.dump({"num_classes": 10, "mean": MEAN, "std": STD}, f)
    return images, labels


def _fn_args(directory, tmp_path, config):
    return tfx.components.FnArgs(
        train_files=[os.path.join(directory, "Split-train", "*")],
        eval_files=[os.path.join(directory, "Split-eval", "*")],
        serving_model_dir=str(tmp_path / "serving"), model_run_dir=str(tmp_path / "run"),
        custom_config=config,
    )


def test_serving_default_parses_examples_and_normalises_inside(tmp_path, fmnist_small, caplog):
    directory = str(tmp_path / "condensed")
    eval_images, eval_labels = _held_out(fmnist_small)
    images, labels = _condensed(directory, eval_images, eval_labels)
    with caplog.at_level(logging.INFO, logger="absl"):
        trainer_module.run_fn(_fn_args(directory, tmp_path, CONFIG))

    serving = tf.saved_model.load(str(tmp_path / "serving")).signatures["serving_default"]
    written = os.path.join(directory, "Split-train", "data_tfrecord-00000-of-00001.gz")
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(written, compression_type="GZIP")]
    probabilities = serving(examples=tf.constant(serialized))["probabilities"].numpy()
    assert probabilities.shape == (20, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    # The same seeded training, rebuilt here: the exported signature is softmax(net((x - m) / s)).
    trainer, _, _ = trainer_module.train_network(
        images, labels, {"num_classes": 10, "mean": MEAN, "std": STD}, epochs=2, protocol="dm",
        arch="convnet", seed=3, flip=True,
    )
    logits = trainer.model((images - np.float32(MEAN)) / np.float32(STD), training=False)
    np.testing.assert_allclose(probabilities, tf.nn.softmax(logits).numpy(), atol=1e-5)
    # The logged accuracy is that network's on the 30 real held-out images of Split-eval.
    accuracy = trainer.accuracy((eval_images - np.float32(MEAN)) / np.float32(STD), eval_labels,
                                500)
    logged = re.findall(r"trainer_module: 2 epochs on 20 synthetic images, final loss [0-9.]+, "
                        r"accuracy ([0-9.]+) on 30 real held-out images \(Split-eval\)",
                        caplog.text)
    assert logged == [f"{accuracy:.4f}"]
    # Serving needs the image only: examples without a label work.
    unlabeled = io.write_examples(tmp_path / "unlabeled.tfrecord", images[:3], labels[:3])
    records = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(unlabeled)]
    for record in records:
        del record.features.feature["label"]
    out = serving(examples=tf.constant([r.SerializeToString() for r in records]))
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities[:3], atol=1e-6)
    assert tf.io.gfile.glob(str(tmp_path / "run" / "events.out.tfevents.*"))


def test_run_fn_rejects_unknown_config_and_foreign_examples(tmp_path, fmnist_small):
    directory = str(tmp_path / "condensed")
    _condensed(directory, *_held_out(fmnist_small))
    with pytest.raises(ValueError, match=r"trainer custom_config has unknown keys \['epoch'\]; "
                                         r"valid keys: epochs, protocol, arch, seed, flip\."):
        trainer_module.run_fn(_fn_args(directory, tmp_path, {"epoch": 3}))
    os.remove(os.path.join(directory, "metadata.json"))
    with pytest.raises(FileNotFoundError, match=r"metadata\.json is missing: components\."
                                                r"trainer_module trains on M3DCondense's "
                                                r"condensed_examples"):
        trainer_module.run_fn(_fn_args(directory, tmp_path, CONFIG))


def test_run_fn_rejects_an_eval_split_that_repeats_the_synthetic_train_split(tmp_path):
    # What M3DCondense wrote before it copied its input's Split-eval: the synthetic set twice.
    directory = str(tmp_path / "condensed")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (20, 28, 28, 1)).astype(np.float32)
    _condensed(directory, images, np.repeat(np.arange(10), 2))
    with pytest.raises(ValueError, match=r"Split-eval/\* holds the same images as Split-train: "
                                         r"the eval split must be real held-out images"):
        trainer_module.run_fn(_fn_args(directory, tmp_path, CONFIG))
    assert not os.path.exists(tmp_path / "serving")

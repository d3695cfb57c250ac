"""Tests for m3d_tf.callbacks: a real fit, read back with TensorBoard's own event reader."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from m3d_tf import callbacks, io
from m3d_tf.condenser import M3DCondenser

NAMES = ["T-shirt/top", "Trouser", "Ankle boot"]
TERMS = ("gauss_x0.25", "gauss_x0.5", "gauss_x1", "gauss_x2", "gauss_x4")  # M3D's default


def _condenser(num_classes=3, image_shape=(16, 16, 1)):
    """A tiny real M3DCondenser: ipc 2, factor 2, a one-block ConvNet of width 8."""
    condenser = M3DCondenser(
        num_classes, image_shape, ipc=2, factor=2, init="noise", net_width=8, net_depth=1,
        real_per_class=2, augmentation="none", ipm=2, seed=3,
    )
    return condenser.initialize((np.zeros((num_classes, *image_shape), np.float32),
                                 np.arange(num_classes)))


def _fit(model, board, steps, learning_rate=0.5):
    """Fits `steps` batches; returns {step: (logs, stored images, decoded images)}."""
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.5))
    record = {board.step: ({}, model.synthetic_images(), model.decoded_images())}

    def remember(batch, logs):
        step = board.step  # the board runs first, so it has counted this batch
        record[step] = (dict(logs), model.synthetic_images(), model.decoded_images())

    rng = np.random.default_rng(0)
    real = rng.random((2 * model.num_classes, *model.image_shape), dtype=np.float32)
    data = tf.data.Dataset.from_tensors((real, np.repeat(np.arange(model.num_classes), 2)))
    data = data.repeat()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False,
              callbacks=[board, keras.callbacks.LambdaCallback(on_train_batch_end=remember)])
    return record


def _events(log_dir):
    """{tag: (plugin name, [(step, value), ...])} read by TensorBoard's EventAccumulator."""
    reader = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    reader.Reload()
    return {
        tag: (reader.SummaryMetadata(tag).plugin_data.plugin_name,
              [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in reader.Tensors(tag)])
        for tag in reader.Tags()["tensors"]
    }


def _png(value):
    """A TensorBoard image summary value [width, height, png] -> uint8 (H, W, ch)."""
    return tf.io.decode_png(value[2]).numpy()


def test_every_tag_is_logged_with_the_right_steps_and_values(tmp_path):
    model = _condenser()
    board = callbacks.TensorBoardCallback(tmp_path, class_names=NAMES, image_every=3, decoded=True)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.5, decay_steps=1, decay_rate=0.5)
    record = _fit(model, board, steps=7, learning_rate=schedule)
    mean, std = board.log_evaluation([0.8, 0.9, 0.85])
    assert mean == pytest.approx(0.85) and std == pytest.approx(np.sqrt(0.005 / 3))

    events = _events(tmp_path)
    scalars = ["mmd/total", *(f"mmd/{t}" for t in TERMS), "learning_rate",
               "eval/accuracy_mean", "eval/accuracy_std"]
    images = ["synthetic/grid", "synthetic/decoded"]
    assert sorted(events) == sorted(scalars + images + ["eval/summary"])
    assert {tag: events[tag][0] for tag in events} == {
        **{tag: "scalars" for tag in scalars}, **{tag: "images" for tag in images},
        "eval/summary": "text",
    }
    for tag, key in [("mmd/total", "mmd"), *((f"mmd/{t}", f"mmd_{t}") for t in TERMS)]:
        assert [step for step, _ in events[tag][1]] == list(range(1, 8))
        for step, value in events[tag][1]:
            assert value == np.float32(record[step][0][key])
    # The rate each step used: 0.5 * 0.5^(step - 1) (the schedule at the step before it).
    assert [(s, float(v)) for s, v in events["learning_rate"][1]] == [
        (s, 0.5 * 0.5 ** (s - 1)) for s in range(1, 8)]

    labels = model.synthetic_labels()
    for tag, index, labels in [("synthetic/grid", 1, labels),
                               ("synthetic/decoded", 2, model.decoded_labels())]:
        assert [step for step, _ in events[tag][1]] == [0, 3, 6, 7]  # start, every 3, end
        for step, value in events[tag][1]:
            expected = io.image_grid(record[step][index], labels, 3, class_names=NAMES)
            np.testing.assert_array_equal(_png(value), expected)
    assert not np.array_equal(record[0][1], record[7][1])  # the pixels did move

    assert [(s, v) for s, v in events["eval/accuracy_mean"][1]] == [(7, np.float32(0.85))]
    assert events["eval/accuracy_std"][1][0][0] == 7
    assert events["eval/accuracy_std"][1][0][1] == np.float32(np.std([0.8, 0.9, 0.85]))
    table = events["eval/summary"][1][0][1].item().decode()
    assert table.splitlines() == [
        "| run | accuracy (%) |", "|---|---|", "| 1 | 80.00 |", "| 2 | 90.00 |", "| 3 | 85.00 |",
        "| mean ± std | 85.00 ± 4.08 |",
    ]


def test_intervals_and_resumed_steps(tmp_path):
    model = _condenser(num_classes=2, image_shape=(4, 4, 3))
    board = callbacks.TensorBoardCallback(tmp_path, scalar_every=2, image_every=4, initial_step=10)
    record = _fit(model, board, steps=5, learning_rate=0.25)
    events = _events(tmp_path)
    assert sorted(events) == sorted(["mmd/total", *(f"mmd/{t}" for t in TERMS), "learning_rate",
                                     "synthetic/grid"])
    assert [s for s, _ in events["mmd/total"][1]] == [12, 14]
    assert [(s, float(v)) for s, v in events["learning_rate"][1]] == [(12, 0.25), (14, 0.25)]
    assert [s for s, _ in events["synthetic/grid"][1]] == [10, 12, 15]
    for step, value in events["synthetic/grid"][1]:  # no names: rows = largest label + 1
        expected = io.image_grid(record[step][1], [0, 0, 1, 1], 2)
        np.testing.assert_array_equal(_png(value), expected)


def test_bad_arguments():
    cases = [
        (dict(image_every=0), "image_every must be a positive integer. Received image_every=0."),
        (dict(scalar_every=1.5),
         "scalar_every must be a positive integer. Received scalar_every=1.5."),
        (dict(initial_step=-1), "initial_step must be an integer >= 0. Received initial_step=-1."),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            callbacks.TensorBoardCallback("logs", **kwargs)
    with pytest.raises(ValueError, match=r"accuracies in \[0, 1\] \(fractions, not percent\). "
                                         r"Received \[85.0\]"):
        callbacks.log_evaluation("logs", [85.0], step=0)


def test_too_few_class_names_fail_at_the_start(tmp_path):
    board = callbacks.TensorBoardCallback(tmp_path, class_names=NAMES[:2])
    with pytest.raises(ValueError, match="got 2 class names but the synthetic labels reach "
                                         "class 2; pass one name per class"):
        _fit(_condenser(), board, steps=1)

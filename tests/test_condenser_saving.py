"""M3DCondenser as a .keras file: pixels, optimiser state and step round-trip; fitting continues."""

import json
import zipfile

import keras
import numpy as np
import pytest

from m3d_tf.condenser import M3DCondenser, load_condenser
from m3d_tf.data import balanced_batches

CLASSES = 3
REAL = 8
SMALL = dict(ipc=2, factor=2, real_per_class=REAL, net_width=16, seed=3)


@pytest.fixture(scope="module")
def real(fmnist_small):
    keep = fmnist_small.y_train < CLASSES
    return fmnist_small.x_train[keep], fmnist_small.y_train[keep]


def _fit(condenser, real, start, steps):
    condenser.fit(
        balanced_batches(real, REAL, num_classes=CLASSES, seed=1, start=start),
        steps_per_epoch=steps, epochs=1, verbose=0,
    )


def _new(real):
    condenser = M3DCondenser(CLASSES, (28, 28, 1), **SMALL).initialize(real)
    condenser.compile(learning_rate=0.05)
    return condenser


@pytest.mark.slow
def test_save_load_round_trips_pixels_optimizer_and_step_and_fit_continues(real, tmp_path):
    uninterrupted = _new(real)
    _fit(uninterrupted, real, 0, 4)

    condenser = _new(real)
    _fit(condenser, real, 0, 2)
    condenser.save(tmp_path / "c.keras")
    loaded = keras.saving.load_model(tmp_path / "c.keras")

    assert type(loaded) is M3DCondenser
    assert loaded.get_config() == condenser.get_config()
    np.testing.assert_array_equal(loaded.synthetic_images(), condenser.synthetic_images())
    assert int(loaded.optimizer.iterations.numpy()) == 2
    assert type(loaded.optimizer) is keras.optimizers.SGD
    assert loaded.optimizer.get_config() == condenser.optimizer.get_config()
    momentum = [v.numpy() for v in condenser.optimizer.variables]
    assert len(momentum) == len(loaded.optimizer.variables) >= 3  # iterations, rate, momentum
    for saved, restored in zip(momentum, loaded.optimizer.variables):
        np.testing.assert_array_equal(restored.numpy(), saved)
    assert np.abs(momentum[-1]).max() > 0  # the momentum buffer is not trivially zero

    _fit(loaded, real, 2, 2)  # the stream resumes at step 2, the randomness at iteration 2
    np.testing.assert_array_equal(loaded.synthetic_images(), uninterrupted.synthetic_images())
    assert int(loaded.optimizer.iterations.numpy()) == 4


def test_load_condenser_and_its_errors(real, tmp_path):
    condenser = M3DCondenser(CLASSES, (28, 28, 1), **SMALL).initialize(real)
    condenser.save(tmp_path / "c.keras")  # not compiled: pixels and config only
    loaded = load_condenser(tmp_path / "c.keras")
    np.testing.assert_array_equal(loaded.synthetic_images(), condenser.synthetic_images())
    assert float(loaded.initialized.numpy()) == 1.0

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.save(tmp_path / "other.keras")
    with pytest.raises(
        ValueError,
        match=r"other.keras holds a keras.Sequential model, not an M3DCondenser; "
        r"load it with keras.saving.load_model, or give a file written by M3DCondenser.save\(\).$",
    ):
        load_condenser(tmp_path / "other.keras")
    config = json.loads(zipfile.ZipFile(tmp_path / "other.keras").read("config.json"))["config"]
    with pytest.raises(
        ValueError,
        match=r"M3DCondenser.from_config\(\) got the config of another model \(it holds layers; "
        r"num_classes and image_shape missing\); give a config or .keras file written by",
    ):
        M3DCondenser.from_config(config)

    (tmp_path / "not.keras").write_text("plain text")
    with pytest.raises(ValueError, match=r"not.keras is not a .keras file \(a zip with config"):
        load_condenser(tmp_path / "not.keras")
    with pytest.raises(FileNotFoundError, match=r"absent.keras does not exist"):
        load_condenser(tmp_path / "absent.keras")

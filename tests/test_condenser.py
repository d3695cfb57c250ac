"""M3DCondenser: DM equivalence, determinism, replicas, options and input errors."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from m3d_tf import networks
from m3d_tf.condenser import M3DCondenser
from m3d_tf.data import balanced_batches

# Tiny but real: Fashion-MNIST, 3 classes, a narrow random ConvNet.
CLASSES = 3
REAL = 8
SMALL = dict(ipc=2, factor=2, real_per_class=REAL, net_width=16, seed=3)


@pytest.fixture(scope="module")
def real(fmnist_small):
    keep = fmnist_small.y_train < CLASSES
    images = fmnist_small.x_train[keep].astype(np.float32) / 255.0
    return images, fmnist_small.y_train[keep]


def _condenser(**overrides):
    kwargs = dict(SMALL, **overrides)
    return M3DCondenser(CLASSES, (28, 28, 1), **kwargs)


def _fit(real, steps, **overrides):
    condenser = _condenser(**overrides).initialize(real)
    condenser.compile(learning_rate=0.05)
    history = condenser.fit(
        balanced_batches(real, REAL, num_classes=CLASSES, seed=1),
        steps_per_epoch=steps, epochs=1, verbose=0,
    )
    return condenser, history


def test_linear_kernel_with_a_new_net_every_step_is_dm_objective(real):
    condenser = _condenser(kernel="linear", ipm=1, augmentation="none", factor=1)
    condenser.initialize(real)
    images, labels = next(iter(balanced_batches(real, REAL, num_classes=CLASSES, seed=1)))
    terms = condenser.matching_terms(images, labels, step=4).numpy()
    assert terms.shape == (CLASSES, 1)

    # DM (Zhao & Bilen): a random ConvNet per iteration, then per class the
    # squared distance between the mean embeddings, summed over classes.
    weights = networks.convnet_weights(
        condenser._seed(1, 4), 1, (28, 28), width=16, depth=3, norm="instancenorm"
    )
    embed = lambda x: networks.convnet_features(x, weights, depth=3).numpy().astype(np.float64)
    real_features = embed(images)
    syn_features = embed(condenser.synthetic_images())
    labels = labels.numpy()
    syn_labels = condenser.synthetic_labels()
    for c in range(CLASSES):
        expected = np.sum(
            (syn_features[syn_labels == c].mean(0) - real_features[labels == c].mean(0)) ** 2
        )
        np.testing.assert_allclose(terms[c, 0], expected, rtol=2e-4)


def test_the_step_logs_the_loss_it_minimised(real):
    condenser = _condenser().initialize(real)
    images, labels = next(iter(balanced_batches(real, REAL, num_classes=CLASSES, seed=1)))
    expected = condenser.matching_terms(images, labels, step=0).numpy()
    condenser.compile(learning_rate=0.05)
    history = condenser.fit(
        balanced_batches(real, REAL, num_classes=CLASSES, seed=1),
        steps_per_epoch=1, epochs=1, verbose=0,
    )
    np.testing.assert_allclose(history.history["mmd"][0], expected.sum(), rtol=1e-5)
    per_kernel = expected.sum(0)
    for name, value in zip(condenser.term_names, per_kernel):
        np.testing.assert_allclose(history.history[f"mmd_{name}"][0], value, rtol=1e-5)
    assert condenser.term_names == (
        "gauss_x0.25", "gauss_x0.5", "gauss_x1", "gauss_x2", "gauss_x4"
    )


def test_training_lowers_mmd_and_keeps_pixels_in_unit_interval(real):
    condenser = _condenser(kernel="gaussian_mix", ipm=1000, augmentation="none")
    condenser.initialize(real)
    images, labels = next(iter(balanced_batches(real, REAL, num_classes=CLASSES, seed=1)))
    before = float(tf.reduce_sum(condenser.matching_terms(images, labels, 0)))
    condenser.compile(learning_rate=2.0)  # large: the clamp must hold
    condenser.fit(
        balanced_batches(real, REAL, num_classes=CLASSES, seed=1).take(1).repeat(),
        steps_per_epoch=15, epochs=1, verbose=0,
    )
    after = float(tf.reduce_sum(condenser.matching_terms(images, labels, 0)))
    assert after < 0.8 * before
    pixels = condenser.synthetic_images()
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert np.mean((pixels == 0.0) | (pixels == 1.0)) > 0.01  # the clamp was active


@pytest.fixture(scope="module")
def two_steps(real):
    """The set after 2 plain (graph mode, one device) steps."""
    condenser, _ = _fit(real, 2)
    return condenser.synthetic_images()


def test_same_seed_same_data_gives_identical_set(real, two_steps):
    again, _ = _fit(real, 2)
    np.testing.assert_array_equal(again.synthetic_images(), two_steps)
    initial = _condenser().initialize(real).synthetic_images()
    assert np.abs(two_steps - initial).max() > 1e-3  # training moved the pixels


def test_ipm_keeps_the_net_for_ipm_steps(real):
    condenser = _condenser(ipm=5, augmentation="none").initialize(real)
    images, labels = next(iter(balanced_batches(real, REAL, num_classes=CLASSES, seed=1)))
    terms = [condenser.matching_terms(images, labels, s).numpy() for s in (0, 4, 5)]
    np.testing.assert_array_equal(terms[0], terms[1])  # same net, same data
    assert not np.array_equal(terms[0], terms[2])  # a new net at step 5


def test_accessors_and_dataset(real):
    condenser = _condenser().initialize(real)
    assert condenser.synthetic_images().shape == (CLASSES * 2, 28, 28, 1)
    np.testing.assert_array_equal(condenser.synthetic_labels(), [0, 0, 1, 1, 2, 2])
    decoded = condenser.decoded_images()
    assert decoded.shape == (CLASSES * 2 * 4, 28, 28, 1)
    np.testing.assert_array_equal(condenser.decoded_labels(), np.repeat(np.arange(3), 8))
    images, labels = next(iter(condenser.as_dataset(batch_size=100)))
    np.testing.assert_array_equal(images.numpy(), decoded)
    np.testing.assert_array_equal(labels.numpy(), condenser.decoded_labels())
    stored = list(condenser.as_dataset(decoded=False).as_numpy_iterator())
    assert len(stored) == CLASSES * 2
    np.testing.assert_array_equal(stored[3][0], condenser.synthetic_images()[3])


def test_subset_of_decoded_images_per_step(real):
    condenser = _condenser(ipc=3, max_decoded_per_class=5).initialize(real)
    subset = condenser._synthetic_subset(7).numpy()
    assert subset.shape == (CLASSES, 5)
    for c in range(CLASSES):  # distinct images of the class's own decoded block
        assert len(set(subset[c])) == 5
        assert subset[c].min() >= 12 * c and subset[c].max() < 12 * (c + 1)
    assert not np.array_equal(subset, condenser._synthetic_subset(8).numpy())


def test_config_round_trip():
    condenser = _condenser(kernel="rbf_fixed", gammas=(0.5, 2.0), mean=0.3, std=0.4)
    config = json.loads(json.dumps(condenser.get_config()))
    clone = M3DCondenser.from_config(config)
    assert clone.get_config() == condenser.get_config()
    assert clone.term_names == ("rbf_g0.5", "rbf_g2")


def test_bfloat16_compute_tracks_float32(real):
    images, labels = next(iter(balanced_batches(real, REAL, num_classes=CLASSES, seed=1)))
    full = _condenser().initialize(real).matching_terms(images, labels, 0).numpy()
    half = _condenser(compute_dtype="bfloat16").initialize(real)
    half_terms = half.matching_terms(images, labels, 0).numpy()
    assert half_terms.dtype == np.float32
    np.testing.assert_allclose(half_terms.sum(), full.sum(), rtol=0.05)


def test_xla_computes_the_same_loss_and_trains(real):
    condenser = _condenser().initialize(real)
    images, labels = next(iter(balanced_batches(real, REAL, num_classes=CLASSES, seed=1)))

    def loss(step):
        return tf.reduce_sum(condenser.matching_terms(images, labels, step))

    # A constant step: XLA folds the random draws with TensorFlow's own kernels,
    # so the same net and augmentation meet XLA-compiled math.
    graph = tf.function(lambda: loss(2))()
    xla = tf.function(lambda: loss(2), jit_compile=True)()
    np.testing.assert_allclose(xla.numpy(), graph.numpy(), rtol=1e-5)

    # fit(jit_compile=True) trains. Its step is a variable, and XLA's own
    # stateless generator draws other numbers than TensorFlow's from the same
    # seed: XLA runs repeat each other, not the plain run (README: speed).
    condenser.compile(learning_rate=0.05, jit_compile=True)
    before = condenser.synthetic_images()
    history = condenser.fit(
        balanced_batches(real, REAL, num_classes=CLASSES, seed=1),
        steps_per_epoch=1, epochs=1, verbose=0,
    )
    assert np.isfinite(history.history["mmd"][0])
    assert np.abs(condenser.synthetic_images() - before).max() > 1e-4


_MIRRORED = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from m3d_tf.condenser import M3DCondenser
    from m3d_tf.data import balanced_batches

    data = np.load(sys.argv[1])
    real = (data["images"], data["labels"])

    def run(strategy):
        with strategy.scope():
            condenser = M3DCondenser(3, (28, 28, 1), ipc=2, factor=2, real_per_class=8,
                                     net_width=16, seed=3)
            condenser.initialize(real)
            condenser.compile(learning_rate=0.05)
        condenser.fit(balanced_batches(real, 8, num_classes=3, seed=1),
                      steps_per_epoch=2, epochs=1, verbose=0)
        return condenser.synthetic_images()

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    np.save(sys.argv[2], run(mirrored))
    """
)


def test_mirrored_strategy_on_two_devices_matches_one(real, two_steps, tmp_path):
    # Logical devices must be configured before TensorFlow initialises: use a
    # fresh interpreter.
    np.savez(tmp_path / "real.npz", images=real[0], labels=real[1])
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "real.npz"), str(tmp_path / "out.npy")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), two_steps, atol=1e-5)


# === Bad input ===


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"ipc must be a positive integer. Received ipc=0"):
        _condenser(ipc=0)
    with pytest.raises(ValueError, match=r"factor=3 does not divide"):
        _condenser(factor=3)
    with pytest.raises(ValueError, match=r"Unknown kernel='gauss'; valid choices"):
        _condenser(kernel="gauss")
    with pytest.raises(ValueError, match=r"image_shape must be \(height, width, channels\)"):
        M3DCondenser(3, (28, 28))
    with pytest.raises(ValueError, match=r"std needs one value per channel \(1\), or one for all"):
        _condenser(std=(0.2, 0.3))


def test_initialize_errors(real):
    images, labels = real
    condenser = _condenser()
    with pytest.raises(ValueError, match=r"must have shape \(N, 28, 28, 1\).*\(24, 28, 28, 3\)"):
        condenser.initialize((np.repeat(images[:24], 3, axis=-1), labels[:24]))
    with pytest.raises(ValueError, match=r"must be float in \[0, 1\] \(or uint8\). Received dtype int32"):
        condenser.initialize((images.astype(np.int32), labels))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\). Received labels in \[0, 7\]"):
        condenser.initialize((images, np.where(labels == 2, 7, labels)))
    bad = images.copy()
    bad[5, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"contain NaN or Inf"):
        condenser.initialize((bad, labels))
    with pytest.raises(ValueError, match=r"300 images but 299 labels"):
        condenser.initialize((images, labels[:-1]))
    few = np.concatenate([np.flatnonzero(labels != 1), np.flatnonzero(labels == 1)[:5]])
    with pytest.raises(ValueError, match=r"class 1 has 5 .*needs 8"):
        condenser.initialize((images[few], labels[few]))
    empty = tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 28, 28, 1), np.float32), np.zeros((0,), np.int64))
    )
    with pytest.raises(ValueError, match=r"empty dataset"):
        condenser.initialize(empty)


def test_fit_errors(real):
    images, labels = real
    condenser = _condenser()
    condenser.compile()
    with pytest.raises(ValueError, match=r"not initialised: call condenser.initialize"):
        condenser.fit(balanced_batches(real, REAL, num_classes=CLASSES))
    condenser.initialize(real)
    with pytest.raises(ValueError, match=r"needs a tf.data.Dataset"):
        condenser.fit(images, labels)
    with pytest.raises(ValueError, match=r"empty dataset"):
        condenser.fit(balanced_batches(real, REAL, num_classes=CLASSES).take(0))
    nan_batch = tf.data.Dataset.from_tensors(
        (tf.fill((24, 28, 28, 1), float("nan")), tf.repeat(tf.range(3), 8))
    )
    with pytest.raises(ValueError, match=r"NaN or Inf"):
        condenser.fit(nan_batch)
    with pytest.raises(ValueError, match=r"Pass either optimizer= or learning_rate="):
        condenser.compile(optimizer=keras.optimizers.SGD(), learning_rate=1.0)

"""M3DCondenser.fit on any labelled tf.data stream: routing, masked MMD, per-batch checks, TFDS.

The fast path (a `balanced_batches` stream) is held to the numbers the condenser gave before any
other stream was accepted; the masked path to the NumPy oracle of tests/reference.py.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import reference
from m3d_tf import mmd, networks
from m3d_tf.condenser import M3DCondenser
from m3d_tf.data import balanced_batches
from m3d_tf.real_batches import BatchError, checked_batches

CLASSES = 3
REAL = 8
SMALL = dict(ipc=2, factor=2, real_per_class=REAL, net_width=16, seed=3)

# Recorded at commit af036e3 (before fit took other streams), this test's setting, on the
# project's machines: matching_terms(first balanced batch, step 0) and fit's mmd at steps 0..2.
TODAY_TERMS_0 = [
    [0.27035608887672424, 0.25684690475463867, 0.20370528101921082, 0.1348710060119629,
     0.07874399423599243],
    [0.31045418977737427, 0.28483954071998596, 0.20525717735290527, 0.12227100133895874,
     0.06570470333099365],
    [0.24002188444137573, 0.20661357045173645, 0.168190598487854, 0.12077271938323975,
     0.07546955347061157],
]
TODAY_MMD = [2.7441225051879883, 3.163516044616699, 2.918856620788574]


@pytest.fixture(scope="module")
def real(fmnist_small):
    keep = fmnist_small.y_train < CLASSES
    return fmnist_small.x_train[keep], fmnist_small.y_train[keep]  # uint8, int64


def _floats(real):
    return real[0].astype(np.float32) / 255.0, real[1]


def _condenser(real, **overrides):
    return M3DCondenser(CLASSES, (28, 28, 1), **dict(SMALL, **overrides)).initialize(real)


def _batches(*pairs):
    """A stream of the given (images, labels) batches, in order (no balanced_batches mark)."""
    images = [p[0] for p in pairs]
    labels = [p[1] for p in pairs]
    return tf.data.Dataset.from_generator(
        lambda: zip(images, labels),
        output_signature=(
            tf.TensorSpec((None,) + images[0].shape[1:], tf.as_dtype(images[0].dtype)),
            tf.TensorSpec((None,) + labels[0].shape[1:], tf.as_dtype(labels[0].dtype)),
        ),
    )


def _pick(real, counts, seed):
    """A batch of uint8 images with counts[c] images of class c, classes interleaved at random."""
    images, labels = real
    rng = np.random.default_rng(seed)
    index = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in enumerate(counts)]
    )
    index = rng.permutation(index)
    return images[index], labels[index]


def _oracle_terms(condenser, images, labels, step):
    """(C, K) float64 MMD^2 of a batch: the step's net, then the NumPy oracle (no augmentation)."""
    weights = networks.convnet_weights(
        condenser._seed(1, step // condenser.ipm), 1, (28, 28), width=16, depth=3,
        norm="instancenorm",
    )
    embed = lambda x: networks.convnet_features(x, weights, depth=3).numpy()
    real_features = embed(np.asarray(images, np.float32) / 255.0)
    syn_features = embed(condenser.decoded_images())
    return reference.np_class_mmd2(
        syn_features, condenser.decoded_labels(), real_features, labels, CLASSES
    )


# === The fast path: balanced_batches gives today's numbers ===


def test_balanced_batches_give_todays_loss_exactly(real):
    data = _floats(real)
    condenser = _condenser(data)
    images, labels = next(iter(balanced_batches(data, REAL, num_classes=CLASSES, seed=1)))
    terms = condenser.matching_terms(images, labels, step=0).numpy()
    np.testing.assert_array_equal(terms, np.float32(TODAY_TERMS_0))
    condenser.compile(learning_rate=0.05)
    history = condenser.fit(
        balanced_batches(data, REAL, num_classes=CLASSES, seed=1),
        steps_per_epoch=1, epochs=3, verbose=0,
    )
    assert history.history["mmd"] == TODAY_MMD


def test_balanced_batch_is_cut_into_class_blocks_as_before(real):
    """Today's formula, written out: sort by class, reshape to (C, n, D), grouped_mmd2."""
    data = _floats(real)
    condenser = _condenser(data, augmentation="none")
    images, labels = next(iter(balanced_batches(data, REAL, num_classes=CLASSES, seed=2)))
    weights = networks.convnet_weights(
        condenser._seed(1, 7 // 5), 1, (28, 28), width=16, depth=3, norm="instancenorm"
    )
    real_features = networks.convnet_features(images, weights, depth=3)
    grouped = tf.reshape(tf.gather(real_features, tf.argsort(labels, stable=True)), (3, 8, -1))
    syn_features = condenser._synthetic_features(weights, condenser._seed(2, 7), 7)
    want = mmd.grouped_mmd2(syn_features, grouped)
    np.testing.assert_array_equal(condenser.matching_terms(images, labels, 7).numpy(), want)


def test_only_the_stream_balanced_batches_returned_skips_the_per_batch_test(real):
    data = _floats(real)
    condenser = M3DCondenser(CLASSES, (28, 28, 1), **SMALL)
    for stream, route in [
        (balanced_batches(data, REAL, num_classes=CLASSES, seed=1), "balanced"),
        (balanced_batches(data, REAL, num_classes=CLASSES, seed=1).take(5), "per_batch"),
        (balanced_batches(data, 4, num_classes=CLASSES, seed=1), "per_batch"),  # 4 per class
        (balanced_batches(data, REAL, num_classes=CLASSES, classes=[0, 2]), "per_batch"),
        (tf.data.Dataset.from_tensor_slices(data).batch(24), "per_batch"),
    ]:
        assert condenser._route_for(stream) == route


# === The masked path: any mix of classes ===


@pytest.mark.parametrize("counts", [(16, 8, 0), (11, 6, 7), (1, 0, 4)])
def test_any_mix_of_classes_matches_the_oracle(real, counts):
    condenser = _condenser(real, augmentation="none")
    images, labels = _pick(real, counts, seed=sum(counts))
    floats = images.astype(np.float32) / 255.0
    terms = condenser.matching_terms(floats, labels, step=3).numpy()
    want = _oracle_terms(condenser, images, labels, 3)
    np.testing.assert_allclose(terms, want, rtol=1e-4, atol=1e-6)
    for c, k in enumerate(counts):
        assert (terms[c] == 0).all() == (k == 0)  # an absent class contributes nothing


def test_a_later_batch_of_the_same_size_with_other_classes_is_not_misread(real):
    """Issue 14: fit checked only its first batch, then cut every batch into class blocks."""
    first = _pick(real, (8, 8, 8), seed=1)
    second = _pick(real, (12, 12, 0), seed=2)  # 24 images, like a balanced batch
    condenser = _condenser(real, augmentation="none")
    condenser.compile(learning_rate=0.0)  # the pixels stay: both steps see the initial set
    history = condenser.fit(_batches(first, second), epochs=2, steps_per_epoch=1, verbose=0)
    for step, (images, labels) in enumerate((first, second)):
        want = _oracle_terms(condenser, images, labels, step)
        np.testing.assert_allclose(history.history["mmd"][step], want.sum(), rtol=1e-4)
        kernel_0 = history.history[f"mmd_{condenser.term_names[0]}"][step]
        np.testing.assert_allclose(kernel_0, want[:, 0].sum(), rtol=1e-4)


def test_uint8_float_and_label_layouts_reach_the_step_alike(real):
    images, labels = _pick(real, (10, 9, 5), seed=4)
    floats = images.astype(np.float32) / 255.0
    layouts = [
        (images, labels),  # uint8, int64 (B,)
        (floats, labels.astype(np.uint8)),
        (floats.astype(np.float64), labels[:, None].astype(np.int32)),  # (B, 1) labels
        (floats[..., 0], labels),  # (B, H, W): the single channel left out
    ]
    for layout in layouts:
        stream = checked_batches(_batches(layout), CLASSES, (28, 28, 1))
        assert stream.element_spec == (
            tf.TensorSpec((None, 28, 28, 1), tf.float32), tf.TensorSpec((None,), tf.int32)
        )
        got_images, got_labels = next(iter(stream))
        np.testing.assert_array_equal(got_images.numpy(), floats)  # uint8 / 255: the same floats
        np.testing.assert_array_equal(got_labels.numpy(), labels)


# === Bad input: what the dataset yields, before any work; every batch, as it is read ===


def _spec_cases(real):
    images, labels = real[0][:24], real[1][:24]
    floats = images.astype(np.float32) / 255.0
    one_hot = np.eye(CLASSES, dtype=np.float32)[labels]
    ds = tf.data.Dataset.from_tensor_slices
    return [
        (ds(images).batch(8),
         r"the dataset yields only images .*needs their labels too: give \(images, labels\)"),
        (ds({"image": images, "label": labels}).batch(8),
         r"the dataset yields dicts with keys \['image', 'label'\].*as_supervised=True"),
        (ds((images, labels, labels)).batch(8),
         r"the dataset yields 3-tuples; fit\(\) needs \(images, labels\) pairs"),
        (ds((images, labels.astype(np.float32))).batch(8),
         r"labels must be integer class indices in \[0, 3\). Received dtype float32; cast whole-number"),
        (ds((images, one_hot)).batch(8),
         r"labels of shape \(None, 3\) look one-hot; pass class indices: .*tf.argmax"),
        (ds((images, np.stack([labels, labels], 1))).batch(8),
         r"labels must have shape \(batch,\) or \(batch, 1\). Received \(None, 2\)"),
        (ds((images.astype(np.int32), labels)).batch(8),
         r"images must be uint8 \(0..255\) or float in \[0, 1\]. Received dtype int32"),
        (ds((floats, labels)),
         r"the dataset yields single images of shape \(28, 28, 1\), not batches; batch it first"),
        (ds((floats[:, :14], labels)).batch(8),
         r"image batches must have shape \(batch, 28, 28, 1\) to match image_shape. Received \(None, 14, 28, 1\)"),
        (tf.data.Dataset.from_tensors((floats, labels[:20])),
         r"batches of 24 images carry 20 labels"),
    ]


def test_unusable_datasets_are_refused_before_any_work(real):
    condenser = _condenser(real)
    condenser.compile()
    before = condenser.synthetic_images()
    for dataset, message in _spec_cases(real):
        with pytest.raises(ValueError, match="^fit\\(\\): " + message):
            condenser.fit(dataset, verbose=0)
    assert int(condenser.optimizer.iterations.numpy()) == 0
    np.testing.assert_array_equal(condenser.synthetic_images(), before)


def test_every_batch_is_checked_as_it_is_read(real):
    good = _pick(real, (8, 8, 8), seed=1)
    floats = (good[0].astype(np.float32) / 255.0, good[1])
    cases = [
        ((floats[0] * 255.0, floats[1]), r"float images must lie in \[0, 1\] with no NaN or Inf; "
         r"a batch has values in \[0, 255\]. Divide 0..255 pixels by 255"),
        ((np.where(floats[0] > 0.5, np.nan, floats[0]), floats[1]),
         r"float images must lie in \[0, 1\] with no NaN or Inf; a batch has values in \["),
        ((floats[0], np.where(floats[1] == 2, 5, floats[1])),
         r"labels must lie in \[0, 3\); a batch has labels in \[0, 5\]"),
        ((floats[0], floats[1] - 1),
         r"labels must lie in \[0, 3\); a batch has labels in \[-1, 1\]"),
        ((floats[0][:0], floats[1][:0]), r"a batch has 0 images and 0 labels; every batch needs"),
    ]
    condenser = _condenser(real)
    condenser.compile(learning_rate=0.05)
    for bad, message in cases:  # one condenser: the step is traced once
        start = int(condenser.optimizer.iterations.numpy())
        with pytest.raises(BatchError, match="^fit\\(\\): " + message + "[^\n]*$") as caught:
            condenser.fit(_batches(floats, floats, bad, floats), epochs=1, steps_per_epoch=4,
                          verbose=0)
        assert isinstance(caught.value, ValueError)
        assert isinstance(caught.value, tf.errors.InvalidArgumentError)
        assert int(condenser.optimizer.iterations.numpy()) == start + 2  # stopped at the bad one


def test_runtime_sizes_are_checked_when_the_spec_leaves_them_open(real):
    images, labels = real
    floats = images[:24].astype(np.float32) / 255.0
    open_size = tf.data.Dataset.from_generator(
        lambda: iter([(np.zeros((4, 32, 32, 1), np.float32), labels[:4])]),
        output_signature=(tf.TensorSpec((None, None, None, 1), tf.float32),
                          tf.TensorSpec((None,), tf.int64)),
    )
    uneven = tf.data.Dataset.zip(
        tf.data.Dataset.from_tensor_slices(floats).batch(10),
        tf.data.Dataset.from_tensor_slices(labels[:24]).batch(7),
    )
    condenser = _condenser(real)
    condenser.compile()
    with pytest.raises(BatchError, match=r"^fit\(\): a batch has images of size \[32 32 1\]; "
                       r"image_shape is \[28, 28, 1\]. Resize them in the pipeline.$"):
        condenser.fit(open_size, verbose=0)
    with pytest.raises(BatchError, match=r"^fit\(\): a batch has 10 images and 7 labels"):
        condenser.fit(uneven, verbose=0)


def test_initialize_refuses_float_labels_and_0_255_floats(real):
    images, labels = real
    condenser = M3DCondenser(CLASSES, (28, 28, 1), **SMALL)
    with pytest.raises(
        ValueError, match=r"labels must be integer class indices. Received dtype float64"
    ):
        condenser.initialize((images, labels.astype(np.float64) + 0.7))
    with pytest.raises(
        ValueError, match=r"float images must lie in \[0, 1\]. Received values in \[0, 255\]"
    ):
        condenser.initialize((images.astype(np.float32), labels))
    with pytest.raises(ValueError, match=r"std must be finite per channel"):
        M3DCondenser(CLASSES, (28, 28, 1), std=float("nan"))


# === Two replicas, uneven shards with different class counts ===

_MIRRORED = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from m3d_tf.condenser import M3DCondenser

    data = np.load(sys.argv[1])
    real = (data["images"], data["labels"])

    def run(strategy):
        with strategy.scope():
            condenser = M3DCondenser(3, (28, 28, 1), ipc=2, factor=2, real_per_class=8,
                                     net_width=16, seed=3)
            condenser.initialize(real)
            condenser.compile(learning_rate=0.05)
        # Shuffled, so shards differ in class counts; the last batch (1 image) leaves one
        # replica a shard of 1 and the other an empty one.
        ds = tf.data.Dataset.from_tensor_slices(real).shuffle(
            300, seed=5, reshuffle_each_iteration=False)  # keras reads a batch ahead (build)
        ds = ds.take(49).batch(24)
        history = condenser.fit(ds, epochs=1, verbose=0)
        return condenser.synthetic_images(), np.array(history.history["mmd"])

    one = run(tf.distribute.get_strategy())
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    two = run(mirrored)
    np.savez(sys.argv[2], one=one[0], two=two[0], one_mmd=one[1], two_mmd=two[1])
    """
)


@pytest.mark.slow
def test_mirrored_strategy_with_uneven_unbalanced_shards_matches_one_device(real, tmp_path):
    np.savez(tmp_path / "real.npz", images=real[0], labels=real[1])
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "real.npz"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["two_mmd"], out["one_mmd"], rtol=1e-5)
    np.testing.assert_allclose(out["two"], out["one"], atol=1e-5)


# === Real Fashion-MNIST through tfds.load, the plain Keras way ===


@pytest.mark.slow
def test_fit_on_tfds_load_shuffle_batch():
    import tensorflow_datasets as tfds

    from m3d_tf.data.catalog import open_tfds

    open_tfds("fashion_mnist")  # prepares TFDS's copy offline once (Debian's files), then cached
    ds = tfds.load("fashion_mnist", split="train[:2000]", as_supervised=True, download=False)
    assert ds.element_spec == (tf.TensorSpec((28, 28, 1), tf.uint8), tf.TensorSpec((), tf.int64))
    ds = ds.shuffle(2000, seed=0).batch(100)
    condenser = M3DCondenser(10, (28, 28, 1), ipc=1, factor=2, net_width=16, seed=0,
                             mean=0.286, std=0.353, ipm=1000, augmentation="none")
    condenser.initialize(ds.take(5))
    condenser.compile(learning_rate=1.0)
    probe = next(iter(ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))))
    before = float(tf.reduce_sum(condenser.matching_terms(*probe, step=0)))
    history = condenser.fit(ds, steps_per_epoch=6, epochs=1, verbose=0)
    assert np.isfinite(history.history["mmd"][0])
    after = float(tf.reduce_sum(condenser.matching_terms(*probe, step=0)))
    assert after < before  # six steps on unbalanced real batches moved the set toward the data
    pixels = condenser.synthetic_images()
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0

"""Tests for m3d_tf.parameterization against the NumPy oracles in tests/reference.py.

Tolerances: float32 bilinear resizing against the float64 oracle agrees to 1e-6 on [0, 1] pixels.
"""

import re

import numpy as np
import pytest
import tensorflow as tf

import reference
from m3d_tf import parameterization as param


def _images(rng, *shape):
    return rng.uniform(size=shape).astype(np.float32)


# === Decode ===


@pytest.mark.parametrize(
    "shape,factor", [((2, 8, 8, 3), 2), ((1, 12, 12, 1), 3), ((2, 8, 8, 2), 4), ((2, 8, 12, 3), 2)]
)
def test_decode_matches_oracle(shape, factor):
    images = _images(np.random.default_rng(0), *shape)
    got = param.decode(images, factor)
    assert got.shape == (shape[0] * factor**2,) + shape[1:]
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got, reference.np_decode(images, factor), atol=1e-6)


def test_decode_hand_worked_4x4():
    image = np.array(
        [
            [0, 4, 1, 1],
            [8, 12, 1, 1],
            [2, 2, 3, 5],
            [2, 2, 7, 9],
        ],
        np.float32,
    )[None, :, :, None]
    images = np.concatenate([image, image + 100])
    # Upsampling a 2-pixel axis to 4 with half-pixel centres weights the second pixel by
    # 0, 1/4, 3/4, 1: [p, q] -> [p, (3p + q) / 4, (p + 3q) / 4, q].
    top_left = [[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]]
    bottom_right = [[3, 3.5, 4.5, 5], [4, 4.5, 5.5, 6], [6, 6.5, 7.5, 8], [7, 7.5, 8.5, 9]]
    crops = np.array([top_left, np.ones((4, 4)), np.full((4, 4), 2.0), bottom_right])
    want = np.concatenate([crops, crops + 100])[..., None]
    np.testing.assert_allclose(param.decode(images, 2), want, atol=1e-5)


def test_decode_factor_one_is_identity():
    images = tf.constant(_images(np.random.default_rng(1), 3, 6, 6, 3))
    assert param.decode(images, 1) is images


def test_decode_gradient_is_its_transpose():
    # decode is linear: <decode(x), w> = <x, d<decode(x), w>/dx>.
    rng = np.random.default_rng(2)
    x = tf.constant(_images(rng, 2, 8, 8, 3))
    w = _images(rng, 8, 8, 8, 3)
    with tf.GradientTape() as tape:
        tape.watch(x)
        inner = tf.reduce_sum(param.decode(x, 2) * w)
    grad = tape.gradient(inner, x).numpy()
    assert np.abs(grad).max() > 0
    np.testing.assert_allclose(np.sum(x.numpy() * grad), inner.numpy(), rtol=1e-5)


def test_decode_under_tf_function_with_dynamic_batch():
    decode = tf.function(
        lambda x: param.decode(x, 2), input_signature=[tf.TensorSpec((None, 8, 8, 1))]
    )
    rng = np.random.default_rng(3)
    for n in (1, 3):
        images = _images(rng, n, 8, 8, 1)
        np.testing.assert_allclose(decode(images), reference.np_decode(images, 2), atol=1e-6)


def test_decode_labels_repeats_each_label():
    np.testing.assert_array_equal(param.decode_labels([3, 7], 2), [3, 3, 3, 3, 7, 7, 7, 7])
    np.testing.assert_array_equal(param.decode_labels([3, 7], 1), [3, 7])


def test_clamp01():
    np.testing.assert_array_equal(
        param.clamp01([-0.5, 0.0, 0.25, 1.0, 1.5]), [0.0, 0.0, 0.25, 1.0, 1.0]
    )


# === Factor ===


def test_validate_factor_accepts_divisors():
    param.validate_factor((32, 32, 3), 2)
    param.validate_factor((28, 28), 4)
    param.validate_factor((8, 12, 1), 1)


@pytest.mark.parametrize(
    "shape,factor,message",
    [
        (
            (32, 32, 3),
            3,
            "factor=3 does not divide the image size 32x32; "
            "use a factor that divides both: 1, 2, 4, 8, 16, 32.",
        ),
        (
            (28, 28, 1),
            8,
            "factor=8 does not divide the image size 28x28; "
            "use a factor that divides both: 1, 2, 4, 7, 14, 28.",
        ),
        (
            (8, 12, 3),
            3,
            "factor=3 does not divide the image size 8x12; "
            "use a factor that divides both: 1, 2, 4.",
        ),
        ((32, 32, 3), 0, "factor must be a positive integer. Received factor=0."),
        ((32, 32, 3), 2.0, "factor must be a positive integer. Received factor=2.0."),
    ],
)
def test_validate_factor_errors(shape, factor, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        param.validate_factor(shape, factor)


# === Initialisation ===


def _classes(rng, counts, shape=(8, 8, 3)):
    # Class c's pixels lie in [c/10, c/10 + 0.1): a stored image's class shows in its values.
    return [(c + _images(rng, n, *shape)) / 10 for c, n in enumerate(counts)]


def test_mix_init_is_a_mosaic_of_distinct_real_images_of_its_class():
    rng = np.random.default_rng(4)
    ipc, factor = 3, 2
    classes = _classes(rng, [12, 15, 20])
    stored = param.initial_images(classes, ipc, factor, init="mix", seed=1)
    assert stored.shape == (9, 8, 8, 3) and stored.dtype == np.float32
    for c, real in enumerate(classes):
        downsampled = real[:, ::2, ::2, :]  # torch nearest for a factor of 2 keeps pixels 0, 2, ...
        used = []
        for image in stored[c * ipc : (c + 1) * ipc]:
            for i in range(factor):
                for j in range(factor):
                    tile = image[i * 4 : (i + 1) * 4, j * 4 : (j + 1) * 4]
                    matches = np.flatnonzero((downsampled == tile).all(axis=(1, 2, 3)))
                    assert len(matches) == 1
                    used.append(matches[0])
        assert len(set(used)) == ipc * factor**2


def test_decoding_a_mix_image_upsamples_its_real_images():
    rng = np.random.default_rng(5)
    classes = _classes(rng, [9, 9], shape=(12, 12, 1))
    for factor in (2, 3):
        ipc = 9 // factor**2
        stored = param.initial_images(classes, ipc, factor, init="mix", seed=2)
        decoded = param.decode(stored, factor).numpy()
        for c, real in enumerate(classes):
            upsampled = reference.np_resize_bilinear(real[:, ::factor, ::factor, :], 12, 12)
            for image in decoded[c * ipc * factor**2 : (c + 1) * ipc * factor**2]:
                errors = np.abs(upsampled - image).max(axis=(1, 2, 3))
                assert errors.min() < 1e-6


def test_real_init_picks_distinct_real_images():
    rng = np.random.default_rng(6)
    classes = _classes(rng, [5, 7])
    stored = param.initial_images(classes, 4, 2, init="real", seed=3)
    assert stored.shape == (8, 8, 8, 3)
    for c, real in enumerate(classes):
        picks = [
            np.flatnonzero((real == image).all(axis=(1, 2, 3)))
            for image in stored[c * 4 : (c + 1) * 4]
        ]
        assert all(len(p) == 1 for p in picks)
        assert len({p[0] for p in picks}) == 4


def test_noise_init_is_clipped_gaussian_around_half():
    stored = param.initial_images([np.zeros((0, 16, 16, 3))] * 2, 10, 2, init="noise", seed=4)
    assert stored.shape == (20, 16, 16, 3) and stored.dtype == np.float32
    assert stored.min() == 0.0 and stored.max() == 1.0
    assert abs(stored.mean() - 0.5) < 0.01
    clipped = np.mean((stored == 0.0) | (stored == 1.0))
    assert 0.03 < clipped < 0.065  # P(|N(0, 0.25^2)| > 0.5) = 4.6%
    inside = stored[(stored > 0) & (stored < 1)]
    assert 0.2 < inside.std() < 0.25


@pytest.mark.parametrize("init", param.INITS)
def test_init_is_deterministic_per_seed_and_class(init):
    rng = np.random.default_rng(7)
    classes = _classes(rng, [10, 10, 10])
    first = param.initial_images(classes, 2, 2, init=init, seed=11)
    np.testing.assert_array_equal(first, param.initial_images(classes, 2, 2, init=init, seed=11))
    assert not np.array_equal(first, param.initial_images(classes, 2, 2, init=init, seed=12))
    # A class's images depend only on (seed, class), not on the other classes.
    two_classes = param.initial_images(classes[:2], 2, 2, init=init, seed=11)
    np.testing.assert_array_equal(first[:4], two_classes)
    assert 0.0 <= first.min() and first.max() <= 1.0


def test_init_errors():
    rng = np.random.default_rng(8)
    classes = _classes(rng, [40, 40, 40, 4])
    cases = [
        (
            dict(ipc=10, factor=2, init="mix"),
            "class 3 has 4 training images; init='mix' with ipc=10 and factor=2 needs 40. "
            "Lower ipc or factor, or use init='noise'.",
        ),
        (
            dict(ipc=10, factor=2, init="real"),
            "class 3 has 4 training images; init='real' with ipc=10 needs 10. "
            "Lower ipc or use init='noise'.",
        ),
        (
            dict(ipc=1, factor=2, init="kmeans"),
            "Unknown init='kmeans'; valid choices: mix, real, noise.",
        ),
        (dict(ipc=0, factor=2, init="noise"), "ipc must be a positive integer. Received ipc=0."),
        (
            dict(ipc=1, factor=3, init="noise"),
            "factor=3 does not divide the image size 8x8; "
            "use a factor that divides both: 1, 2, 4, 8.",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            param.initial_images(classes, kwargs.pop("ipc"), kwargs.pop("factor"), **kwargs)


def test_init_rejects_bad_images():
    rng = np.random.default_rng(9)
    good = _images(rng, 4, 8, 8, 3)
    cases = [
        (
            [good, good[..., :1]],
            "class 1 images have shape (4, 8, 8, 1); expected (n, H, W, channels) "
            "with (H, W, channels) = (8, 8, 3) like class 0.",
        ),
        (
            [np.array([0.0, 255.0]).reshape(2, 1, 1, 1)],
            "class 0 images have values in [0, 255]; pixels must be in [0, 1] "
            "(divide uint8 images by 255).",
        ),
        ([], "images_by_class is empty; pass one array of images per class."),
    ]
    for images_by_class, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            param.initial_images(images_by_class, 1, 1, init="real")

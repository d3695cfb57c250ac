"""Tests for m3d_tf.mmd against the NumPy float64 oracles in tests/reference.py.

Tolerances: float32 kernel math against float64 oracles agrees to rtol 1e-4 (features of
order 1, up to a few hundred points); the linear kernel is compared bitwise with DM's formula.
"""

import math
import re

import numpy as np
import pytest
import tensorflow as tf

import reference
from m3d_tf import mmd

KERNEL_CASES = [
    ("gaussian_mix", {}),
    ("gaussian_mix", {"widths": (2.0, 8.0, 30.0)}),
    ("linear", {}),
    ("polynomial", {}),
    ("polynomial", {"degree": 3, "coef0": 0.5}),
    ("rbf_fixed", {}),
    ("rbf_fixed", {"gammas": (0.01, 0.2)}),
]
RTOL = 1e-4
ATOL = 1e-6


def _features(rng, *shape, scale=0.5):
    return (rng.normal(size=shape) * scale).astype(np.float32)


# === Distances ===


def test_squared_distances_matches_oracle():
    rng = np.random.default_rng(0)
    x, y = _features(rng, 6, 9, scale=2.0), _features(rng, 4, 9, scale=2.0)
    np.testing.assert_allclose(
        mmd.squared_distances(x, y), reference.np_squared_distances(x, y), rtol=1e-5, atol=1e-5
    )


def test_squared_distances_hand_worked_and_batched():
    d2 = mmd.squared_distances([[[0.0, 0.0], [1.0, 1.0]]], [[[3.0, 4.0], [1.0, 1.0]]])
    np.testing.assert_array_equal(d2, [[[25.0, 2.0], [13.0, 0.0]]])


def test_squared_distances_identical_points_are_exactly_zero():
    rng = np.random.default_rng(1)
    x = _features(rng, 5, 64, scale=3.0)
    d2 = mmd.squared_distances(x, x).numpy()
    assert d2.min() >= 0.0
    np.testing.assert_allclose(np.diag(d2), 0.0, atol=1e-3)


# === One class: oracle and hand-worked cases ===


@pytest.mark.parametrize("estimator", mmd.ESTIMATORS)
@pytest.mark.parametrize("kernel,options", KERNEL_CASES)
def test_mmd2_terms_matches_oracle(kernel, options, estimator):
    rng = np.random.default_rng(2)
    x, y = _features(rng, 5, 6), _features(rng, 7, 6) + 0.3
    got = mmd.mmd2_terms(x, y, kernel=kernel, estimator=estimator, **options)
    want = reference.np_mmd2_terms(x, y, kernel=kernel, estimator=estimator, **options)
    assert got.dtype == tf.float32
    assert got.shape == (mmd.num_kernel_terms(kernel, estimator, **options),)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_two_points_hand_worked():
    # X = {0}, Y = {2} in 1-D: D^2(x, y) = 4, pooled h = 4, K_XX = K_YY = 1.
    x, y = [[0.0]], [[2.0]]
    gauss = [2 - 2 * math.exp(-4 / (4 * mult)) for mult in (0.25, 0.5, 1, 2, 4)]
    np.testing.assert_allclose(mmd.mmd2_terms(x, y), gauss, rtol=1e-6)
    np.testing.assert_allclose(
        mmd.mmd2_terms(x, y, widths=(2.0, 8.0)),
        [2 - 2 * math.exp(-2), 2 - 2 * math.exp(-0.5)],
        rtol=1e-6,
    )
    rbf = [2 - 2 * math.exp(-0.4), 2 - 2 * math.exp(-4), 2 - 2 * math.exp(-20)]
    np.testing.assert_allclose(mmd.mmd2_terms(x, y, kernel="rbf_fixed"), rbf, rtol=1e-6)
    np.testing.assert_allclose(mmd.mmd2_terms(x, y, kernel="linear"), [4.0], rtol=1e-7)
    # (xy + 1)^2: K_XX = 1, K_XY = 1, K_YY = 25.
    np.testing.assert_allclose(mmd.mmd2_terms(x, y, kernel="polynomial"), [24.0], rtol=1e-7)


def test_unbiased_hand_worked():
    # X = {0, 2}, Y = {1, 3}, linear: off-diagonal means 0 (XX) and 3 (YY), mean XY = 2.
    x, y = [[0.0], [2.0]], [[1.0], [3.0]]
    np.testing.assert_allclose(mmd.mmd2_terms(x, y, kernel="linear"), [1.0], rtol=1e-7)
    np.testing.assert_allclose(
        mmd.mmd2_terms(x, y, kernel="linear", estimator="unbiased"), [-1.0], rtol=1e-7
    )


@pytest.mark.parametrize("kernel,options", KERNEL_CASES)
def test_unbiased_minus_biased_is_diagonal_correction(kernel, options):
    # U - V = (mean K_XX - mean diag K_XX) / (n - 1) + (mean K_YY - mean diag K_YY) / (m - 1).
    rng = np.random.default_rng(3)
    x, y = _features(rng, 4, 5), _features(rng, 6, 5)
    n, m = len(x), len(y)
    k = reference.np_pooled_kernels(np.concatenate([x, y]), kernel, **options)
    k_xx, k_yy = k[:, :n, :n], k[:, n:, n:]
    correction = (k_xx.mean((1, 2)) - np.diagonal(k_xx, axis1=1, axis2=2).mean(1)) / (n - 1) + (
        k_yy.mean((1, 2)) - np.diagonal(k_yy, axis1=1, axis2=2).mean(1)
    ) / (m - 1)
    biased = mmd.mmd2_terms(x, y, kernel=kernel, **options).numpy()
    unbiased = mmd.mmd2_terms(x, y, kernel=kernel, estimator="unbiased", **options).numpy()
    np.testing.assert_allclose(unbiased - biased, correction, rtol=1e-3, atol=1e-5)


def test_linear_is_dm_objective_exactly():
    # DM: sum((mean(real) - mean(syn))^2) on ReLU-like ConvNet features.
    rng = np.random.default_rng(4)
    syn = np.maximum(rng.normal(size=(10, 2048)), 0).astype(np.float32)
    real = np.maximum(rng.normal(size=(256, 2048)) + 0.1, 0).astype(np.float32)
    dm = tf.reduce_sum(tf.square(tf.reduce_mean(syn, axis=0) - tf.reduce_mean(real, axis=0)))
    got = mmd.mmd2_terms(syn, real, kernel="linear")
    np.testing.assert_array_equal(got, [dm.numpy()])
    want = ((syn.astype(np.float64).mean(0) - real.astype(np.float64).mean(0)) ** 2).sum()
    np.testing.assert_allclose(got, [want], rtol=1e-5)


def test_identical_sets_give_zero_and_finite_gradients():
    rng = np.random.default_rng(5)
    points = _features(rng, 6, 8)
    duplicated = np.concatenate([points[:3], points[:3]])
    all_same = np.repeat(points[:1], 4, axis=0)
    for kernel, options in KERNEL_CASES:
        for estimator in mmd.ESTIMATORS:
            for x_np in (points, duplicated, all_same):
                x = tf.constant(x_np)
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(
                        mmd.mmd2_terms(x, x_np, kernel=kernel, estimator=estimator, **options)
                    )
                grad = tape.gradient(loss, x).numpy()
                assert np.all(np.isfinite(grad)), (kernel, estimator)
                if estimator == "biased":
                    np.testing.assert_allclose(loss, 0.0, atol=1e-4)
                    np.testing.assert_allclose(grad, 0.0, atol=1e-3)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(6)
    x = tf.constant(_features(rng, 3, 4).astype(np.float64))
    y = _features(rng, 5, 4) + 0.5
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(mmd.mmd2_terms(x, y))
    grad = tape.gradient(loss, x).numpy()
    eps = 1e-3
    x_np = x.numpy()
    numeric = np.zeros_like(x_np)
    for idx in np.ndindex(*x_np.shape):
        plus, minus = x_np.copy(), x_np.copy()
        plus[idx] += eps
        minus[idx] -= eps
        # h has no gradient: hold it at its value for x_np, as the implementation does.
        h_opts = _fixed_widths(x_np, y)
        numeric[idx] = (
            reference.np_mmd2_terms(plus, y, **h_opts).sum()
            - reference.np_mmd2_terms(minus, y, **h_opts).sum()
        ) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=2e-2, atol=1e-3)


def _fixed_widths(x, y):
    z = np.concatenate([x, y]).astype(np.float64)
    d2 = reference.np_squared_distances(z, z)
    h = d2[~np.eye(len(z), dtype=bool)].mean()
    return {"widths": [h * m for m in mmd.DEFAULT_MULTIPLIERS]}


def test_bfloat16_features_are_computed_in_float32():
    rng = np.random.default_rng(7)
    x = tf.cast(_features(rng, 5, 6), tf.bfloat16)
    y = tf.cast(_features(rng, 7, 6), tf.bfloat16)
    got = mmd.mmd2_terms(x, y)
    assert got.dtype == tf.float32
    want = mmd.mmd2_terms(tf.cast(x, tf.float32), tf.cast(y, tf.float32))
    np.testing.assert_array_equal(got, want)
    result = mmd.class_mmd2(x, [0, 0, 1, 1, 1], y, [0, 1, 0, 1, 1, 1, 0], 2)
    assert result.total.dtype == tf.float32


def test_unbiased_needs_two_points():
    message = (
        "estimator='unbiased' needs at least 2 points per class, but x has 1. "
        "Use estimator='biased' or pass more points."
    )
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        mmd.mmd2_terms([[0.0]], [[1.0], [2.0]], estimator="unbiased")


# === All classes: grouped, masked ===


@pytest.mark.parametrize("estimator", mmd.ESTIMATORS)
@pytest.mark.parametrize("kernel,options", KERNEL_CASES)
def test_grouped_matches_oracle_and_masked(kernel, options, estimator):
    rng = np.random.default_rng(8)
    num_classes, n, m, d = 3, 4, 6, 5
    x = _features(rng, num_classes, n, d) + np.arange(num_classes)[:, None, None] * 0.2
    y = _features(rng, num_classes, m, d)
    grouped = mmd.grouped_mmd2(x, y, kernel=kernel, estimator=estimator, **options).numpy()
    want = np.stack(
        [
            reference.np_mmd2_terms(x[c], y[c], kernel=kernel, estimator=estimator, **options)
            for c in range(num_classes)
        ]
    )
    np.testing.assert_allclose(grouped, want, rtol=RTOL, atol=ATOL)

    # The same data, flattened and shuffled, through the label-mask path.
    x_labels = np.repeat(np.arange(num_classes), n)
    y_labels = np.repeat(np.arange(num_classes), m)
    x_order = rng.permutation(len(x_labels))
    y_order = rng.permutation(len(y_labels))
    result = mmd.class_mmd2(
        x.reshape(-1, d)[x_order],
        x_labels[x_order],
        y.reshape(-1, d)[y_order],
        y_labels[y_order],
        num_classes,
        kernel=kernel,
        estimator=estimator,
        **options,
    )
    np.testing.assert_allclose(result.per_class, grouped.sum(1), rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(result.per_kernel, grouped.sum(0), rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(result.total, grouped.sum(), rtol=RTOL, atol=1e-5)


@pytest.mark.parametrize("estimator", mmd.ESTIMATORS)
@pytest.mark.parametrize("kernel,options", KERNEL_CASES)
def test_class_mmd2_any_mix_of_classes_matches_oracle(kernel, options, estimator):
    rng = np.random.default_rng(9)
    num_classes, d = 5, 4
    # Class 3 only on the x side, class 4 nowhere, class 2 has one y point (dropped if unbiased).
    x_labels = np.array([0, 1, 0, 2, 3, 1, 0, 2, 1, 3])
    y_labels = np.array([1, 0, 0, 1, 2, 0, 1, 1, 0])
    x, y = _features(rng, len(x_labels), d), _features(rng, len(y_labels), d) + 0.2
    kwargs = dict(kernel=kernel, estimator=estimator, **options)
    result = mmd.class_mmd2(x, x_labels, y, y_labels, num_classes, **kwargs)
    want = reference.np_class_mmd2(x, x_labels, y, y_labels, num_classes, **kwargs)
    np.testing.assert_allclose(result.per_class, want.sum(1), rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(result.per_kernel, want.sum(0), rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(result.total, want.sum(), rtol=RTOL, atol=1e-5)
    assert result.per_class[3] == 0.0 and result.per_class[4] == 0.0
    assert (result.per_class[2] == 0.0) == (estimator == "unbiased")


def test_class_mmd2_hand_worked():
    result = mmd.class_mmd2([[0.0], [1.0]], [0, 1], [[2.0], [1.0]], [0, 1], 2, kernel="linear")
    np.testing.assert_array_equal(result.per_class, [4.0, 0.0])
    np.testing.assert_array_equal(result.per_kernel, [4.0])
    assert result.total.numpy() == 4.0


def test_class_mmd2_gradient_flows_only_to_x():
    rng = np.random.default_rng(10)
    x = tf.constant(_features(rng, 6, 3))
    y = tf.constant(_features(rng, 8, 3))
    labels_x = [0, 1, 0, 1, 0, 1]
    labels_y = [0, 0, 1, 1, 0, 0, 1, 1]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, y])
        total = mmd.class_mmd2(x, labels_x, y, labels_y, 2).total
    grad_x = tape.gradient(total, x).numpy()
    assert np.all(np.isfinite(grad_x)) and np.abs(grad_x).max() > 0
    # Moving x along its gradient lowers the loss.
    lower = mmd.class_mmd2(x - 1e-2 * grad_x, labels_x, y, labels_y, 2).total
    assert lower < total


# === tf.function with dynamic batch sizes ===


def test_under_tf_function_with_dynamic_batch_sizes():
    num_classes, d = 3, 4
    traces = []

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, d), tf.float32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None, d), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ]
    )
    def masked(x, x_labels, y, y_labels):
        traces.append(1)
        return mmd.class_mmd2(x, x_labels, y, y_labels, num_classes).total

    @tf.function(input_signature=[tf.TensorSpec((num_classes, None, d))] * 2)
    def grouped(x, y):
        return mmd.grouped_mmd2(x, y, estimator="unbiased")

    rng = np.random.default_rng(11)
    for n, m in ((5, 7), (9, 4)):
        x, y = _features(rng, n, d), _features(rng, m, d)
        x_labels = rng.integers(0, num_classes, n).astype(np.int32)
        y_labels = rng.integers(0, num_classes, m).astype(np.int32)
        eager = mmd.class_mmd2(x, x_labels, y, y_labels, num_classes).total
        np.testing.assert_allclose(masked(x, x_labels, y, y_labels), eager, rtol=1e-5, atol=1e-6)
        xg, yg = _features(rng, num_classes, n, d), _features(rng, num_classes, m, d)
        np.testing.assert_allclose(
            grouped(xg, yg), mmd.grouped_mmd2(xg, yg, estimator="unbiased"), rtol=1e-5, atol=1e-6
        )
    assert len(traces) == 1


# === Options and names ===


def test_term_counts_and_names():
    assert mmd.num_kernel_terms("gaussian_mix") == 5
    assert mmd.num_kernel_terms("gaussian_mix", widths=(1.0, 2.0)) == 2
    assert mmd.num_kernel_terms("rbf_fixed") == 3
    assert mmd.num_kernel_terms("linear") == 1
    assert mmd.num_kernel_terms("polynomial") == 1
    assert mmd.kernel_term_names("gaussian_mix") == (
        "gauss_x0.25",
        "gauss_x0.5",
        "gauss_x1",
        "gauss_x2",
        "gauss_x4",
    )
    assert mmd.kernel_term_names("gaussian_mix", widths=(0.5, 100)) == ("gauss_w0.5", "gauss_w100")
    assert mmd.kernel_term_names("rbf_fixed") == ("rbf_g0.1", "rbf_g1", "rbf_g5")
    assert mmd.kernel_term_names("linear") == ("linear",)
    assert mmd.kernel_term_names("polynomial") == ("polynomial",)
    # The full option set (as the condenser keeps it) is accepted.
    options = dict(kernel="polynomial", estimator="unbiased", degree=3, coef0=0.5, widths=None)
    assert mmd.kernel_term_names(**options) == ("polynomial",)
    assert mmd.num_kernel_terms(**dict(options, kernel="gaussian_mix", widths=(1.0, 2.0))) == 2


def test_validate_kernel_options_accepts_defaults():
    for kernel in mmd.KERNELS:
        for estimator in mmd.ESTIMATORS:
            mmd.validate_kernel_options(kernel, estimator)
    mmd.validate_kernel_options("gaussian_mix", widths=[1, 2.5])


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        (
            ("gauss",),
            {},
            "Unknown kernel='gauss'; valid choices: gaussian_mix, linear, polynomial, rbf_fixed.",
        ),
        (("linear", "v"), {}, "Unknown estimator='v'; valid choices: biased, unbiased."),
        (
            ("gaussian_mix",),
            {"multipliers": (1.0, -2.0)},
            "multipliers must be a non-empty sequence of positive finite numbers. "
            "Received multipliers=(1.0, -2.0).",
        ),
        (
            ("gaussian_mix",),
            {"widths": ()},
            "widths must be a non-empty sequence of positive finite numbers. Received widths=().",
        ),
        (
            ("rbf_fixed",),
            {"gammas": "0.1"},
            "gammas must be a sequence of positive numbers. Received gammas='0.1'.",
        ),
        (
            ("rbf_fixed",),
            {"gammas": 5},
            "gammas must be a sequence of positive numbers. Received gammas=5.",
        ),
        (
            ("polynomial",),
            {"degree": 0},
            "degree must be a positive integer for kernel='polynomial'. Received degree=0.",
        ),
        (
            ("polynomial",),
            {"degree": 2.0},
            "degree must be a positive integer for kernel='polynomial'. Received degree=2.0.",
        ),
        (
            ("polynomial",),
            {"coef0": float("nan")},
            "coef0 must be a finite number for kernel='polynomial'. Received coef0=nan.",
        ),
    ],
)
def test_validate_kernel_options_errors(args, kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        mmd.validate_kernel_options(*args, **kwargs)

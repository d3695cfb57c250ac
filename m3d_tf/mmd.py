"""Kernels and squared Maximum Mean Discrepancy (MMD^2) per class and per kernel.

M3D (Zhang et al., AAAI 2024) matches, class by class, the features X of the synthetic images
and Y of a batch of real images under randomly initialised nets by minimising

    MMD^2 = mean(K_XX) - 2 mean(K_XY) + mean(K_YY)            (biased V-statistic)

with a kernel K over the pooled set Z = [X; Y]. Kernels, as in the released M3D code:

- "gaussian_mix" (M3D's default): sum over m of exp(-D^2 / (h * m)), m in (1/4, 1/2, 1, 2, 4),
  h = mean off-diagonal squared distance of Z, with no gradient through h. Fixed absolute
  widths `w` (exp(-D^2 / w)) replace h * m when given.
- "linear": Z Z^T, so MMD^2 = ||mean X - mean Y||^2, which is DM's objective (Zhao & Bilen, 2023).
- "polynomial": (Z Z^T + coef0) ** degree (M3D: coef0 = 1, degree = 2).
- "rbf_fixed": sum over gamma of exp(-gamma * D^2), gamma in (0.1, 1, 5). The M3D code names this
  kernel "laplace", but its formula is this one, on squared distances.

A kernel sum gives a sum of MMD^2 terms, so every function returns one term per kernel (K terms):
their sum is M3D's loss, and the single terms are useful metrics.

The "unbiased" estimator (U-statistic) drops the diagonals of K_XX and K_YY; it needs at least
two points on each side. All kernel math runs in float32, whatever the input dtype (bfloat16
features are cast up), so the loss does not lose precision under mixed precision.

The functions are pure (tensors in, tensors out) and work eagerly, inside tf.function and in a
tf.distribute replica context. Option values are checked once by `validate_kernel_options`.
"""

import collections
import math

import tensorflow as tf

from m3d_tf.checks import choice

KERNELS = ("gaussian_mix", "linear", "polynomial", "rbf_fixed")
ESTIMATORS = ("biased", "unbiased")
DEFAULT_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)
DEFAULT_GAMMAS = (0.1, 1.0, 5.0)

# A degenerate pooled set (all points equal) has h = 0; the floor keeps exp(-0 / h) finite.
_MIN_BANDWIDTH = 1e-12

MMDResult = collections.namedtuple("MMDResult", ["total", "per_class", "per_kernel"])
MMDResult.__doc__ = """Per-class MMD^2 of a labelled batch.

Fields:
    total: float32 scalar, sum of `per_class` (the loss).
    per_class: float32 (C,), MMD^2 of each class summed over kernels; 0 for a class missing
        from either side.
    per_kernel: float32 (K,), each kernel's MMD^2 summed over classes.
"""


# === Options ===


def _check_positive_numbers(name, values):
    not_a_sequence = ValueError(
        f"{name} must be a sequence of positive numbers. Received {name}={values!r}."
    )
    if isinstance(values, (str, bytes)):
        raise not_a_sequence
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise not_a_sequence from None
    if not numbers or not all(math.isfinite(v) and v > 0 for v in numbers):
        raise ValueError(
            f"{name} must be a non-empty sequence of positive finite numbers. "
            f"Received {name}={values!r}."
        )


def validate_kernel_options(
    kernel,
    estimator="biased",
    *,
    multipliers=DEFAULT_MULTIPLIERS,
    widths=None,
    gammas=DEFAULT_GAMMAS,
    degree=2,
    coef0=1.0,
):
    """Checks kernel and estimator names and option values; call once, at the boundary.

    Args:
        kernel: one of `KERNELS`.
        estimator: one of `ESTIMATORS`.
        multipliers: positive numbers, the Gaussian widths relative to h ("gaussian_mix").
        widths: None, or positive numbers, absolute Gaussian widths ("gaussian_mix").
        gammas: positive numbers ("rbf_fixed").
        degree: positive integer ("polynomial").
        coef0: finite number ("polynomial").

    Raises:
        ValueError: one line naming the bad argument, its value and the valid choices.
    """
    choice("kernel", kernel, KERNELS)
    choice("estimator", estimator, ESTIMATORS)
    if kernel == "gaussian_mix":
        if widths is None:
            _check_positive_numbers("multipliers", multipliers)
        else:
            _check_positive_numbers("widths", widths)
    elif kernel == "rbf_fixed":
        _check_positive_numbers("gammas", gammas)
    elif kernel == "polynomial":
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise ValueError(
                "degree must be a positive integer for kernel='polynomial'. "
                f"Received degree={degree!r}."
            )
        is_number = isinstance(coef0, (int, float)) and not isinstance(coef0, bool)
        if not is_number or not math.isfinite(coef0):
            raise ValueError(
                f"coef0 must be a finite number for kernel='polynomial'. Received coef0={coef0!r}."
            )


def _kernel_parameters(kernel, multipliers, widths, gammas):
    """The per-term parameters of a kernel mix: (kind, values) with len(values) = K."""
    if kernel == "gaussian_mix":
        if widths is None:
            return "relative", tuple(float(m) for m in multipliers)
        return "absolute", tuple(float(w) for w in widths)
    if kernel == "rbf_fixed":
        return "gamma", tuple(float(g) for g in gammas)
    return kernel, (None,)


def kernel_term_names(
    kernel,
    estimator="biased",
    *,
    multipliers=DEFAULT_MULTIPLIERS,
    widths=None,
    gammas=DEFAULT_GAMMAS,
    degree=2,
    coef0=1.0,
):
    """Names of the K terms, in order, for metrics.

    Takes the same options as `validate_kernel_options`, so one options dict serves every
    function; only kernel, multipliers, widths and gammas change the terms.

    Returns:
        A tuple of K strings: "gauss_x{multiplier}" or "gauss_w{width}" ("gaussian_mix"),
        "rbf_g{gamma}" ("rbf_fixed"), "linear" or "polynomial".

    Example:
        >>> kernel_term_names("gaussian_mix")
        ('gauss_x0.25', 'gauss_x0.5', 'gauss_x1', 'gauss_x2', 'gauss_x4')
    """
    del estimator, degree, coef0  # One term whatever their values.
    kind, values = _kernel_parameters(kernel, multipliers, widths, gammas)
    prefix = {"relative": "gauss_x", "absolute": "gauss_w", "gamma": "rbf_g"}.get(kind)
    if prefix is None:
        return (kernel,)
    return tuple(f"{prefix}{v:g}" for v in values)


def num_kernel_terms(kernel, estimator="biased", **options):
    """Number K of MMD^2 terms (5 for the default "gaussian_mix"); options as `kernel_term_names`.

    Example:
        >>> num_kernel_terms("rbf_fixed")
        3
    """
    return len(kernel_term_names(kernel, estimator, **options))


# === Distances ===


def squared_distances(x, y):
    """Pairwise squared Euclidean distances |x|^2 + |y|^2 - 2 x.y, clipped at 0.

    No square root is taken: sqrt has an infinite derivative at 0, which makes the gradient of
    a distance-based kernel NaN for identical points.

    Args:
        x: float (..., n, d).
        y: float (..., m, d), same leading dimensions as `x`.

    Returns:
        float32 (..., n, m), >= 0.

    Example:
        >>> squared_distances([[0.0, 0.0]], [[3.0, 4.0]])  # [[25.]]
    """
    x = tf.cast(x, tf.float32)
    y = tf.cast(y, tf.float32)
    return _distances_from_gram(
        tf.matmul(x, y, transpose_b=True),
        tf.reduce_sum(tf.square(x), axis=-1),
        tf.reduce_sum(tf.square(y), axis=-1),
    )


def _distances_from_gram(gram, x_sq_norms, y_sq_norms):
    """(..., n, m) clipped squared distances from inner products and squared norms."""
    d2 = x_sq_norms[..., :, None] + y_sq_norms[..., None, :] - 2.0 * gram
    return tf.maximum(d2, 0.0)


# === Pieces shared by the grouped and the masked paths ===


def _pairwise_blocks(x, y, x_sq, y_sq, kernel):
    """X-X, X-Y and Y-Y blocks of what the kernel is a function of, each (..., a, b).

    Inner products for "polynomial", clipped squared distances for the Gaussian kernels.
    """
    grams = (
        tf.matmul(x, x, transpose_b=True),
        tf.matmul(x, y, transpose_b=True),
        tf.matmul(y, y, transpose_b=True),
    )
    if kernel == "polynomial":
        return grams
    return (
        _distances_from_gram(grams[0], x_sq, x_sq),
        _distances_from_gram(grams[1], x_sq, y_sq),
        _distances_from_gram(grams[2], y_sq, y_sq),
    )


def _term_parameters(kernel, multipliers, widths, gammas):
    """float32 (K, 1, 1) per-term parameters, or None for "polynomial"."""
    kind, values = _kernel_parameters(kernel, multipliers, widths, gammas)
    if kind == "polynomial":
        return None
    return tf.constant(values, tf.float32)[:, None, None]


def _pooled_bandwidth(sum_xx, sum_xy, sum_yy, diag_xx, diag_yy, n, m):
    """h = mean off-diagonal squared distance of the pooled set [X; Y], without gradient.

    Args are the sums of the D^2 blocks and of the X-X, Y-Y diagonals, and the counts, all with
    the same shape (one value per class).
    """
    pooled = n + m
    off_diagonal = sum_xx + 2.0 * sum_xy + sum_yy - diag_xx - diag_yy
    h = tf.math.divide_no_nan(off_diagonal, pooled * (pooled - 1.0))
    return tf.maximum(tf.stop_gradient(h), _MIN_BANDWIDTH)


def _kernel_stack(block, kernel, params, degree, coef0):
    """Kernel values, one slice per term: block (..., a, b) -> (..., K, a, b).

    `params` broadcasts against (..., K, a, b): Gaussian denominators (h * multiplier, or the
    absolute widths) or gammas.
    """
    if kernel == "polynomial":
        return tf.pow(block + coef0, float(degree))[..., None, :, :]
    if kernel == "rbf_fixed":
        return tf.exp(-block[..., None, :, :] * params)
    return tf.exp(-block[..., None, :, :] / params)


def _estimate(biased, mean_xx, diag_xx, mean_yy, diag_yy, n, m, estimator):
    """MMD^2 from the biased estimate and the X-X, Y-Y block statistics (shapes broadcast).

    The unbiased estimate leaves the diagonals out of the X-X and Y-Y means:
        sum_{i != j} K_ij / (n (n - 1)) = mean(K_XX) + (mean(K_XX) - mean(diag K_XX)) / (n - 1).
    """
    if estimator == "biased":
        return biased
    return (
        biased
        + tf.math.divide_no_nan(mean_xx - diag_xx, n - 1.0)
        + tf.math.divide_no_nan(mean_yy - diag_yy, m - 1.0)
    )


def _linear_terms(mean_x, mean_y, diag_xx, diag_yy, n, m, estimator):
    """(C, 1) linear-kernel MMD^2 from the class means (C, d) and mean squared norms (C,).

    The biased estimate is computed as ||mean X - mean Y||^2, exactly DM's objective, in
    O((n + m) d) instead of O((n + m)^2 d) and without cancellation.
    """
    biased = tf.reduce_sum(tf.square(mean_x - mean_y), axis=-1)
    mean_xx = tf.reduce_sum(tf.square(mean_x), axis=-1)
    mean_yy = tf.reduce_sum(tf.square(mean_y), axis=-1)
    return _estimate(biased, mean_xx, diag_xx, mean_yy, diag_yy, n, m, estimator)[:, None]


# === One class, and all classes at once ===


def mmd2_terms(
    x,
    y,
    *,
    kernel="gaussian_mix",
    estimator="biased",
    multipliers=DEFAULT_MULTIPLIERS,
    widths=None,
    gammas=DEFAULT_GAMMAS,
    degree=2,
    coef0=1.0,
):
    """MMD^2 between two sets of features, one term per kernel.

    Args:
        x: float (n, d) features (e.g. synthetic; gradients flow).
        y: float (m, d) features (e.g. real).
        kernel, estimator, multipliers, widths, gammas, degree, coef0: see
            `validate_kernel_options` and the module docstring.

    Returns:
        float32 (K,), K = `num_kernel_terms(...)`; their sum is M3D's per-class loss.

    Raises:
        ValueError: estimator="unbiased" with fewer than 2 points on a side.

    Example:
        >>> mmd2_terms([[0.0], [2.0]], [[1.0]], kernel="linear")  # [0.]
    """
    return grouped_mmd2(
        tf.convert_to_tensor(x)[None],
        tf.convert_to_tensor(y)[None],
        kernel=kernel,
        estimator=estimator,
        multipliers=multipliers,
        widths=widths,
        gammas=gammas,
        degree=degree,
        coef0=coef0,
    )[0]


def grouped_mmd2(
    x,
    y,
    *,
    kernel="gaussian_mix",
    estimator="biased",
    multipliers=DEFAULT_MULTIPLIERS,
    widths=None,
    gammas=DEFAULT_GAMMAS,
    degree=2,
    coef0=1.0,
):
    """MMD^2 of every class at once, from class-grouped features, with batched matmuls.

    The fast path: the same number of points per class on each side, one batched matmul per
    block for all classes, and the Gaussian h computed per class over its own pooled set.

    Args:
        x: float (C, n, d); x[c] = features of class c (e.g. synthetic).
        y: float (C, m, d); y[c] = features of class c (e.g. real).
        kernel, estimator, multipliers, widths, gammas, degree, coef0: see `mmd2_terms`.

    Returns:
        float32 (C, K): MMD^2 per class and kernel term.

    Raises:
        ValueError: estimator="unbiased" with fewer than 2 points on a side.
    """
    x = tf.cast(x, tf.float32)
    y = tf.cast(y, tf.float32)
    if estimator == "unbiased":
        for name, size in (("x", x.shape[-2]), ("y", y.shape[-2])):
            if size is not None and size < 2:
                raise ValueError(
                    f"estimator='unbiased' needs at least 2 points per class, but {name} has "
                    f"{size}. Use estimator='biased' or pass more points."
                )
    n = tf.cast(tf.shape(x)[-2], tf.float32)
    m = tf.cast(tf.shape(y)[-2], tf.float32)
    x_sq = tf.reduce_sum(tf.square(x), axis=-1)  # (C, n)
    y_sq = tf.reduce_sum(tf.square(y), axis=-1)  # (C, m)

    if kernel == "linear":
        return _linear_terms(
            tf.reduce_mean(x, axis=-2),
            tf.reduce_mean(y, axis=-2),
            tf.reduce_mean(x_sq, axis=-1),
            tf.reduce_mean(y_sq, axis=-1),
            n,
            m,
            estimator,
        )

    blocks = _pairwise_blocks(x, y, x_sq, y_sq, kernel)  # (C, n, n), (C, n, m), (C, m, m)
    params = _term_parameters(kernel, multipliers, widths, gammas)  # (K, 1, 1)
    if kernel == "gaussian_mix" and widths is None:
        sums = [tf.reduce_sum(b, axis=[-2, -1]) for b in blocks]
        h = _pooled_bandwidth(
            *sums, tf.linalg.trace(blocks[0]), tf.linalg.trace(blocks[2]), n, m
        )  # (C,)
        params = params * h[:, None, None, None]  # (C, K, 1, 1)
    k_xx, k_xy, k_yy = (_kernel_stack(b, kernel, params, degree, coef0) for b in blocks)
    mean_xx = tf.reduce_mean(k_xx, axis=[-2, -1])  # (C, K)
    mean_xy = tf.reduce_mean(k_xy, axis=[-2, -1])
    mean_yy = tf.reduce_mean(k_yy, axis=[-2, -1])
    diag_xx = tf.reduce_mean(tf.linalg.diag_part(k_xx), axis=-1)
    diag_yy = tf.reduce_mean(tf.linalg.diag_part(k_yy), axis=-1)
    biased = mean_xx - 2.0 * mean_xy + mean_yy
    return _estimate(biased, mean_xx, diag_xx, mean_yy, diag_yy, n, m, estimator)


# === A labelled batch with any mix of classes ===


def _masked_sums(values, rows, cols):
    """Per-class block sums: sum_ij rows[i, c] values[..., i, j] cols[j, c] -> (..., C)."""
    return tf.reduce_sum(tf.matmul(values, cols) * rows, axis=-2)


def _masked_diagonal_sums(values, masks):
    """Per-class diagonal sums: sum_i masks[i, c] values[..., i, i] -> (..., C)."""
    return tf.matmul(tf.linalg.diag_part(values)[..., None, :], masks)[..., 0, :]


def class_mmd2(
    x,
    x_labels,
    y,
    y_labels,
    num_classes,
    *,
    kernel="gaussian_mix",
    estimator="biased",
    multipliers=DEFAULT_MULTIPLIERS,
    widths=None,
    gammas=DEFAULT_GAMMAS,
    degree=2,
    coef0=1.0,
):
    """Per-class MMD^2 of a batch with any mix of classes, via label masks.

    Each class c is compared only with itself: x[x_labels == c] against y[y_labels == c], with
    the Gaussian h of that class's pooled set. A class missing from either side (or with fewer
    than 2 points on a side, for estimator="unbiased") contributes 0. Agrees with
    `grouped_mmd2` on class-grouped data. Batch sizes may be dynamic under tf.function.

    Args:
        x: float (N, d) features (e.g. synthetic).
        x_labels: int (N,) in [0, num_classes).
        y: float (M, d) features (e.g. real).
        y_labels: int (M,) in [0, num_classes).
        num_classes: Python int C.
        kernel, estimator, multipliers, widths, gammas, degree, coef0: see `mmd2_terms`.

    Returns:
        `MMDResult(total, per_class, per_kernel)`: float32 scalar, (C,) and (K,).

    Example:
        >>> class_mmd2([[0.0], [1.0]], [0, 1], [[2.0], [1.0]], [0, 1], 2, kernel="linear")
        MMDResult(total=4.0, per_class=[4.0, 0.0], per_kernel=[4.0])
    """
    return _result(
        class_mmd2_terms(
            x, x_labels, y, y_labels, num_classes,
            kernel=kernel, estimator=estimator, multipliers=multipliers, widths=widths,
            gammas=gammas, degree=degree, coef0=coef0,
        )
    )


def class_mmd2_terms(
    x,
    x_labels,
    y,
    y_labels,
    num_classes,
    *,
    kernel="gaussian_mix",
    estimator="biased",
    multipliers=DEFAULT_MULTIPLIERS,
    widths=None,
    gammas=DEFAULT_GAMMAS,
    degree=2,
    coef0=1.0,
):
    """Per-class, per-kernel MMD^2 terms of a batch with any mix of classes, via label masks.

    The (C, K) terms behind `class_mmd2` (its per_class and per_kernel are their row and column
    sums), for callers that keep both axes, as M3DCondenser's metrics do. Arguments and the
    treatment of absent classes as in `class_mmd2`.

    Returns:
        float32 (C, K); row c is 0 for a class missing from either side.
    """
    x = tf.cast(x, tf.float32)
    y = tf.cast(y, tf.float32)
    x_masks = tf.one_hot(x_labels, num_classes, dtype=tf.float32)  # (N, C)
    y_masks = tf.one_hot(y_labels, num_classes, dtype=tf.float32)  # (M, C)
    n = tf.reduce_sum(x_masks, axis=0)  # (C,)
    m = tf.reduce_sum(y_masks, axis=0)
    min_count = 1.0 if estimator == "biased" else 2.0
    present = tf.cast((n >= min_count) & (m >= min_count), tf.float32)[:, None]  # (C, 1)
    x_sq = tf.reduce_sum(tf.square(x), axis=-1)  # (N,)
    y_sq = tf.reduce_sum(tf.square(y), axis=-1)  # (M,)

    if kernel == "linear":
        terms = _linear_terms(
            tf.math.divide_no_nan(tf.matmul(x_masks, x, transpose_a=True), n[:, None]),
            tf.math.divide_no_nan(tf.matmul(y_masks, y, transpose_a=True), m[:, None]),
            tf.math.divide_no_nan(tf.linalg.matvec(x_masks, x_sq, transpose_a=True), n),
            tf.math.divide_no_nan(tf.linalg.matvec(y_masks, y_sq, transpose_a=True), m),
            n,
            m,
            estimator,
        )
        return terms * present

    blocks = _pairwise_blocks(x, y, x_sq, y_sq, kernel)  # (N, N), (N, M), (M, M)
    sides = ((x_masks, x_masks), (x_masks, y_masks), (y_masks, y_masks))
    params = _term_parameters(kernel, multipliers, widths, gammas)  # (K, 1, 1)
    block_params = (params, params, params)
    if kernel == "gaussian_mix" and widths is None:
        h = _pooled_bandwidth(
            *(_masked_sums(b, rows, cols) for b, (rows, cols) in zip(blocks, sides)),
            _masked_diagonal_sums(blocks[0], x_masks),
            _masked_diagonal_sums(blocks[2], y_masks),
            n,
            m,
        )  # (C,)
        # Only same-class pairs are summed, so each row can use the h of its own label.
        h_x = tf.linalg.matvec(x_masks, h)[:, None]  # (N, 1)
        h_y = tf.linalg.matvec(y_masks, h)[:, None]  # (M, 1)
        block_params = (params * h_x, params * h_x, params * h_y)  # (K, rows, 1)
    k_xx, k_xy, k_yy = (
        _kernel_stack(b, kernel, p, degree, coef0) for b, p in zip(blocks, block_params)
    )  # (K, rows, cols)
    n, m = n[:, None], m[:, None]  # (C, 1), against terms (C, K)
    mean_xx = tf.math.divide_no_nan(tf.transpose(_masked_sums(k_xx, x_masks, x_masks)), n * n)
    mean_xy = tf.math.divide_no_nan(tf.transpose(_masked_sums(k_xy, x_masks, y_masks)), n * m)
    mean_yy = tf.math.divide_no_nan(tf.transpose(_masked_sums(k_yy, y_masks, y_masks)), m * m)
    diag_xx = tf.math.divide_no_nan(tf.transpose(_masked_diagonal_sums(k_xx, x_masks)), n)
    diag_yy = tf.math.divide_no_nan(tf.transpose(_masked_diagonal_sums(k_yy, y_masks)), m)
    biased = mean_xx - 2.0 * mean_xy + mean_yy
    return _estimate(biased, mean_xx, diag_xx, mean_yy, diag_yy, n, m, estimator) * present


def _result(terms):
    """MMDResult from (C, K) terms."""
    per_class = tf.reduce_sum(terms, axis=1)
    return MMDResult(
        total=tf.reduce_sum(per_class),
        per_class=per_class,
        per_kernel=tf.reduce_sum(terms, axis=0),
    )

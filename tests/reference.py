"""NumPy float64 oracles for the m3d_tf tests.

Each library module's oracles sit in their own headed section below, written straight from the
definitions (loops and differences rather than the library's tricks), so the tests compare two
independent computations.
"""

import numpy as np


# === MMD oracles (m3d_tf/mmd.py) ===
# Written straight from the definitions in docs/m3d_reference.md section 1: pooled set Z = [X; Y],
# one kernel matrix over Z, block means. Distances from differences, never from |x|^2 + |y|^2 - 2xy.


def np_squared_distances(x, y):
    """(n, d), (m, d) -> (n, m) float64 squared Euclidean distances."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def np_pooled_kernels(
    z,
    kernel,
    *,
    multipliers=(0.25, 0.5, 1.0, 2.0, 4.0),
    widths=None,
    gammas=(0.1, 1.0, 5.0),
    degree=2,
    coef0=1.0,
):
    """(N, d) pooled features -> (K, N, N) float64 kernel matrices, one per term."""
    z = np.asarray(z, np.float64)
    if kernel == "linear":
        return (z @ z.T)[None]
    if kernel == "polynomial":
        return ((z @ z.T + coef0) ** degree)[None]
    d2 = np_squared_distances(z, z)
    if kernel == "rbf_fixed":
        return np.stack([np.exp(-g * d2) for g in gammas])
    if widths is None:
        off_diagonal = ~np.eye(len(z), dtype=bool)
        h = d2[off_diagonal].mean()
        widths = [h * mult for mult in multipliers]
    return np.stack([np.exp(-d2 / w) for w in widths])


def np_mmd2_terms(x, y, *, kernel="gaussian_mix", estimator="biased", **options):
    """(n, d), (m, d) -> (K,) float64 MMD^2 per kernel term, biased (V) or unbiased (U)."""
    n, m = len(x), len(y)
    k = np_pooled_kernels(np.concatenate([x, y]), kernel, **options)
    k_xx, k_xy, k_yy = k[:, :n, :n], k[:, :n, n:], k[:, n:, n:]
    if estimator == "biased":
        return k_xx.mean((1, 2)) - 2 * k_xy.mean((1, 2)) + k_yy.mean((1, 2))
    off_x = ~np.eye(n, dtype=bool)
    off_y = ~np.eye(m, dtype=bool)
    return k_xx[:, off_x].mean(1) - 2 * k_xy.mean((1, 2)) + k_yy[:, off_y].mean(1)


def np_class_mmd2(x, x_labels, y, y_labels, num_classes, *, estimator="biased", **options):
    """Labelled batches -> (C, K) float64 per-class terms; 0 for a class missing on a side."""
    min_count = 1 if estimator == "biased" else 2
    x_labels = np.asarray(x_labels)
    y_labels = np.asarray(y_labels)
    rows = []
    for c in range(num_classes):
        xc, yc = np.asarray(x)[x_labels == c], np.asarray(y)[y_labels == c]
        terms = None
        if len(xc) >= min_count and len(yc) >= min_count:
            terms = np_mmd2_terms(xc, yc, estimator=estimator, **options)
        rows.append(terms)
    k = len(next(t for t in rows if t is not None))
    return np.stack([np.zeros(k) if t is None else t for t in rows])


# === Multi-formation oracles (m3d_tf/parameterization.py) ===


def np_resize_bilinear(images, out_h, out_w):
    """(N, H, W, C) -> (N, out_h, out_w, C) float64, torch bilinear with align_corners=False.

    Source coordinate (o + 0.5) * in / out - 0.5, clamped below at 0; the upper neighbour is
    clamped to the last pixel.
    """
    images = np.asarray(images, np.float64)

    def axis_weights(size_in, size_out):
        weights = np.zeros((size_out, size_in))
        for o in range(size_out):
            src = max((o + 0.5) * size_in / size_out - 0.5, 0.0)
            lo = int(np.floor(src))
            hi = min(lo + 1, size_in - 1)
            frac = src - lo
            weights[o, lo] += 1 - frac
            weights[o, hi] += frac
        return weights

    rows = axis_weights(images.shape[1], out_h)
    cols = axis_weights(images.shape[2], out_w)
    return np.einsum("ph,nhwc,qw->npqc", rows, images, cols)


def np_decode(images, factor):
    """(N, H, W, C) -> (N * f^2, H, W, C): per image, its f x f crops row-major, upsampled."""
    images = np.asarray(images, np.float64)
    _, height, width, _ = images.shape
    h, w = height // factor, width // factor
    crops = [
        image[i * h : (i + 1) * h, j * w : (j + 1) * w]
        for image in images
        for i in range(factor)
        for j in range(factor)
    ]
    return np_resize_bilinear(np.stack(crops), height, width)


# === Random ConvNet oracles (m3d_tf/networks) ===
# DM's ConvNet.embed written as PyTorch computes it: the conv bias is always added (the library
# drops it before instance norm), convolution by explicit loops over output positions and taps.


def np_conv2d(x, kernel, bias, padding):
    """(n, h, w, cin) * (kh, kw, cin, cout) + (cout,), stride 1, symmetric zero padding -> float64."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    kernel = np.asarray(kernel, np.float64)
    kh, kw = kernel.shape[:2]
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, kernel.shape[3]))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            for di in range(kh):
                for dj in range(kw):
                    out[:, i, j, :] += x[:, i + di, j + dj, :] @ kernel[di, dj]
    return out + np.asarray(bias, np.float64)


def np_instance_norm(x, gamma, beta, eps=1e-5):
    """(n, h, w, c) -> per (sample, channel) (x - mean) / sqrt(biased var + eps) * gamma + beta."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for s in range(x.shape[0]):
        for c in range(x.shape[3]):
            plane = x[s, :, :, c]
            variance = ((plane - plane.mean()) ** 2).mean()
            out[s, :, :, c] = (plane - plane.mean()) / np.sqrt(variance + eps) * gamma[c] + beta[c]
    return out


def np_avg_pool2(x):
    """(n, h, w, c) -> (n, h // 2, w // 2, c): mean of each 2x2 window; an odd last row/column is dropped."""
    x = np.asarray(x, np.float64)
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = x[:, :h, :w]
    return (x[:, 0::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) / 4


def np_convnet_features(images, blocks, norm="instancenorm"):
    """DM ConvNet.embed on NHWC images -> (n, d) float64, flattened in (H, W, C) order.

    blocks: sequence of dicts with "kernel" (3, 3, cin, width), "bias", and for instance norm
    "gamma" and "beta". The first conv pads 3 for one-channel images, every other conv pads 1.
    """
    x = np.asarray(images, np.float64)
    for d, block in enumerate(blocks):
        padding = 3 if d == 0 and x.shape[3] == 1 else 1
        x = np_conv2d(x, block["kernel"], block["bias"], padding)
        if norm == "instancenorm":
            x = np_instance_norm(x, np.asarray(block["gamma"]), np.asarray(block["beta"]))
        x = np_avg_pool2(np.maximum(x, 0.0))
    return x.reshape(len(x), -1)

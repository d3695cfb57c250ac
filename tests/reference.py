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


# === Evaluation and baseline oracles (m3d_tf/evaluate.py, m3d_tf/baselines.py) ===
# Straight from the published definitions: torch.optim.SGD's update, IDC's rand_bbox + CutMix
# paste, herding as "the pick that brings the running mean closest to the class mean" and
# k-center as "the point farthest from its nearest centre", each candidate scored in a loop.


def np_coupled_sgd_step(w, g, buffer, lr, momentum, weight_decay):
    """One torch.optim.SGD step (dampening 0): returns (new w, new momentum buffer), float64."""
    w, g, buffer = (np.asarray(a, np.float64) for a in (w, g, buffer))
    d = g + weight_decay * w
    buffer = momentum * buffer + d
    return w - lr * buffer, buffer


def np_cutmix(images, partner, lam, cy, cx):
    """IDC CutMix on NHWC images: (mixed float64, ratio of each image's own label)."""
    images = np.asarray(images, np.float64)
    _, h, w, _ = images.shape
    cut_h, cut_w = int(h * np.sqrt(1.0 - lam)), int(w * np.sqrt(1.0 - lam))
    y0, y1 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
    x0, x1 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
    mixed = images.copy()
    for i, j in enumerate(partner):
        for y in range(y0, y1):
            for x in range(x0, x1):
                mixed[i, y, x] = images[j, y, x]
    return mixed, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


def np_herding_order(features, k):
    """Greedy herding, lowest index on ties: list of k indices."""
    f = np.asarray(features, np.float64)
    mu = f.mean(axis=0)
    picks = []
    for t in range(k):
        best, best_gap = None, np.inf
        for i in range(len(f)):
            if i in picks:
                continue
            running = (f[picks].sum(axis=0) + f[i]) / (t + 1)
            gap = np.linalg.norm(mu - running)
            if gap < best_gap:
                best, best_gap = i, gap
        picks.append(best)
    return picks


def np_kcenter_order(features, k):
    """Greedy k-center from the point nearest the mean, lowest index on ties: list of k indices."""
    f = np.asarray(features, np.float64)
    mu = f.mean(axis=0)
    picks = [int(np.argmin([np.linalg.norm(x - mu) for x in f]))]
    while len(picks) < k:
        best, best_gap = None, -1.0
        for i in range(len(f)):
            if i in picks:
                continue
            gap = min(np.linalg.norm(f[i] - f[j]) for j in picks)
            if gap > best_gap:
                best, best_gap = i, gap
        picks.append(best)
    return picks


# === Augmentation oracles (m3d_tf/augment.py) ===
# Straight from DM's utils.py (rand_brightness, rand_saturation, rand_contrast, rand_crop,
# rand_cutout, rand_flip, rand_scale, rand_rotate) and IDC's misc/augment.py, on NHWC float64:
# the three colour formulas in sequence, crop as pad-by-one plus clamped indices, cutout as the
# clamped index write, scale and rotate as PyTorch's affine_grid + grid_sample (align_corners=False,
# bilinear, zeros padding) in normalised coordinates, one pixel at a time.


def np_brightness(x, offsets):
    """x + b per image; offsets (n,)."""
    return np.asarray(x, np.float64) + np.asarray(offsets, np.float64)[:, None, None, None]


def np_saturation(x, factors):
    """m + (x - m) * s, m the channel mean of each pixel; factors (n,)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=3, keepdims=True)
    return (x - mean) * np.asarray(factors, np.float64)[:, None, None, None] + mean


def np_contrast(x, factors):
    """m + (x - m) * k, m the mean of each image over H, W and C; factors (n,)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * np.asarray(factors, np.float64)[:, None, None, None] + mean


def np_flip(x, flags):
    """Mirror the width axis of the images whose flag is set."""
    x = np.asarray(x, np.float64)
    return np.where(np.asarray(flags)[:, None, None, None], x[:, :, ::-1], x)


def np_crop(x, shifts):
    """DSA crop: zero-pad by one, read clamp(i + dy + 1, 0, H + 1); shifts (n, 2) as (dy, dx)."""
    x = np.asarray(x, np.float64)
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.empty_like(x)
    for s in range(n):
        rows = np.clip(np.arange(h) + shifts[s][0] + 1, 0, h + 1)
        cols = np.clip(np.arange(w) + shifts[s][1] + 1, 0, w + 1)
        out[s] = padded[s][rows[:, None], cols[None, :]]
    return out


def np_cutout(x, centres):
    """DSA cutout: side int(size * 0.5 + 0.5); zero the clamped rows/cols k + centre - side // 2."""
    x = np.asarray(x, np.float64)
    n, h, w, _ = x.shape
    side_h, side_w = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    out = x.copy()
    for s in range(n):
        rows = np.clip(np.arange(side_h) + centres[s][0] - side_h // 2, 0, h - 1)
        cols = np.clip(np.arange(side_w) + centres[s][1] - side_w // 2, 0, w - 1)
        out[s][rows[:, None], cols[None, :]] = 0.0
    return out


def np_grid_sample(x, theta):
    """F.grid_sample(x, F.affine_grid(theta, x.shape)) with PyTorch defaults, NHWC.

    theta (n, 2, 3) maps normalised output (x, y, 1) to normalised input (x, y); pixel centres sit
    at (2j + 1) / W - 1; bilinear, each corner outside the image reads zero.
    """
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    out = np.zeros_like(x)
    for s in range(n):
        for i in range(h):
            for j in range(w):
                gx, gy = (2 * j + 1) / w - 1, (2 * i + 1) / h - 1
                sx = theta[s][0][0] * gx + theta[s][0][1] * gy + theta[s][0][2]
                sy = theta[s][1][0] * gx + theta[s][1][1] * gy + theta[s][1][2]
                px, py = ((sx + 1) * w - 1) / 2, ((sy + 1) * h - 1) / 2
                x0, y0 = int(np.floor(px)), int(np.floor(py))
                for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                    if 0 <= yy < h and 0 <= xx < w:
                        weight = (1 - abs(px - xx)) * (1 - abs(py - yy))
                        out[s, i, j] += weight * x[s, yy, xx]
    return out


def np_scale_theta(scales):
    """DSA rand_scale theta [[sx, 0, 0], [0, sy, 0]] from scales (n, 2) given as (sy, sx)."""
    return np.array([[[sx, 0.0, 0.0], [0.0, sy, 0.0]] for sy, sx in scales], np.float64)


def np_rotate_theta(angles):
    """DSA rand_rotate theta [[cos, -sin, 0], [sin, cos, 0]] from angles (n,) in radians."""
    return np.array([[[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0]] for a in angles])


def np_dsa(x, params):
    """One DSA pass with per-image parameters (dict as augment.draw_params, as NumPy arrays).

    IDC's order: flip, color (brightness, saturation, contrast), crop, scale, rotate, cutout; each
    only where its family is active (columns of params["active"] in augment.FAMILIES order).
    """
    families = ("color", "crop", "cutout", "flip", "scale", "rotate")
    on = {f: np.asarray(params["active"])[:, i] for i, f in enumerate(families)}
    x = np.asarray(x, np.float64)
    x = np_flip(x, on["flip"] & np.asarray(params["flip"]))
    color = on["color"][:, None, None, None]
    colored = np_contrast(
        np_saturation(np_brightness(x, params["brightness"]), params["saturation"]),
        params["contrast"],
    )
    x = np.where(color, colored, x)
    x = np.where(on["crop"][:, None, None, None], np_crop(x, params["crop"]), x)
    scaled = np_grid_sample(x, np_scale_theta(params["scale"]))
    x = np.where(on["scale"][:, None, None, None], scaled, x)
    rotated = np_grid_sample(x, np_rotate_theta(params["rotate"]))
    x = np.where(on["rotate"][:, None, None, None], rotated, x)
    return np.where(on["cutout"][:, None, None, None], np_cutout(x, params["cutout"]), x)

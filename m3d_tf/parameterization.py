"""Multi-formation parameterisation of the synthetic set: decode, clamp and initialise.

The synthetic pixels are stored unnormalised in [0, 1] and clamped back into it after every
update; normalisation happens later, in the augmentation/forward path. With multi-formation
(IDC, Kim et al. 2022, reused by M3D) a factor f cuts each stored H x W image into f x f crops
of (H/f) x (W/f) and bilinearly upsamples every crop back to H x W, so one stored image yields
f^2 training images while the storage budget (images per class, IPC) counts stored images.
f = 1 is the plain parameterisation. The same decode is used while condensing and evaluating.

Differences from the IDC/M3D code, on purpose: the factor must divide the image size (IDC pads
with 0.5 otherwise), and decoded images are ordered image-major (all crops of image 0, then of
image 1, ...) where IDC orders them crop-major; within a class the set is the same.
"""

import numpy as np
import tensorflow as tf

from m3d_tf.checks import choice, positive_int

INITS = ("mix", "real", "noise")

# IDC/M3D's noise initialisation: N(0.5, 0.25^2) clipped to [0, 1] (randn / 4 + 0.5).
_NOISE_MEAN = 0.5
_NOISE_STD = 0.25


def validate_factor(image_shape, factor):
    """Checks that `factor` is a positive integer dividing the image height and width.

    Args:
        image_shape: (H, W) or (H, W, C).
        factor: the multi-formation factor f.

    Raises:
        ValueError: one line naming the factor, the image size and the factors that work.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    positive_int("factor", factor)
    if height % factor or width % factor:
        choices = [f for f in range(1, min(height, width) + 1) if not height % f and not width % f]
        raise ValueError(
            f"factor={factor} does not divide the image size {height}x{width}; "
            f"use a factor that divides both: {', '.join(map(str, choices))}."
        )


def clamp01(x):
    """Clips pixels into [0, 1] (applied to the stored images after every update).

    Args:
        x: float tensor, any shape.

    Returns:
        Same shape and dtype, values in [0, 1].
    """
    return tf.clip_by_value(x, 0.0, 1.0)


def decode(images, factor):
    """Multi-formation decode: each image -> f x f crops, each bilinearly upsampled to H x W.

    Bilinear with half-pixel centres and no antialiasing, like torch
    `F.interpolate(mode="bilinear", align_corners=False)` in IDC/M3D. Differentiable.

    Args:
        images: float32 (N, H, W, C), static H and W divisible by `factor` (see
            `validate_factor`); N may be dynamic.
        factor: Python int f >= 1.

    Returns:
        float32 (N * f^2, H, W, C): the crops of image 0 in row-major order (top-left,
        top-right, ..., bottom-right), then those of image 1, ... For f = 1, `images` itself.

    Example:
        >>> decode(tf.zeros((3, 32, 32, 3)), 2).shape
        TensorShape([12, 32, 32, 3])
    """
    if factor == 1:
        return images
    _, height, width, channels = images.shape
    crop_h, crop_w = height // factor, width // factor
    crops = tf.reshape(images, (-1, factor, crop_h, factor, crop_w, channels))
    crops = tf.transpose(crops, (0, 1, 3, 2, 4, 5))  # (N, f rows, f cols, h, w, C)
    crops = tf.reshape(crops, (-1, crop_h, crop_w, channels))
    return tf.image.resize(crops, (height, width), method="bilinear", antialias=False)


def decode_labels(labels, factor):
    """Labels of `decode(images, factor)`: each label repeated f^2 times.

    Args:
        labels: int (N,).
        factor: Python int f >= 1.

    Returns:
        int (N * f^2,), same dtype.
    """
    return tf.repeat(labels, factor * factor)


def _downsample_nearest(images, factor):
    """Nearest resize by 1/f like torch `F.interpolate(mode="nearest")`: keeps pixel f*i."""
    return images[:, ::factor, ::factor, :]


def _mosaic(tiles, factor):
    """(n, f^2, h, w, C) tiles -> (n, f*h, f*w, C), tiles placed row-major."""
    n, _, h, w, c = tiles.shape
    grid = tiles.reshape(n, factor, factor, h, w, c).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(n, factor * h, factor * w, c)


def initial_images(images_by_class, ipc, factor, *, init="mix", seed=0):
    """Initial stored synthetic images, class-major, deterministic for a seed.

    Args:
        images_by_class: list of C arrays, images_by_class[c] = float (n_c, H, W, channels)
            real images of class c in [0, 1].
        ipc: stored images per class, >= 1.
        factor: multi-formation factor f (see `validate_factor`).
        init: "mix": each stored image is a mosaic of f^2 distinct real images of its class,
                each nearest-resized to (H/f, W/f) and tiled row-major, so decoding it yields
                upsampled versions of those real images (IDC/M3D); needs ipc * f^2 images
                per class. "real": ipc distinct random real images (needs ipc per class).
                "noise": Gaussian N(0.5, 0.25^2) per pixel clipped to [0, 1], IDC/M3D's
                noise start (uses only the image shape).
        seed: int. Class c draws from NumPy's Generator seeded with (seed, c), so a class's
            initial images do not depend on the other classes.

    Returns:
        float32 ndarray (C * ipc, H, W, channels) in [0, 1]; rows c * ipc ... (c + 1) * ipc - 1
        belong to class c.

    Raises:
        ValueError: unknown init, ipc < 1, a bad factor, inconsistent image shapes, pixels
            outside [0, 1] (NaN included), or a class with too few images (named).
    """
    choice("init", init, INITS)
    positive_int("ipc", ipc)
    images_by_class = [np.asarray(images, dtype=np.float32) for images in images_by_class]
    if not images_by_class:
        raise ValueError("images_by_class is empty; pass one array of images per class.")
    image_shape = images_by_class[0].shape[1:]
    for c, images in enumerate(images_by_class):
        if images.ndim != 4 or images.shape[1:] != image_shape:
            raise ValueError(
                f"class {c} images have shape {images.shape}; expected (n, H, W, channels) "
                f"with (H, W, channels) = {image_shape} like class 0."
            )
        if images.size and not (images.min() >= 0.0 and images.max() <= 1.0):
            raise ValueError(
                f"class {c} images have values in [{images.min():g}, {images.max():g}]; "
                "pixels must be in [0, 1] (divide uint8 images by 255)."
            )
    validate_factor(image_shape, factor)
    needed = ipc * factor * factor if init == "mix" else ipc
    if init != "noise":
        for c, images in enumerate(images_by_class):
            if len(images) < needed:
                if init == "mix":
                    requirement, fix = f"ipc={ipc} and factor={factor}", "Lower ipc or factor, or"
                else:
                    requirement, fix = f"ipc={ipc}", "Lower ipc or"
                raise ValueError(
                    f"class {c} has {len(images)} training images; init={init!r} with "
                    f"{requirement} needs {needed}. {fix} use init='noise'."
                )

    stored = []
    for c, images in enumerate(images_by_class):
        rng = np.random.default_rng([seed, c])
        if init == "noise":
            noise = rng.normal(_NOISE_MEAN, _NOISE_STD, size=(ipc,) + image_shape)
            stored.append(np.clip(noise, 0.0, 1.0).astype(np.float32))
            continue
        chosen = images[rng.choice(len(images), size=needed, replace=False)]
        if init == "real":
            stored.append(chosen)
            continue
        tiles = _downsample_nearest(chosen, factor)
        stored.append(_mosaic(tiles.reshape((ipc, factor * factor) + tiles.shape[1:]), factor))
    return np.concatenate(stored, axis=0)

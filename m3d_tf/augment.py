"""Differentiable Siamese augmentation (DSA) for dataset condensation.

Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation" (ICML 2021). One
random draw of parameters is applied identically to the real and the synthetic images of a class,
and every op is differentiable with respect to the images, so the matching loss reaches the
synthetic pixels through the augmentation.

Behaviour matched (PyTorch, NCHW there; NHWC here):
- DM: VICO-UoE/DatasetCondensation utils.py (`DiffAugment`, `ParamDiffAug`, `rand_*`).
- IDC: snu-mllab/Efficient-Dataset-Condensation misc/augment.py (`DiffAug`); M3D uses it.
Both apply DSA to normalised images, so the brightness offset is in normalised units; so should we.

Ops, in the order they are applied (parameters as in `ParamDiffAug` / `DiffAug`):
- flip: mirror the width axis when U(0,1) < 0.5 (`x.flip(3)`).
- color = brightness, saturation, contrast, in that order:
  x + (U(0,1) - 0.5) * 1.0; m + (x - m) * U(0,1) * 2.0 with m the per-pixel channel mean;
  m + (x - m) * (U(0,1) + 0.5) with m the per-image mean over H, W and C.
- crop: integer shift out[i, j] = x[i + dy, j + dx], zero outside; dy, dx uniform integers in
  [-s, s], s = int(size * 0.125 + 0.5) per axis (4 for 32 and for 28).
- scale: affine sampling with theta = diag(sx, sy), sx and sy independent U(1/1.2, 1.2).
- rotate: affine sampling with theta = [[cos a, -sin a], [sin a, cos a]], a ~ U(-15, 15) degrees.
- cutout: zero a square of side int(size * 0.5 + 0.5) centred at an integer (cy, cx) drawn from
  [0, size + 1 - side % 2); rows cy - side // 2 ... cy - side // 2 + side - 1, clipped to the image.
scale and rotate use PyTorch's `affine_grid` + `grid_sample` defaults (the reference passes
neither option): align_corners=False, bilinear, zeros padding. In pixels (centre c = (size - 1) / 2)
that is src = c + M (dst - c) + offset with each of the four bilinear corners outside the image
contributing zero; for non-square images the rotation acts on normalised coordinates, as there.
flip, crop, scale and rotate share that one resampling: an integer offset or a mirror reads one
pixel with weight 1, so crop and flip are the reference's index shifts bit for bit. Without a
rotation in the batch the resampling factors into rows, then columns, moving whole rows instead
of gathering single pixels four times, which is what makes it cheap on CPU.

Strategies (name -> composition):
- 'none': identity.
- 'color_crop_cutout' (IDC, M3D condensation): IDC's `DiffAug` applies flip and color whenever
  listed, then ONE of the listed crop/scale/rotate, then cutout when listed. With this name the
  single-choice list is just crop, so every draw is color, then crop, then cutout.
- 'color_crop_flip_scale_rotate' (IDC/M3D evaluation, cutout removed for CutMix): flip, color,
  then one of crop/scale/rotate chosen uniformly.
- 'color_crop_cutout_flip_scale_rotate' (DM, `aug_mode='S'`): one family of the six chosen
  uniformly per draw, nothing else.
`flip=False` removes flip from a strategy (IDC does so for MNIST and SVHN).

Randomness is stateless: a (2,) int32/int64 seed tensor determines every draw, so the caller
derives seeds from (seed, iteration, class) and a run is exactly repeatable and resumable.
"""

import math
import numbers

import tensorflow as tf

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")

# name -> (families applied on every draw, families of which one is chosen per draw)
_STRATEGIES = {
    "none": ((), ()),
    "color_crop_cutout": (("color", "crop", "cutout"), ()),
    "color_crop_flip_scale_rotate": (("flip", "color"), ("crop", "scale", "rotate")),
    "color_crop_cutout_flip_scale_rotate": ((), FAMILIES),
}
STRATEGIES = tuple(_STRATEGIES)

# === DSA parameters (ParamDiffAug in DM, DiffAug in IDC) ===
_FLIP_PROB = 0.5
_BRIGHTNESS = 1.0
_SATURATION = 2.0
_CONTRAST = 0.5
_CROP_RATIO = 0.125
_SCALE_RATIO = 1.2
_ROTATE_DEGREES = 15.0
_CUTOUT_RATIO = 0.5


def crop_shift(size):
    """Largest crop shift in pixels along an axis of `size` pixels: int(size * 0.125 + 0.5)."""
    return int(size * _CROP_RATIO + 0.5)


def cutout_side(size):
    """Cutout side in pixels along an axis of `size` pixels: int(size * 0.5 + 0.5)."""
    return int(size * _CUTOUT_RATIO + 0.5)


# === Ops: pure functions, images (N, H, W, C) float, one parameter row per image ===


def adjust_color(images, brightness, saturation, contrast):
    """DSA color: brightness, then saturation, then contrast, fused into one pass.

    The reference sequence is y1 = x + b; y2 = m1 + (y1 - m1) * s with m1 the per-pixel channel
    mean of y1; y3 = mu + (y2 - mu) * k with mu the mean of y2 over H, W and C. Saturation keeps
    each pixel's channel mean, so mu = mean(x) + b and the whole sequence is
    k s x + k (1 - s) m + (1 - k) mean(x) + b, with m the channel mean of x. Identity
    parameters (0, 1, 1) return `images` bit for bit.

    Args:
        images: float (N, H, W, C); with C = 1 saturation has no effect.
        brightness: float32 (N,) offsets, U(-0.5, 0.5) as drawn; 0 is the identity.
        saturation: float32 (N,) factors, U(0, 2) as drawn; 1 is the identity.
        contrast: float32 (N,) factors, U(0.5, 1.5) as drawn; 1 is the identity.

    Returns:
        float (N, H, W, C), same dtype.
    """
    dtype = images.dtype
    b, s, k = (tf.cast(v, dtype)[:, None, None, None] for v in (brightness, saturation, contrast))
    channels = images.shape[-1]
    # Slice sum: reduce_mean over a 3-wide last axis is twice as slow on CPU.
    channel_mean = tf.add_n([images[..., c : c + 1] for c in range(channels)]) / channels
    image_mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return (k * s) * images + (k * (1 - s) * channel_mean + ((1 - k) * image_mean + b))


def flip_matrices(flags):
    """Pixel-space matrices of a horizontal flip, diag(1, -1) on (y, x) offsets, or I.

    Args:
        flags: bool (N,).

    Returns:
        float32 (N, 2, 2).
    """
    sign = tf.where(flags, -1.0, 1.0)
    ones, zeros = tf.ones_like(sign), tf.zeros_like(sign)
    return tf.reshape(tf.stack([ones, zeros, zeros, sign], axis=1), (-1, 2, 2))


def scale_matrices(scales):
    """Pixel-space matrices of DSA scale, theta = diag(sx, sy), acting on (y, x) offsets.

    Args:
        scales: float32 (N, 2) as (sy, sx); > 1 samples a wider area, so the content shrinks.

    Returns:
        float32 (N, 2, 2).
    """
    zeros = tf.zeros_like(scales[:, 0])
    return tf.reshape(tf.stack([scales[:, 0], zeros, zeros, scales[:, 1]], axis=1), (-1, 2, 2))


def rotation_matrices(angles, height, width):
    """Pixel-space matrices of DSA rotate, theta = [[cos, -sin], [sin, cos]] on normalised (x, y).

    Normalised coordinates scale x by 2 / width and y by 2 / height, so in pixels acting on
    (y, x) offsets the matrix is [[cos, sin * h / w], [-sin * w / h, cos]] (a plain rotation when
    the image is square). A positive angle turns the content anticlockwise, as in the reference.

    Args:
        angles: float32 (N,) in radians.
        height, width: Python ints.

    Returns:
        float32 (N, 2, 2).
    """
    cos, sin = tf.cos(angles), tf.sin(angles)
    return tf.reshape(
        tf.stack([cos, sin * (height / width), -sin * (width / height), cos], axis=1), (-1, 2, 2)
    )


def _source_coordinates(along_rows, along_cols, offset, rows, cols, centre):
    # Summed in this order so that M = I with integer offsets gives exact integers.
    return along_rows * rows + along_cols * cols + offset + centre


def affine_warp(images, matrices, offsets):
    """Bilinear resampling src = c + M (dst - c) + offset, zero outside (grid_sample semantics).

    c = ((H - 1) / 2, (W - 1) / 2) is the image centre in pixels, which is where PyTorch's
    `affine_grid` with align_corners=False puts the origin. Each of the four bilinear corners
    that falls outside the image contributes zero (padding_mode='zeros'). M = I with an integer
    offset reproduces the DSA crop exactly. Differentiable with respect to `images`.

    Args:
        images: float (N, H, W, C).
        matrices: float32 (N, 2, 2) acting on (y, x).
        offsets: float32 (N, 2) as (dy, dx) in pixels.

    Returns:
        float (N, H, W, C), same dtype.
    """
    _, height, width, channels = images.shape
    rows = (tf.range(height, dtype=tf.float32) - (height - 1) / 2)[:, None]  # (H, 1)
    cols = tf.range(width, dtype=tf.float32) - (width - 1) / 2  # (W,)
    m = matrices[:, :, :, None, None]
    o = offsets[:, :, None, None]
    src_y = _source_coordinates(m[:, 0, 0], m[:, 0, 1], o[:, 0], rows, cols, (height - 1) / 2)
    src_x = _source_coordinates(m[:, 1, 0], m[:, 1, 1], o[:, 1], rows, cols, (width - 1) / 2)
    y0, x0 = tf.floor(src_y), tf.floor(src_x)
    wy1, wx1 = src_y - y0, src_x - x0
    pixels = tf.reshape(images, (-1, channels))
    first = tf.range(tf.shape(images)[0]) * (height * width)  # index of each image's pixel 0

    def corner(y, x, weight):
        inside = (y >= 0) & (y <= height - 1) & (x >= 0) & (x <= width - 1)
        y = tf.cast(tf.clip_by_value(y, 0, height - 1), tf.int32)
        x = tf.cast(tf.clip_by_value(x, 0, width - 1), tf.int32)
        values = tf.gather(pixels, first[:, None, None] + y * width + x)  # (N, H, W, C)
        return values * tf.cast(tf.where(inside, weight, 0.0), images.dtype)[..., None]

    return (
        corner(y0, x0, (1 - wy1) * (1 - wx1))
        + corner(y0, x0 + 1, (1 - wy1) * wx1)
        + corner(y0 + 1, x0, wy1 * (1 - wx1))
        + corner(y0 + 1, x0 + 1, wy1 * wx1)
    )


def _taps(diagonal, offset, size):
    """The two 1-D bilinear taps of src_i = c + d (i - c) + offset along an axis of `size`.

    Returns [(index, weight)] * 2, each int32 / float32 (N, size); a tap outside [0, size)
    reads a clipped index with weight 0 (zeros padding).
    """
    centre = (size - 1) / 2
    src = diagonal[:, None] * (tf.range(size, dtype=tf.float32) - centre) + offset[:, None]
    src += centre
    first = tf.floor(src)
    frac = src - first
    taps = []
    for index, weight in ((first, 1 - frac), (first + 1, frac)):
        inside = (index >= 0) & (index <= size - 1)
        index = tf.cast(tf.clip_by_value(index, 0, size - 1), tf.int32)
        taps.append((index, tf.where(inside, weight, 0.0)))
    return taps


def _resample_rows(images, taps):
    """out[n, i] = sum over the taps of weight[n, i] * images[n, index[n, i]]; whole rows move."""
    out = []
    for index, weight in taps:
        rows = tf.gather(images, index, batch_dims=1)
        out.append(rows * tf.cast(weight, images.dtype)[:, :, None, None])
    return out[0] + out[1]


def _axis_aligned_warp(images, diagonals, offsets):
    """affine_warp for diagonal M (flip, crop, scale): rows, then columns, two taps each.

    Bilinear weights and zero padding factor over the axes when M is diagonal, so this equals
    affine_warp up to rounding (exactly for integer shifts and flips) while gathering whole
    rows and columns instead of single pixels: 3x cheaper on CPU without XLA.
    """
    _, height, width, _ = images.shape
    x = _resample_rows(images, _taps(diagonals[:, 0], offsets[:, 0], height))
    x = tf.transpose(x, (0, 2, 1, 3))
    x = _resample_rows(x, _taps(diagonals[:, 1], offsets[:, 1], width))
    return tf.transpose(x, (0, 2, 1, 3))


def cutout(images, centres, active):
    """Zeros a square of side `cutout_side` per axis centred at (cy, cx) in the active images.

    Rows cy - side // 2 ... cy - side // 2 + side - 1 (and likewise columns), clipped to the
    image, as DSA's clamped index write does.

    Args:
        images: float (N, H, W, C).
        centres: int32 (N, 2) as (cy, cx).
        active: bool (N,); inactive images are returned unchanged.

    Returns:
        float (N, H, W, C).
    """
    _, height, width, _ = images.shape
    side_h, side_w = cutout_side(height), cutout_side(width)
    dy = tf.range(height) - centres[:, :1]  # (N, H) row offset from the centre
    dx = tf.range(width) - centres[:, 1:]  # (N, W)
    in_rows = (dy >= -(side_h // 2)) & (dy < side_h - side_h // 2) & active[:, None]
    in_cols = (dx >= -(side_w // 2)) & (dx < side_w - side_w // 2)
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return images * tf.cast(~hole, images.dtype)[:, :, :, None]


# === Parameters ===


def _families(strategy, flip):
    always, choices = _STRATEGIES[strategy]
    if not flip:
        always = tuple(f for f in always if f != "flip")
        choices = tuple(f for f in choices if f != "flip")
    return always, choices


def _check_strategy(strategy):
    if strategy not in _STRATEGIES:
        raise ValueError(
            f"strategy={strategy!r} is not a DSA strategy; use one of "
            f"{', '.join(repr(s) for s in STRATEGIES)}."
        )


def _check_seed(seed):
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64) or seed.shape != (2,):
        raise ValueError(
            f"seed must be an int32 or int64 tensor of shape (2,); got dtype {seed.dtype.name} "
            f"and shape {tuple(seed.shape)}. Pass e.g. tf.constant([seed, step])."
        )
    # One dtype, so [7, 11] draws the same numbers whether it came as int32 or int64.
    return tf.cast(seed, tf.int64)


def _check_images(images):
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or None in images.shape[1:] or not images.dtype.is_floating:
        raise ValueError(
            "images must be a float tensor of shape (N, H, W, C) with known H, W and C; got "
            f"dtype {images.dtype.name} and shape {tuple(images.shape)}."
        )
    return images


# Philox integers are the same under XLA as in graph and eager mode (its float draws are not),
# so floats are built from 24-bit integers: U[0, 1) on a 2**-24 grid.
_ALG = "philox"
_FLOAT_BITS = 24


def _split(seed, num):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num, alg=_ALG))


def _draw_active(seed, num_draws, always, choices):
    """bool (num_draws, 6): which FAMILIES each draw applies."""
    always_row = tf.constant([f in always for f in FAMILIES])
    active = tf.broadcast_to(always_row, tf.stack([num_draws, len(FAMILIES)]))
    if choices:
        table = tf.constant([[f == c for f in FAMILIES] for c in choices])
        pick = tf.random.stateless_uniform(
            tf.reshape(num_draws, (1,)), seed, 0, len(choices), tf.int32, alg=_ALG
        )
        active = active | tf.gather(table, pick)
    return active


def _draw_values(seed, num_draws, height, width):
    """Every op's parameters for num_draws draws, whether or not the op is active."""
    seeds = _split(seed, 11)
    shape = tf.reshape(num_draws, (1,))

    def uniform(i):
        bits = tf.random.stateless_uniform(shape, seeds[i], 0, 2**_FLOAT_BITS, tf.int32, alg=_ALG)
        return tf.cast(bits, tf.float32) * 2.0**-_FLOAT_BITS

    def integers(i, low, high):
        return tf.random.stateless_uniform(shape, seeds[i], low, high, tf.int32, alg=_ALG)

    shift_h, shift_w = crop_shift(height), crop_shift(width)
    side_h, side_w = cutout_side(height), cutout_side(width)
    low = 1.0 / _SCALE_RATIO
    return {
        "flip": uniform(0) < _FLIP_PROB,
        "brightness": (uniform(1) - 0.5) * _BRIGHTNESS,
        "saturation": uniform(2) * _SATURATION,
        "contrast": uniform(3) + _CONTRAST,
        "crop": tf.stack(
            [integers(4, -shift_h, shift_h + 1), integers(5, -shift_w, shift_w + 1)], axis=1
        ),
        "scale": tf.stack([uniform(6), uniform(7)], axis=1) * (_SCALE_RATIO - low) + low,
        "rotate": (uniform(8) - 0.5) * (2 * _ROTATE_DEGREES * math.pi / 180),
        "cutout": tf.stack(
            [integers(9, 0, height + 1 - side_h % 2), integers(10, 0, width + 1 - side_w % 2)],
            axis=1,
        ),
    }


def draw_params(seed, num_draws, image_shape, strategy, *, flip=True):
    """Draws DSA parameters: which op families apply and every op's parameters.

    A deterministic function of (seed, num_draws, image_shape, strategy, flip), identical in
    eager mode, in tf.function and under XLA.

    Args:
        seed: int32 or int64 (2,).
        num_draws: int or scalar int32 tensor.
        image_shape: (H, W) or (H, W, C), Python ints.
        strategy: one of STRATEGIES.
        flip: False removes flip from the strategy (digits).

    Returns:
        dict of tensors with leading dim num_draws:
        "active" bool (n, 6), columns in FAMILIES order; "flip" bool (n,) the coin (the image is
        mirrored when the flip family is active and the coin is set); "brightness" (n,) offset;
        "saturation" (n,) and "contrast" (n,) factors; "crop" int32 (n, 2) shift (dy, dx);
        "scale" (n, 2) (sy, sx); "rotate" (n,) radians; "cutout" int32 (n, 2) centre (cy, cx).
        Floats are float32. An inactive family's values are ignored by `apply`.

    Raises:
        ValueError: unknown strategy, or a seed that is not an int (2,) tensor.

    Example:
        >>> params = draw_params(tf.constant([0, 1]), 10, (32, 32, 3), "color_crop_cutout")
    """
    _check_strategy(strategy)
    seed = _check_seed(seed)
    always, choices = _families(strategy, flip)
    choice_seed, value_seed = _split(seed, 2)
    params = _draw_values(value_seed, num_draws, image_shape[0], image_shape[1])
    params["active"] = _draw_active(choice_seed, num_draws, always, choices)
    return params


def apply(images, params):
    """Applies one parameter row per image: color, then flip + crop/scale/rotate, then cutout.

    The reference order is flip, color, crop/scale/rotate, cutout; color acts on each pixel and
    on the image mean, so it commutes with a flip, and the flip joins the one resampling as
    diag(1, -1) applied before the crop/scale/rotate matrix. If several of flip, crop, scale and
    rotate are active they share that resampling, their matrices composed; apart from flip the
    provided strategies never activate two at once. Inactive families leave an image unchanged
    bit for bit, and a family no image in the batch uses costs nothing (tf.cond).

    Args:
        images: float (N, H, W, C), normalised as the network expects.
        params: dict as returned by `draw_params`, leading dim N.

    Returns:
        float (N, H, W, C), same dtype; differentiable with respect to `images`.
    """
    rotate_column = params["active"][:, FAMILIES.index("rotate")]
    return _apply(images, params, tf.reduce_any(rotate_column))


def _apply(images, params, any_rotation):
    """`apply` with the choice of resampling path made by the caller (see siamese_augment)."""
    _, height, width, _ = images.shape
    on = {f: params["active"][:, i] for i, f in enumerate(FAMILIES)}

    def when_used(family_on, fn, x):
        return tf.cond(tf.reduce_any(family_on), lambda: fn(x), lambda: tf.identity(x))

    def color(x):
        return adjust_color(
            x,
            tf.where(on["color"], params["brightness"], 0.0),
            tf.where(on["color"], params["saturation"], 1.0),
            tf.where(on["color"], params["contrast"], 1.0),
        )

    def warp(x):
        eye = tf.eye(2, batch_shape=tf.shape(params["rotate"]))
        flip = flip_matrices(on["flip"] & params["flip"])
        scale = tf.where(on["scale"][:, None, None], scale_matrices(params["scale"]), eye)
        offsets = tf.where(on["crop"][:, None], tf.cast(params["crop"], tf.float32), 0.0)
        offsets = tf.linalg.matvec(flip, offsets)

        def general(x):
            rotation = rotation_matrices(params["rotate"], height, width)
            rotation = tf.where(on["rotate"][:, None, None], rotation, eye)
            return affine_warp(x, flip @ scale @ rotation, offsets)

        def axis_aligned(x):
            return _axis_aligned_warp(x, tf.linalg.diag_part(flip @ scale), offsets)

        return tf.cond(any_rotation, lambda: general(x), lambda: axis_aligned(x))

    x = when_used(on["color"], color, images)
    x = when_used(on["flip"] | on["crop"] | on["scale"] | on["rotate"], warp, x)
    return when_used(on["cutout"], lambda x: cutout(x, params["cutout"], on["cutout"]), x)


# === Entry points ===


def siamese_augment(images, group_ids, seed, strategy, *, num_groups, flip=True):
    """DSA with one draw per group, shared by every image of that group (condensation).

    Draw g is row g of draw_params(seed, num_groups, ...), and the resampling path is chosen
    from all num_groups draws, so the same (seed, num_groups, group id) transforms an image the
    same way, bit for bit, whether real and synthetic images of a class come in one batch or in
    two calls, on one device or split across replicas.

    Args:
        images: float (N, H, W, C).
        group_ids: int (N,) in [0, num_groups), e.g. the class of each image.
        seed: int32 or int64 (2,), e.g. derived from (seed, iteration).
        strategy: one of STRATEGIES; M3D uses 'color_crop_cutout', DM
            'color_crop_cutout_flip_scale_rotate'.
        num_groups: Python int >= 1, e.g. the number of classes.
        flip: False removes flip (digits).

    Returns:
        float (N, H, W, C).

    Raises:
        ValueError: unknown strategy, bad seed, images not (N, H, W, C) float, num_groups < 1,
            or group_ids not (N,).

    Example:
        >>> both = siamese_augment(tf.concat([real, syn], 0), tf.concat([y_real, y_syn], 0),
        ...                        tf.constant([seed, step]), "color_crop_cutout", num_groups=10)
    """
    _check_strategy(strategy)
    seed = _check_seed(seed)
    images = _check_images(images)
    if not isinstance(num_groups, numbers.Integral) or num_groups < 1:
        raise ValueError(f"num_groups must be a Python int >= 1; got {num_groups!r}.")
    num_groups = int(num_groups)
    group_ids = tf.convert_to_tensor(group_ids)
    if group_ids.shape.rank != 1 or not group_ids.shape.is_compatible_with(images.shape[:1]):
        raise ValueError(
            f"group_ids must have shape (N,) = ({images.shape[0]},) to match images; "
            f"got {tuple(group_ids.shape)}."
        )
    if strategy == "none":
        return images
    table = draw_params(seed, num_groups, images.shape[1:], strategy, flip=flip)
    any_rotation = tf.reduce_any(table["active"][:, FAMILIES.index("rotate")])
    return _apply(images, {k: tf.gather(v, group_ids) for k, v in table.items()}, any_rotation)


def augment_per_sample(images, seed, strategy, *, flip=True):
    """DSA with its own parameters for every image (training a network on the synthetic set).

    As in DM's `DiffAugment(seed=-1)` and IDC's `DiffAug(batch=False)`, the op family (where the
    strategy chooses one) is drawn once per call and the parameters once per image.

    Args:
        images: float (N, H, W, C); N may be dynamic.
        seed: int32 or int64 (2,), e.g. derived from (seed, step).
        strategy: one of STRATEGIES; IDC/M3D evaluation uses 'color_crop_flip_scale_rotate', DM
            'color_crop_cutout_flip_scale_rotate'.
        flip: False removes flip (digits).

    Returns:
        float (N, H, W, C).

    Raises:
        ValueError: unknown strategy, bad seed, or images not (N, H, W, C) float.
    """
    _check_strategy(strategy)
    seed = _check_seed(seed)
    images = _check_images(images)
    if strategy == "none":
        return images
    params = _per_sample_params(seed, tf.shape(images)[0], images.shape[1:], strategy, flip)
    return apply(images, params)


def _per_sample_params(seed, num, image_shape, strategy, flip):
    """draw_params with one family choice shared by all num rows."""
    always, choices = _families(strategy, flip)
    choice_seed, value_seed = _split(seed, 2)
    params = _draw_values(value_seed, num, image_shape[0], image_shape[1])
    params["active"] = tf.broadcast_to(
        _draw_active(choice_seed, 1, always, choices), tf.stack([num, len(FAMILIES)])
    )
    return params

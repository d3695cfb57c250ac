"""The random ConvNet feature extractor of DM and M3D, as pure functions over weight tensors.

Matching draws a fresh, never-trained ConvNet every `ipm` iterations (M3D: 5, DM: 1). Inside a
tf.distribute replica context variables cannot be re-assigned, so the net is a tuple of tensors
drawn from a seed with stateless ops, and the forward pass is a function of (images, weights).

Architecture (DM `networks.py: ConvNet`, identical in IDC's `models/convnet.py`), `depth` blocks of
    Conv3x3(width, padding 1; padding 3 on the first block when the images have one channel)
    -> instance norm (PyTorch GroupNorm(width, width), affine, eps 1e-5) -> ReLU -> AvgPool 2x2/2
then flatten. The padding-3 trick makes 28x28 grayscale images produce 32x32 maps, so
Fashion-MNIST and CIFAR both give 4x4x128 = 2048 features with the defaults.

Flatten order: we flatten NHWC as (H, W, C); PyTorch flattens (C, H, W). The two differ by a fixed
permutation of the feature axis, which preserves every inner product and Euclidean distance, so
every MMD kernel (linear, polynomial, Gaussian) and DM's mean-matching loss are unchanged.
"""

import numbers

import tensorflow as tf

from m3d_tf.networks.initializers import torch_uniform_bound

NORMS = ("instancenorm", "none")
EPSILON = 1e-5  # PyTorch GroupNorm / InstanceNorm default
_LOW_PRECISION = (tf.bfloat16, tf.float16)


def first_padding(in_channels):
    """Padding of the first 3x3 conv: 3 for one-channel images (DM's 28 -> 32 trick), else 1."""
    return 3 if in_channels == 1 else 1


def convnet_feature_shape(image_shape, *, width=128, depth=3):
    """Shape (h, w, width) of the last block's map, i.e. features = h * w * width.

    Args:
        image_shape: (height, width, channels) of the input images.
        width: channels of every conv.
        depth: number of conv blocks.

    Returns:
        tuple (h, w, width). (4, 4, 128) for (32, 32, 3) and for (28, 28, 1) with the defaults.

    Raises:
        ValueError: if the map shrinks to nothing before the last block.
    """
    height, wide, channels = image_shape
    grow = 2 * first_padding(channels) - 2  # a 3x3 conv with padding p adds 2p - 2 pixels
    h, w = height + grow, wide + grow
    for _ in range(depth):
        h, w = h // 2, w // 2
    if h < 1 or w < 1:
        raise ValueError(
            f"A depth-{depth} ConvNet halves the map {depth} times, which empties "
            f"image_shape={tuple(image_shape)}; use larger images or a smaller depth."
        )
    return h, w, width


def convnet_weights(
    seed, in_channels, image_size, *, width=128, depth=3, norm="instancenorm", dtype=tf.float32
):
    """Draw a random ConvNet with PyTorch's default initialisation, statelessly from `seed`.

    Kernels and biases are U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in_channels * 9
    (PyTorch Conv2d default: kaiming_uniform(a=sqrt(5)) for the weight; see initializers.py);
    instance-norm gamma = 1 and beta = 0 (PyTorch GroupNorm default). Block d's kernel and bias use
    the seeds fold_in(seed, 2d) and fold_in(seed, 2d + 1), so a given seed always gives the same net
    on any device, eagerly, under tf.function and in every replica.

    Args:
        seed: int32/int64 tensor of shape (2,), e.g. fold_in(run_seed, iteration // ipm).
        in_channels: channels of the images (1 or 3 typically).
        image_size: int side or (height, width) of the images; only checked (the conv weights do not
            depend on it): images the net would shrink to nothing are rejected here, at trace time.
        width: channels of every conv (DM: 128).
        depth: number of blocks (DM: 3 for 28x28 and 32x32 images, 4 for 64x64).
        norm: "instancenorm" (DM, M3D) or "none".
        dtype: floating dtype of the returned tensors.

    Returns:
        tuple of `depth` dicts, block d = {"kernel": (3, 3, c_in, width), "bias": (width,)}, plus
        "gamma" and "beta" (width,) when norm="instancenorm". c_in is in_channels for block 0 and
        width after. Kernels are HWIO (tf.nn.conv2d layout).

    Raises:
        ValueError: for a seed not of shape (2,), non-positive sizes, images too small for `depth`
            or an unknown norm.

    Example:
        >>> weights = convnet_weights(tf.constant([0, 7]), 3, 32)
        >>> convnet_features(images, weights, depth=3).shape  # images (n, 32, 32, 3) -> (n, 2048)
    """
    seed = tf.convert_to_tensor(seed)
    if seed.shape != (2,):
        raise ValueError(
            f"convnet_weights needs a seed tensor of shape (2,); received shape {seed.shape}."
        )
    for arg, value in (("in_channels", in_channels), ("width", width), ("depth", depth)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(
                f"convnet_weights needs a positive int {arg}; received {arg}={value!r}."
            )
    if norm not in NORMS:
        raise ValueError(
            f"convnet_weights: unknown norm={norm!r}; choose one of {', '.join(NORMS)}."
        )
    height, wide = (image_size,) * 2 if isinstance(image_size, numbers.Integral) else image_size
    convnet_feature_shape((height, wide, in_channels), width=width, depth=depth)
    in_channels, width, depth = int(in_channels), int(width), int(depth)
    blocks = []
    channels = in_channels
    for d in range(depth):
        bound = torch_uniform_bound(channels * 9)
        # Philox explicitly: "auto_select" may choose another generator under
        # XLA, which would draw a different net for the same seed.
        kernel = tf.random.stateless_uniform(
            (3, 3, channels, width),
            tf.random.experimental.stateless_fold_in(seed, 2 * d, alg="philox"),
            -bound,
            bound,
            alg="philox",
        )
        bias = tf.random.stateless_uniform(
            (width,),
            tf.random.experimental.stateless_fold_in(seed, 2 * d + 1, alg="philox"),
            -bound,
            bound,
            alg="philox",
        )
        block = {"kernel": tf.cast(kernel, dtype), "bias": tf.cast(bias, dtype)}
        if norm == "instancenorm":
            block["gamma"] = tf.ones((width,), dtype)
            block["beta"] = tf.zeros((width,), dtype)
        blocks.append(block)
        channels = width
    return tuple(blocks)


def instance_norm(x, gamma, beta):
    """Per-sample, per-channel normalisation over H and W (PyTorch GroupNorm(C, C), eps 1e-5).

    Args:
        x: float (n, h, w, c).
        gamma, beta: (c,) affine scale and shift.

    Returns:
        (n, h, w, c) in x's dtype: (x - mean) / sqrt(var + 1e-5) * gamma + beta, with the biased
        variance over (h, w), as PyTorch computes it.
    """
    mean, rstd = _instance_moments(x)
    scale = rstd * gamma
    return x * scale + (beta - mean * scale)


def _instance_moments(x):
    """Per-sample, per-channel mean over (H, W) and 1 / sqrt(biased variance + eps), keepdims."""
    mean, variance = tf.nn.moments(x, axes=[1, 2], keepdims=True)
    return mean, tf.math.rsqrt(variance + EPSILON)


@tf.custom_gradient
def norm_relu_pool(x, gamma, beta):
    """avg_pool2d(relu(instance_norm(x, gamma, beta)), 2, 2, "VALID"), with a hand-written gradient.

    The same forward as composing the three ops; the backward is the closed form of instance
    norm's gradient, dx = r * (g - mean(g) - x_hat * mean(g * x_hat)) with r = 1 / sqrt(var + eps)
    and g the gradient reaching the normalised x_hat, plus the stock ReLU and pooling gradients.
    Automatic differentiation of `instance_norm` makes about twice as many passes over the
    (n, h, w, c) map; on a 2-core CPU this block's forward + backward for 400 32x32x128 maps
    takes 0.23 s instead of 0.33 s (bench/speed.py measures the whole step). The forward is
    the same ops as `instance_norm` (x_hat is formed only for the backward), so embedding the
    real batch, which is never differentiated, costs what it did.

    Args:
        x: float (n, h, w, c), a conv output.
        gamma, beta: (c,) affine scale and shift.

    Returns:
        (n, h // 2, w // 2, c) in x's dtype.
    """
    mean, rstd = _instance_moments(x)
    scale = rstd * gamma
    activated = tf.nn.relu(x * scale + (beta - mean * scale))  # as few passes as instance_norm
    pooled = tf.nn.avg_pool2d(activated, ksize=2, strides=2, padding="VALID")

    def gradient(upstream):
        normalized = (x - mean) * rstd  # only when differentiating: the real batch never is
        grad_activated = tf.raw_ops.AvgPoolGrad(
            orig_input_shape=tf.shape(x), grad=upstream, ksize=[1, 2, 2, 1],
            strides=[1, 2, 2, 1], padding="VALID",
        )
        grad_affine = tf.raw_ops.ReluGrad(gradients=grad_activated, features=activated)
        grad_normalized = grad_affine * gamma
        grad_x = rstd * (
            grad_normalized
            - tf.reduce_mean(grad_normalized, axis=[1, 2], keepdims=True)
            - normalized * tf.reduce_mean(grad_normalized * normalized, axis=[1, 2], keepdims=True)
        )
        # Unused (the random nets are not trained) unless asked for: tf.function prunes them.
        grad_gamma = tf.reduce_sum(grad_affine * normalized, axis=[0, 1, 2])
        grad_beta = tf.reduce_sum(grad_affine, axis=[0, 1, 2])
        return grad_x, grad_gamma, grad_beta

    return pooled, gradient


def convnet_features(images, weights, *, depth, norm="instancenorm", compute_dtype=None):
    """Embed images with a ConvNet given as weight tensors (DM `ConvNet.embed`).

    Hot path of matching: trusts its inputs (validate at the boundary). Differentiable with respect
    to `images`. With norm="instancenorm" the conv bias is not added: instance norm subtracts each
    channel's mean over (H, W), which removes a per-channel constant exactly.

    Args:
        images: float (n, h, w, c) NHWC, normalised as the data pipeline does.
        weights: tuple of block dicts from convnet_weights (or copied from a trained ConvNet).
        depth: number of blocks, len(weights) (checked once, when traced).
        norm: "instancenorm" or "none", as the weights were drawn.
        compute_dtype: None (compute in images.dtype), or a dtype or its name such as "bfloat16":
            images and kernels are cast to it for the convolutions, while instance-norm statistics,
            the normalisation, ReLU and pooling run in float32 (bfloat16 keeps only 8 mantissa
            bits, too few for a mean over 1,024 positions).

    Returns:
        (n, h' * w' * width) features, flattened in (H, W, C) order (see module docstring). dtype:
        float32 when compute_dtype is 16-bit, else the compute dtype (float64 images give float64).

    Raises:
        ValueError: if depth != len(weights).
    """
    if depth != len(weights):
        raise ValueError(
            f"convnet_features got depth={depth} but {len(weights)} weight blocks; "
            "pass depth=len(weights)."
        )
    compute_dtype = tf.as_dtype(compute_dtype or images.dtype)
    low_precision = compute_dtype in _LOW_PRECISION
    math_dtype = tf.float32 if low_precision else compute_dtype
    x = tf.cast(images, compute_dtype)
    for d, block in enumerate(weights):
        pad = first_padding(x.shape[-1]) if d == 0 else 1
        padding = "SAME" if pad == 1 else [[0, 0], [pad, pad], [pad, pad], [0, 0]]
        y = tf.nn.conv2d(x, tf.cast(block["kernel"], compute_dtype), strides=1, padding=padding)
        if norm == "instancenorm":
            y = norm_relu_pool(
                tf.cast(y, math_dtype),
                tf.cast(block["gamma"], math_dtype),
                tf.cast(block["beta"], math_dtype),
            )
        else:
            y = tf.cast(tf.nn.bias_add(y, tf.cast(block["bias"], compute_dtype)), math_dtype)
            y = tf.nn.avg_pool2d(tf.nn.relu(y), ksize=2, strides=2, padding="VALID")
        x = y if d == depth - 1 else tf.cast(y, compute_dtype)
    return tf.reshape(x, [tf.shape(x)[0], -1])

"""Keras building blocks shared by the evaluation networks: PyTorch-initialised conv and dense
layers, PyTorch-style padding, the three normalisations of the DM code, and seeding."""

import keras
import numpy as np

from m3d_tf.networks.initializers import TorchUniform


class SeedStream:
    """Deterministic int seeds, one per initializer, derived from a network's seed.

    Used at build time only (plain Python), so the same `seed` rebuilds the same network.
    """

    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def next(self):
        return int(self._rng.integers(0, 2**31 - 1))


def conv(x, filters, kernel_size, seeds, *, strides=1, padding=0, use_bias=True, name=None):
    """PyTorch `nn.Conv2d(kernel_size, stride, padding)` on an NHWC tensor, PyTorch-initialised.

    Symmetric zero padding as PyTorch does it (Keras "same" pads only the bottom/right for
    stride 2 on even sizes, which samples different pixels), so output size is
    floor((n + 2 * padding - kernel_size) / strides) + 1.
    """
    fan_in = kernel_size * kernel_size * x.shape[-1]
    if strides == 1 and 2 * padding == kernel_size - 1:
        mode = "same"
    else:
        mode = "valid"
        if padding:
            x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad" if name else None)(x)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=mode,
        use_bias=use_bias,
        kernel_initializer=TorchUniform(seed=seeds.next()),
        bias_initializer=TorchUniform(fan_in=fan_in, seed=seeds.next()),
        name=name,
    )(x)


def dense(x, units, seeds, *, activation=None, name=None):
    """PyTorch `nn.Linear(units)`, PyTorch-initialised."""
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=TorchUniform(seed=seeds.next()),
        bias_initializer=TorchUniform(fan_in=x.shape[-1], seed=seeds.next()),
        name=name,
    )(x)


def norm_layer(x, norm, *, name=None):
    """The DM code's normalisations, with PyTorch's epsilon and defaults.

    "instancenorm": nn.GroupNorm(C, C, affine=True) == keras GroupNormalization(groups=C, eps 1e-5)
        (both: biased variance over H, W per sample and channel; gamma 1, beta 0).
    "batchnorm": nn.BatchNorm2d(C): eps 1e-5, PyTorch momentum 0.1 == Keras momentum 0.9 (the
        running variance is biased in Keras, unbiased in PyTorch: a factor n / (n - 1) with
        n = batch * H * W, negligible).
    "none": identity.
    """
    if norm == "instancenorm":
        return keras.layers.GroupNormalization(groups=x.shape[-1], epsilon=1e-5, name=name)(x)
    if norm == "batchnorm":
        return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)(x)
    return x


def check_input_size(name, input_shape, final_side):
    """Raise ValueError when a network's layers shrink `input_shape` to an empty map.

    Args:
        name: network name for the message.
        input_shape: (height, width, channels).
        final_side: function (side, channels) -> spatial size of the last map for one image side.
    """
    height, width, channels = input_shape
    if final_side(height, channels) >= 1 and final_side(width, channels) >= 1:
        return
    smallest = next(side for side in range(1, 1025) if final_side(side, channels) >= 1)
    raise ValueError(
        f"{name} needs images of at least {smallest}x{smallest} with {channels} channel(s); "
        f"received input_shape={tuple(input_shape)}. Resize the images or choose another network."
    )

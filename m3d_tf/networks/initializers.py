"""PyTorch's default initialisation of Conv2d and Linear layers, as a Keras initializer.

PyTorch draws a layer's weight with kaiming_uniform_(a=sqrt(5)): U(-b, b) with
b = gain * sqrt(3 / fan_in) and gain = sqrt(2 / (1 + a^2)) = sqrt(1/3), so b = 1 / sqrt(fan_in);
its bias is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the fan-in of the weight. Keras defaults
(Glorot uniform, zero bias) give differently scaled random nets, which changes both the random
feature extractor of DM/M3D and how evaluation networks start training.
"""

import math

import keras


def torch_uniform_bound(fan_in):
    """Half-width 1/sqrt(fan_in) of PyTorch's default uniform init for weights and biases."""
    return 1.0 / math.sqrt(fan_in)


@keras.saving.register_keras_serializable(package="m3d_tf")
class TorchUniform(keras.initializers.Initializer):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for Conv2d/Linear weights and biases.

    Args:
        fan_in: int or None. None takes the fan-in from the shape being initialised
            (product of all but the last axis: kh*kw*in_channels for a Keras conv kernel
            (kh, kw, in, out), in_features for a Dense kernel (in, out)). Biases must pass the
            fan-in of their layer's kernel, since a bias shape (out,) does not carry it.
        seed: int or None. An int makes the draw deterministic.

    Example:
        >>> keras.layers.Dense(10, kernel_initializer=TorchUniform(seed=1),
        ...                    bias_initializer=TorchUniform(fan_in=2048, seed=2))
    """

    def __init__(self, fan_in=None, seed=None):
        self.fan_in = fan_in
        self.seed = seed

    def __call__(self, shape, dtype=None):
        fan_in = self.fan_in if self.fan_in is not None else math.prod(shape[:-1])
        bound = torch_uniform_bound(fan_in)
        return keras.random.uniform(shape, minval=-bound, maxval=bound, dtype=dtype, seed=self.seed)

    def get_config(self):
        return {"fan_in": self.fan_in, "seed": self.seed}

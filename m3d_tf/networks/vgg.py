"""DM's VGG-11: eight 3x3 convs (64-M-128-M-256-256-M-512-512-M-512-512-M), each followed by
instance norm (DM's default; "batchnorm" is DM's VGG11BN) and ReLU, then Linear(512, classes)."""

import keras

from m3d_tf.networks import layers

NORMS = ("instancenorm", "batchnorm")
_VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def _final_side(side, channels):
    side = side + (4 if channels == 1 else 0)  # padding 3 on the first conv: 28 -> 32
    for _ in range(_VGG11.count("M")):
        side //= 2
    return side


def build_vgg11(input_shape, num_classes, *, norm="instancenorm", seed=0):
    """VGG-11: 1x1x512 features for (32, 32, 3) and (28, 28, 1).

    Parameters: 9,231,114 for (32, 32, 3) and 9,229,962 for (28, 28, 1) with 10 classes
    (instance norm).
    """
    layers.check_input_size("vgg11", input_shape, _final_side)
    seeds = layers.SeedStream(seed)
    inputs = keras.Input(input_shape)
    x = inputs
    for i, item in enumerate(_VGG11):
        if item == "M":
            x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
            continue
        pad = 3 if input_shape[-1] == 1 and i == 0 else 1
        x = layers.conv(x, item, 3, seeds, padding=pad, name=f"conv_{i}")
        x = layers.norm_layer(x, norm, name=f"norm_{i}")
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = layers.dense(x, num_classes, seeds, name="classifier")
    return keras.Model(inputs, outputs, name="vgg11")

"""DM's AlexNet for small images: five convs (128-192-256-192-192 channels) with three 2x2 max
pools, no dropout, one linear classifier. norm="batchnorm" is DM's AlexNetBN."""

import keras

from m3d_tf.networks import layers

NORMS = ("none", "batchnorm")


def _final_side(side, channels):
    side = side + 2 * (4 if channels == 1 else 2) - 4  # conv 5x5: 28 -> 32 with padding 4
    return side // 2 // 2 // 2


def build_alexnet(input_shape, num_classes, *, norm="none", seed=0):
    """AlexNet: 4x4x192 = 3,072 features for (32, 32, 3) and (28, 28, 1).

    Parameters: 1,872,202 for (32, 32, 3) and 1,865,802 for (28, 28, 1) with 10 classes.
    """
    layers.check_input_size("alexnet", input_shape, _final_side)
    seeds = layers.SeedStream(seed)
    inputs = keras.Input(input_shape)
    first_pad = 4 if input_shape[-1] == 1 else 2
    plan = [
        (128, 5, first_pad, True),
        (192, 5, 2, True),
        (256, 3, 1, False),
        (192, 3, 1, False),
        (192, 3, 1, True),
    ]
    x = inputs
    for i, (filters, kernel_size, pad, pool) in enumerate(plan):
        x = layers.conv(x, filters, kernel_size, seeds, padding=pad, name=f"conv_{i}")
        x = layers.norm_layer(x, norm, name=f"norm_{i}")
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
        if pool:
            x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = layers.dense(x, num_classes, seeds, name="classifier")
    return keras.Model(inputs, outputs, name="alexnet")

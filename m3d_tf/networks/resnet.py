"""DM's ResNet-18 (`networks.py: ResNet` with BasicBlock [2, 2, 2, 2]) for small images.

A 3x3 stem (stride 1, no max pool), four stages of 64-128-256-512 channels (stride 2 at the start
of stages 2-4, 1x1 projection shortcuts when the shape changes), bias-free convs each followed by
instance norm (DM's default; "batchnorm" is DM's ResNet18BN), a 4x4 average pool and
Linear(512, classes). No padding trick: 28x28 maps go 28-14-7-4.
"""

import keras

from m3d_tf.networks import layers

NORMS = ("instancenorm", "batchnorm")
_STAGES = (64, 128, 256, 512)


def _final_side(side, channels):
    for _ in _STAGES[1:]:
        side = (side - 1) // 2 + 1  # 3x3 conv, stride 2, padding 1
    return side // 4


def _basic_block(x, planes, strides, norm, seeds, name):
    out = layers.conv(
        x, planes, 3, seeds, strides=strides, padding=1, use_bias=False, name=f"{name}_conv1"
    )
    out = keras.layers.ReLU(name=f"{name}_relu1")(
        layers.norm_layer(out, norm, name=f"{name}_norm1")
    )
    out = layers.conv(out, planes, 3, seeds, padding=1, use_bias=False, name=f"{name}_conv2")
    out = layers.norm_layer(out, norm, name=f"{name}_norm2")
    shortcut = x
    if strides != 1 or x.shape[-1] != planes:
        shortcut = layers.conv(
            x, planes, 1, seeds, strides=strides, use_bias=False, name=f"{name}_proj"
        )
        shortcut = layers.norm_layer(shortcut, norm, name=f"{name}_proj_norm")
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu2")(out)


def build_resnet18(input_shape, num_classes, *, norm="instancenorm", seed=0):
    """ResNet-18: 1x1x512 features for (32, 32, 3) and (28, 28, 1).

    Parameters: 11,173,962 for (32, 32, 3) with 10 classes (instance norm).
    """
    layers.check_input_size("resnet18", input_shape, _final_side)
    seeds = layers.SeedStream(seed)
    inputs = keras.Input(input_shape)
    x = layers.conv(inputs, 64, 3, seeds, padding=1, use_bias=False, name="stem_conv")
    x = keras.layers.ReLU(name="stem_relu")(layers.norm_layer(x, norm, name="stem_norm"))
    for s, planes in enumerate(_STAGES):
        for b in range(2):
            strides = 2 if s > 0 and b == 0 else 1
            x = _basic_block(x, planes, strides, norm, seeds, name=f"stage{s + 1}_block{b + 1}")
    x = keras.layers.AveragePooling2D(4, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = layers.dense(x, num_classes, seeds, name="classifier")
    return keras.Model(inputs, outputs, name="resnet18")

"""DM's MLP: flatten -> Linear(128) -> ReLU -> Linear(128) -> ReLU -> Linear(classes)."""

import keras

from m3d_tf.networks import layers

NORMS = ("none",)


def build_mlp(input_shape, num_classes, *, norm="none", seed=0):
    """Three linear layers on the raw flattened image (784 inputs for 28x28x1, 3,072 for 32x32x3).

    Parameters: 118,282 for (28, 28, 1) and 411,146 for (32, 32, 3) with 10 classes.
    """
    seeds = layers.SeedStream(seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = layers.dense(x, 128, seeds, activation="relu", name="fc_1")
    x = layers.dense(x, 128, seeds, activation="relu", name="fc_2")
    outputs = layers.dense(x, num_classes, seeds, name="fc_3")
    return keras.Model(inputs, outputs, name="mlp")

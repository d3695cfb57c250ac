"""ConvNet-D as a trainable Keras model: DM's `ConvNet` (conv, norm, ReLU, avg pool) x depth, then a
linear classifier. Same architecture, padding and initialisation as the random feature extractor
in random_convnet.py, whose weight tuple maps onto the layers named conv_{d}, norm_{d}, classifier.
"""

import keras

from m3d_tf.networks import layers
from m3d_tf.networks.random_convnet import convnet_feature_shape, first_padding

NORMS = ("instancenorm", "batchnorm", "none")


def build_convnet(input_shape, num_classes, *, width=128, depth=3, norm="instancenorm", seed=0):
    """ConvNet-`depth` of `width` channels (DM ConvNet; "batchnorm" is DM's ConvNetBN).

    Parameters: 320,010 for (32, 32, 3) and 317,706 for (28, 28, 1) with 10 classes and defaults.
    """
    convnet_feature_shape(input_shape, width=width, depth=depth)
    seeds = layers.SeedStream(seed)
    inputs = keras.Input(input_shape)
    x = inputs
    for d in range(depth):
        pad = first_padding(input_shape[-1]) if d == 0 else 1
        x = layers.conv(x, width, 3, seeds, padding=pad, name=f"conv_{d}")
        x = layers.norm_layer(x, norm, name=f"norm_{d}")
        x = keras.layers.ReLU(name=f"relu_{d}")(x)
        x = keras.layers.AveragePooling2D(2, name=f"pool_{d}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = layers.dense(x, num_classes, seeds, name="classifier")
    return keras.Model(inputs, outputs, name="convnet")

"""Networks of m3d_tf: the random ConvNet feature extractor used while matching (pure functions
over weight tensors) and the evaluation networks (Keras models) trained on synthetic sets.

Architectures follow DM's reference code (VICO-UoE/DatasetCondensation `networks.py`) with
PyTorch's default initialisation, so a randomly drawn or freshly built net is distributed as the
reference's. Layout: random_convnet.py (matching), convnet.py, mlp.py, alexnet.py, vgg.py and
resnet.py (evaluation), layers.py and initializers.py (shared Keras pieces).
"""

from m3d_tf.networks.alexnet import build_alexnet
from m3d_tf.networks.convnet import build_convnet
from m3d_tf.networks.initializers import TorchUniform
from m3d_tf.networks.mlp import build_mlp
from m3d_tf.networks.random_convnet import (
    convnet_feature_shape,
    convnet_features,
    convnet_weights,
    instance_norm,
    norm_relu_pool,
)
from m3d_tf.networks.resnet import build_resnet18
from m3d_tf.networks.vgg import build_vgg11
from m3d_tf.networks import alexnet, convnet, mlp, resnet, vgg

NETWORKS = {
    "convnet": build_convnet,
    "mlp": build_mlp,
    "alexnet": build_alexnet,
    "vgg11": build_vgg11,
    "resnet18": build_resnet18,
}
NETWORK_NORMS = {
    "convnet": convnet.NORMS,
    "mlp": mlp.NORMS,
    "alexnet": alexnet.NORMS,
    "vgg11": vgg.NORMS,
    "resnet18": resnet.NORMS,
}


def build_network(name, input_shape, num_classes, *, width=None, depth=None, norm=None, seed=0):
    """Build a freshly initialised evaluation network (logits, no softmax).

    Args:
        name: one of NETWORKS: "convnet", "mlp", "alexnet", "vgg11", "resnet18".
        input_shape: (height, width, channels) of the images, e.g. (28, 28, 1) or (32, 32, 3).
        num_classes: number of output logits.
        width: convnet only; channels per conv (None: DM's 128).
        depth: convnet only; number of conv blocks (None: DM's 3).
        norm: None for DM's choice (the first of NETWORK_NORMS[name]: instance norm for convnet,
            vgg11 and resnet18; none for mlp and alexnet), or one of NETWORK_NORMS[name].
        seed: int; the same seed builds the same initial weights.

    Returns:
        keras.Model mapping float32 (batch, *input_shape) images to (batch, num_classes) logits.

    Raises:
        ValueError: unknown name, bad input_shape or num_classes, a norm the network does not
            offer, width/depth for a network other than convnet, or images too small.

    Example:
        >>> model = build_network("convnet", (28, 28, 1), 10, seed=3)
    """
    if name not in NETWORKS:
        raise ValueError(f"Unknown network name={name!r}; valid names are: {', '.join(NETWORKS)}.")
    if len(input_shape) != 3 or not all(isinstance(n, int) and n >= 1 for n in input_shape):
        raise ValueError(
            f"build_network needs input_shape=(height, width, channels) of positive ints; "
            f"received input_shape={input_shape!r}."
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"build_network needs a positive int num_classes; received num_classes={num_classes!r}."
        )
    norms = NETWORK_NORMS[name]
    norm = norms[0] if norm is None else norm
    if norm not in norms:
        raise ValueError(f"{name} offers norm in ({', '.join(norms)}); received norm={norm!r}.")
    input_shape = tuple(input_shape)
    if name == "convnet":
        width = 128 if width is None else width
        depth = 3 if depth is None else depth
        for arg, value in (("width", width), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"convnet needs a positive int {arg}; received {arg}={value!r}.")
        return build_convnet(
            input_shape, num_classes, width=width, depth=depth, norm=norm, seed=seed
        )
    if width is not None or depth is not None:
        raise ValueError(
            f"width and depth apply to name='convnet' only; received width={width!r}, "
            f"depth={depth!r} "
            f"for name={name!r}. Drop them."
        )
    return NETWORKS[name](input_shape, num_classes, norm=norm, seed=seed)


__all__ = [
    "NETWORKS",
    "NETWORK_NORMS",
    "TorchUniform",
    "build_alexnet",
    "build_convnet",
    "build_mlp",
    "build_network",
    "build_resnet18",
    "build_vgg11",
    "convnet_feature_shape",
    "convnet_features",
    "convnet_weights",
    "instance_norm",
    "norm_relu_pool",
]

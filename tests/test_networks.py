"""Tests for m3d_tf.networks: the random ConvNet feature extractor and the evaluation networks."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from m3d_tf.networks import (
    NETWORKS,
    TorchUniform,
    build_network,
    convnet_feature_shape,
    convnet_features,
    convnet_weights,
    instance_norm,
    norm_relu_pool,
)
from m3d_tf.networks import layers as net_layers
from reference import np_conv2d, np_convnet_features, np_instance_norm

SEED = tf.constant([3, 14], tf.int64)


def random_blocks(rng, in_channels, width, depth, norm="instancenorm"):
    """Float64 NumPy blocks with non-trivial gamma/beta so the affine part is exercised."""
    blocks, channels = [], in_channels
    for _ in range(depth):
        block = {"kernel": rng.normal(size=(3, 3, channels, width)), "bias": rng.normal(size=width)}
        if norm == "instancenorm":
            block["gamma"] = rng.uniform(0.5, 1.5, width)
            block["beta"] = rng.normal(size=width)
        blocks.append(block)
        channels = width
    return blocks


def as_tensors(blocks, dtype):
    return tuple({k: tf.constant(v, dtype) for k, v in block.items()} for block in blocks)


# === Random ConvNet: forward pass ===


@pytest.mark.parametrize("norm", ["instancenorm", "none"])
@pytest.mark.parametrize("shape", [(2, 9, 8, 3), (2, 6, 6, 1)])
def test_convnet_features_match_numpy_oracle(norm, shape):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, shape)
    blocks = random_blocks(rng, shape[-1], width=4, depth=2, norm=norm)
    expected = np_convnet_features(images, blocks, norm)
    got64 = convnet_features(
        tf.constant(images), as_tensors(blocks, tf.float64), depth=2, norm=norm
    )
    got32 = convnet_features(
        tf.constant(images, tf.float32), as_tensors(blocks, tf.float32), depth=2, norm=norm
    )
    assert got64.dtype == tf.float64 and got32.dtype == tf.float32
    np.testing.assert_allclose(got64.numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got32.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_convnet_features_hand_worked():
    # One image [[1, 2], [3, 4]] in channel 0 of 3; a kernel whose centre tap copies channel 0.
    image = np.zeros((1, 2, 2, 3))
    image[0, :, :, 0] = [[1, 2], [3, 4]]
    kernel = np.zeros((3, 3, 3, 1))
    kernel[1, 1, 0, 0] = 1.0
    block = {"kernel": kernel, "bias": [7.0], "gamma": [1.0], "beta": [0.0]}
    # Instance norm: mean 2.5, var 1.25 (the bias 7 cancels); ReLU keeps (0.5, 1.5) / sqrt(1.25 +
    # eps); the 2x2 average pool divides their sum by 4.
    got = convnet_features(tf.constant(image), as_tensors([block], tf.float64), depth=1)
    np.testing.assert_allclose(got.numpy(), [[0.5 / math.sqrt(1.25 + 1e-5)]], rtol=1e-12)
    # Without norm: centre tap 2, bias -3 -> (-1, 1, 3, 5) -> ReLU -> mean 9 / 4.
    block = {"kernel": 2 * kernel, "bias": [-3.0]}
    got = convnet_features(
        tf.constant(image), as_tensors([block], tf.float64), depth=1, norm="none"
    )
    np.testing.assert_allclose(got.numpy(), [[2.25]], rtol=1e-12)


def test_grayscale_first_conv_pads_three():
    # A 2x2 one-channel image padded by 3 gives a 6x6 map, pooled to 3x3; with a centre-tap kernel
    # the image lands in the middle 2x2 window: features are 0 except the centre (mean 2.5).
    image = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    kernel = np.zeros((3, 3, 1, 1))
    kernel[1, 1, 0, 0] = 1.0
    block = {"kernel": kernel, "bias": [0.0]}
    got = convnet_features(
        tf.constant(image), as_tensors([block], tf.float64), depth=1, norm="none"
    )
    np.testing.assert_allclose(got.numpy(), [[0, 0, 0, 0, 2.5, 0, 0, 0, 0]], atol=1e-12)


@pytest.mark.parametrize("image_shape", [(32, 32, 3), (28, 28, 1)])
def test_feature_size_is_2048_for_cifar_and_mnist_shapes(image_shape):
    assert convnet_feature_shape(image_shape) == (4, 4, 128)
    weights = convnet_weights(SEED, image_shape[-1], image_shape[0], width=8)
    features = convnet_features(tf.zeros((1, *image_shape)), weights, depth=3)
    assert features.shape == (1, 4 * 4 * 8)


def test_feature_shape_odd_sizes_floor_like_pytorch():
    # 30 -> 15 -> 7 -> 3, as AvgPool2d(2, 2) floors.
    assert convnet_feature_shape((30, 20, 3), width=5) == (3, 2, 5)
    weights = convnet_weights(SEED, 3, (30, 20), width=5)
    assert convnet_features(tf.zeros((2, 30, 20, 3)), weights, depth=3).shape == (2, 30)


def test_feature_shape_rejects_images_too_small():
    with pytest.raises(
        ValueError,
        match=r"A depth-3 ConvNet halves the map 3 times, which empties "
        r"image_shape=\(4, 4, 3\); use larger images or a smaller depth\.",
    ):
        convnet_feature_shape((4, 4, 3))


def test_instance_norm_matches_oracle_and_keras_group_norm():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 0.1, (3, 5, 4, 6))  # variance 0.01: an epsilon of 1e-3 would be off by 5%
    gamma, beta = rng.uniform(0.5, 2, 6), rng.normal(size=6)
    expected = np_instance_norm(x, gamma, beta)
    got = instance_norm(tf.constant(x), tf.constant(gamma), tf.constant(beta))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)
    layer = keras.layers.GroupNormalization(groups=6, epsilon=1e-5)
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    np.testing.assert_allclose(layer(x.astype(np.float32)).numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 4, 6, 3), (1, 5, 5, 2)])  # odd sizes: pooling floors
def test_norm_relu_pool_gradient_matches_finite_differences(shape):
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(1.0, 2.0, shape))
    gamma = tf.constant(rng.uniform(0.5, 2, shape[-1]))
    beta = tf.constant(rng.normal(0, 0.5, shape[-1]))
    composed = tf.nn.avg_pool2d(tf.nn.relu(instance_norm(x, gamma, beta)), 2, 2, "VALID")
    np.testing.assert_allclose(norm_relu_pool(x, gamma, beta).numpy(), composed.numpy(), rtol=1e-12)
    # Our closed-form backward (theoretical) against central differences (numerical), for every
    # input, through a weighting that makes each output count differently.
    weight = tf.constant(rng.normal(size=composed.shape))
    loss = lambda *args: tf.reduce_sum(norm_relu_pool(*args) * weight)
    theoretical, numerical = tf.test.compute_gradient(loss, [x, gamma, beta], delta=1e-6)
    for ours, reference in zip(theoretical, numerical):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7)


# === Random ConvNet: weights ===


def test_weights_same_seed_same_net_and_other_seed_differs():
    first = convnet_weights(SEED, 3, 8, width=16, depth=2)
    again = convnet_weights(tf.constant([3, 14], tf.int32), 3, 8, width=16, depth=2)
    traced = tf.function(lambda s: convnet_weights(s, 3, 8, width=16, depth=2))(SEED)
    other = convnet_weights(tf.constant([3, 15], tf.int64), 3, 8, width=16, depth=2)
    numpy_ints = convnet_weights(SEED, np.int64(3), (np.int64(8), 8), width=np.int32(16), depth=2)
    for a, b, c, d, e in zip(first, again, traced, other, numpy_ints):
        for key in ("kernel", "bias"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
            np.testing.assert_array_equal(a[key].numpy(), e[key].numpy())
            np.testing.assert_array_equal(a[key].numpy(), c[key].numpy())
            assert np.abs(a[key].numpy() - d[key].numpy()).min() > 0
    # Kernels and biases of different blocks come from different streams.
    assert not np.allclose(first[0]["bias"].numpy(), first[1]["bias"].numpy())


def test_weights_follow_pytorch_default_init():
    weights = convnet_weights(SEED, 3, 32, depth=3)
    assert [tuple(b["kernel"].shape) for b in weights] == [
        (3, 3, 3, 128),
        (3, 3, 128, 128),
        (3, 3, 128, 128),
    ]
    for block, fan_in in zip(weights, (27, 1152, 1152)):
        bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)): sqrt(2/6) * sqrt(3/fan_in)
        kernel, bias = block["kernel"].numpy(), block["bias"].numpy()
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert np.abs(kernel).max() > 0.99 * bound and np.abs(bias).max() > 0.8 * bound
        # U(-b, b): mean 0, variance b^2 / 3; tolerances are 5 standard errors.
        n = kernel.size
        assert abs(kernel.mean()) < 5 * bound / math.sqrt(3 * n)
        assert abs(kernel.var() / (bound**2 / 3) - 1) < 5 * math.sqrt(0.8 / n)
        np.testing.assert_array_equal(block["gamma"].numpy(), np.ones(128))
        np.testing.assert_array_equal(block["beta"].numpy(), np.zeros(128))
    assert set(convnet_weights(SEED, 1, 28, depth=1, norm="none")[0]) == {"kernel", "bias"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"seed": tf.constant([1, 2, 3])},
            r"needs a seed tensor of shape \(2,\); received shape \(3,\)\.",
        ),
        ({"width": 0}, r"needs a positive int width; received width=0\."),
        ({"norm": "batchnorm"}, r"unknown norm='batchnorm'; choose one of instancenorm, none\."),
        (
            {"image_size": 7},
            r"A depth-3 ConvNet halves the map 3 times, which empties image_shape=\(7, 7, 3\)",
        ),
    ],
)
def test_weights_reject_bad_arguments(kwargs, message):
    args = {"seed": SEED, "in_channels": 3, "image_size": 32, **kwargs}
    with pytest.raises(ValueError, match=message):
        convnet_weights(**args)


# === Random ConvNet: graph mode, replica context, gradients, bfloat16 ===


def test_features_reject_depth_not_matching_weights():
    weights = convnet_weights(SEED, 3, 8, width=4, depth=2)
    with pytest.raises(
        ValueError,
        match=r"convnet_features got depth=3 but 2 weight blocks; pass depth=len\(weights\)\.",
    ):
        convnet_features(tf.zeros((1, 8, 8, 3)), weights, depth=3)


def test_features_same_in_tf_function_and_replica_context():
    images = tf.random.stateless_uniform((4, 12, 12, 3), [0, 1])

    def embed(seed, x):
        return convnet_features(x, convnet_weights(seed, 3, 12, width=8, depth=2), depth=2)

    eager = embed(SEED, images).numpy()
    np.testing.assert_allclose(
        tf.function(embed)(SEED, images).numpy(), eager, rtol=1e-6, atol=1e-6
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    in_replica = strategy.run(tf.function(embed), args=(SEED, images))
    np.testing.assert_allclose(in_replica.numpy(), eager, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("compute_dtype", [None, "bfloat16"])
def test_features_are_differentiable_in_images(compute_dtype):
    images = tf.random.stateless_uniform((3, 10, 10, 3), [0, 2])
    weights = convnet_weights(SEED, 3, 10, width=8, depth=2)
    with tf.GradientTape() as tape:
        tape.watch(images)
        features = convnet_features(images, weights, depth=2, compute_dtype=compute_dtype)
        loss = tf.reduce_sum(tf.square(features))
    grad = tape.gradient(loss, images).numpy()
    assert np.all(np.isfinite(grad))
    assert (np.abs(grad).sum(axis=(1, 2, 3)) > 0).all()


def test_bfloat16_compute_is_close_to_float32_and_returns_float32():
    images = tf.random.stateless_uniform((6, 16, 16, 3), [0, 3])
    weights = convnet_weights(SEED, 3, 16, width=16)
    full = convnet_features(images, weights, depth=3).numpy()
    half = convnet_features(images, weights, depth=3, compute_dtype="bfloat16")
    assert half.dtype == tf.float32
    # bfloat16 keeps 8 mantissa bits (relative step 2^-8 = 0.4%); errors grow over three blocks.
    relative = np.linalg.norm(half.numpy() - full) / np.linalg.norm(full)
    assert 1e-4 < relative < 0.03


# === Evaluation networks ===


def conv_params(c_in, c_out, k, bias=True):
    return c_in * c_out * k * k + (c_out if bias else 0)


def expected_params(name, shape, classes):
    """Trainable parameters of DM's PyTorch modules (nn.Module.parameters()), by layer list."""
    height, width, channels = shape
    norm = 2  # GroupNorm(c, c) or BatchNorm2d(c): gamma and beta per channel
    if name == "convnet":
        return (
            conv_params(channels, 128, 3)
            + 128 * norm
            + 2 * (conv_params(128, 128, 3) + 128 * norm)
            + 2048 * classes
            + classes
        )
    if name == "mlp":
        return height * width * channels * 128 + 128 + 128 * 128 + 128 + 128 * classes + classes
    if name == "alexnet":
        return (
            conv_params(channels, 128, 5)
            + conv_params(128, 192, 5)
            + conv_params(192, 256, 3)
            + conv_params(256, 192, 3)
            + conv_params(192, 192, 3)
            + 192 * 4 * 4 * classes
            + classes
        )
    if name == "vgg11":
        widths = [channels, 64, 128, 256, 256, 512, 512, 512, 512]
        convs = sum(conv_params(a, b, 3) + b * norm for a, b in zip(widths, widths[1:]))
        return convs + 512 * classes + classes
    if name == "resnet18":
        total = conv_params(channels, 64, 3, bias=False) + 64 * norm
        in_planes = 64
        for planes in (64, 128, 256, 512):
            for _ in range(2):
                total += conv_params(in_planes, planes, 3, False) + conv_params(
                    planes, planes, 3, False
                )
                total += 2 * planes * norm
                if in_planes != planes:
                    total += conv_params(in_planes, planes, 1, False) + planes * norm
                in_planes = planes
        return total + 512 * classes + classes
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_networks_output_shape_and_pytorch_parameter_count(name, shape):
    model = build_network(name, shape, 10)
    logits = model(np.random.default_rng(0).uniform(size=(2, *shape)).astype(np.float32))
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits.numpy()))
    assert model.count_params() == expected_params(name, shape, 10)


def test_published_parameter_counts():
    # Hand-summed in the module docstrings; pins expected_params itself.
    assert expected_params("convnet", (32, 32, 3), 10) == 320_010
    assert expected_params("convnet", (28, 28, 1), 10) == 317_706
    assert expected_params("resnet18", (32, 32, 3), 10) == 11_173_962
    assert expected_params("vgg11", (32, 32, 3), 10) == 9_231_114
    assert expected_params("alexnet", (32, 32, 3), 10) == 1_872_202
    assert expected_params("mlp", (28, 28, 1), 10) == 118_282


@pytest.mark.parametrize("name", ["convnet", "alexnet", "vgg11", "resnet18"])
def test_batchnorm_variants_have_the_same_trainable_parameters(name):
    model = build_network(name, (32, 32, 3), 10, norm="batchnorm")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # Same gamma/beta count as instance norm; DM's AlexNet has no norm, AlexNetBN adds one per conv.
    added = 2 * (128 + 192 + 256 + 192 + 192) if name == "alexnet" else 0
    assert trainable == expected_params(name, (32, 32, 3), 10) + added


@pytest.mark.parametrize("shape", [(12, 12, 1), (16, 12, 3)])
def test_keras_convnet_equals_random_features_plus_dense(shape):
    rng = np.random.default_rng(2)
    model = build_network("convnet", shape, 5, width=8, depth=2)
    blocks = random_blocks(rng, shape[-1], width=8, depth=2)
    for d, block in enumerate(blocks):
        model.get_layer(f"conv_{d}").set_weights([block["kernel"], block["bias"]])
        model.get_layer(f"norm_{d}").set_weights([block["gamma"], block["beta"]])
    feature_dim = math.prod(convnet_feature_shape(shape, width=8, depth=2))
    dense_w, dense_b = rng.normal(size=(feature_dim, 5)), rng.normal(size=5)
    model.get_layer("classifier").set_weights([dense_w, dense_b])
    images = rng.uniform(size=(3, *shape))
    features = convnet_features(
        tf.constant(images), as_tensors(blocks, tf.float64), depth=2
    ).numpy()
    np.testing.assert_allclose(
        model(images.astype(np.float32)).numpy(), features @ dense_w + dense_b, rtol=1e-4, atol=1e-4
    )


def test_strided_conv_pads_symmetrically_like_pytorch():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 6, 7, 3))
    inputs = keras.Input((6, 7, 3))
    model = keras.Model(
        inputs, net_layers.conv(inputs, 4, 3, net_layers.SeedStream(0), strides=2, padding=1)
    )
    kernel, bias = model.layers[-1].get_weights()
    # PyTorch Conv2d(stride=2, padding=1) samples every other output of the stride-1 convolution.
    expected = np_conv2d(x, kernel, bias, 1)[:, ::2, ::2]
    np.testing.assert_allclose(model(x.astype(np.float32)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_keras_init_is_pytorch_default():
    model = build_network("convnet", (32, 32, 3), 10, seed=5)
    for layer, fan_in in (("conv_0", 27), ("conv_1", 1152), ("classifier", 2048)):
        kernel, bias = model.get_layer(layer).get_weights()
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert np.abs(kernel).max() > 0.95 * bound and np.abs(bias).max() > 0.5 * bound
    gamma, beta = model.get_layer("norm_0").get_weights()
    np.testing.assert_array_equal(gamma, np.ones(128))
    np.testing.assert_array_equal(beta, np.zeros(128))


@pytest.mark.parametrize(
    "name, twins",
    [
        ("convnet", ("conv_1", "conv_2")),
        ("resnet18", ("stage1_block1_conv1", "stage1_block1_conv2")),
    ],
)
def test_same_seed_same_initial_weights(name, twins):
    model = build_network(name, (28, 28, 1), 10, seed=7)
    first = model.get_weights()
    again = build_network(name, (28, 28, 1), 10, seed=7).get_weights()
    other = build_network(name, (28, 28, 1), 10, seed=8).get_weights()
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], other[0])
    # Two layers of the same shape in one network get different draws.
    kernel_a, kernel_b = (model.get_layer(layer).get_weights()[0] for layer in twins)
    assert kernel_a.shape == kernel_b.shape and np.abs(kernel_a - kernel_b).max() > 0.01


def test_torch_uniform_config_round_trip_and_clone():
    init = TorchUniform(fan_in=12, seed=4)
    restored = keras.initializers.deserialize(keras.initializers.serialize(init))
    assert isinstance(restored, TorchUniform) and restored.get_config() == {"fan_in": 12, "seed": 4}
    np.testing.assert_array_equal(init((5,)).numpy(), restored((5,)).numpy())
    assert np.abs(init((1000,)).numpy()).max() <= 1 / math.sqrt(12)
    # clone_model rebuilds layers from their configs: the registered initializer and its int seed
    # come back, so the clone starts from the same weights.
    model = build_network("mlp", (4, 4, 1), 3)
    for a, b in zip(keras.models.clone_model(model).get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (
            ("lenet", (28, 28, 1), 10),
            {},
            r"Unknown network name='lenet'; valid names are: convnet, mlp, alexnet, "
            r"vgg11, resnet18\.",
        ),
        (
            ("convnet", (28, 28), 10),
            {},
            r"needs input_shape=\(height, width, channels\) of positive ints; "
            r"received input_shape=\(28, 28\)\.",
        ),
        (
            ("mlp", (28, 28, 1), 0),
            {},
            r"needs a positive int num_classes; received num_classes=0\.",
        ),
        (
            ("vgg11", (32, 32, 3), 10),
            {"norm": "none"},
            r"vgg11 offers norm in \(instancenorm, batchnorm\); " r"received norm='none'\.",
        ),
        (
            ("mlp", (28, 28, 1), 10),
            {"width": 64},
            r"width and depth apply to name='convnet' only; received "
            r"width=64, depth=None for name='mlp'\. Drop them\.",
        ),
        (
            ("convnet", (28, 28, 1), 10),
            {"depth": 0},
            r"convnet needs a positive int depth; received depth=0\.",
        ),
        (
            ("vgg11", (16, 16, 3), 10),
            {},
            r"vgg11 needs images of at least 32x32 with 3 channel\(s\); received "
            r"input_shape=\(16, 16, 3\)\. Resize the images or choose another network\.",
        ),
        (
            ("vgg11", (16, 16, 1), 10),
            {},
            r"vgg11 needs images of at least 28x28 with 1 channel\(s\)",
        ),
        (("resnet18", (24, 32, 3), 10), {}, r"resnet18 needs images of at least 25x25"),
        (("alexnet", (7, 7, 3), 10), {}, r"alexnet needs images of at least 8x8"),
        (("convnet", (4, 4, 3), 10), {}, r"A depth-3 ConvNet halves the map 3 times"),
    ],
)
def test_build_network_rejects_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_network(*args, **kwargs)


@pytest.mark.parametrize("name, side", [("alexnet", 8), ("vgg11", 32), ("resnet18", 25)])
def test_smallest_accepted_images_build(name, side):
    model = build_network(name, (side, side, 3), 4)
    assert model(np.zeros((1, side, side, 3), np.float32)).shape == (1, 4)

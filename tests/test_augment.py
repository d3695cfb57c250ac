"""Tests for m3d_tf.augment: every op against a NumPy float64 oracle of the DM/IDC reference code
(tests/reference.py), hand-worked cases, the Siamese property, seeding, gradients, tf.function,
XLA and a MirroredStrategy replica context."""

import math
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from m3d_tf import augment
from reference import (
    np_brightness,
    np_contrast,
    np_crop,
    np_cutout,
    np_dsa,
    np_flip,
    np_grid_sample,
    np_rotate_theta,
    np_saturation,
    np_scale_theta,
)

SEED = tf.constant([7, 11])
M3D = "color_crop_cutout"
DM = "color_crop_cutout_flip_scale_rotate"
IDC_EVAL = "color_crop_flip_scale_rotate"
COLUMN = {f: i for i, f in enumerate(augment.FAMILIES)}


def _images(n, h, w, c, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, c)).astype(np.float32)


def _identity_params(n):
    """Every family active, every parameter at its identity value, cutout off."""
    active = np.ones((n, len(augment.FAMILIES)), bool)
    active[:, COLUMN["cutout"]] = False
    return {
        "active": active,
        "flip": np.zeros(n, bool),
        "brightness": np.zeros(n, np.float32),
        "saturation": np.ones(n, np.float32),
        "contrast": np.ones(n, np.float32),
        "crop": np.zeros((n, 2), np.int32),
        "scale": np.ones((n, 2), np.float32),
        "rotate": np.zeros(n, np.float32),
        "cutout": np.zeros((n, 2), np.int32),
    }


def _only(family, n, **values):
    """Identity parameters with only `family` active and the given values."""
    params = _identity_params(n)
    params["active"][:] = False
    params["active"][:, COLUMN[family]] = True
    params.update(values)
    return params


def _as_tf(params):
    return {k: tf.constant(v) for k, v in params.items()}


def _numpy(params):
    return {k: v.numpy() for k, v in params.items()}


# === Sizes ===


def test_crop_shift_and_cutout_side_follow_the_reference_rounding():
    assert [augment.crop_shift(s) for s in (32, 28, 7, 9)] == [4, 4, 1, 1]
    assert [augment.cutout_side(s) for s in (32, 28, 7, 9)] == [16, 14, 4, 5]


# === Ops against the oracles ===


def test_color_matches_the_three_reference_formulas_in_sequence():
    x = _images(4, 5, 6, 3)
    rng = np.random.default_rng(1)
    b, s, k = rng.uniform(-0.5, 0.5, 4), rng.uniform(0, 2, 4), rng.uniform(0.5, 1.5, 4)
    expected = np_contrast(np_saturation(np_brightness(x, b), s), k)
    out = augment.adjust_color(tf.constant(x), b.astype(np.float32), s.astype(np.float32),
                               k.astype(np.float32))
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-6)


def test_color_hand_worked():
    # Pixels (0, 2) and (2, 2); b = 0.5: (0.5, 2.5), (2.5, 2.5); s = 0.5 around the pixel means
    # 1.5 and 2.5: (1, 2), (2.5, 2.5); image mean 2, k = 2: (0, 2), (3, 3).
    x = tf.constant([[[[0.0, 2.0], [2.0, 2.0]]]])
    out = augment.adjust_color(x, tf.constant([0.5]), tf.constant([0.5]), tf.constant([2.0]))
    np.testing.assert_allclose(out.numpy(), [[[[0.0, 2.0], [3.0, 3.0]]]], atol=1e-6)


def test_saturation_leaves_one_channel_images_unchanged():
    x = _images(2, 4, 4, 1)
    out = augment.adjust_color(tf.constant(x), tf.zeros(2), tf.constant([0.0, 1.7]), tf.ones(2))
    np.testing.assert_allclose(out.numpy(), x, atol=1e-6)


@pytest.mark.parametrize("shape", [(4, 7, 9, 3), (3, 8, 8, 1)])
def test_crop_matches_reference_pad_and_index(shape):
    x = _images(*shape)
    shifts = np.array([[1, -1], [-1, 0], [0, 1], [1, 1]], np.int32)[: shape[0]]
    out = augment.apply(tf.constant(x), _as_tf(_only("crop", shape[0], crop=shifts)))
    np.testing.assert_array_equal(out.numpy(), np_crop(x, shifts))


def test_crop_hand_worked():
    # out[i, j] = x[i + dy, j + dx]: dy = 1 moves the content up and zero-fills the last row.
    x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    out = augment.apply(tf.constant(x), _as_tf(_only("crop", 1, crop=np.array([[1, 0]], np.int32))))
    np.testing.assert_array_equal(out.numpy()[0, :, :, 0], [[3, 4, 5], [6, 7, 8], [0, 0, 0]])


def test_flip_matches_the_oracle_and_mirrors_width():
    x = _images(3, 4, 5, 2)
    flags = np.array([True, False, True])
    out = augment.apply(tf.constant(x), _as_tf(_only("flip", 3, flip=flags)))
    np.testing.assert_array_equal(out.numpy(), np_flip(x, flags))
    np.testing.assert_array_equal(out.numpy()[0, :, 0], x[0, :, 4])


@pytest.mark.parametrize("shape", [(6, 32, 32, 3), (5, 7, 9, 1)])
def test_cutout_matches_reference_clamped_write(shape):
    n, h, w, _ = shape
    x = _images(*shape)
    side_h, side_w = augment.cutout_side(h), augment.cutout_side(w)
    # Edges of the centre ranges [0, size + 1 - side % 2) and an interior point.
    cy = np.array([0, h - side_h % 2, 1, h // 2, h - 1, 2])[:n]
    cx = np.array([w - side_w % 2, 0, w // 2, 1, w - 2, w - 1])[:n]
    centres = np.stack([cy, cx], 1).astype(np.int32)
    out = augment.apply(tf.constant(x), _as_tf(_only("cutout", n, cutout=centres)))
    np.testing.assert_array_equal(out.numpy(), np_cutout(x, centres))


def test_cutout_hand_worked():
    # 4x4, side 2, centre (0, 3): rows -1..0 -> row 0, columns 2..3.
    x = np.ones((1, 4, 4, 1), np.float32)
    out = augment.cutout(tf.constant(x), tf.constant([[0, 3]]), tf.constant([True]))
    expected = np.ones((4, 4))
    expected[0, 2:] = 0
    np.testing.assert_array_equal(out.numpy()[0, :, :, 0], expected)


@pytest.mark.parametrize("shape", [(3, 8, 8, 3), (3, 6, 10, 2)])
def test_scale_and_rotate_match_affine_grid_and_grid_sample(shape):
    n, h, w, _ = shape
    x = _images(*shape)
    rng = np.random.default_rng(2)
    scales = rng.uniform(1 / 1.2, 1.2, (n, 2)).astype(np.float32)
    angles = rng.uniform(-math.pi / 12, math.pi / 12, n).astype(np.float32)
    scaled = np_grid_sample(x, np_scale_theta(scales))
    rotated = np_grid_sample(x, np_rotate_theta(angles))
    no_offset = tf.zeros((n, 2))
    out = augment.affine_warp(tf.constant(x), augment.scale_matrices(scales), no_offset)
    np.testing.assert_allclose(out.numpy(), scaled, atol=1e-5)
    out = augment.affine_warp(tf.constant(x), augment.rotation_matrices(angles, h, w), no_offset)
    np.testing.assert_allclose(out.numpy(), rotated, atol=1e-5)
    # Through apply: scale alone takes the rows-then-columns path, rotate the per-pixel path.
    out = augment.apply(tf.constant(x), _as_tf(_only("scale", n, scale=scales)))
    np.testing.assert_allclose(out.numpy(), scaled, atol=1e-5)
    out = augment.apply(tf.constant(x), _as_tf(_only("rotate", n, rotate=angles)))
    np.testing.assert_allclose(out.numpy(), rotated, atol=1e-5)


def test_scale_hand_worked_zero_padding_per_corner():
    # Width 2, sx = 2: column 0 samples x = -0.5, half on the zero outside and half on pixel 0;
    # column 1 samples x = 1.5, half on pixel 1. Rows keep sy = 1.
    x = tf.constant([[[[4.0], [8.0]]]])
    matrices = augment.scale_matrices(tf.constant([[1.0, 2.0]]))
    out = augment.affine_warp(x, matrices, tf.zeros((1, 2)))
    np.testing.assert_allclose(out.numpy()[0, 0, :, 0], [2.0, 4.0], atol=1e-6)


def test_rotate_hand_worked_positive_angle_turns_anticlockwise():
    x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    matrices = augment.rotation_matrices(tf.constant([math.pi / 2]), 3, 3)
    out = augment.affine_warp(tf.constant(x), matrices, tf.zeros((1, 2)))
    expected = [[2, 5, 8], [1, 4, 7], [0, 3, 6]]
    np.testing.assert_allclose(out.numpy()[0, :, :, 0], expected, atol=1e-5)


def test_full_pass_matches_oracle_for_drawn_parameters():
    for strategy in [IDC_EVAL, DM]:
        x = _images(20, 6, 8, 3)
        params = augment.draw_params(SEED, 20, x.shape[1:], strategy)
        active = params["active"].numpy()
        assert active.any(axis=0)[[COLUMN[f] for f in augment.FAMILIES if f != "cutout"]].all()
        # Each warp also meets a real flip, whose matrix must compose before it (IDC order).
        flipped = active[:, COLUMN["flip"]] & params["flip"].numpy()
        if strategy == IDC_EVAL:
            assert all((active[:, COLUMN[f]] & flipped).any() for f in ("crop", "scale", "rotate"))
        else:
            assert active[:, COLUMN["cutout"]].any()
        out = augment.apply(tf.constant(x), params)
        np.testing.assert_allclose(out.numpy(), np_dsa(x, _numpy(params)), atol=1e-5)


def test_flip_then_crop_composes_as_in_idc_order():
    # IDC flips first, then crops: one resampling must do both.
    x = _images(2, 5, 6, 2)
    params = _only("crop", 2, crop=np.array([[1, 2], [-1, -2]], np.int32))
    params["active"][:, COLUMN["flip"]] = True
    params["flip"] = np.array([True, False])
    out = augment.apply(tf.constant(x), _as_tf(params))
    np.testing.assert_array_equal(out.numpy(), np_dsa(x, params))


def test_identity_parameters_give_the_images_bit_for_bit():
    x = _images(3, 7, 9, 3)
    nothing_active = _identity_params(3)
    nothing_active["active"][:] = False
    for params in (_identity_params(3), nothing_active):
        np.testing.assert_array_equal(augment.apply(tf.constant(x), _as_tf(params)).numpy(), x)


def test_both_resampling_paths_agree():
    x = _images(4, 8, 8, 3)
    scales = np.array([[0.9, 1.1], [1.2, 0.85], [1, 1], [1.05, 1]], np.float32)
    params = _only("scale", 4, scale=scales)
    params["active"][:, COLUMN["flip"]] = True
    params["flip"] = np.array([True, False, True, False])
    tf_params = _as_tf(params)
    fast = augment._apply(tf.constant(x), tf_params, tf.constant(False))
    general = augment._apply(tf.constant(x), tf_params, tf.constant(True))
    np.testing.assert_allclose(fast.numpy(), general.numpy(), atol=1e-6)


# === Draws ===


def test_draw_ranges_and_lattices():
    params = _numpy(augment.draw_params(SEED, 4000, (28, 32), DM))
    assert -0.5 <= params["brightness"].min() and params["brightness"].max() < 0.5
    assert 0 <= params["saturation"].min() and params["saturation"].max() < 2
    assert 0.5 <= params["contrast"].min() and params["contrast"].max() < 1.5
    assert 1 / 1.2 <= params["scale"].min() and params["scale"].max() < 1.2
    assert np.abs(params["rotate"]).max() <= math.radians(15)
    assert set(np.unique(params["crop"])) == set(range(-4, 5))
    # Cutout sides 14 (28 rows) and 16 (32 columns) are even: centres 0..28 and 0..32.
    assert set(np.unique(params["cutout"][:, 0])) == set(range(29))
    assert set(np.unique(params["cutout"][:, 1])) == set(range(33))
    assert abs(params["flip"].mean() - 0.5) < 0.03


def test_dm_strategy_applies_one_family_per_draw_uniformly():
    active = augment.draw_params(SEED, 6000, (8, 8), DM)["active"]
    active = active.numpy()
    np.testing.assert_array_equal(active.sum(axis=1), 1)
    np.testing.assert_allclose(active.mean(axis=0), 1 / 6, atol=0.02)


def test_m3d_strategy_always_applies_color_crop_and_cutout():
    active = augment.draw_params(SEED, 50, (8, 8), M3D)["active"].numpy()
    expected = [f in ("color", "crop", "cutout") for f in augment.FAMILIES]
    np.testing.assert_array_equal(active, np.broadcast_to(expected, active.shape))


def test_idc_evaluation_strategy_flips_colours_and_picks_one_warp():
    active = augment.draw_params(SEED, 3000, (8, 8), IDC_EVAL)["active"]
    active = active.numpy()
    assert active[:, COLUMN["flip"]].all() and active[:, COLUMN["color"]].all()
    assert not active[:, COLUMN["cutout"]].any()
    warps = active[:, [COLUMN["crop"], COLUMN["scale"], COLUMN["rotate"]]]
    np.testing.assert_array_equal(warps.sum(axis=1), 1)
    np.testing.assert_allclose(warps.mean(axis=0), 1 / 3, atol=0.03)


@pytest.mark.parametrize("strategy", [DM, IDC_EVAL])
def test_flip_false_never_flips(strategy):
    active = augment.draw_params(SEED, 3000, (8, 8), strategy, flip=False)["active"].numpy()
    assert not active[:, COLUMN["flip"]].any()
    assert active.sum(axis=1).min() >= 1
    # A left-to-right ramp stays increasing in its middle under color, crop, scale and rotate
    # (IDC_EVAL has no cutout); a flip would make it decrease.
    x = np.tile(np.arange(8, dtype=np.float32)[None, None, :, None], (64, 8, 1, 3))
    for step in range(3):
        out = augment.augment_per_sample(tf.constant(x), tf.constant([step, 1]), IDC_EVAL,
                                         flip=False).numpy()
        assert (np.diff(out[:, 3:5, 2:6, 0], axis=2) > 0.4).all()


def test_per_sample_draws_share_the_family_and_vary_the_parameters():
    params = _numpy(augment._per_sample_params(SEED, 64, (8, 8), DM, True))
    assert (params["active"] == params["active"][0]).all() and params["active"][0].sum() == 1
    assert len(np.unique(params["brightness"])) == 64
    families = set()
    for step in range(40):
        active = augment._per_sample_params(tf.constant([step, 0]), 4, (8, 8),
                                            DM, True)["active"]
        families.add(int(np.argmax(active.numpy()[0])))
    assert families == set(range(6))


# === Siamese property and seeds ===


@pytest.mark.parametrize("strategy", augment.STRATEGIES)
def test_siamese_same_group_same_transform_in_one_batch_or_two_calls(strategy):
    real, syn = _images(6, 8, 8, 3, seed=1), _images(4, 8, 8, 3, seed=2)
    real_ids, syn_ids = np.array([0, 1, 2, 0, 1, 2]), np.array([2, 1, 0, 2])
    both = augment.siamese_augment(np.concatenate([real, syn]), np.concatenate([real_ids, syn_ids]),
                                   SEED, strategy, num_groups=3)
    apart = [augment.siamese_augment(x, ids, SEED, strategy, num_groups=3)
             for x, ids in ((real, real_ids), (syn, syn_ids))]
    np.testing.assert_array_equal(both.numpy(), np.concatenate([a.numpy() for a in apart]))
    # A copy of an image in its group is transformed identically; the rows are the draws.
    twin = augment.siamese_augment(np.concatenate([real, real]),
                                   np.concatenate([real_ids, real_ids]), SEED, strategy,
                                   num_groups=3).numpy()
    np.testing.assert_array_equal(twin[:6], twin[6:])
    table = _numpy(augment.draw_params(SEED, 3, (8, 8), strategy))
    per_image = {k: v[real_ids] for k, v in table.items()}
    np.testing.assert_allclose(apart[0].numpy(), np_dsa(real, per_image), atol=1e-5)


def test_same_seed_same_output_and_different_seed_different_output():
    x = tf.constant(_images(8, 8, 8, 3))
    ids = tf.range(8) % 4
    for strategy in (M3D, DM):
        a = augment.siamese_augment(x, ids, SEED, strategy, num_groups=4).numpy()
        b = augment.siamese_augment(x, ids, tf.constant([7, 11], tf.int64), strategy, num_groups=4)
        c = augment.siamese_augment(x, ids, tf.constant([7, 12]), strategy, num_groups=4).numpy()
        np.testing.assert_array_equal(a, b.numpy())
        assert np.abs(a - c).max() > 0.1
    p = augment.augment_per_sample(x, SEED, M3D).numpy()
    np.testing.assert_array_equal(p, augment.augment_per_sample(x, SEED, M3D).numpy())
    q = augment.augment_per_sample(x, tf.constant([8, 11]), M3D).numpy()
    assert np.abs(p - q).max() > 0.1


def test_none_returns_the_images():
    x = tf.constant(_images(2, 4, 4, 3))
    assert augment.siamese_augment(x, [0, 1], SEED, "none", num_groups=2) is x
    assert augment.augment_per_sample(x, SEED, "none") is x


# === Gradients, graph modes ===


@pytest.mark.parametrize("strategy", augment.STRATEGIES[1:])
def test_gradients_are_the_adjoint_of_the_affine_map(strategy):
    # Every op is affine in the images, so <w, f(x + d) - f(x)> must equal <grad, d>.
    x = tf.constant(_images(6, 8, 8, 3))
    d = tf.constant(_images(6, 8, 8, 3, seed=5))
    w = tf.constant(_images(6, 8, 8, 3, seed=6))
    ids = tf.constant([0, 1, 2, 3, 4, 5])

    def f(images):
        return augment.siamese_augment(images, ids, SEED, strategy, num_groups=6)

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(w * f(x))
    grad = tape.gradient(value, x).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0
    change = tf.reduce_sum(w * (f(x + d) - f(x))).numpy()
    np.testing.assert_allclose(change, np.sum(grad * d.numpy()), rtol=1e-4, atol=1e-3)


def test_gradient_of_rotation_gather_path_is_its_adjoint():
    x = tf.constant(_images(2, 6, 6, 1))
    d = tf.constant(_images(2, 6, 6, 1, seed=3))
    w = tf.constant(_images(2, 6, 6, 1, seed=4))
    matrices = augment.rotation_matrices(tf.constant([0.2, -0.25]), 6, 6)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(w * augment.affine_warp(x, matrices, tf.zeros((2, 2))))
    grad = tape.gradient(value, x)
    moved = tf.reduce_sum(w * augment.affine_warp(d, matrices, tf.zeros((2, 2))))
    np.testing.assert_allclose(moved.numpy(), np.sum(grad.numpy() * d.numpy()), rtol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_tf_function_and_xla_match_eager(jit_compile):
    x = tf.constant(_images(10, 8, 8, 3))
    ids = tf.range(10) % 5

    @tf.function(jit_compile=jit_compile)
    def both(images, seed):
        return (
            augment.siamese_augment(images, ids, seed, DM, num_groups=5),
            augment.siamese_augment(images, ids, seed, M3D, num_groups=5),
            augment.augment_per_sample(images, seed, IDC_EVAL),
        )

    for step in range(3):
        seed = tf.constant([step, 3])
        eager = (
            augment.siamese_augment(x, ids, seed, DM, num_groups=5),
            augment.siamese_augment(x, ids, seed, M3D, num_groups=5),
            augment.augment_per_sample(x, seed, IDC_EVAL),
        )
        for a, b in zip(eager, both(x, seed)):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_bfloat16_images_keep_their_dtype():
    x = tf.cast(_images(4, 8, 8, 3), tf.bfloat16)
    for strategy in (M3D, DM):
        out = augment.siamese_augment(x, [0, 1, 2, 3], SEED, strategy, num_groups=4)
        assert out.dtype == tf.bfloat16
        ref = augment.siamese_augment(tf.cast(x, tf.float32), [0, 1, 2, 3], SEED, strategy,
                                      num_groups=4)
        np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), ref.numpy(), atol=0.1)


def test_mirrored_strategy_replicas_match_one_device():
    # Two logical CPUs must be configured before TensorFlow starts, so this runs in a subprocess.
    code = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from m3d_tf import augment
        images = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype(np.float32)
        ids = np.array([0, 1, 2, 3, 3, 2, 1, 0], np.int32)
        seed = tf.constant([5, 9])
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        for name in ("color_crop_cutout", "color_crop_cutout_flip_scale_rotate"):
            single = augment.siamese_augment(images, ids, seed, name, num_groups=4).numpy()
            ds = tf.data.Dataset.from_tensor_slices((images, ids)).batch(8)
            x, y = next(iter(strategy.experimental_distribute_dataset(ds)))

            @tf.function
            def step(x, y):
                return strategy.run(
                    lambda a, b: augment.siamese_augment(a, b, seed, name, num_groups=4), (x, y))

            parts = [t.numpy() for t in strategy.experimental_local_results(step(x, y))]
            assert [len(p) for p in parts] == [4, 4], [len(p) for p in parts]
            diff = np.abs(np.concatenate(parts) - single).max()
            assert diff < 1e-5, (name, diff)
        print("OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=600, cwd=pathlib.Path(__file__).parents[1])
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


# === Bad input ===


def test_bad_input_messages():
    x = tf.zeros((2, 4, 4, 3))
    with pytest.raises(ValueError,
                       match=r"strategy='crop' is not a DSA strategy; use one of 'none', "):
        augment.siamese_augment(x, [0, 1], SEED, "crop", num_groups=2)
    with pytest.raises(ValueError, match=r"seed must be an int32 or int64 tensor of shape \(2,\); "
                                         r"got dtype int32 and shape \(3,\)"):
        augment.augment_per_sample(x, tf.constant([1, 2, 3]), M3D)
    with pytest.raises(ValueError, match=r"got dtype float32 and shape \(4, 4, 3\)"):
        augment.augment_per_sample(tf.zeros((4, 4, 3)), SEED, M3D)
    with pytest.raises(ValueError, match=r"num_groups must be a Python int >= 1; got 0"):
        augment.siamese_augment(x, [0, 1], SEED, M3D, num_groups=0)
    with pytest.raises(ValueError, match=r"num_groups must be a Python int >= 1; got 2.0"):
        augment.siamese_augment(x, [0, 1], SEED, M3D, num_groups=2.0)
    out = augment.siamese_augment(x, [0, 1], SEED, M3D, num_groups=np.int64(2))
    np.testing.assert_array_equal(out.numpy(), augment.siamese_augment(x, [0, 1], SEED, M3D,
                                                                       num_groups=2).numpy())
    with pytest.raises(ValueError, match=r"group_ids must have shape \(N,\) = \(2,\) to match "
                                         r"images; got \(3,\)"):
        augment.siamese_augment(x, [0, 1, 1], SEED, M3D, num_groups=2)

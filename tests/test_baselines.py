"""Tests for m3d_tf.baselines: greedy orders vs NumPy oracles, subsets, saved sets."""

import numpy as np
import pytest

from m3d_tf import baselines, io
from m3d_tf.data import DatasetInfo

import reference

MEAN, STD = (0.2860,), (0.3530,)


def _info(num_classes=10, image_shape=(28, 28, 1)):
    return DatasetInfo("fashion_mnist", "test", num_classes, image_shape,
                       tuple(str(c) for c in range(num_classes)), MEAN, STD, {"train": 1000})


# === Greedy orders ===


def test_herding_hand_worked():
    # Square corners and its centre. The centre is the mean; then running mean (1, 1) wants
    # (1, 1): the four corners tie -> index 0; then 3 mu - S = (2, 2) -> index 3; then a tie -> 1.
    features = [[0, 0], [2, 0], [0, 2], [2, 2], [1, 1]]
    np.testing.assert_array_equal(baselines.herding_order(features, 5), [4, 0, 3, 1, 2])
    assert reference.np_herding_order(features, 5) == [4, 0, 3, 1, 2]


def test_herding_matches_numpy_oracle():
    features = np.random.default_rng(0).normal(size=(40, 6))
    for k in (1, 7, 40):
        np.testing.assert_array_equal(
            baselines.herding_order(features, k), reference.np_herding_order(features, k))


def test_herding_running_mean_beats_random_picks():
    features = np.random.default_rng(1).normal(size=(200, 8))
    picks = baselines.herding_order(features, 10)
    gap = np.linalg.norm(features[picks].mean(0) - features.mean(0))
    rng = np.random.default_rng(2)
    random_gaps = [np.linalg.norm(features[rng.choice(200, 10, replace=False)].mean(0)
                                  - features.mean(0)) for _ in range(100)]
    assert gap < min(random_gaps)


def test_kcenter_hand_worked():
    # Points 0, 1, 2, 10, 11 on a line: mean 4.8 -> nearest is 2 (index 2); farthest from it 11
    # (index 4); then 0 (distance 2); then 1 and 10 tie at distance 1 -> index 1; then 10.
    features = [[0, 0], [1, 0], [2, 0], [10, 0], [11, 0]]
    np.testing.assert_array_equal(baselines.kcenter_order(features, 5), [2, 4, 0, 1, 3])
    assert reference.np_kcenter_order(features, 5) == [2, 4, 0, 1, 3]


def test_kcenter_matches_numpy_oracle():
    features = np.random.default_rng(3).normal(size=(40, 6))
    for k in (1, 7, 40):
        np.testing.assert_array_equal(
            baselines.kcenter_order(features, k), reference.np_kcenter_order(features, k))


def test_greedy_orders_pick_duplicates_once():
    features = [[1.0, 1.0]] * 3 + [[0.0, 0.0]]
    for order in (baselines.herding_order, baselines.kcenter_order):
        picks = order(features, 4)
        assert sorted(picks.tolist()) == [0, 1, 2, 3], order.__name__


# === Selection rules ===


def _labels():
    return np.random.default_rng(4).permutation(np.repeat(np.arange(3), [7, 5, 9]))


def test_random_balanced_distinct_deterministic():
    labels = _labels()
    images = np.zeros((len(labels), 4, 4, 1), np.uint8)
    picks = baselines.select_random(images, labels, 4, num_classes=3, seed=5)
    assert picks.dtype == np.int64 and picks.shape == (12,)
    np.testing.assert_array_equal(labels[picks], np.repeat(np.arange(3), 4))  # class-major
    assert len(set(picks.tolist())) == 12
    again = baselines.select_random(images, labels, 4, num_classes=3, seed=5)
    np.testing.assert_array_equal(picks, again)
    others = [baselines.select_random(images, labels, 4, num_classes=3, seed=s)
              for s in range(6, 9)]
    assert any(not np.array_equal(picks, o) for o in others)
    # Class c's draw depends on (seed, c) only: the same rows in the same order as a direct draw.
    rows = np.flatnonzero(labels == 1)
    want = rows[np.random.default_rng([5, 1]).choice(len(rows), 4, replace=False)]
    np.testing.assert_array_equal(picks[4:8], want)


def test_feature_baselines_follow_their_orders(fmnist_small):
    x, y = fmnist_small.x_train[:300], fmnist_small.y_train[:300]
    embed = baselines.random_convnet_embedder((28, 28, 1), mean=MEAN, std=STD, seed=2)
    for name, order in (("herding", baselines.herding_order), ("kcenter", baselines.kcenter_order)):
        picks = baselines.BASELINES[name](x, y, 3, num_classes=10, seed=2, mean=MEAN, std=STD)
        np.testing.assert_array_equal(y[picks], np.repeat(np.arange(10), 3))
        for c in (0, 7):
            rows = np.flatnonzero(y == c)
            want = rows[order(embed(x[rows].astype(np.float32) / 255), 3)]
            np.testing.assert_array_equal(picks[3 * c:3 * c + 3], want)


def test_embedder_is_seeded(fmnist_small):
    x = fmnist_small.x_train[:8].astype(np.float32) / 255
    a = baselines.random_convnet_embedder((28, 28, 1), mean=MEAN, std=STD, seed=0)(x)
    b = baselines.random_convnet_embedder((28, 28, 1), mean=MEAN, std=STD, seed=0)(x)
    c = baselines.random_convnet_embedder((28, 28, 1), mean=MEAN, std=STD, seed=1)(x)
    assert a.shape == (8, 2048)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


# === Sets ===


@pytest.mark.parametrize("method", ["random", "herding"])
def test_baseline_set_saves_and_reloads(method, fmnist_small, tmp_path):
    x, y = fmnist_small.x_train, fmnist_small.y_train
    subset = baselines.baseline_set(method, x, y, 2, _info(), seed=3)
    indices = np.asarray(subset.metadata["indices"])
    np.testing.assert_array_equal(subset.images, x[indices].astype(np.float32) / 255)
    np.testing.assert_array_equal(subset.labels, np.repeat(np.arange(10), 2))
    assert (subset.metadata["method"], subset.metadata["ipc"], subset.metadata["factor"],
            subset.metadata["seed"]) == (method, 2, 1, 3)
    io.save_set(tmp_path / method, subset)
    loaded = io.load_set(tmp_path / method)
    np.testing.assert_array_equal(loaded.images, subset.images)
    np.testing.assert_array_equal(loaded.decoded()[0], subset.images)  # factor 1: no decode


def test_baseline_set_errors(fmnist_small):
    x, y = fmnist_small.x_train, fmnist_small.y_train
    with pytest.raises(ValueError,
                       match="Unknown method='kmeans'; valid choices: random, herding, kcenter."):
        baselines.baseline_set("kmeans", x, y, 2, _info())
    few = np.concatenate([np.flatnonzero(y != 3), np.flatnonzero(y == 3)[:4]])
    with pytest.raises(ValueError, match=r"class 3 has 4 training images; baseline 'kcenter' with "
                                         r"ipc=10 needs 10\. Lower ipc\."):
        baselines.baseline_set("kcenter", x[few], y[few], 10, _info())
    with pytest.raises(ValueError, match=r"images have shape \(28, 28, 1\) per image but dataset "
                                         r"'fashion_mnist' has \(32, 32, 3\)"):
        baselines.baseline_set("random", x, y, 2, _info(image_shape=(32, 32, 3)))
    with pytest.raises(ValueError,
                       match=r"labels lie in \[0, 9\] but dataset 'fashion_mnist' has 5"):
        baselines.baseline_set("random", x, y, 2, _info(num_classes=5))
    with pytest.raises(ValueError, match="ipc must be a positive integer. Received ipc=0."):
        baselines.baseline_set("random", x, y, 0, _info())

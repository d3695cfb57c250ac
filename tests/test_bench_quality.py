"""Tests for bench/quality.py: the settings it condenses with (--settings) and --reuse, which
evaluates saved sets only when their budget matches."""

import argparse
import re

import pytest

from m3d_tf import baselines, io, recipes
from m3d_tf.data import DatasetInfo


def _args(**overrides):
    values = dict(seed=3, iterations=800, real_per_class=64, bf16=True, settings="recipe")
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.fixture
def saved_random(fmnist_small, tmp_path):
    x, y = fmnist_small.x_train, fmnist_small.y_train
    info = DatasetInfo("fashion_mnist", "train", 10, (28, 28, 1), tuple(map(str, range(10))),
                       (0.286,), (0.353,), {"train": len(y)})
    directory = tmp_path / "ipc2-random"
    io.save_set(directory, baselines.baseline_set("random", x, y, 2, info, seed=3))
    return directory


def test_reuse_loads_a_matching_set(saved_random, bench):
    synthetic = bench("quality")._reused(saved_random, "random", 2, _args())
    assert synthetic.images.shape == (20, 28, 28, 1)
    assert synthetic.metadata["method"] == "random"


@pytest.mark.parametrize("method, ipc, args, says", [
    ("random", 2, _args(seed=0), "seed 3 (asked 0)"),
    ("random", 5, _args(), "ipc 2 (asked 5)"),
    ("herding", 2, _args(), "method 'random' (asked 'herding')"),
])
def test_reuse_refuses_another_budget(saved_random, method, ipc, args, says, bench):
    with pytest.raises(SystemExit, match=r"--reuse: .*ipc2-random was built with .*" +
                       re.escape(says)):
        bench("quality")._reused(saved_random, method, ipc, args)


def test_reuse_needs_sets(capsys, bench):
    with pytest.raises(SystemExit) as raised:
        bench("quality").main(["--reuse"])
    assert raised.value.code == 2
    assert "--reuse evaluates the sets saved under --sets DIR" in capsys.readouterr().err


def test_settings_recipe_are_the_documented_runs_and_tuned_the_validation_choice(bench):
    quality = bench("quality")
    # Every run in docs/benchmarks.md (before recipes.TUNED): lr = IPC and a new net every 5.
    assert quality._rate_and_ipm("m3d", 10, "recipe") == {"learning_rate": 10.0, "ipm": 5}
    assert quality._rate_and_ipm("m3d", 1, "recipe") == {"learning_rate": 1.0, "ipm": 5}
    tuned = recipes.TUNED["m3d"]["fashion_mnist"][10]
    assert quality._rate_and_ipm("m3d", 10, "tuned") == {
        "learning_rate": tuned["learning_rate"], "ipm": tuned["ipm"]}
    assert quality._rate_and_ipm("m3d", 10, "tuned") != quality._rate_and_ipm("m3d", 10, "recipe")
    for settings in ("recipe", "tuned"):  # DM has no tuned values
        assert quality._rate_and_ipm("dm", 10, settings) == {"learning_rate": 0.1, "ipm": 1}
    assert quality._settings_text(["m3d", "dm", "random"], [1, 10], "recipe") == (
        "m3d IPC 1 lr 1 ipm 5, m3d IPC 10 lr 10 ipm 5, dm IPC 1 lr 0.1 ipm 1, "
        "dm IPC 10 lr 0.1 ipm 1")
    assert quality._settings_text(["herding"], [10], "tuned") == "none condensed"


def _saved_m3d(data, info, directory, ipc, learning_rate=None):
    """An M3D set saved as `--sets` would hold it: seed 3, 800 iterations, 64 real images per
    class, bfloat16 (as _args), ipm 5; compiled at `learning_rate` when one is given."""
    condenser = recipes.build_condenser(info, ipc, recipe="m3d", seed=3, ipm=5,
                                        real_per_class=64, compute_dtype="bfloat16")
    condenser.initialize((data.x_train, data.y_train))
    if learning_rate is not None:
        condenser.compile(learning_rate=learning_rate)
    io.save_set(directory, io.SyntheticSet.from_condenser(condenser, info, iterations=800))
    return directory


def test_reuse_refuses_a_set_condensed_with_another_ipm(fmnist_small, fmnist_small_info,
                                                        tmp_path, bench):
    directory = _saved_m3d(fmnist_small, fmnist_small_info, tmp_path / "ipc1-m3d", 1)
    assert bench("quality")._reused(directory, "m3d", 1, _args()).metadata["method"] == "m3d"
    # The tuned IPC-1 schedule is a new net every iteration: this set is not that run's.
    with pytest.raises(SystemExit, match=r"ipm 5 \(asked 1\)"):
        bench("quality")._reused(directory, "m3d", 1, _args(settings="tuned"))


def test_reuse_refuses_a_set_condensed_at_another_pixel_rate(fmnist_small, fmnist_small_info,
                                                             tmp_path, bench):
    # The recipe's rate at IPC 2 is 2.
    directory = _saved_m3d(fmnist_small, fmnist_small_info, tmp_path / "ipc2-m3d", 2,
                           learning_rate=5.0)
    with pytest.raises(SystemExit, match=r"learning_rate 5\.0 \(asked 2\.0\)"):
        bench("quality")._reused(directory, "m3d", 2, _args())

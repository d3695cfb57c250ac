"""Tests for bench/quality.py's --reuse: it evaluates saved sets only when their budget matches."""

import argparse
import importlib.util
import pathlib
import re

import pytest

from m3d_tf import baselines, io
from m3d_tf.data import DatasetInfo

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _quality():
    spec = importlib.util.spec_from_file_location("quality", ROOT / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(**overrides):
    values = dict(seed=3, iterations=800, real_per_class=64, bf16=True)
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


def test_reuse_loads_a_matching_set(saved_random):
    synthetic = _quality()._reused(saved_random, "random", 2, _args())
    assert synthetic.images.shape == (20, 28, 28, 1)
    assert synthetic.metadata["method"] == "random"


@pytest.mark.parametrize("method, ipc, args, says", [
    ("random", 2, _args(seed=0), "seed 3 (asked 0)"),
    ("random", 5, _args(), "ipc 2 (asked 5)"),
    ("herding", 2, _args(), "method 'random' (asked 'herding')"),
])
def test_reuse_refuses_another_budget(saved_random, method, ipc, args, says):
    with pytest.raises(SystemExit, match=r"--reuse: .*ipc2-random was built with .*" +
                       re.escape(says)):
        _quality()._reused(saved_random, method, ipc, args)


def test_reuse_needs_sets(capsys):
    with pytest.raises(SystemExit) as raised:
        _quality().main(["--reuse"])
    assert raised.value.code == 2
    assert "--reuse evaluates the sets saved under --sets DIR" in capsys.readouterr().err

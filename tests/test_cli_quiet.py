"""A quiet command line: `python -m m3d_tf ...` prints only our own lines; --verbose adds TF's.

Run as subprocesses: what TensorFlow prints depends on what happens before it loads, which an
in-process test (TensorFlow long loaded) cannot see.
"""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import m3d_tf
from m3d_tf import console

ROOT = pathlib.Path(m3d_tf.__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# TensorFlow's C++ log ("I0000 00:00:1796172149.883681   27690 port.cc:153] ..."), absl's
# notice before it, the graph optimiser's protobuf dump and the notices we have seen.
TENSORFLOW_LINE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:|absl::InitializeLog|oneDNN|cuda|Type inference failed|"
    r"cpu_feature_guard|^WARNING:tensorflow", re.IGNORECASE | re.MULTILINE,
)


@pytest.fixture(scope="module")
def npz(fmnist_small, tmp_path_factory):
    """3 classes, 20 train and 10 test images each."""
    def first(images, labels, count):
        keep = np.concatenate([np.flatnonzero(labels == c)[:count] for c in range(3)])
        return images[keep], labels[keep]

    x_train, y_train = first(fmnist_small.x_train, fmnist_small.y_train, 20)
    x_test, y_test = first(fmnist_small.x_test, fmnist_small.y_test, 10)
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return f"npz:{path}"


def _m3d(*argv):
    # TensorFlow's own setting left unset, as on a user's machine.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "m3d_tf", *map(str, argv)], capture_output=True,
                          text=True, timeout=300, env=dict(env, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


def _is_progress(line):
    """Keras' progress bar, which `m3d condense` asks for: "4/4 ━━━━ 1s 166ms/step - mmd: ..".

    Its updates are separated by newlines or carriage returns (and it may start with an empty
    line); each one must be a bar.
    """
    updates = [u for u in ANSI.sub("", line).split("\r") if u]
    return all(re.match(r"^\d+/\d+ ━+ .* - mmd: ", u) for u in updates)


def test_condense_and_show_print_only_our_lines_and_verbose_lets_tensorflow_through(npz,
                                                                                    tmp_path):
    out = tmp_path / "set"
    stdout, stderr = _m3d("condense", "--dataset", npz, "--cache-dir", tmp_path / "cache",
                          "--ipc", 1, "--real-per-class", 4, "--iterations", 2, "--out", out)
    # Ours on stderr: the note that undeclared own data is not mirrored (--flip/--no-flip).
    assert all(line.startswith("m3d: ") for line in stderr.splitlines()), stderr
    lines = stdout.rstrip("\n").split("\n")  # not splitlines(): it splits at "\r" too
    assert all(_is_progress(line) for line in lines[:-4]), stdout
    assert any("mmd: " in line for line in lines[:-4]), stdout
    header, rule, row, grid = lines[-4:]
    assert header.split() == ["set", "method", "ipc", "factor", "kernel", "iterations", "final",
                              "MMD", "seconds"]
    assert set(rule) == {"-", " "} and row.split()[:6] == [str(out), "m3d", "1", "2",
                                                           "gaussian_mix", "2"]
    assert grid == f"grid: {out / 'grid.png'}"

    stdout, stderr = _m3d("show", out)
    assert stderr == ""
    lines = stdout.splitlines()
    assert lines[0].split() == ["key", "value"] and set(lines[1]) == {"-", " "}
    assert [line.split()[0] for line in lines[2:-1]] == [
        "method", "dataset", "num_classes", "image_shape", "ipc", "factor", "kernel",
        "iterations", "learning_rate", "real_per_class", "ipm", "flip", "seed", "final_mmd",
        "library_version", "created"]
    assert lines[-1] == f"grid: {out / 'grid.png'}"
    assert not TENSORFLOW_LINE.search(stdout)

    for argv in (("--verbose", "show", out), ("show", out, "--verbose")):
        stdout, stderr = _m3d(*argv)
        assert TENSORFLOW_LINE.search(stderr), stderr
        assert stdout.splitlines()[-1] == f"grid: {out / 'grid.png'}"


@pytest.mark.parametrize("argv, orig_argv, expected", [
    (["/opt/venv/bin/m3d", "show"], ["/opt/venv/bin/python", "/opt/venv/bin/m3d", "show"], True),
    (["-m", "show", "s"], ["python", "-m", "m3d_tf", "show", "s"], True),
    (["-m"], ["python", "-X", "dev", "-m", "m3d_tf", "--verbose", "show"], True),
    (["-m"], ["python", "-m", "pytest", "tests"], False),
    (["-m"], ["python", "-m", "m3d_tf.data", "npz:x.npz"], False),
    (["-c"], ["python", "-c", "import m3d_tf"], False),
    (["train.py"], ["python", "train.py", "--out", "m3d"], False),
])
def test_only_the_m3d_command_is_made_quiet_on_import(argv, orig_argv, expected):
    """A library user's TensorFlow log is left alone: `import m3d_tf` changes nothing there."""
    assert console.is_command(argv, orig_argv) is expected

"""Faults lose nothing: the real `m3d` command, killed, on a full or read-only disk, twice at once.

Every test runs `python -m m3d_tf ...` as a subprocess on a small real Fashion-MNIST npz (3
classes, 40 training images each) and checks what is left on disk afterwards. The full and the
read-only disk are small tmpfs mounts the test makes (the suite runs as root, inside the
environment's private mount namespace); where mounting is impossible the test fails, saying why.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import m3d_tf
from m3d_tf import io

ROOT = pathlib.Path(m3d_tf.__file__).resolve().parent.parent
ITERATIONS = 30  # long enough that a kill after the first checkpoint lands mid-run
HARD_TIMEOUT = 300  # seconds; only a hung run ever gets near it


@pytest.fixture(scope="module")
def npz(fmnist_small, tmp_path_factory):
    """3 classes, 40 train and 20 test images each, as a user's npz file."""
    def first(images, labels, count):
        keep = np.concatenate([np.flatnonzero(labels == c)[:count] for c in range(3)])
        return images[keep], labels[keep]

    x_train, y_train = first(fmnist_small.x_train, fmnist_small.y_train, 40)
    x_test, y_test = first(fmnist_small.x_test, fmnist_small.y_test, 20)
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return f"npz:{path}"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _argv(*argv):
    return [sys.executable, "-m", "m3d_tf", *map(str, argv)]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _m3d(*argv):
    """Runs `m3d ARGV` to its end: (exit status, stdout, stderr)."""
    done = subprocess.run(_argv(*argv), env=_env(), capture_output=True, text=True,
                          timeout=HARD_TIMEOUT)
    return done.returncode, done.stdout, done.stderr


def _start(*argv):
    return subprocess.Popen(_argv(*argv), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _condense(npz, cache_dir, out, *extra, iterations=ITERATIONS):
    # --flip: Fashion-MNIST keeps its classes mirrored (and an npz without it gets a note).
    return ("condense", "--dataset", npz, "--flip", "--cache-dir", cache_dir, "--ipc", 2,
            "--real-per-class", 8, "--checkpoint-every", 2, "--iterations", iterations,
            "--out", out, *extra)


def _wait_for(path, process):
    """Polls until `path` exists while `process` runs (a checkpoint: the run is under way)."""
    deadline = time.monotonic() + HARD_TIMEOUT
    while not path.exists():
        assert process.poll() is None, f"ended before {path} existed: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {path} within {HARD_TIMEOUT} s"
        time.sleep(0.02)


def _error_line(err):
    """The one line `m3d` prints on a usage error (stderr must hold nothing else)."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("m3d: error: "), err[-3000:]
    return lines[0]


def _same_set(saved, reference):
    """Bitwise the same pixels and labels, the same metadata but for the creation time."""
    np.testing.assert_array_equal(saved.images, reference.images)
    np.testing.assert_array_equal(saved.labels, reference.labels)
    ours = {k: v for k, v in saved.metadata.items() if k != "created"}
    assert ours == {k: v for k, v in reference.metadata.items() if k != "created"}


@pytest.fixture(scope="module")
def reference(npz, cache_dir, tmp_path_factory):
    """An uninterrupted run of ITERATIONS iterations: the set every faulted run must end with."""
    out = tmp_path_factory.mktemp("reference") / "set"
    status, _, err = _m3d(*_condense(npz, cache_dir, out))
    assert status == 0, err[-3000:]
    return io.load_set(out)


# === A small file system the test mounts ===


@pytest.fixture
def tmpfs(tmp_path):
    """A mounted tmpfs factory: tmpfs(size) -> its path; every mount is undone at the end."""
    mounted = []

    def mount(size, options=""):
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs",
                               str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"these fault tests mount a tmpfs and need root (run them as CI does, "
                        f"inside scripts/m3d-env): mount said {done.stderr.strip()!r}")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in reversed(mounted):
            subprocess.run(["umount", "-l", str(point)], check=False)


def _remount_read_only(point):
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)


# === kill -9, then --resume ===


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_set(npz, cache_dir, reference, tmp_path):
    out = tmp_path / "set"
    argv = _condense(npz, cache_dir, out)
    process = _start(*argv)
    # The checkpoint state file names ckpt-2 once its files are complete.
    _wait_for(tmp_path / "set.checkpoint" / "checkpoint", process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not out.exists()
    # The killed run's lock file stays behind; the kernel released its lock, so it blocks nobody.
    assert (tmp_path / "set.lock").exists()

    status, stdout, err = _m3d(*argv, "--resume")
    assert status == 0, err[-3000:]
    resumed_at = int(stdout.split(" at iteration ")[1].split()[0])
    assert 2 <= resumed_at < ITERATIONS
    _same_set(io.load_set(out), reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set", "set.checkpoint"]


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_says_how_to_start_over(npz, cache_dir,
                                                                         tmp_path):
    out, checkpoint = tmp_path / "set", tmp_path / "set.checkpoint"
    argv = _condense(npz, cache_dir, out)
    process = _start(*argv)
    _wait_for(checkpoint / "run.json", process)  # written before the first step is traced
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not (checkpoint / "checkpoint").exists(), "killed too late: a checkpoint was made"

    status, _, err = _m3d(*argv, "--resume")
    assert status == 2
    assert _error_line(err) == (
        f"m3d: error: no checkpoint in {checkpoint} yet (its run stopped before the first); "
        f"delete {checkpoint} and run without --resume to start a new condensation."
    )
    shutil.rmtree(checkpoint)
    status, _, err = _m3d(*_condense(npz, cache_dir, out, iterations=2))
    assert status == 0, err[-3000:]


# === Two writers to one --out ===


@pytest.mark.slow
def test_a_second_writer_stops_at_once_and_the_first_ends_unmixed(npz, cache_dir, reference,
                                                                   tmp_path):
    out = tmp_path / "set"
    first = _start(*_condense(npz, cache_dir, out))
    _wait_for(tmp_path / "set.checkpoint" / "checkpoint", first)
    # Frozen, so it is still mid-run (and holding its lock) while the others start.
    first.send_signal(signal.SIGSTOP)
    try:
        # Other settings: any image it wrote would show in the set.
        for argv in (_condense(npz, cache_dir, out, "--seed", 1),
                     ("baseline", "--method", "random", "--dataset", npz, "--flip",
                      "--out", out)):
            status, stdout, err = _m3d(*argv)
            assert status == 2 and stdout == ""
            assert _error_line(err) == (
                f"m3d: error: {out} is being written by another process (pid {first.pid}, lock "
                f"{tmp_path / 'set.lock'}); wait for it to finish or choose another output "
                "directory."
            )
        assert not out.exists()
    except BaseException:
        first.kill()
        first.communicate()
        raise
    first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=HARD_TIMEOUT)
    assert first.returncode == 0, err[-3000:]
    _same_set(io.load_set(out), reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set", "set.checkpoint"]


def test_output_lock_is_exclusive_and_clears_a_killed_writers_staging(tmp_path):
    out = tmp_path / "deeper" / "set"
    out.parent.mkdir()
    (out.parent / ".set.saving-x1y2").mkdir()  # what save_set leaves when killed mid-save
    (out.parent / ".set2.saving-x1y2").mkdir()  # another output's: not ours to remove
    with io.output_lock(out) as lock:
        assert lock == out.parent / "set.lock" and lock.read_text() == f"{os.getpid()}\n"
        assert sorted(p.name for p in out.parent.iterdir()) == [".set2.saving-x1y2", "set.lock"]
        with pytest.raises(io.OutputLocked, match=f"pid {os.getpid()}, lock {lock}"):
            with io.output_lock(out):
                pass
        with io.output_lock(tmp_path / "deeper" / "other"):  # another output: its own lock
            pass
    assert sorted(p.name for p in out.parent.iterdir()) == [".set2.saving-x1y2"]
    with io.output_lock(out):  # released: taken again at once
        pass


# === A full disk ===


def test_a_set_that_does_not_fit_fails_cleanly_and_the_earlier_set_stays(npz, tmpfs):
    disk = tmpfs("64k")
    status, _, err = _m3d("baseline", "--method", "random", "--dataset", npz, "--flip",
                          "--ipc", 2, "--out", disk / "earlier")
    assert status == 0, err[-3000:]
    earlier = io.load_set(disk / "earlier")

    # 30 float32 28x28 images: 94 KB of pixels alone.
    status, stdout, err = _m3d("baseline", "--method", "random", "--dataset", npz, "--flip",
                               "--ipc", 10, "--out", disk / "larger")
    assert status == 2 and stdout == ""
    assert _error_line(err) == (
        f"m3d: error: no space left on the disk holding {disk} while saving {disk / 'larger'}; "
        "nothing was saved. Free some space there or save elsewhere."
    )
    # No partial set, no staging directory, no lock file: only the earlier set, unchanged.
    assert sorted(p.name for p in disk.iterdir()) == ["earlier"]
    _same_set(io.load_set(disk / "earlier"), earlier)
    assert earlier.metadata["created"] == io.load_set(disk / "earlier").metadata["created"]


def test_a_full_disk_when_replacing_a_set_keeps_the_old_one(fmnist_small, tmpfs):
    """The library's own overwrite path: the old set is kept, the message says so."""
    from m3d_tf import baselines
    from m3d_tf.data import DatasetInfo

    disk = tmpfs("64k")
    info = DatasetInfo(name="fmnist", source="test", num_classes=10, image_shape=(28, 28, 1),
                       class_names=fmnist_small.class_names, mean=(0.29,), std=(0.35,),
                       split_sizes={"train": 1000})
    small = baselines.baseline_set("random", fmnist_small.x_train, fmnist_small.y_train, 1, info)
    large = baselines.baseline_set("random", fmnist_small.x_train, fmnist_small.y_train, 10, info)
    io.save_set(disk / "set", small)
    with pytest.raises(io.DiskFullError) as raised:
        io.save_set(disk / "set", large, overwrite=True)
    assert str(raised.value) == (
        f"no space left on the disk holding {disk} while saving {disk / 'set'}; nothing was "
        "saved and the earlier set there is kept. Free some space there or save elsewhere."
    )
    assert sorted(p.name for p in disk.iterdir()) == ["set"]
    _same_set(io.load_set(disk / "set"), small)


# === A read-only output directory ===


@pytest.mark.parametrize("command", [
    ("condense", "--iterations", 2),
    ("baseline", "--method", "random"),
    ("main", "--iterations", 2),
])
def test_a_read_only_output_directory_is_refused_before_any_work(command, tmpfs, tmp_path):
    disk = tmpfs("1m")
    _remount_read_only(disk)
    # A dataset that does not exist: reading it first would give another error.
    missing = f"npz:{tmp_path / 'no-such.npz'}"
    for out in (disk / "set", disk / "deeper" / "set"):
        status, stdout, err = _m3d(*command, "--dataset", missing, "--out", out)
        assert status == 2 and stdout == ""
        assert _error_line(err) == (
            f"m3d: error: --out {out}: cannot write in {disk} (Read-only file system); choose "
            "a writable directory."
        )
    assert list(disk.iterdir()) == []


# === A corrupt or truncated checkpoint ===


@pytest.mark.slow
@pytest.mark.parametrize("damage, reason", [
    ("data", "Read less bytes than requested"),
    ("index", "file is too short to be an sstable"),
])
def test_a_truncated_checkpoint_names_its_path_and_the_way_out(damage, reason, npz, cache_dir,
                                                                tmp_path):
    out, checkpoint = tmp_path / "set", tmp_path / "set.checkpoint"
    status, _, err = _m3d(*_condense(npz, cache_dir, out, iterations=4))
    assert status == 0, err[-3000:]
    shutil.rmtree(out)  # as if killed while saving: only the checkpoints are left
    name = {"data": "ckpt-4.data-00000-of-00001", "index": "ckpt-4.index"}[damage]
    with open(checkpoint / name, "r+b") as file:
        file.truncate(10)

    status, stdout, err = _m3d(*_condense(npz, cache_dir, out, "--resume", iterations=6))
    assert status == 2
    assert _error_line(err) == (
        f"m3d: error: checkpoint {checkpoint / 'ckpt-4'} is corrupt, truncated or of another "
        f"condenser ({reason}); delete {checkpoint} to start over, or start a new --out."
    )
    assert not out.exists()
    if damage == "data":  # the way out works
        shutil.rmtree(checkpoint)
        status, _, err = _m3d(*_condense(npz, cache_dir, out, iterations=6))
        assert status == 0, err[-3000:]
        assert io.load_set(out).metadata["iterations"] == 6

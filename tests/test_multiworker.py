"""`m3d condense --strategy multiworker`: two worker processes on 127.0.0.1, real Fashion-MNIST.

Two workers must give the set one process gives; only the chief writes; a killed worker ends the
run with one line, and `--resume` on every worker then finishes bit-identical to an uninterrupted
run; a TF_CONFIG naming a worker that never starts fails within the --cluster-timeout.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import m3d_tf
from m3d_tf import cli, distribute, io

ROOT = pathlib.Path(m3d_tf.__file__).resolve().parent.parent
ITERATIONS = 10
# Every process is killed after this many seconds: a hang fails the test instead of stalling CI.
HARD_TIMEOUT = 240


@pytest.fixture(scope="module")
def npz(fmnist_small, tmp_path_factory):
    """3 classes, 40 train images each, as a user's npz file."""
    keep = np.concatenate([np.flatnonzero(fmnist_small.y_train == c)[:40] for c in range(3)])
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, x_train=fmnist_small.x_train[keep], y_train=fmnist_small.y_train[keep])
    return f"npz:{path}"


def _condense_args(npz, out, *extra):
    return ["condense", "--dataset", npz, "--ipc", "2", "--real-per-class", "8",
            "--iterations", str(ITERATIONS), "--checkpoint-every", "2", "--out", str(out), *extra]


def _free_ports(count):
    """Ports that nothing listens on, below the kernel's ephemeral range.

    A port the kernel hands out for binding to 0 lies in the ephemeral range, and once closed it
    can be given to any outgoing connection (a worker's own gRPC client among them) before the
    worker binds it; then that worker dies at start and the other waits for it. Ports below the
    range are never handed out that way.
    """
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    rng = np.random.default_rng()
    ports = []
    while len(ports) < count:
        port = int(rng.integers(10_000, low))
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def _tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _launch(argv, tf_config, cwd, tmp):
    env = dict(os.environ, TF_CONFIG=tf_config, PYTHONPATH=str(ROOT), TMPDIR=str(tmp),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        [sys.executable, "-m", "m3d_tf", *argv, "--strategy", "multiworker"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(process):
    try:
        out, err = process.communicate(timeout=HARD_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"a worker hung for {HARD_TIMEOUT} s; its stderr ends:\n{err[-2000:]}")
    return process.returncode, out, err


def _errors(err):
    return [line for line in err.splitlines() if line.startswith("m3d: error:")]


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in pathlib.Path(path).rglob("*"))


@pytest.fixture(scope="module")
def two_workers(npz, tmp_path_factory):
    """An uninterrupted 2-worker run: each worker in its own empty directory, relative --out."""
    base = tmp_path_factory.mktemp("two_workers")
    dirs = [base / "chief", base / "worker", base / "tmp0", base / "tmp1"]
    for d in dirs:
        d.mkdir()
    ports = _free_ports(2)
    argv = _condense_args(npz, "set", "--tensorboard", "tb", "--cluster-timeout", "60")
    processes = [_launch(argv, _tf_config(ports, i), dirs[i], dirs[2 + i]) for i in range(2)]
    results = [_finish(p) for p in processes]
    for status, _, err in results:
        assert status == 0, err[-3000:]
    return base, results


@pytest.mark.slow
def test_two_workers_give_the_one_process_set_and_only_the_chief_writes(npz, two_workers,
                                                                        tmp_path, capsys):
    base, _ = two_workers
    assert cli.main(_condense_args(npz, tmp_path / "one")) == 0, capsys.readouterr().err
    one = io.load_set(tmp_path / "one")
    two = io.load_set(base / "chief" / "set")
    assert two.metadata["iterations"] == ITERATIONS
    np.testing.assert_allclose(two.images, one.images, atol=1e-5, rtol=0)
    assert two.metadata["final_mmd"] == pytest.approx(one.metadata["final_mmd"], abs=1e-5)

    # The chief wrote the set, its checkpoints (every 2 iterations, 2 kept) and TensorBoard ...
    assert {"set/images.npz", "set/metadata.json", "set/grid.png", "set.checkpoint/run.json",
            f"set.checkpoint/ckpt-{ITERATIONS}.index"} <= set(_tree(base / "chief"))
    assert list((base / "chief" / "tb").glob("events.out.tfevents.*"))
    # ... and the worker, with the same command line, wrote nothing: not even temporary files.
    assert _tree(base / "worker") == [] and _tree(base / "tmp1") == []


@pytest.mark.slow
def test_killed_worker_ends_the_run_and_resume_finishes_identical(npz, two_workers, tmp_path):
    base, _ = two_workers
    reference = io.load_set(base / "chief" / "set")
    out, checkpoint = tmp_path / "set", tmp_path / "set.checkpoint"
    ports = _free_ports(2)
    argv = _condense_args(npz, out, "--cluster-timeout", "60")
    chief, worker = (_launch(argv, _tf_config(ports, i), tmp_path, tmp_path) for i in range(2))
    deadline = time.monotonic() + HARD_TIMEOUT
    while not (checkpoint / "ckpt-2.index").exists():
        assert chief.poll() is None and worker.poll() is None, "a worker ended before ckpt-2"
        assert time.monotonic() < deadline, "no checkpoint within the hard timeout"
        time.sleep(0.02)
    # Frozen first, so the chief cannot finish the run before the kill lands.
    worker.send_signal(signal.SIGSTOP)
    worker.kill()
    worker.communicate()
    status, _, err = _finish(chief)
    assert status == 2
    assert len(_errors(err)) == 1, err[-3000:]
    assert "lost a worker" in err and f"the last checkpoint is in {checkpoint}" in err
    assert not out.exists()

    processes = [_launch([*argv, "--resume"], _tf_config(ports, i), tmp_path, tmp_path)
                 for i in range(2)]
    (status, stdout, err), (worker_status, _, worker_err) = [_finish(p) for p in processes]
    assert status == 0 and worker_status == 0, err[-2000:] + worker_err[-2000:]
    resumed_at = int(stdout.split("resuming ")[1].split(" at iteration ")[1].split()[0])
    assert 2 <= resumed_at < ITERATIONS
    np.testing.assert_array_equal(io.load_set(out).images, reference.images)


@pytest.mark.slow
def test_a_worker_that_never_starts_is_named_within_the_timeout(npz, tmp_path):
    # Worker 0 leads the coordination service: TensorFlow would wait for worker 1 forever, so
    # the watchdog process names it and kills worker 0 (SIGKILL) 15 s after the timeout. Worker
    # 1 alone waits for a leader that never comes: TensorFlow's deadline, then status 2.
    pairs = [_free_ports(2), _free_ports(2)]
    started = time.monotonic()
    processes = [
        _launch(_condense_args(npz, tmp_path / f"set{i}", "--cluster-timeout", "5"),
                _tf_config(ports, i), tmp_path, tmp_path)
        for i, ports in enumerate(pairs)
    ]
    results = [_finish(p) for p in processes]
    assert time.monotonic() - started < HARD_TIMEOUT
    for (status, _, err), ports, missing, expected in zip(results, pairs, (1, 0), (-9, 2)):
        assert status == expected, err[-2000:]
        assert _errors(err) == [
            f"m3d: error: the cluster in TF_CONFIG did not come together within 5 s: worker "
            f"{missing} at 127.0.0.1:{ports[missing]} (nothing listens there: is it started?). "
            "Start the same command on every task listed in TF_CONFIG, each with its own task "
            "index, or fix the addresses."
        ]
    assert not (tmp_path / "set0").exists() and not (tmp_path / "set1").exists()


# === TF_CONFIG checked before TensorFlow starts ===


def test_parse_tf_config_reads_the_cluster_and_the_chief():
    cluster = distribute.parse_tf_config(json.dumps({
        "cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
        "task": {"type": "worker", "index": 1},
    }))
    assert cluster.tasks == (("chief", 0, "a:1"), ("worker", 0, "b:2"), ("worker", 1, "c:3"))
    assert (cluster.num_workers, cluster.is_chief, cluster.address) == (3, False, "c:3")
    assert cluster.peers() == [("chief", 0, "a:1"), ("worker", 0, "b:2")]
    workers_only = distribute.parse_tf_config(_tf_config([1, 2], 0))
    assert workers_only.is_chief and workers_only.address == "127.0.0.1:1"


@pytest.mark.parametrize("config, message", [
    ("{", r"TF_CONFIG is not valid JSON"),
    ('{"cluster": {"ps": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
     r"names jobs \['ps'\]; MultiWorkerMirroredStrategy runs only chief and worker"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}',
     r"cluster.worker\[0\] is 'a', not a host:port address"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}',
     r"lists an address twice"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
     r"task index is 2 but cluster.worker has 2 entries"),
    ('{"cluster": {"worker": ["a:1"]}}', r'needs "task"'),
])
def test_bad_tf_config_is_one_line_saying_what_to_do(config, message):
    with pytest.raises(ValueError, match=message) as raised:
        distribute.parse_tf_config(config)
    assert "set it on every worker, e.g. TF_CONFIG=" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_cli_without_tf_config_fails_before_tensorflow_starts(npz, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    status = cli.main([*_condense_args(npz, tmp_path / "set"), "--strategy", "multiworker"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("m3d: error: --strategy multiworker reads the cluster from the TF_CONFIG "
                          "environment variable, which is not set")
    assert not (tmp_path / "set").exists()


def test_probe_names_why_an_address_cannot_take_part():
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    try:
        assert distribute.probe(f"127.0.0.1:{listening.getsockname()[1]}") is None
    finally:
        listening.close()
    (closed,) = _free_ports(1)
    assert distribute.probe(f"127.0.0.1:{closed}") == "nothing listens there: is it started?"
    assert distribute.probe("no-such-host.invalid:1") == "its host name does not resolve"

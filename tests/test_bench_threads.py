"""Tests for bench/threads.py: its jobs run as children with the thread layout asked for."""

import argparse
import importlib.util
import math
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _threads():
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("threads", ROOT / "bench" / "threads.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(**changes):
    values = dict(ipc=1, epochs=1, iterations=6, condense_ipc=1)
    values.update(changes)
    return argparse.Namespace(**values)


def test_an_evaluation_job_reports_its_epoch_time_and_its_networks_accuracy():
    threads = _threads()
    [(seconds, accuracy)] = threads.side_by_side("evaluate", 1, 1, _args())
    assert seconds > 0
    assert 0.0 <= accuracy <= 1.0 and not math.isnan(accuracy)


def test_a_condensation_job_reports_its_iteration_time_and_no_accuracy():
    threads = _threads()
    [(seconds, accuracy)] = threads.side_by_side("condense", 1, None, _args())
    assert seconds > 0 and math.isnan(accuracy)


def test_a_failing_job_stops_the_measurement_with_the_end_of_its_stderr_and_its_sibling(
        monkeypatch):
    threads = _threads()
    started = []
    popen = threads.subprocess.Popen

    def recording(command, **kwargs):
        if started:  # job 1: runs long and never fails
            command = [sys.executable, "-c", "import time; time.sleep(600)"]
        started.append(popen(command, **kwargs))
        return started[-1]

    monkeypatch.setattr(threads.subprocess, "Popen", recording)
    with pytest.raises(SystemExit, match="evaluate job 0 failed") as stopped:
        threads.side_by_side("evaluate", 2, 1, _args(ipc=0))
    assert "Error" in str(stopped.value)  # the child's traceback, not only its exit code
    assert started[1].returncode is not None and started[1].returncode < 0  # killed, not left


def test_too_few_condensation_iterations_to_time_are_refused(capsys):
    threads = _threads()
    with pytest.raises(SystemExit):
        threads.main(["--iterations", str(threads.WARMUP)])
    assert "--iterations must be above" in capsys.readouterr().err

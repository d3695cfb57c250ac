"""Tests for bench/threads.py: its jobs run as children with the thread layout asked for."""

import argparse
import math
import sys

import pytest


def _args(**changes):
    values = dict(ipc=1, epochs=1, iterations=6, condense_ipc=1)
    values.update(changes)
    return argparse.Namespace(**values)


def test_an_evaluation_job_reports_its_epoch_time_and_its_networks_accuracy(bench):
    threads = bench("threads")
    [(seconds, accuracy)] = threads.side_by_side("evaluate", 1, 1, _args())
    assert seconds > 0
    assert 0.0 <= accuracy <= 1.0 and not math.isnan(accuracy)


def test_a_condensation_job_reports_its_iteration_time_and_no_accuracy(bench):
    threads = bench("threads")
    [(seconds, accuracy)] = threads.side_by_side("condense", 1, None, _args())
    assert seconds > 0 and math.isnan(accuracy)


def test_a_failing_job_stops_the_measurement_with_the_end_of_its_stderr_and_its_sibling(
        monkeypatch, bench):
    threads = bench("threads")
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


def test_too_few_condensation_iterations_to_time_are_refused(capsys, bench):
    threads = bench("threads")
    with pytest.raises(SystemExit):
        threads.main(["--iterations", str(threads.WARMUP)])
    assert "--iterations must be above" in capsys.readouterr().err

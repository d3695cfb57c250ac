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


def test_an_evaluation_job_reports_its_epoch_time_and_accuracy_from_a_one_thread_child():
    threads = _threads()
    [(seconds, accuracy)] = threads.side_by_side("evaluate", 1, 1, _args())
    assert seconds > 0
    assert 0.0 <= accuracy <= 1.0 and not math.isnan(accuracy)


def test_a_failing_job_stops_the_measurement_with_the_end_of_its_stderr():
    threads = _threads()
    with pytest.raises(SystemExit, match="evaluate job 0 failed") as stopped:
        threads.side_by_side("evaluate", 1, 1, _args(ipc=0))
    assert "Error" in str(stopped.value)  # the child's traceback, not only its exit code


def test_too_few_condensation_iterations_to_time_are_refused(capsys):
    threads = _threads()
    with pytest.raises(SystemExit):
        threads.main(["--iterations", str(threads.WARMUP)])
    assert "--iterations must be above" in capsys.readouterr().err

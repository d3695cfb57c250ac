"""The `m3d` command on a small real Fashion-MNIST npz: condense, resume, show, evaluate, errors."""

import json

import numpy as np
import pytest

from m3d_tf import cli, io


@pytest.fixture(scope="module")
def npz(fmnist_small, tmp_path_factory):
    """3 classes, 40 train and 30 test images each, as a user's npz file."""
    def first(images, labels, count):
        keep = np.concatenate([np.flatnonzero(labels == c)[:count] for c in range(3)])
        return images[keep], labels[keep]

    x_train, y_train = first(fmnist_small.x_train, fmnist_small.y_train, 40)
    x_test, y_test = first(fmnist_small.x_test, fmnist_small.y_test, 30)
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return f"npz:{path}"


def _run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


CONDENSE = ("condense", "--ipc", 2, "--real-per-class", 8, "--checkpoint-every", 2)


def test_condense_resume_show_evaluate(npz, tmp_path, capsys):
    whole = tmp_path / "whole"
    status, out, err = _run(capsys, *CONDENSE, "--dataset", npz, "--iterations", 4,
                            "--out", whole, "--tensorboard", tmp_path / "tb")
    assert status == 0, err
    assert "final MMD" in out and str(whole) in out
    saved = io.load_set(whole)
    assert saved.images.shape == (6, 28, 28, 1)
    assert saved.metadata["iterations"] == 4 and saved.metadata["method"] == "m3d"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))

    # Interrupted after 2 iterations (a checkpoint, no set yet) ...
    part = tmp_path / "part"
    status, _, err = _run(capsys, *CONDENSE, "--dataset", npz, "--iterations", 2, "--out", part)
    assert status == 0, err
    (part / "metadata.json").unlink()  # as if stopped before saving: only the checkpoint is left
    for name in ("images.npz", "grid.png"):
        (part / name).unlink()
    part.rmdir()
    status, _, err = _run(capsys, *CONDENSE, "--dataset", npz, "--iterations", 4, "--out", part)
    assert status == 2 and "pass --resume to continue it" in err
    # ... and resumed to 4: the same set as the uninterrupted run.
    status, out, err = _run(capsys, *CONDENSE, "--dataset", npz, "--iterations", 4,
                            "--out", part, "--resume")
    assert status == 0, err
    assert "resuming" in out and "at iteration 2 of 4" in out
    np.testing.assert_array_equal(io.load_set(part).images, saved.images)

    status, out, _ = _run(capsys, "show", whole)
    assert status == 0 and f"grid: {whole / 'grid.png'}" in out and '"gaussian_mix"' in out
    # How the set was made: the rate and schedule it was condensed with, and its flip choice.
    shown = dict(line.split(None, 1) for line in out.splitlines()[2:-1])
    assert saved.metadata["learning_rate"] > 0
    assert json.loads(shown["learning_rate"]) == saved.metadata["learning_rate"]
    assert json.loads(shown["real_per_class"]) == 8
    assert json.loads(shown["ipm"]) == saved.metadata["condenser_config"]["ipm"]
    assert json.loads(shown["flip"]) == io.set_flip(saved.metadata)

    status, out, err = _run(capsys, "evaluate", whole, "--dataset", npz, "--epochs", 1,
                            "--runs", 1)
    assert status == 0, err
    row = out.strip().splitlines()[-1].split()
    accuracy = float(row[-3])
    assert 0.0 <= accuracy <= 100.0 and row[1:3] == ["m3d", "2"]


def test_baseline_writes_a_set_at_the_same_budget(npz, tmp_path, capsys):
    status, out, err = _run(capsys, "baseline", "--method", "herding", "--dataset", npz,
                            "--ipc", 3, "--out", tmp_path / "herding")
    assert status == 0, err
    saved = io.load_set(tmp_path / "herding")
    assert saved.metadata["method"] == "herding" and saved.metadata["factor"] == 1
    np.testing.assert_array_equal(np.bincount(saved.labels), [3, 3, 3])


def test_evaluate_keeps_its_networks_checkpoints_and_a_rerun_goes_on_from_them(
        npz, tmp_path, capsys):
    status, _, err = _run(capsys, "baseline", "--method", "random", "--dataset", npz,
                          "--ipc", 3, "--out", tmp_path / "random")
    assert status == 0, err
    command = ("evaluate", tmp_path / "random", "--dataset", npz, "--arch", "mlp", "--runs", 2,
               "--checkpoint-dir", tmp_path / "nets")
    status, out, err = _run(capsys, *command, "--epochs", 2)
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "nets").iterdir()) == ["run-0.npz", "run-1.npz"]
    status, again, err = _run(capsys, *command, "--epochs", 2)  # both runs finished: tested only
    assert status == 0 and again.splitlines()[-1] == out.splitlines()[-1], err
    status, _, err = _run(capsys, *command, "--epochs", 3)
    assert status == 2 and "holds the training of another network (it differs in epochs)" in err
    assert err.count("\n") == 1


def test_errors_are_one_line_with_exit_status_2(npz, tmp_path, capsys):
    status, _, err = _run(capsys, "condense", "--dataset", "nosuch", "--out", tmp_path / "x")
    assert status == 2 and err.startswith("m3d: error: unknown dataset 'nosuch'; known names:")
    assert err.count("\n") == 1

    (tmp_path / "exists").mkdir()
    status, _, err = _run(capsys, *CONDENSE, "--dataset", npz, "--out", tmp_path / "exists")
    assert status == 2 and "already exists; choose a new directory" in err

    status, _, err = _run(capsys, "evaluate", tmp_path / "missing")
    assert status == 2 and "no saved set at" in err

    status, _, err = _run(capsys, *CONDENSE, "--dataset", npz, "--out", tmp_path / "r",
                          "--resume")
    assert status == 2 and "run without --resume to start a new condensation" in err

    status, _, err = _run(capsys, *CONDENSE, "--dataset", npz, "--out", tmp_path / "f",
                          "--factor", 3)
    assert status == 2 and "factor=3 does not divide" in err

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metadata.json").write_text("{not json")
    status, _, err = _run(capsys, "show", corrupt)
    assert status == 2 and "m3d: error:" in err and err.count("\n") == 1


def test_resume_with_other_settings_is_refused(npz, tmp_path, capsys):
    out = tmp_path / "s"
    checkpoint = tmp_path / "s.checkpoint"
    checkpoint.mkdir()
    run = {"dataset": npz, "ipc": 2, "recipe": "m3d", "iterations": 4, "seed": 0,
           "learning_rate": None, "overrides": {"real_per_class": 8}, "learning_rate_used": 2.0}
    (checkpoint / "run.json").write_text(json.dumps(run))
    status, _, err = _run(capsys, *CONDENSE, "--dataset", npz, "--out", out, "--resume",
                          "--seed", 5)
    assert status == 2
    assert "made with different settings (seed: 0 then, 5 now)" in err


def test_evaluating_against_another_dataset_is_refused(npz, tmp_path, capsys, fmnist_small):
    status, _, err = _run(capsys, "baseline", "--method", "random", "--dataset", npz,
                          "--ipc", 2, "--out", tmp_path / "r")
    assert status == 0, err
    other = tmp_path / "rgb.npz"
    rgb = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), np.uint8)  # std > 0
    np.savez(other, x_train=rgb, y_train=np.arange(4) % 2, x_test=rgb, y_test=np.arange(4) % 2)
    status, _, err = _run(capsys, "evaluate", tmp_path / "r", "--dataset", f"npz:{other}")
    assert status == 2
    assert "the set has 3 classes of shape (28, 28, 1) but npz:" in err
    assert "has 2 classes of shape (8, 8, 3)" in err


@pytest.mark.slow
def test_main_job_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    out = tmp_path / "main"
    status, stdout, err = _run(capsys, "main", "--out", out, "--iterations", 2, "--epochs", 1,
                               "--runs", 1)
    assert status == 0, err
    table = (out / "summary.txt").read_text().splitlines()
    assert [row.split()[0] for row in table[2:]] == ["m3d", "dm", "random"]
    for method, factor in (("m3d", 2), ("dm", 1), ("random", 1)):
        saved = io.load_set(out / method)
        assert saved.metadata["method"] == method and saved.metadata["factor"] == factor
        assert saved.images.shape == (100, 28, 28, 1)
        assert (out / method / "grid.png").is_file()
    for recipe in ("m3d", "dm"):
        assert list((out / "tensorboard" / recipe).glob("events.out.tfevents.*"))
    assert stdout.rstrip().splitlines()[-1].startswith("sets and grids:")


def test_main_job_takes_any_dataset_source(npz, tmp_path, capsys):
    out = tmp_path / "main"
    status, stdout, err = _run(capsys, "main", "--dataset", npz, "--out", out, "--ipc", 1,
                               "--iterations", 2, "--epochs", 1, "--runs", 1)
    assert status == 0, err
    assert stdout.startswith(f"small via {npz}: 120 train, 90 test images")
    table = (out / "summary.txt").read_text().splitlines()
    assert [row.split()[0] for row in table[2:]] == ["m3d", "dm", "random"]
    for method in ("m3d", "dm", "random"):
        saved = io.load_set(out / method)
        assert saved.metadata["dataset_source"] == npz and saved.images.shape == (3, 28, 28, 1)

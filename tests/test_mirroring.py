"""Mirroring is a property of the data, recorded: DatasetInfo.flip from the catalogue or the
user, stored in the saved set, followed by evaluation; and the set's recorded source.

Before, the flip was decided by the dataset's *name*: a folder called mnist was condensed without
flips and the same images in a folder called fashion_mnist with them, and `m3d evaluate SET` on
own data stopped with "unknown dataset 'DIRNAME'".
"""

import os
import struct

import numpy as np
import pytest

from m3d_tf import cli, data, evaluate, io
from m3d_tf.data import DatasetInfo


def _idx(array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def _write_idx_dir(directory, x_train, y_train, x_test, y_test):
    directory.mkdir(parents=True)
    for prefix, images, labels in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        (directory / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(images[..., 0]))
        (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(labels))
    return directory


@pytest.fixture(scope="module")
def small(fmnist_small):
    """3 classes of real Fashion-MNIST: 20 train and 10 test images each."""
    def first(images, labels, count):
        keep = np.concatenate([np.flatnonzero(labels == c)[:count] for c in range(3)])
        return images[keep], labels[keep]

    return (*first(fmnist_small.x_train, fmnist_small.y_train, 20),
            *first(fmnist_small.x_test, fmnist_small.y_test, 10))


def _run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


# DM's recipe: its augmentation flips (M3D's color_crop_cutout does not), so a flip shows.
CONDENSE = ("condense", "--recipe", "dm", "--ipc", 1, "--real-per-class", 4, "--iterations", 2,
            "--checkpoint-every", 2)
EVALUATE = ("--epochs", 2, "--runs", 1)


# === The data layer ===


def test_the_catalogue_knows_mirroring_and_own_data_is_undeclared(small, tmp_path):
    assert [data.mirroring(n) for n in ("fashion_mnist", "cifar10", "cifar100", "mnist", "svhn",
                                        "svhn_cropped", "emnist")] == [
        True, True, True, False, False, False, None]
    directory = _write_idx_dir(tmp_path / "fashion_mnist", *small)
    _, _, info = data.load_arrays(f"idx:{directory}", "train")
    assert info.name == "fashion_mnist" and info.flip is None and info.flips is False
    assert info.flips == data.UNDECLARED_FLIP
    assert data.undeclared_flip_note(info) == (
        f"own data idx:{directory}: horizontal flips off (declare with --flip if mirroring "
        "keeps the class)")
    _, _, declared = data.load_arrays(f"idx:{directory}", "train", flip=True)
    assert declared.flip is True and data.undeclared_flip_note(declared) is None
    _, streamed = data.stream_source(f"idx:{directory}", cache_dir=tmp_path / "cache", flip=False)
    assert streamed.flip is False and data.undeclared_flip_note(streamed) is None


def test_bad_flip_values_are_refused_at_the_boundary(small, tmp_path):
    directory = _write_idx_dir(tmp_path / "d", *small)
    with pytest.raises(ValueError, match=r"^flip must be True, False or None \(the data's own\)\. "
                                         r"Received flip='yes'\.$"):
        data.load_arrays(f"idx:{directory}", flip="yes")
    with pytest.raises(ValueError, match=r"flip must be True, False or None \(undeclared\)\. "
                                         r"Received flip=1\."):
        DatasetInfo("x", "npz:/x", 2, (4, 4, 1), ("a", "b"), (0.5,), (0.2,), {}, flip=1)


def test_own_data_records_its_absolute_location(small, tmp_path, monkeypatch):
    _write_idx_dir(tmp_path / "mine", *small)
    monkeypatch.chdir(tmp_path)
    _, _, info = data.load_arrays("idx:mine", "train")
    assert info.source == f"idx:{tmp_path / 'mine'}"
    np.savez(tmp_path / "mine.npz", x_train=small[0], y_train=small[1])
    assert data.load_arrays("npz:mine.npz")[2].source == f"npz:{tmp_path / 'mine.npz'}"


def test_a_saved_set_records_the_flip_and_older_sets_derive_it_from_the_name(small):
    info = DatasetInfo("mnist", "idx:/d", 3, (28, 28, 1), ("a", "b", "c"), (0.3,), (0.3,), {},
                       flip=True)
    metadata = io.make_metadata(info, method="random", ipc=1)
    assert metadata["flip"] is True and io.set_flip(metadata) is True  # the record, not the name
    for name, flip in (("mnist", False), ("svhn_cropped", False), ("fashion_mnist", True),
                       ("mine", True)):
        old = {k: v for k, v in metadata.items() if k != "flip"} | {"dataset": name}
        assert io.set_flip(old) is flip
    with pytest.raises(ValueError, match=r"metadata has flip='no'; expected true or false"):
        io.SyntheticSet(np.zeros((3, 28, 28, 1), np.float32), np.arange(3),
                        {**metadata, "flip": "no"})


def test_evaluate_set_follows_the_recorded_flip(small):
    """evaluate_set without flip= trains exactly as evaluate with the set's recorded choice."""
    x_train, y_train, x_test, y_test = small
    info = DatasetInfo("fashion_mnist", "idx:/d", 3, (28, 28, 1), ("a", "b", "c"), (0.29,),
                       (0.35,), {}, flip=False)
    keep = np.concatenate([np.flatnonzero(y_train == c)[:2] for c in range(3)])
    synthetic = io.SyntheticSet(x_train[keep].astype(np.float32) / 255, y_train[keep],
                                io.make_metadata(info, method="random", ipc=2))
    images, labels = synthetic.decoded()

    def losses(run, **kwargs):
        """The per-epoch training losses (more telling than 30 images' accuracy)."""
        seen = []
        run(protocol="idc", runs=1, epochs=3, seed=1, progress=lambda p: seen.append(p.loss),
            **kwargs)
        return seen

    def direct(**kwargs):
        return evaluate.evaluate(images, labels, x_test, y_test, mean=info.mean, std=info.std,
                                 num_classes=3, **kwargs)

    def from_set(**kwargs):
        return evaluate.evaluate_set(synthetic, x_test, y_test, **kwargs)

    without, mirrored = losses(direct, flip=False), losses(direct, flip=True)
    assert without != mirrored  # the flip shows in the numbers
    assert losses(from_set) == without  # the recorded choice: no flip
    assert losses(from_set, flip=True) == mirrored


# === The command line ===


def test_same_images_under_two_folder_names_condense_and_evaluate_identically(
        small, tmp_path, capsys):
    """The folder's name no longer decides: mnist/ and fashion_mnist/ hold the same images."""
    results = {}
    for name in ("mnist", "fashion_mnist"):
        directory = _write_idx_dir(tmp_path / "data" / name, *small)
        out = tmp_path / f"set-{name}"
        status, _, err = _run(capsys, *CONDENSE, "--dataset", f"idx:{directory}", "--out", out)
        assert status == 0, err
        note = (f"m3d: own data idx:{directory}: horizontal flips off (declare with --flip if "
                "mirroring keeps the class)")
        assert err.count(note) == 1, err
        saved = io.load_set(out)
        assert saved.metadata["flip"] is False
        assert saved.metadata["dataset_source"] == f"idx:{directory}"
        # No --dataset: the set's recorded source is read (before: "unknown dataset 'mnist'"
        # would have been the least of it; fashion_mnist/ was read as the catalogue's).
        status, printed, err = _run(capsys, "evaluate", out, *EVALUATE)
        assert status == 0, err
        results[name] = (saved.images, printed.strip().splitlines()[-1].split()[-3])
    np.testing.assert_array_equal(results["mnist"][0], results["fashion_mnist"][0])
    assert results["mnist"][1] == results["fashion_mnist"][1]

    # Declaring the flip is heard: recorded, no note, and DM's augmentation mirrors.
    directory = tmp_path / "data" / "mnist"
    status, _, err = _run(capsys, *CONDENSE, "--dataset", f"idx:{directory}", "--flip",
                          "--out", tmp_path / "flipped")
    assert status == 0 and "horizontal flips" not in err, err
    flipped = io.load_set(tmp_path / "flipped")
    assert flipped.metadata["flip"] is True
    assert not np.array_equal(flipped.images, results["mnist"][0])


def test_baseline_records_the_declared_flip(small, tmp_path, capsys):
    directory = _write_idx_dir(tmp_path / "digits", *small)
    status, _, err = _run(capsys, "baseline", "--method", "random", "--dataset",
                          f"idx:{directory}", "--ipc", 2, "--no-flip", "--out", tmp_path / "r")
    assert status == 0 and "horizontal flips" not in err, err
    assert io.load_set(tmp_path / "r").metadata["flip"] is False


def test_evaluate_says_when_the_recorded_source_has_moved(small, tmp_path, capsys):
    directory = _write_idx_dir(tmp_path / "before", *small)
    status, _, err = _run(capsys, "baseline", "--method", "random", "--dataset",
                          f"idx:{directory}", "--ipc", 2, "--out", tmp_path / "r")
    assert status == 0, err
    os.rename(directory, tmp_path / "after")
    status, _, err = _run(capsys, "evaluate", tmp_path / "r", *EVALUATE)
    assert status == 2
    assert err == (f"m3d: error: the set was condensed from idx:{directory}, which is no longer "
                   "there; pass --dataset with where those data are now.\n")
    status, _, err = _run(capsys, "evaluate", tmp_path / "r", "--dataset",
                          f"idx:{tmp_path / 'after'}", *EVALUATE)
    assert status == 0, err


def test_resume_with_another_flip_is_refused(small, tmp_path, capsys):
    directory = _write_idx_dir(tmp_path / "mine", *small)
    out = tmp_path / "s"
    status, _, err = _run(capsys, *CONDENSE, "--dataset", f"idx:{directory}", "--out", out)
    assert status == 0, err
    for name in ("metadata.json", "images.npz", "grid.png"):  # stopped before saving
        (out / name).unlink()
    out.rmdir()
    status, _, err = _run(capsys, *CONDENSE[:-4], "--iterations", 4, "--checkpoint-every", 2,
                          "--dataset", f"idx:{directory}", "--out", out, "--resume", "--flip")
    assert status == 2
    assert "made with different settings (flip: False then, True now)" in err

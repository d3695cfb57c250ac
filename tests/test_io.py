"""Tests for m3d_tf.io: image grid, saved sets (npz, TFRecord), atomic saving, load errors."""

import datetime
import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import m3d_tf
from m3d_tf import io, parameterization

NAMES = ["T-shirt/top", "Trouser", "Ankle boot"]


def _info(image_shape=(16, 16, 1), names=NAMES, mean=None, std=None):
    """Anything with m3d_tf.data.DatasetInfo's attributes describes the real data."""
    channels = image_shape[-1]
    return types.SimpleNamespace(
        name="toy", source="npz:/data/toy.npz", num_classes=len(names), image_shape=image_shape,
        class_names=list(names),
        mean=list(mean or [0.25] * channels), std=list(std or [0.5] * channels),
        flip=False, flips=False,
    )


def _set(seed=0, ipc=2, factor=2, image_shape=(16, 16, 1), names=NAMES, **kwargs):
    rng = np.random.default_rng(seed)
    num_classes = len(names)
    images = rng.random((num_classes * ipc, *image_shape), dtype=np.float32)
    labels = np.repeat(np.arange(num_classes), ipc)
    metadata = io.make_metadata(
        _info(image_shape, names, **kwargs), method="m3d", ipc=ipc, factor=factor,
        kernel="gaussian_mix", kernel_options={"multipliers": [0.25, 4.0]}, iterations=7,
        seed=seed, final_mmd=np.float32(0.125),
    )
    return io.SyntheticSet(images, labels, metadata)


def _same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# === image_grid ===

def test_image_grid_hand_worked():
    images = np.stack([np.full((2, 2, 1), v, np.float32) for v in (0.0, 0.2, 0.6)])
    grid = io.image_grid(images, [1, 0, 1], 2, pad=1)
    w, a, b, c = 255, 0, 51, 153  # pad, then round(255 * 0.0 / 0.2 / 0.6)
    expected = np.array([
        [w, w, w, w, w, w, w],
        [w, b, b, w, w, w, w],
        [w, b, b, w, w, w, w],
        [w, w, w, w, w, w, w],
        [w, a, a, w, c, c, w],
        [w, a, a, w, c, c, w],
        [w, w, w, w, w, w, w],
    ], np.uint8)[..., None]
    np.testing.assert_array_equal(grid, expected)


def test_image_grid_places_each_class_in_its_row():
    rng = np.random.default_rng(1)
    images = rng.random((7, 5, 4, 3), dtype=np.float32)
    labels = np.array([2, 0, 2, 2, 1, 0, 2])
    grid = io.image_grid(images, labels, 4, pad=2)
    assert grid.shape == (4 * 7 + 2, 4 * 6 + 2, 3) and grid.dtype == np.uint8
    for c in range(4):
        for k, i in enumerate(np.flatnonzero(labels == c)):
            top, left = 2 + c * 7, 2 + k * 6
            np.testing.assert_array_equal(
                grid[top:top + 5, left:left + 4], np.round(images[i] * 255).astype(np.uint8)
            )
    assert np.all(grid[2 + 3 * 7:2 + 3 * 7 + 5] == 255)  # class 3 has no image: a blank row


def test_image_grid_class_names_strip():
    images = np.random.default_rng(2).random((6, 16, 16, 3), dtype=np.float32)
    labels = np.repeat(np.arange(3), 2)
    plain = io.image_grid(images, labels, 3)
    named = io.image_grid(images, labels, 3, class_names=NAMES)
    strip = named.shape[1] - plain.shape[1]
    assert named.shape[0] == plain.shape[0] and strip > 20
    np.testing.assert_array_equal(named[:, strip:], plain)
    for c in range(3):  # dark text in every row band of the strip
        assert named[2 + c * 18:2 + c * 18 + 16, :strip].min() < 100
    tiny = images[:, :4, :4]  # rows of 4 pixels cannot hold a line of text
    np.testing.assert_array_equal(
        io.image_grid(tiny, labels, 3, class_names=NAMES), io.image_grid(tiny, labels, 3)
    )


def test_image_grid_errors():
    images = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match=r"needs images \(N, H, W, 1 or 3\). Received \(2, 4, 4\)"):
        io.image_grid(images[..., 0], [0, 1], 2)
    with pytest.raises(ValueError, match=r"needs 2 labels in \[0, 2\). "
                                         r"Received 2 labels in \[0, 2\]"):
        io.image_grid(images, [0, 2], 2)
    with pytest.raises(ValueError, match="needs 2 class names. Received 3"):
        io.image_grid(images, [0, 1], 2, class_names=NAMES)


# === Saved sets ===

def test_npz_round_trip_is_bit_exact(tmp_path):
    synthetic = _set()
    path = io.save_set(tmp_path / "set", synthetic)
    assert sorted(os.listdir(path)) == ["grid.png", "images.npz", "metadata.json"]
    assert os.listdir(tmp_path) == ["set"]  # no temporary directory left behind
    loaded = io.load_set(path)
    assert _same(loaded.images, synthetic.images) and _same(loaded.labels, synthetic.labels)
    assert loaded.labels.dtype == np.int64
    assert loaded.metadata == synthetic.metadata


def test_tfrecord_round_trip_is_bit_exact(tmp_path):
    synthetic = _set(seed=3, image_shape=(8, 8, 3))
    path = io.save_set(tmp_path / "set", synthetic, formats=("tfrecord",))
    assert sorted(os.listdir(path)) == ["grid.png", "metadata.json", "synthetic.tfrecord"]
    loaded = io.load_set(path)
    assert _same(loaded.images, synthetic.images) and _same(loaded.labels, synthetic.labels)
    assert loaded.metadata == synthetic.metadata


def test_both_formats_hold_the_same_pixels(tmp_path):
    synthetic = _set(seed=4)
    path = io.save_set(tmp_path / "set", synthetic, formats=("npz", "tfrecord"))
    images, labels = io.read_examples(path / "synthetic.tfrecord")
    assert _same(images, synthetic.images) and _same(labels, synthetic.labels)
    os.remove(path / "images.npz")
    assert _same(io.load_set(path).images, synthetic.images)


def test_metadata_is_complete(tmp_path):
    path = io.save_set(tmp_path / "set", _set())
    metadata = json.loads((path / "metadata.json").read_text())
    assert sorted(metadata) == sorted(io.METADATA_KEYS + io.LATER_METADATA_KEYS)
    created = datetime.datetime.fromisoformat(metadata.pop("created"))
    assert abs(datetime.datetime.now(datetime.timezone.utc) - created).total_seconds() < 60
    assert metadata == {
        "format_version": 1, "method": "m3d", "dataset": "toy",
        "dataset_source": "npz:/data/toy.npz", "num_classes": 3,
        "class_names": NAMES, "image_shape": [16, 16, 1], "mean": [0.25], "std": [0.5],
        "ipc": 2, "factor": 2, "decode": "multi_formation_bilinear", "kernel": "gaussian_mix",
        "kernel_options": {"multipliers": [0.25, 4.0]}, "iterations": 7, "seed": 0,
        "final_mmd": 0.125, "library_version": m3d_tf.__version__, "flip": False,
    }


def test_grid_png_has_one_row_per_class(tmp_path):
    synthetic = _set(ipc=3)
    path = io.save_set(tmp_path / "set", synthetic)
    png = np.asarray(Image.open(path / "grid.png"))
    plain = io.image_grid(synthetic.images, synthetic.labels, 3)[..., 0]
    assert png.shape[0] == 3 * (16 + 2) + 2 == plain.shape[0]
    assert png.shape[1] > plain.shape[1]  # the class-name strip
    np.testing.assert_array_equal(png[:, -plain.shape[1]:], plain)


def test_decoded_is_the_condenser_decode_with_the_stored_factor(tmp_path):
    synthetic = _set(factor=2)
    images, labels = io.load_set(io.save_set(tmp_path / "set", synthetic)).decoded()
    expected = np.asarray(parameterization.decode(synthetic.images, 2))
    assert images.shape == (3 * 2 * 4, 16, 16, 1) and _same(images, expected)
    np.testing.assert_array_equal(labels, np.repeat(np.arange(3), 8))
    # Hand-worked: f = 2 on a 2 x 2 image gives its four pixels, each as a constant image.
    metadata = dict(synthetic.metadata, image_shape=[2, 2, 1], ipc=1)
    pixels = np.array([[[0.1], [0.2]], [[0.3], [0.4]]], np.float32)
    tiny = io.SyntheticSet(np.stack([pixels, 1 - pixels, pixels / 2]), [0, 1, 2], metadata)
    images, labels = tiny.decoded()
    np.testing.assert_allclose(images[:4, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    np.testing.assert_allclose(images[4:8, 1, 1, 0], [0.9, 0.8, 0.7, 0.6], rtol=1e-6)
    assert np.all(images == images[:, :1, :1])
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])


def test_reloaded_set_trains_like_the_in_memory_one(tmp_path):
    synthetic = _set(seed=5, image_shape=(8, 8, 3), mean=(0.5, 0.4, 0.3), std=(0.25, 0.5, 2.0))
    loaded = io.load_set(io.save_set(tmp_path / "set", synthetic, formats=("tfrecord",)))
    for a, b in zip(loaded.decoded(), synthetic.decoded()):
        assert _same(a, b)
    normalized = loaded.normalized(loaded.decoded()[0])
    assert _same(normalized, synthetic.normalized(synthetic.decoded()[0]))
    pixel = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_allclose(synthetic.normalized(pixel), [[-2.0, 0.2, 0.35]], rtol=1e-6)


def test_from_condenser_describes_the_condenser():
    from m3d_tf.condenser import M3DCondenser

    info = _info(image_shape=(8, 8, 1), names=["a", "b"], mean=(0.5,), std=(0.25,))
    condenser = M3DCondenser(
        2, (8, 8, 1), ipc=3, factor=2, init="noise", mean=(0.5,), std=(0.25,), seed=11
    )
    condenser.initialize((np.zeros((2, 8, 8, 1), np.float32), np.array([0, 1])))
    synthetic = io.SyntheticSet.from_condenser(condenser, info, iterations=40, final_mmd=0.5)
    assert _same(synthetic.images, condenser.synthetic_images())
    images, labels = synthetic.decoded()
    assert _same(images, condenser.decoded_images())
    np.testing.assert_array_equal(labels, condenser.decoded_labels())
    m = synthetic.metadata
    described = (m["ipc"], m["factor"], m["seed"], m["iterations"], m["final_mmd"])
    assert described == (3, 2, 11, 40, 0.5)
    assert m["kernel"] == "gaussian_mix" and m["kernel_options"]["estimator"] == "biased"
    config = json.loads(json.dumps(condenser.get_config()))
    # The condensation's settings, without Keras' object entries: the layer name counts the
    # condensers made in this process, so two identical runs would record different names.
    assert {"name", "trainable"} <= set(config)
    assert m["condenser_config"] == {k: v for k, v in config.items()
                                     if k not in ("name", "trainable", "dtype")}
    again = M3DCondenser(2, (8, 8, 1), ipc=3, factor=2, init="noise", mean=(0.5,), std=(0.25,),
                         seed=11)
    again.initialize((np.zeros((2, 8, 8, 1), np.float32), np.array([0, 1])))
    assert again.name != condenser.name
    assert io.SyntheticSet.from_condenser(again, info, iterations=40, final_mmd=0.5).metadata[
        "condenser_config"] == m["condenser_config"]
    assert m["learning_rate"] is None  # not compiled: no optimiser, no rate
    again.compile(learning_rate=2.5)
    assert io.SyntheticSet.from_condenser(again, info, iterations=40).metadata[
        "learning_rate"] == 2.5
    with pytest.raises(ValueError, match=r"has \(num_classes, image_shape\) = \(2, \[8, 8, 1\]\) "
                                         r"but dataset 'toy' has \(3, \[16, 16, 1\]\)"):
        io.SyntheticSet.from_condenser(condenser, _info(), iterations=40)


# === No silent overwrite, no half-written set ===

def test_saving_never_overwrites_silently(tmp_path):
    first, second = _set(seed=0), _set(seed=1)
    path = io.save_set(tmp_path / "set", first)
    with pytest.raises(FileExistsError, match=r"set already exists; pass overwrite=True to "
                                              r"replace it or choose another directory."):
        io.save_set(path, second)
    assert _same(io.load_set(path).images, first.images)
    io.save_set(path, second, overwrite=True)
    assert _same(io.load_set(path).images, second.images)
    assert os.listdir(tmp_path) == ["set"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"notes exists and is not a saved set \(no "
                                              r"metadata.json\); refusing to replace it"):
        io.save_set(tmp_path / "notes", first, overwrite=True)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()  # an empty directory holds nothing to lose
    assert _same(io.load_set(io.save_set(tmp_path / "empty", first)).images, first.images)


def test_failed_overwrite_keeps_the_previous_set(tmp_path, monkeypatch):
    first = _set(seed=0)
    path = io.save_set(tmp_path / "set", first)

    def broken_png(*args):
        raise OSError("disk full")

    monkeypatch.setattr(io, "_write_png", broken_png)
    with pytest.raises(OSError, match="disk full"):
        io.save_set(path, _set(seed=1), overwrite=True)
    assert os.listdir(tmp_path) == ["set"]
    assert _same(io.load_set(path).images, first.images)
    with pytest.raises(OSError, match="disk full"):
        io.save_set(tmp_path / "fresh", first)
    assert os.listdir(tmp_path) == ["set"]


def test_failed_final_rename_restores_the_previous_set(tmp_path, monkeypatch):
    first = _set(seed=0)
    path = io.save_set(tmp_path / "set", first)
    rename = os.rename

    def failing_rename(source, destination):
        if os.path.basename(source).startswith(".set.saving-"):
            raise OSError("rename failed")
        rename(source, destination)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="rename failed"):
        io.save_set(path, _set(seed=1), overwrite=True)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["set"]
    assert _same(io.load_set(path).images, first.images)


def test_invalid_set_is_refused_before_writing(tmp_path):
    synthetic = _set()
    damaged = synthetic.images.copy()
    damaged[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="SyntheticSet: images hold 1 NaN or infinite pixels"):
        io.SyntheticSet(damaged, synthetic.labels, synthetic.metadata)
    synthetic.images[0, 0, 0, 0] = 1.5  # changed after construction
    with pytest.raises(ValueError, match=r"save_set: pixels lie in \[.*, 1.5\]; stored pixels"):
        io.save_set(tmp_path / "set", synthetic)
    with pytest.raises(ValueError, match=r"formats must be a non-empty subset of "
                                         r"\('npz', 'tfrecord'\). Received \('png',\)"):
        io.save_set(tmp_path / "set", _set(), formats=("png",))
    assert os.listdir(tmp_path) == []


# === Load errors: one line naming the file and the problem ===

def _rewrite_metadata(path, **changes):
    metadata = json.loads((path / "metadata.json").read_text())
    metadata.update(changes)
    for key in [k for k, v in changes.items() if v is _DROP]:
        del metadata[key]
    (path / "metadata.json").write_text(json.dumps(metadata))


def _rewrite_npz(path, images=None, labels=None):
    with np.load(path / "images.npz") as npz:
        arrays = {"images": npz["images"], "labels": npz["labels"]}
    arrays.update({k: v for k, v in (("images", images), ("labels", labels)) if v is not None})
    np.savez(path / "images.npz", **arrays)


_DROP = object()
_LOAD_ERRORS = [
    ("no_directory", lambda p: os.rename(p, p.with_name("moved")), FileNotFoundError,
     r"no saved set at .*set: no such directory; a saved set is a directory with metadata.json"),
    ("no_metadata", lambda p: os.remove(p / "metadata.json"), FileNotFoundError,
     r"set/metadata.json is missing; a saved set is a directory with metadata.json, images.npz"),
    ("no_images", lambda p: os.remove(p / "images.npz"), FileNotFoundError,
     r"set has neither images.npz nor synthetic.tfrecord; a saved set is"),
    ("corrupt_json", lambda p: (p / "metadata.json").write_text('{"ipc": 2,'), ValueError,
     r"set/metadata.json is not valid JSON \(Expecting property name .*\); re-save the set"),
    ("json_list", lambda p: (p / "metadata.json").write_text("[1, 2]"), ValueError,
     r"set/metadata.json holds no JSON object; re-save the set"),
    ("missing_keys", lambda p: _rewrite_metadata(p, ipc=_DROP, factor=_DROP), ValueError,
     r"set: metadata lacks keys \['ipc', 'factor'\]; re-save the set with m3d_tf.io.save_set"),
    ("newer_format", lambda p: _rewrite_metadata(p, format_version=2), ValueError,
     r"set: metadata has format_version=2; expected 1..1 \(a newer m3d_tf wrote it: upgrade\)"),
    ("bad_factor", lambda p: _rewrite_metadata(p, factor=3), ValueError,
     r"set: metadata: factor=3 does not divide the image size 16x16"),
    ("bad_std", lambda p: _rewrite_metadata(p, std=[0.0]), ValueError,
     r"set: metadata has std=\[0.0\]; expected one positive finite number per channel \(1\)"),
    ("few_names", lambda p: _rewrite_metadata(p, class_names=["a"]), ValueError,
     r"set: metadata has class_names=\['a'\]; expected one name per class"),
    ("corrupt_npz", lambda p: (p / "images.npz").write_bytes(b"PK\x03\x04broken"), ValueError,
     r"set/images.npz is not a readable .npz file \(.*\); re-save the set"),
    ("npz_without_labels", lambda p: np.savez(p / "images.npz", images=np.zeros(3)), ValueError,
     r"set/images.npz lacks the arrays \['labels'\]; re-save the set"),
    ("shape_mismatch", lambda p: _rewrite_metadata(p, image_shape=[8, 8, 1]), ValueError,
     r"set: images have shape \(6, 16, 16, 1\) but the metadata \(num_classes=3, ipc=2, "
     r"image_shape=\[8, 8, 1\]\) needs \(6, 8, 8, 1\)"),
    ("labels_out_of_range", lambda p: _rewrite_npz(p, labels=np.array([0, 0, 1, 1, 2, 5])),
     ValueError, r"set: labels lie in \[0, 5\] but num_classes=3 needs \[0, 3\)"),
    ("unbalanced", lambda p: _rewrite_npz(p, labels=np.array([0, 0, 0, 1, 2, 2])), ValueError,
     r"set: class 0 has 3 images but the metadata says ipc=2"),
    ("nan_pixels", lambda p: _rewrite_npz(p, images=np.full((6, 16, 16, 1), np.nan, np.float32)),
     ValueError, r"set: images hold 1536 NaN or infinite pixels; re-create the set"),
    ("normalised_pixels", lambda p: _rewrite_npz(p, images=np.full((6, 16, 16, 1), -0.5)),
     ValueError, r"set: pixels lie in \[-0.5, -0.5\]; stored pixels must be unnormalised"),
]


@pytest.mark.parametrize("damage, error, message", [e[1:] for e in _LOAD_ERRORS],
                         ids=[e[0] for e in _LOAD_ERRORS])
def test_load_errors(tmp_path, damage, error, message):
    path = io.save_set(tmp_path / "set", _set())
    damage(path)
    with pytest.raises(error, match=message):
        io.load_set(path)


def test_load_error_corrupt_tfrecord(tmp_path):
    path = io.save_set(tmp_path / "set", _set(), formats=("tfrecord",))
    (path / "synthetic.tfrecord").write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match=r"synthetic.tfrecord is not a readable TFRecord "
                                         r"\(compression: none; .*corrupted record"):
        io.load_set(path)


# === TFRecord of tf.Example ===

@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_write_read_examples_round_trip(tmp_path, compression):
    rng = np.random.default_rng(6)
    images = rng.random((5, 4, 6, 3), dtype=np.float32)
    labels = np.array([3, 0, 1, 3, 2])
    path = io.write_examples(tmp_path, images, labels, compression=compression)
    assert os.path.basename(path) == "synthetic.tfrecord" + (".gz" if compression else "")
    assert os.listdir(tmp_path) == [os.path.basename(path)]
    for source in (path, tmp_path, str(tmp_path / "synth*")):
        read_images, read_labels = io.read_examples(source)
        assert _same(read_images, images) and _same(read_labels, labels.astype(np.int64))
    record = next(iter(tf.data.TFRecordDataset(path, compression_type=compression or "")))
    feature = tf.train.Example.FromString(record.numpy()).features.feature
    assert feature["image"].bytes_list.value[0] == images[0].astype("<f4").tobytes()
    assert [feature[k].int64_list.value[0] for k in ("label", "height", "width", "channels")] == [
        3, 4, 6, 3]
    # The in-graph parser (for the TFX Trainer) gives the same arrays.
    batches = tf.data.TFRecordDataset(path, compression_type=compression or "").batch(2).map(
        lambda s: io.parse_examples(s, (4, 6, 3)))
    parsed = [np.concatenate(parts) for parts in zip(*[(i.numpy(), l.numpy()) for i, l in batches])]
    assert _same(parsed[0], images) and _same(parsed[1], labels.astype(np.int64))


def test_write_examples_errors(tmp_path):
    images, labels = np.zeros((2, 4, 4, 1), np.float32), np.array([0, 1])
    path = io.write_examples(tmp_path / "a.tfrecord", images, labels)
    with pytest.raises(FileExistsError, match=r"a.tfrecord already exists; pass overwrite=True"):
        io.write_examples(path, images, labels)
    io.write_examples(path, images + 1, labels, overwrite=True)
    assert io.read_examples(path)[0].min() == 1.0
    with pytest.raises(ValueError, match="compression must be None or 'GZIP'. "
                                         "Received compression='ZLIB'"):
        io.write_examples(tmp_path / "b", images, labels, compression="ZLIB")
    with pytest.raises(ValueError, match=r"Received images uint8 \(2, 4, 4, 1\) and 2 labels"):
        io.write_examples(tmp_path / "b", images.astype(np.uint8), labels)
    with pytest.raises(ValueError, match=r"pixels must be finite and unnormalised in \[0, 1\]"):
        io.write_examples(tmp_path / "b", images - 1, labels)
    assert os.listdir(tmp_path) == ["a.tfrecord"]


def test_read_examples_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no file matches .*nothing\*"):
        io.read_examples(tmp_path / "nothing*")
    gz = io.write_examples(tmp_path / "a.gz", np.zeros((1, 2, 2, 1)), [0], compression="GZIP")
    with pytest.raises(ValueError, match=r"a.gz is not a readable TFRecord \(compression: none;"):
        io.read_examples(gz, compression=None)
    with tf.io.TFRecordWriter(str(tmp_path / "other.tfrecord")) as writer:
        example = tf.train.Example(features=tf.train.Features(feature={
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}))
        writer.write(example.SerializeToString())
    with pytest.raises(ValueError, match=r"record 0 of .*other.tfrecord lacks the features "
                                         r"\['image', 'height', 'width', 'channels'\]"):
        io.read_examples(tmp_path / "other.tfrecord")

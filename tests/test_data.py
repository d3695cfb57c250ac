"""Tests of m3d_tf.data: sources, the offline Fashion-MNIST, balanced batches, the summary."""

import gzip
import hashlib
import io
import json
import re
import socket
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf

from m3d_tf.data import (
    balanced_batches,
    channel_stats,
    images_by_class,
    load_arrays,
    load_dataset,
    parse_idx,
    read_idx,
    restore_gzip_header,
)
from m3d_tf.data import catalog
from m3d_tf.data.__main__ import summary_main

# sha256 of the upstream Fashion-MNIST files, as registered by tensorflow-datasets
# (tensorflow_datasets/url_checksums/fashion_mnist.txt).
UPSTREAM_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}


def idx_bytes(array, type_code=0x08):
    """Hand-made IDX file: 00 00 type ndim, big-endian uint32 dims, big-endian data."""
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.asarray(array, dtype).tobytes()


def numbered_images(count, shape=(4, 4, 1)):
    """uint8 images whose first two pixels spell their index (index = p0 + 256 * p1)."""
    images = np.zeros((count, *shape), np.uint8)
    flat = images.reshape(count, -1)
    flat[:, 0] = np.arange(count) % 256
    flat[:, 1] = np.arange(count) // 256
    return images


def image_ids(images):
    """Inverse of numbered_images for float32 batches in [0, 1]."""
    pixels = np.round(np.asarray(images).reshape(len(images), -1)[:, :2] * 255).astype(int)
    return pixels[:, 0] + 256 * pixels[:, 1]


def oracle_stats(images):
    """NumPy float64 per-channel mean and population std in [0, 1] space."""
    x = images.astype(np.float64) / 255.0
    return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))


# === DatasetInfo statistics ===


def test_channel_stats_matches_numpy_and_a_hand_case():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 3, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    want_mean, want_std = oracle_stats(images)
    np.testing.assert_allclose(mean, want_mean, rtol=0, atol=1e-13)
    np.testing.assert_allclose(std, want_std, rtol=0, atol=1e-13)
    # Pixels 0, 255, 255, 0 -> mean 0.5, std 0.5; pixels 51 x4 -> 0.2, 0.
    hand = np.array([[[[0, 51]], [[255, 51]]], [[[255, 51]], [[0, 51]]]], np.uint8)
    assert channel_stats(hand) == ((0.5, 0.2), (0.5, 0.0))


# === IDX ===


def test_parse_idx_reads_hand_made_files_exactly(tmp_path):
    images = np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 20
    np.testing.assert_array_equal(parse_idx(idx_bytes(images)), images)
    assert parse_idx(idx_bytes(images)).flags.writeable
    # A big-endian int16 and a float32 file come back in native order with the right values.
    words = np.array([[-2, 300], [7, 32767]])
    got = parse_idx(idx_bytes(words, 0x0B))
    assert got.dtype == np.int16 and got.tolist() == [[-2, 300], [7, 32767]]
    assert parse_idx(idx_bytes(np.array([1.5, -0.25]), 0x0D)).tolist() == [1.5, -0.25]
    # The hand-written bytes of the docstring: 1-D uint8 of length 2.
    assert parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9])).tolist() == [7, 9]
    # Gzipped or not, read_idx gives the same array.
    (tmp_path / "plain").write_bytes(idx_bytes(images))
    (tmp_path / "packed.gz").write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(tmp_path / "plain"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "packed.gz"), images)


def test_corrupt_idx_files_are_named_with_the_problem(tmp_path):
    good = idx_bytes(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(
        ValueError, match=r"^X is not an IDX file: it starts with bytes \[08 03 00 00\]"
    ):
        parse_idx(good[2:], where="X")
    with pytest.raises(ValueError, match=r"not an IDX file: it starts with bytes \[00 00 07 03\]"):
        parse_idx(good[:2] + b"\x07" + good[3:])
    with pytest.raises(
        ValueError,
        match=r"^X is truncated: the header gives shape \(2, 2, 3\) \(12 data bytes\) but the file has 10;",
    ):
        parse_idx(good[:-2], where="X")
    with pytest.raises(ValueError, match=r"is longer than its header says: .* the file has 13;"):
        parse_idx(good + b"\0")
    with pytest.raises(
        ValueError, match=r"is truncated: 10 bytes, shorter than its 16-byte header"
    ):
        parse_idx(good[:10])
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(good)[:-12])
    with pytest.raises(
        ValueError, match=f"^{re.escape(str(cut))} is a corrupt or truncated gzip file"
    ):
        read_idx(cut)
    with pytest.raises(FileNotFoundError, match="IDX file .*nothing does not exist"):
        read_idx(tmp_path / "nothing")


def write_idx_split(directory, prefix, images, labels, compress):
    suffix = ".gz" if compress else ""
    pack = gzip.compress if compress else bytes
    (directory / f"{prefix}-images-idx3-ubyte{suffix}").write_bytes(pack(idx_bytes(images)))
    (directory / f"{prefix}-labels-idx1-ubyte{suffix}").write_bytes(pack(idx_bytes(labels)))


def test_idx_folder_source(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (6, 3, 2), dtype=np.uint8)
    y_train = np.array([0, 2, 1, 2, 0, 1], np.uint8)
    x_test = rng.integers(0, 256, (2, 3, 2), dtype=np.uint8)
    y_test = np.array([2, 1], np.uint8)
    write_idx_split(tmp_path, "train", x_train, y_train, compress=True)
    write_idx_split(tmp_path, "t10k", x_test, y_test, compress=False)

    images, labels, info = load_arrays(f"idx:{tmp_path}", "test")
    np.testing.assert_array_equal(images, x_test[..., None])
    assert labels.dtype == np.int64 and labels.tolist() == [2, 1]
    mean, std = oracle_stats(x_train[..., None])
    assert info.name == tmp_path.name and info.source == f"idx:{tmp_path}"
    assert info.num_classes == 3 and info.class_names == ("0", "1", "2")
    assert info.image_shape == (3, 2, 1)
    assert list(info.split_sizes.items()) == [("train", 6), ("test", 2)]
    np.testing.assert_allclose(info.mean, mean, atol=1e-13)
    np.testing.assert_allclose(info.std, std, atol=1e-13)
    # A bare folder path is detected as IDX.
    images, labels, _ = load_arrays(str(tmp_path))
    np.testing.assert_array_equal(images[..., 0], x_train)
    assert labels.tolist() == y_train.tolist()


def test_idx_folder_errors(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"IDX folder .*missing does not exist; give a folder"
    ):
        load_arrays(f"idx:{tmp_path / 'missing'}")
    with pytest.raises(
        FileNotFoundError, match=r"no IDX files in .*; expected train-images-idx3-ubyte\[\.gz\]"
    ):
        load_arrays(f"idx:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros((3, 2, 2))))
    )
    with pytest.raises(
        FileNotFoundError,
        match=r"has train-images-idx3-ubyte.gz but no train-labels-idx1-ubyte\[\.gz\]; add the train labels",
    ):
        load_arrays(f"idx:{tmp_path}")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2)))
    with pytest.raises(ValueError, match=r"3 images but 2 labels; every image needs one label"):
        load_arrays(str(tmp_path))


# === The offline Fashion-MNIST: gzip header, TFDS route, fallback ===


def test_restore_gzip_header_hand_made():
    payload = b"M3D hand-made payload " * 20

    def gzipped(filename, mtime):
        buffer = io.BytesIO()
        with gzip.GzipFile(filename=filename, mode="wb", fileobj=buffer, mtime=mtime) as f:
            f.write(payload)
        return buffer.getvalue()

    bare = gzipped("", 0)  # no name: flags 0x00, like Debian's repacked files
    assert bare[3] == 0x00
    restored = restore_gzip_header(bare, filename="payload.bin", mtime=1504176627)
    assert restored == gzipped("payload.bin", 1504176627)
    assert restored[3] == 0x08 and restored[10:22] == b"payload.bin\0"
    assert gzip.decompress(restored) == payload
    with pytest.raises(
        ValueError, match=r"not a gzip \(deflate\) stream: it starts with bytes \[00 00 08\]"
    ):
        restore_gzip_header(idx_bytes(np.zeros(20, np.uint8)), filename="x", mtime=0)
    with pytest.raises(
        ValueError, match=r"the gzip header already has flags 0x08; restore_gzip_header"
    ):
        restore_gzip_header(restored, filename="x", mtime=0)


def test_restore_gzip_header_reproduces_the_upstream_files():
    import tensorflow_datasets as tfds

    registered = {
        i.filename: i.checksum for i in tfds.builder_cls("fashion_mnist").url_infos.values()
    }
    assert registered == UPSTREAM_SHA256
    for name, sha256 in UPSTREAM_SHA256.items():
        packaged = (catalog.DEBIAN_FASHION_MNIST_DIR / name).read_bytes()
        assert hashlib.sha256(packaged).hexdigest() != sha256  # Debian's copy differs...
        stem = name.removesuffix(".gz")
        mtime = 1504176606 if name.startswith("train") else 1504176627
        restored = restore_gzip_header(packaged, filename=stem, mtime=mtime)
        assert hashlib.sha256(restored).hexdigest() == sha256  # ...only in its header.


@pytest.mark.slow
def test_fashion_mnist_default_loads_through_tfds():
    """The library's default route, cached in the default TFDS data dir (first run ~30 s)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, labels, info = load_arrays("fashion_mnist")
    assert info.source.startswith("tfds:"), [str(w.message) for w in caught]  # why TFDS failed
    assert info.source.endswith("fashion_mnist/3.0.1")
    assert images.shape == (60000, 28, 28, 1) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6000] * 10
    assert info.split_sizes == {"train": 60000, "test": 10000}
    assert info.num_classes == 10 and info.image_shape == (28, 28, 1)
    assert info.class_names == catalog.FASHION_MNIST_CLASSES
    mean, std = oracle_stats(images)
    np.testing.assert_allclose(info.mean, mean, atol=1e-12)
    np.testing.assert_allclose(info.std, std, atol=1e-12)
    assert round(info.mean[0], 4) == 0.2860 and round(info.std[0], 4) == 0.3530  # published values

    dataset, test_info = load_dataset("fashion_mnist", "test")
    assert test_info == info
    assert dataset.element_spec == (
        tf.TensorSpec((28, 28, 1), tf.float32),
        tf.TensorSpec((), tf.int64),
    )
    x_test, y_test = next(dataset.batch(20000).as_numpy_iterator())
    assert x_test.shape == (10000, 28, 28, 1)
    assert x_test.min() == 0.0 and x_test.max() == 1.0
    assert np.bincount(y_test).tolist() == [1000] * 10


@pytest.mark.slow
def test_tfds_route_and_idx_files_hold_the_same_examples():
    """TFDS shuffles the order; the multiset of (image, label) must be the upstream one."""
    images, labels, _ = load_arrays("fashion_mnist", "test")
    raw_images, raw_labels, raw_info = load_arrays(
        f"idx:{catalog.DEBIAN_FASHION_MNIST_DIR}", "test"
    )
    assert raw_info.split_sizes == {"train": 60000, "test": 10000}

    def fingerprints(x, y):
        return sorted(
            (hashlib.sha1(image.tobytes()).hexdigest(), int(label)) for image, label in zip(x, y)
        )

    assert not np.array_equal(images, raw_images)
    assert fingerprints(images, labels) == fingerprints(raw_images, raw_labels)


def test_fashion_mnist_falls_back_to_the_idx_files(data_dirs, tmp_path):
    unusable = tmp_path / "a_file"
    unusable.write_text("TFDS cannot make a data dir below a file")
    with pytest.warns(
        UserWarning,
        match=(
            r"TFDS could not prepare fashion_mnist \(NotADirectoryError: .*\); reading the "
            r"IDX files in /usr/share/datasets/fashion-mnist directly"
        ),
    ):
        images, labels, info = load_arrays(
            "fashion_mnist", "test", data_dir=unusable / "tfds", cache_dir=data_dirs.cache_dir
        )
    assert info.source == f"idx:{catalog.DEBIAN_FASHION_MNIST_DIR}"
    assert info.name == "fashion_mnist" and info.class_names == catalog.FASHION_MNIST_CLASSES
    assert images.shape == (10000, 28, 28, 1) and np.bincount(labels).tolist() == [1000] * 10


PREPARE_AT_ONCE = """
import json, pathlib, sys, time, warnings
from m3d_tf.data import catalog
data_dir, cache_dir, barrier, me = sys.argv[1:]
pathlib.Path(barrier, me).touch()
while len(list(pathlib.Path(barrier).iterdir())) < 2:  # both imported: start together
    time.sleep(0.05)
with warnings.catch_warnings():
    warnings.filterwarnings("error", "TFDS could not prepare")  # the IDX fallback: a failure
    reader = catalog.open_tfds("fashion_mnist", data_dir=data_dir, cache_dir=cache_dir)
print(json.dumps({"source": reader.source, "sizes": reader.split_sizes}))
"""


@pytest.mark.slow
def test_two_processes_preparing_one_dataset_both_get_it_from_tfds(data_dirs, tmp_path):
    """Two jobs started at once on a fresh machine: the second waits for the first's copy."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARE_AT_ONCE, str(data_dirs.data_dir),
             str(data_dirs.cache_dir / me), str(barrier), me],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for me in ("first", "second")
    ]
    outputs = [job.communicate(timeout=600) for job in jobs]
    for job, (out, err) in zip(jobs, outputs):
        assert job.returncode == 0, err[-3000:]
        assert json.loads(out.splitlines()[-1]) == {  # TFDS prints its progress before
            "source": f"tfds:{data_dirs.data_dir / 'fashion_mnist' / '3.0.1'}",
            "sizes": {"train": 60000, "test": 10000},
        }
    assert sorted(p.name for p in (data_dirs.data_dir / "fashion_mnist").iterdir()) == [
        ".m3d_tf-prepare.lock", "3.0.1"
    ]
    # One prepared it, from the upstream files restored into its cache dir; the other found it done.
    restored = [data_dirs.cache_dir / me / "tfds_manual" / "fashion_mnist"
                for me in ("first", "second")]
    assert sorted(path.is_dir() for path in restored) == [False, True]
    for name, sha256 in UPSTREAM_SHA256.items():
        manual = next(path for path in restored if path.is_dir())
        assert hashlib.sha256((manual / name).read_bytes()).hexdigest() == sha256


def test_missing_fashion_mnist_says_how_to_get_it(data_dirs, monkeypatch):
    monkeypatch.setattr(catalog, "DEBIAN_FASHION_MNIST_DIR", data_dirs.cache_dir / "absent")
    with pytest.raises(
        FileNotFoundError,
        match=(
            r"TFDS could not prepare fashion_mnist \(FileNotFoundError: fashion_mnist is not "
            r"prepared in .* and download=False\); install the offline copy with `apt-get "
            r"install dataset-fashion-mnist`"
        ),
    ):
        load_arrays("fashion_mnist", data_dir=data_dirs.data_dir, download=False)


def test_offline_download_fails_fast_with_what_to_do(data_dirs, monkeypatch):
    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    for name in catalog._PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(
        FileNotFoundError,
        match=(
            r"^TFDS could not prepare mnist \(ConnectionError: cannot resolve "
            r"storage.googleapis.com .*the machine looks offline\); connect to the internet "
            r"once \(TFDS downloads and caches it\), or give the data as a user source"
        ),
    ):
        load_arrays("mnist", data_dir=data_dirs.data_dir, cache_dir=data_dirs.cache_dir)


# === Source strings ===


def test_unknown_names_paths_and_splits(tmp_path):
    with pytest.raises(
        ValueError,
        match=(
            r"^unknown dataset 'cifar'; known names: cifar10, cifar100, fashion_mnist, mnist, "
            r"svhn \(or tfds:NAME\), or a user source: idx:DIR, npz:FILE, folder:DIR, "
            r"tfrecord:GLOB"
        ),
    ):
        load_arrays("cifar")
    (tmp_path / "notes.txt").write_text("not data")
    with pytest.raises(ValueError, match=r"cannot tell what .*notes.txt holds from its name"):
        load_arrays(tmp_path / "notes.txt")
    with pytest.raises(
        ValueError, match=r"cannot tell what .* holds: no IDX files, no \*tfrecord\*"
    ):
        load_arrays(tmp_path)
    with pytest.raises(ValueError, match=r"^TFDS has no dataset 'no_such_set'; pick an image"):
        load_arrays("tfds:no_such_set")
    with pytest.raises(
        FileNotFoundError, match=r"^/no/such/data.npz does not exist; give an existing path"
    ):
        load_arrays("/no/such/data.npz")
    with pytest.raises(
        FileNotFoundError, match=r"npz file /no/such.npz does not exist; save one with np.savez"
    ):
        load_arrays("npz:/no/such.npz")
    with pytest.raises(
        FileNotFoundError, match=r"no TFRecord files match /no/\*.tfrecord; give a glob"
    ):
        load_arrays("tfrecord:/no/*.tfrecord")


# === .npz ===


def test_npz_source_keras_layout(tmp_path):
    rng = np.random.default_rng(2)
    x_train = rng.integers(0, 256, (5, 2, 3, 3), dtype=np.uint8)
    y_train = np.array([[1], [0], [1], [2], [0]])  # Keras' CIFAR layout (N, 1)
    x_test = rng.integers(0, 256, (2, 2, 3, 3), dtype=np.uint8)
    path = tmp_path / "tiny.npz"
    names = np.array(["ant", "bee", "cat"])
    y_test = np.array([2, 0])
    np.savez(
        path, x_test=x_test, y_test=y_test, x_train=x_train, y_train=y_train, class_names=names
    )

    images, labels, info = load_arrays(path, "test")
    np.testing.assert_array_equal(images, x_test)
    assert labels.tolist() == [2, 0] and labels.dtype == np.int64
    assert info.name == "tiny" and info.source == f"npz:{path}"
    assert info.class_names == ("ant", "bee", "cat") and info.num_classes == 3
    assert list(info.split_sizes.items()) == [("train", 5), ("test", 2)]
    assert info.image_shape == (2, 3, 3)
    mean, std = oracle_stats(x_train)
    np.testing.assert_allclose(info.mean, mean, atol=1e-13)
    np.testing.assert_allclose(info.std, std, atol=1e-13)


def test_npz_images_labels_layout_with_float_images(tmp_path):
    floats = np.array([0.0, 0.5, 1.0, 0.2]).reshape(1, 2, 2)  # (N, H, W): gains C = 1
    path = tmp_path / "floats.npz"
    np.savez(path, images=floats, labels=np.array([0]))
    images, labels, info = load_arrays(f"npz:{path}")
    assert images[0, :, :, 0].tolist() == [[0, 128], [255, 51]]  # round(255 x)
    assert info.split_sizes == {"train": 1} and info.class_names == ("0",)


def test_npz_errors(tmp_path):
    def npz(**arrays):
        path = tmp_path / "bad.npz"
        np.savez(path, **arrays)
        return f"npz:{path}"

    x = np.zeros((3, 2, 2), np.uint8)
    with pytest.raises(
        ValueError, match=r"bad.npz has keys \['data', 'targets'\]; expected x_train and y_train"
    ):
        load_arrays(npz(data=x, targets=np.zeros(3, int)))
    with pytest.raises(
        ValueError, match=r"bad.npz has x_test but no y_test; add it or remove x_test"
    ):
        load_arrays(npz(x_train=x, y_train=np.zeros(3, int), x_test=x))
    with pytest.raises(
        ValueError,
        match=r"\(x_train, y_train\): 3 images but 4 labels; every image needs one label",
    ):
        load_arrays(npz(x_train=x, y_train=np.zeros(4, int)))
    with pytest.raises(
        ValueError,
        match=(
            r"split 'test'.*: label 5 is outside 0\.\.2 \(3 classes\); fix the labels or pass "
            r"num_classes"
        ),
    ):
        load_arrays(
            npz(x_train=x, y_train=np.array([0, 1, 2]), x_test=x, y_test=np.array([0, 5, 1])),
            "test",
        )
    with pytest.raises(ValueError, match=r"label 3 is outside 0\.\.1 \(2 classes\)"):
        load_arrays(npz(images=x, labels=np.array([0, 3, 1]), class_names=np.array(["a", "b"])))
    with pytest.raises(
        ValueError,
        match=r"float images must be in \[0, 1\]\. Received values in \[0, 255\]; divide by 255",
    ):
        load_arrays(npz(images=np.float32([[[0, 255]]]), labels=np.zeros(1, int)))
    with pytest.raises(
        ValueError, match=r"labels must be integers \(class indices\)\. Received dtype float64"
    ):
        load_arrays(npz(images=x, labels=np.zeros(3)))
    with pytest.raises(
        ValueError, match=r"labels must be class indices >= 0\. Received a label -1"
    ):
        load_arrays(npz(images=x, labels=np.array([0, -1, 0])))
    with pytest.raises(ValueError, match=r"bad has no split 'test'; its splits are train"):
        load_arrays(npz(images=x, labels=np.zeros(3, int)), "test")


# === Image folder ===


def write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(np.asarray(pixels, np.uint8)).numpy())


def test_image_folder_source(tmp_path):
    pixels = {
        name: np.full((3, 2, 3), value, np.uint8)
        for name, value in [("cat", 30), ("ant", 10), ("bee", 20)]
    }
    pixels["bee"][0, 0] = [1, 2, 3]
    for name, image in pixels.items():
        write_png(tmp_path / "flat" / name / "a.png", image)
    write_png(tmp_path / "flat" / "cat" / "b.PNG", pixels["cat"] + 1)
    (tmp_path / "flat" / "cat" / "notes.txt").write_text("ignored: not an image")

    images, labels, info = load_arrays(tmp_path / "flat")  # a bare folder of class folders
    assert (
        info.class_names == ("ant", "bee", "cat") and info.source == f"folder:{tmp_path / 'flat'}"
    )
    assert labels.tolist() == [0, 1, 2, 2] and info.split_sizes == {"train": 4}
    np.testing.assert_array_equal(
        images, np.stack([pixels["ant"], pixels["bee"], pixels["cat"], pixels["cat"] + 1])
    )

    for split, offset in (("train", 0), ("test", 100)):
        for name, image in pixels.items():
            write_png(tmp_path / "split" / split / name / "x.png", image + offset)
    images, labels, info = load_arrays(f"folder:{tmp_path / 'split'}", "test")
    assert list(info.split_sizes.items()) == [("train", 3), ("test", 3)]
    assert labels.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(images[2], pixels["cat"] + 100)
    np.testing.assert_allclose(
        info.mean, oracle_stats(np.stack([pixels[n] for n in ("ant", "bee", "cat")]))[0]
    )


def test_image_folder_errors(tmp_path):
    write_png(tmp_path / "a" / "ant" / "1.png", np.zeros((4, 4, 3)))
    (tmp_path / "a" / "bee").mkdir()
    with pytest.raises(
        ValueError,
        match=(
            r"class folder .*a/bee has no images \(\.png, \.jpg, \.jpeg, \.bmp, \.gif\); add "
            r"images or remove the folder"
        ),
    ):
        load_arrays(f"folder:{tmp_path / 'a'}")
    write_png(tmp_path / "a" / "bee" / "1.png", np.zeros((4, 4, 1)))
    with pytest.raises(
        ValueError,
        match=r"bee/1.png has shape \(4, 4, 1\) but ant/1.png has \(4, 4, 3\); resize or convert",
    ):
        load_arrays(f"folder:{tmp_path / 'a'}")
    (tmp_path / "a" / "bee" / "1.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot decode image .*bee/1.png"):
        load_arrays(f"folder:{tmp_path / 'a'}")
    write_png(tmp_path / "b" / "train" / "ant" / "1.png", np.zeros((2, 2, 1)))
    write_png(tmp_path / "b" / "test" / "bee" / "1.png", np.zeros((2, 2, 1)))
    with pytest.raises(
        ValueError,
        match=r"b/test has classes \['bee'\], but .*b/train has \['ant'\]; use the same class folders",
    ):
        load_arrays(f"folder:{tmp_path / 'b'}")
    with pytest.raises(FileNotFoundError, match=r"image folder .*nowhere does not exist"):
        load_arrays(f"folder:{tmp_path / 'nowhere'}")


# === TFRecord ===


def example(image_feature, label, image_key="image", label_key="label"):
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                image_key: image_feature,
                label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
        )
    ).SerializeToString()


def bytes_feature(data):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))


def write_records(path, records, compression=None):
    with tf.io.TFRecordWriter(str(path), options=compression) as writer:
        for record in records:
            writer.write(record)


def test_tfrecord_sources(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (4, 3, 2, 1), dtype=np.uint8)
    labels = [1, 0, 1, 2]
    encoded = [
        example(bytes_feature(tf.io.encode_png(x).numpy()), y) for x, y in zip(images, labels)
    ]
    write_records(tmp_path / "png-0.tfrecord", encoded[:3])
    write_records(tmp_path / "png-1.tfrecord", encoded[3:], compression="GZIP")
    got, got_labels, info = load_arrays(f"tfrecord:{tmp_path}/png-*.tfrecord")
    np.testing.assert_array_equal(got, images)
    assert got_labels.tolist() == labels and info.num_classes == 3
    assert info.split_sizes == {"train": 4} and info.source == f"tfrecord:{tmp_path}/png-*.tfrecord"

    # Raw bytes under custom keys, one file per split found through "{split}".
    raw = [
        example(bytes_feature(x.tobytes()), y, "pixels", "class") for x, y in zip(images, labels)
    ]
    write_records(tmp_path / "raw-train.tfrecord", raw[:3])
    write_records(tmp_path / "raw-test.tfrecord", raw[3:])
    options = dict(image_key="pixels", label_key="class", image_shape=(3, 2, 1))
    pattern = f"tfrecord:{tmp_path}/raw-{{split}}.tfrecord"
    with pytest.raises(
        ValueError,
        match=(
            r"split 'test': label 2 is outside 0\.\.1 \(2 classes\); fix the labels or pass "
            r"num_classes"
        ),
    ):
        load_arrays(pattern, "test", **options)  # train has labels 0 and 1 only
    got, got_labels, info = load_arrays(pattern, "test", num_classes=3, **options)
    np.testing.assert_array_equal(got, images[3:])
    assert got_labels.tolist() == [2] and list(info.split_sizes) == ["train", "test"]
    assert info.split_sizes == {"train": 3, "test": 1}
    np.testing.assert_allclose(info.mean, oracle_stats(images[:3])[0])

    # Float lists in [0, 1].
    floats = [
        example(
            tf.train.Feature(float_list=tf.train.FloatList(value=(x.ravel() / 255.0).tolist())), y
        )
        for x, y in zip(images, labels)
    ]
    write_records(tmp_path / "floats.tfrecord", floats)
    got, _, _ = load_arrays(tmp_path / "floats.tfrecord", image_shape=(3, 2, 1))  # detected by name
    np.testing.assert_array_equal(got, images)

    # A folder of TFX-style names (gzipped "data_tfrecord-*.gz") is detected as TFRecord.
    (tmp_path / "tfx").mkdir()
    write_records(tmp_path / "tfx" / "data_tfrecord-00000-of-00001.gz", encoded, "GZIP")
    got, got_labels, info = load_arrays(tmp_path / "tfx")
    np.testing.assert_array_equal(got, images)
    assert info.source == f"tfrecord:{tmp_path / 'tfx' / '*tfrecord*'}"


def test_tfrecord_errors(tmp_path):
    image = np.zeros((2, 2, 1), np.uint8)
    write_records(tmp_path / "a.tfrecord", [example(bytes_feature(image.tobytes()), 0, "img")])
    with pytest.raises(
        ValueError,
        match=r"record 0 has no feature 'image' \(it has \['img', 'label'\]\); pass image_key=",
    ):
        load_arrays(f"tfrecord:{tmp_path}/a.tfrecord")
    with pytest.raises(
        ValueError,
        match=r"record 0: the image is raw bytes, not PNG/JPEG/GIF/BMP; pass image_shape=\(H, W, C\)",
    ):
        load_arrays(f"tfrecord:{tmp_path}/a.tfrecord", image_key="img")
    with pytest.raises(
        ValueError,
        match=r"record 0: 4 raw image bytes do not fit image_shape=\(3, 3, 1\) \(9 bytes\)",
    ):
        load_arrays(f"tfrecord:{tmp_path}/a.tfrecord", image_key="img", image_shape=(3, 3, 1))


# === load_dataset ===


def test_load_dataset_gives_float_images_in_source_order(tmp_path):
    x = np.array([0, 1, 128, 255], np.uint8).reshape(4, 1, 1, 1)
    np.savez(tmp_path / "d.npz", images=x, labels=np.array([3, 1, 0, 2]))
    dataset, info = load_dataset(tmp_path / "d.npz")
    assert dataset.element_spec == (
        tf.TensorSpec((1, 1, 1), tf.float32),
        tf.TensorSpec((), tf.int64),
    )
    pairs = list(dataset.as_numpy_iterator())
    assert [float(image.item()) for image, _ in pairs] == (
        x.ravel().astype(np.float32) / np.float32(255)
    ).tolist()
    assert [int(label) for _, label in pairs] == [3, 1, 0, 2] and info.num_classes == 4


# === Balanced batches ===


def take(dataset, count):
    return list(dataset.take(count).as_numpy_iterator())


def test_balanced_batches_are_balanced_sorted_and_from_the_right_class():
    labels = np.repeat([0, 1, 2], [20, 30, 25])
    rng = np.random.default_rng(4)
    order = rng.permutation(len(labels))  # classes interleaved in the input
    labels = labels[order]
    images = numbered_images(len(labels))
    batches = balanced_batches((images, labels), 10, seed=7)
    assert batches.element_spec == (
        tf.TensorSpec((30, 4, 4, 1), tf.float32),
        tf.TensorSpec((30,), tf.int32),
    )
    for images_batch, labels_batch in take(batches, 7):
        assert images_batch.shape == (30, 4, 4, 1) and images_batch.dtype == np.float32
        assert (
            labels_batch.dtype == np.int32
            and labels_batch.tolist() == [0] * 10 + [1] * 10 + [2] * 10
        )
        ids = image_ids(images_batch)
        assert labels[ids].tolist() == labels_batch.tolist()  # every image is of its row's class
        assert len(set(ids.tolist())) == 30  # no image twice in a batch


def test_balanced_batches_walk_through_epochs_reshuffled():
    labels = np.repeat([0, 1], [20, 25])
    images = numbered_images(45)
    batches = take(balanced_batches((images, labels), 10, seed=0), 6)
    class0 = [image_ids(x[:10]).tolist() for x, _ in batches]
    class1 = [image_ids(x[10:]).tolist() for x, _ in batches]
    # Class 0 (20 images): batches 0-1, 2-3, 4-5 are three epochs, each every image once.
    for epoch in range(3):
        assert sorted(class0[2 * epoch] + class0[2 * epoch + 1]) == list(range(20))
    assert class0[0] + class0[1] != class0[2] + class0[3] != class0[4] + class0[5]
    # Class 1 (25 images): two batches per epoch, 20 distinct images, 5 wait for the next epoch.
    for epoch in range(3):
        seen = class1[2 * epoch] + class1[2 * epoch + 1]
        assert len(set(seen)) == 20 and set(seen) <= set(range(20, 45))
    assert class1[0] + class1[1] != class1[2] + class1[3]


def test_balanced_batches_are_deterministic_and_resumable():
    labels = np.repeat(np.arange(3), 12)
    images = numbered_images(36)
    first = take(balanced_batches((images, labels), 4, seed=3), 6)
    again = take(balanced_batches((images, labels), 4, seed=3), 6)
    other = take(balanced_batches((images, labels), 4, seed=4), 6)
    resumed = take(balanced_batches((images, labels), 4, seed=3, start=4), 2)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert any(not np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(first, other))
    for (x1, _), (x2, _) in zip(first[4:], resumed):
        np.testing.assert_array_equal(x1, x2)


def test_balanced_batches_chosen_classes_and_dataset_input(fmnist_small):
    x, y = fmnist_small.x_train, fmnist_small.y_train
    assert x.shape == (1000, 28, 28, 1) and x.dtype == np.uint8
    assert (
        np.bincount(y).tolist() == [100] * 10
        and np.bincount(fmnist_small.y_test).tolist() == [100] * 10
    )
    from_arrays = take(balanced_batches((x, y), 8, classes=[7, 2], seed=1), 3)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).map(
        lambda i, l: (tf.cast(i, tf.float32) / 255.0, l)
    )
    from_dataset = take(balanced_batches(dataset, 8, classes=[7, 2], seed=1), 3)
    for (xa, ya), (xd, yd) in zip(from_arrays, from_dataset):
        assert ya.tolist() == [2] * 8 + [7] * 8
        np.testing.assert_array_equal(xa, xd)  # uint8 / 255 in the pipeline == float input
        np.testing.assert_array_equal(ya, yd)
        # Each row is one of the real images of its class, divided by 255.
        real = {
            c: {im.tobytes() for im in x[y == c].astype(np.float32) / np.float32(255)}
            for c in (2, 7)
        }
        assert all(image.tobytes() in real[label] for image, label in zip(xa, ya))


def test_balanced_batches_errors():
    images = numbered_images(14)
    labels = np.array([0] * 10 + [1] * 4)
    with pytest.raises(
        ValueError,
        match=(
            r"^class 1 has 4 images; n_per_class=10 needs at least 10\. Lower n_per_class or "
            r"leave the class out with classes=\.$"
        ),
    ):
        balanced_batches((images, labels), 10)
    assert take(balanced_batches((images, labels), 10, classes=[0]), 1)[0][1].tolist() == [0] * 10
    with pytest.raises(
        ValueError, match=r"n_per_class must be a positive integer\. Received n_per_class=0"
    ):
        balanced_batches((images, labels), 0)
    with pytest.raises(
        ValueError,
        match=r"classes must be distinct class indices in 0\.\.1\. Received classes=\[0, 2\]",
    ):
        balanced_batches((images, labels), 2, classes=[0, 2])
    with pytest.raises(
        ValueError, match=r"balanced_batches: label 1 is outside 0\.\.0 \(1 classes\)"
    ):
        balanced_batches((images, labels), 2, num_classes=1)
    with pytest.raises(ValueError, match=r"balanced_batches: 14 images but 13 labels"):
        balanced_batches((images, labels[:13]), 2)
    with pytest.raises(
        ValueError, match=r"float images must be in \[0, 1\]\. Received values in \[0, 13\]"
    ):
        balanced_batches((images.astype(np.float32), labels), 2)


def test_images_by_class_keeps_order_within_classes():
    parts = images_by_class(np.arange(6) * 10, np.array([1, 0, 1, 0, 1, 0]), 3)
    assert [p.tolist() for p in parts] == [[10, 30, 50], [0, 20, 40], []]
    with pytest.raises(ValueError, match=r"images_by_class: label 1 is outside 0\.\.0"):
        images_by_class(np.arange(2), np.array([0, 1]), 1)


# === The summary entry point ===


def test_summary_main_prints_the_description(tmp_path, capsys):
    x = np.array([0, 255, 255, 0], np.uint8).reshape(4, 1, 1, 1)
    np.savez(
        tmp_path / "s.npz",
        x_train=x,
        y_train=np.array([0, 1, 1, 0]),
        x_test=x[:1],
        y_test=np.array([1]),
    )
    assert summary_main([str(tmp_path / "s.npz"), "--split", "test"]) == 0
    # Only the last lines: TensorFlow may log to the captured streams on first use.
    lines = capsys.readouterr().out.splitlines()[-8:]
    assert lines == [
        "dataset      s",
        f"source       npz:{tmp_path / 's.npz'}",
        "classes      2",
        "image shape  1x1x1",
        "splits       train 4, test 1",
        "mean         0.5000  (train, pixels in [0, 1])",
        "std          0.5000",
        "test per class  0 0, 1 1",
    ]
    assert summary_main(["nonsense"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("error: unknown dataset 'nonsense'; known names:")

"""The bad-input sweep: every public entry point, fed malformed input, stops with one clear line.

One table per boundary. A row is (id, the bad input, the exception type, a regex of the message):
the message must say what was wrong and what to do, fit on one line, and nothing may be written
when an input is rejected (output directories stay absent or unchanged). Cases other test modules
already pin (tests/test_condenser.py, test_condenser_fit.py, test_data.py, test_io.py,
test_evaluate.py, test_cli.py, test_component_*.py) are not repeated here; docs/reliability.md
counts both.

Boundaries: M3DCondenser(...), .initialize, .fit; m3d_tf.data.load_arrays for each source kind
(tfds, idx:DIR, npz:FILE, folder:DIR, tfrecord:GLOB); io.load_set; checkpoints.restore_checkpoint;
evaluate.evaluate; the `m3d` command; the M3DCondense and DatasetGen executors' Do and the Trainer
module's run_fn.
"""

import gzip
import json
import os
import re
import struct

import numpy as np
import pytest
import tensorflow as tf

from m3d_tf import checkpoints, cli, io
from m3d_tf import evaluate as ev
from m3d_tf.condenser import M3DCondenser
from m3d_tf.data import DatasetInfo, load_arrays
from m3d_tf.real_batches import BatchError

NAN, INF = float("nan"), float("inf")


def _raises(error, message, call):
    """Runs call(); it must raise `error` with a one-line message matching `message`."""
    with pytest.raises(error, match=message) as caught:
        call()
    text = caught.value.message if isinstance(caught.value, tf.errors.OpError) else str(
        caught.value)
    assert "\n" not in text.strip(), text
    return caught.value


def _files(root):
    """Every file under root, relative (an absent root has none)."""
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(root) for f in names)


@pytest.fixture(scope="module")
def real(fmnist_small):
    """Classes 0..2 of the small real Fashion-MNIST: float32 images in [0, 1], int64 labels."""
    keep = fmnist_small.y_train < 3
    return fmnist_small.x_train[keep].astype(np.float32) / 255.0, fmnist_small.y_train[keep]


# === M3DCondenser(...) ===

BASE = dict(num_classes=3, image_shape=(28, 28, 1), ipc=2, net_width=8)
CONSTRUCTOR = [
    ("num_classes_one", dict(num_classes=1),
     r"^num_classes must be at least 2\. Received num_classes=1\.$"),
    ("num_classes_float", dict(num_classes=2.5),
     r"^num_classes must be a positive integer\. Received num_classes=2\.5\.$"),
    ("image_shape_none", dict(image_shape=None),
     r"^image_shape must be \(height, width, channels\)\. Received image_shape=None\.$"),
    ("image_shape_text", dict(image_shape="abc"),
     r"^image_shape must be \(height, width, channels\)\. Received image_shape='abc'\.$"),
    ("image_shape_zero", dict(image_shape=(0, 28, 1)),
     r"^image_shape must be a positive integer\. Received image_shape=0\.$"),
    ("ipc_negative", dict(ipc=-1), r"^ipc must be a positive integer\. Received ipc=-1\.$"),
    ("ipc_bool", dict(ipc=True), r"^ipc must be a positive integer\. Received ipc=True\.$"),
    ("factor_zero", dict(factor=0), r"^factor must be a positive integer\. Received factor=0\.$"),
    ("init_unknown", dict(init="zeros"),
     r"^Unknown init='zeros'; valid choices: mix, real, noise\.$"),
    ("augmentation_unknown", dict(augmentation="flip"),
     r"^Unknown augmentation='flip'; valid choices: none, color_crop_cutout, "),
    ("net_norm_unknown", dict(net_norm="layernorm"),
     r"^Unknown net_norm='layernorm'; valid choices: instancenorm, batchnorm, none\.$"),
    ("estimator_unknown", dict(estimator="mean"),
     r"^Unknown estimator='mean'; valid choices: biased, unbiased\.$"),
    ("multipliers_negative", dict(multipliers=(-1.0, 1.0)),
     r"^multipliers must be a non-empty sequence of positive finite numbers\. "),
    ("multipliers_nan", dict(multipliers=(NAN,)),
     r"^multipliers must be a non-empty sequence of positive finite numbers\. "),
    ("widths_zero", dict(widths=(0.0,)),
     r"^widths must be a non-empty sequence of positive finite numbers\. Received widths="),
    ("gammas_negative", dict(kernel="rbf_fixed", gammas=(-1.0,)),
     r"^gammas must be a non-empty sequence of positive finite numbers\. "),
    ("degree_zero", dict(kernel="polynomial", degree=0),
     r"^degree must be a positive integer for kernel='polynomial'\. Received degree=0\.$"),
    ("coef0_text", dict(kernel="polynomial", coef0="one"),
     r"^coef0 must be a number\. Received coef0='one'\.$"),
    ("mean_nan", dict(mean=NAN), r"^mean must be finite per channel\. Received mean=nan\.$"),
    ("mean_text", dict(mean="abc"),
     r"^mean must be numbers, one per channel \(1\)\. Received mean='abc'\.$"),
    ("std_zero", dict(std=0.0),
     r"^std must be positive per channel\. Received std=0\.0\.$"),
    ("std_negative", dict(std=-0.3),
     r"^std must be positive per channel\. Received std=-0\.3\.$"),
    ("std_inf", dict(std=INF),
     r"^std must be finite per channel\. Received std=inf\.$"),
    ("flip_text", dict(flip="no"), r"^flip must be True or False\. Received flip='no'\.$"),
    ("compute_dtype_float16", dict(compute_dtype="float16"),
     r"^Unknown compute_dtype='float16'; valid choices: float32, bfloat16\.$"),
    ("seed_negative", dict(seed=-1),
     r"^seed must be a non-negative integer\. Received seed=-1\.$"),
    ("seed_float", dict(seed=1.5), r"^seed must be a non-negative integer\. Received seed=1\.5\.$"),
    ("real_per_class_zero", dict(real_per_class=0),
     r"^real_per_class must be a positive integer\. Received real_per_class=0\.$"),
    ("max_decoded_zero", dict(max_decoded_per_class=0),
     r"^max_decoded_per_class must be a positive integer\. "),
    ("net_depth_zero", dict(net_depth=0),
     r"^net_depth must be a positive integer\. Received net_depth=0\.$"),
    ("ipm_zero", dict(ipm=0), r"^ipm must be a positive integer\. Received ipm=0\.$"),
]


@pytest.mark.parametrize("change, message", [row[1:] for row in CONSTRUCTOR],
                         ids=[row[0] for row in CONSTRUCTOR])
def test_constructor(change, message):
    _raises(ValueError, message, lambda: M3DCondenser(**{**BASE, **change}))


@pytest.mark.parametrize("rate", [-1.0, NAN, INF, "x"], ids=str)
def test_compile_learning_rate(rate):
    condenser = M3DCondenser(**BASE)
    _raises(ValueError, r"^learning_rate must be a finite number >= 0\. Received "
                        r"learning_rate=", lambda: condenser.compile(learning_rate=rate))
    assert getattr(condenser, "optimizer", None) is None


# === M3DCondenser.initialize ===

INITIALIZE = [
    ("images_only", lambda x, y: x,
     r"^initialize\(\) needs \(images, labels\) arrays or a tf\.data\.Dataset of \(image, label\) "
     r"pairs\. Received ndarray\.$"),
    ("none", lambda x, y: None, r"^initialize\(\) needs \(images, labels\) arrays .*NoneType\.$"),
    ("three_arrays", lambda x, y: (x, y, y), r"^initialize\(\) needs \(images, labels\) arrays"),
    ("bool_images", lambda x, y: (x > 0.5, y),
     r"^initialize\(\): real images must be float in \[0, 1\] \(or uint8\)\. Received dtype bool\.$"),
    ("uint16_images", lambda x, y: ((x * 255).astype(np.uint16), y),
     r"^initialize\(\): real images must be float in \[0, 1\] \(or uint8\)\. Received dtype uint16"),
    ("half_size", lambda x, y: (x[:, :14], y),
     r"^initialize\(\): real images must have shape \(N, 28, 28, 1\) to match image_shape\. "
     r"Received shape \(300, 14, 28, 1\)\.$"),
    ("labels_two_columns", lambda x, y: (x, np.stack([y, y], 1)),
     r"^initialize\(\): labels must have shape \(N,\) or \(N, 1\)\. Received \(300, 2\)\.$"),
    ("labels_text", lambda x, y: (x, y.astype(str)),
     r"^initialize\(\): labels must be integer class indices\. Received dtype <U21; pass class "
     r"indices"),
    ("labels_negative", lambda x, y: (x, y - 1),
     r"^initialize\(\): labels must lie in \[0, 3\)\. Received labels in \[-1, 1\]\.$"),
    ("inf_pixels", lambda x, y: (np.where(x > 0.9, INF, x), y),
     r"^initialize\(\): real images contain NaN or Inf\. Clean the data before condensing\.$"),
    ("negative_pixels", lambda x, y: (x - 0.5, y),
     r"^initialize\(\): float images must lie in \[0, 1\]\. Received values in \[-0\.5, 0\.5\]; "
     r"divide 0\.\.255 pixels by 255"),
    ("empty_arrays", lambda x, y: (x[:0], y[:0]),
     r"^initialize\(\): the real data is empty; give real images of every class\.$"),
    ("class_missing", lambda x, y: (x[y < 2], y[y < 2]),
     r"class 2 has 0 .*needs 8"),
    ("dataset_of_images", lambda x, y: tf.data.Dataset.from_tensor_slices(x[:8]),
     r"^initialize\(\) needs a dataset of \(image, label\) pairs\. Received element_spec="),
]


@pytest.mark.parametrize("make, message", [row[1:] for row in INITIALIZE],
                         ids=[row[0] for row in INITIALIZE])
def test_initialize(real, make, message):
    condenser = M3DCondenser(**BASE)
    _raises(ValueError, message, lambda: condenser.initialize(make(*real)))
    assert float(condenser.initialized.numpy()) == 0.0
    assert not np.any(condenser.synthetic_images())


# === M3DCondenser.fit ===

def _from_generator(images, labels, image_spec, label_spec):
    return tf.data.Dataset.from_generator(lambda: iter([(images, labels)]),
                                          output_signature=(image_spec, label_spec))


FIT_SPEC = [
    ("sparse_labels", lambda x, y: tf.data.Dataset.from_tensors(
        (x, tf.sparse.from_dense(y[:, None]))),
     r"^fit\(\): labels must be dense tensors\. Received SparseTensorSpec"),
    ("string_images", lambda x, y: tf.data.Dataset.from_tensors((tf.strings.as_string(x), y)),
     r"^fit\(\): images must be uint8 \(0\.\.255\) or float in \[0, 1\]\. Received dtype string"),
    ("unknown_rank", lambda x, y: _from_generator(x, y, tf.TensorSpec(None, tf.float32),
                                                  tf.TensorSpec((None,), tf.int64)),
     r"^fit\(\): images of unknown rank; give them a shape \(batch, 28, 28, 1\)"),
    ("five_dimensions", lambda x, y: tf.data.Dataset.from_tensors((x[:, None], y)),
     r"^fit\(\): image batches must have shape \(batch, 28, 28, 1\) to match image_shape\. "
     r"Received \(24, 1, 28, 28, 1\)\.$"),
    ("scalar_label_per_batch", lambda x, y: tf.data.Dataset.from_tensors((x, y[0])),
     r"^fit\(\): labels must have shape \(batch,\) or \(batch, 1\)\. Received \(\)\.$"),
    ("labels_unknown_rank", lambda x, y: _from_generator(x, y, tf.TensorSpec((None, 28, 28, 1)),
                                                         tf.TensorSpec(None, tf.int64)),
     r"^fit\(\): labels must have shape \(batch,\) or \(batch, 1\)\. Received unknown rank\.$"),
    ("one_hot_float64", lambda x, y: tf.data.Dataset.from_tensors((x, np.eye(3)[y])),
     r"^fit\(\): labels of shape \(24, 3\) look one-hot; pass class indices"),
]


@pytest.fixture(scope="module")
def fitted(real):
    """An initialised, compiled condenser and a good batch of 8 images per class."""
    condenser = M3DCondenser(**{**BASE, "real_per_class": 8, "seed": 3}).initialize(real)
    condenser.compile(learning_rate=0.05)
    x, y = real
    keep = np.concatenate([np.flatnonzero(y == c)[:8] for c in range(3)])
    return condenser, (x[keep], y[keep])


@pytest.mark.parametrize("make, message", [row[1:] for row in FIT_SPEC],
                         ids=[row[0] for row in FIT_SPEC])
def test_fit_refuses_what_the_dataset_yields_before_any_step(fitted, make, message):
    condenser, batch = fitted
    before = (condenser.synthetic_images(), int(condenser.optimizer.iterations.numpy()))
    _raises(ValueError, message, lambda: condenser.fit(make(*batch), verbose=0))
    np.testing.assert_array_equal(condenser.synthetic_images(), before[0])
    assert int(condenser.optimizer.iterations.numpy()) == before[1]


FIT_BATCHES = [
    ("inf_pixel", lambda x, y: (np.where(x > 0.9, INF, x), y),
     r"^fit\(\): float images must lie in \[0, 1\] with no NaN or Inf; a batch has values in "
     r"\[0, inf\]\. Divide 0\.\.255 pixels by 255"),
    ("negative_pixels", lambda x, y: (x - 0.25, y),
     r"^fit\(\): float images must lie in \[0, 1\] with no NaN or Inf; a batch has values in "
     r"\[-0\.25, "),
    ("label_equal_to_num_classes", lambda x, y: (x, np.where(y == 0, 3, y)),
     r"^fit\(\): labels must lie in \[0, 3\); a batch has labels in \[1, 3\]\. Map them to class "
     r"indices"),
    ("labels_column_of_wrong_count", lambda x, y: (x, y[:-1, None]),
     r"^fit\(\): a batch has 24 images and 23 labels; every batch needs as many labels as images"),
]


@pytest.mark.parametrize("make, message", [row[1:] for row in FIT_BATCHES],
                         ids=[row[0] for row in FIT_BATCHES])
def test_fit_stops_at_a_bad_later_batch(fitted, make, message):
    condenser, (x, y) = fitted
    bad_x, bad_y = make(x, y)
    spec = (tf.TensorSpec((None, 28, 28, 1), tf.float32),
            tf.TensorSpec((None,) + bad_y.shape[1:], tf.int64))
    batches = tf.data.Dataset.from_generator(
        lambda: iter([(x, y[:, None] if bad_y.ndim == 2 else y), (bad_x, bad_y)]),
        output_signature=spec)
    start = int(condenser.optimizer.iterations.numpy())
    error = _raises(BatchError, message, lambda: condenser.fit(batches, verbose=0))
    assert isinstance(error, ValueError)
    assert int(condenser.optimizer.iterations.numpy()) == start + 1  # the good batch only


def test_fit_before_compile_says_so(real):
    condenser = M3DCondenser(**BASE).initialize(real)
    batches = tf.data.Dataset.from_tensors((real[0][:24], real[1][:24]))
    _raises(ValueError, r"^You must call `compile\(\)` before using the model\.$",
            lambda: condenser.fit(batches, verbose=0))


# === load_arrays: one table per source kind ===

def _idx(array, type_code=0x08):
    """The bytes of an IDX file holding `array` (type 0x08 uint8, 0x0C int32, 0x0D float32)."""
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.asarray(array, dtype).tobytes()


def _varied(count, shape=(4, 4, 1), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), np.uint8)


def _idx_dir(tmp_path, images=None, labels=None, *, images_type=0x08, labels_type=0x08,
             compress=False, test=None):
    """An IDX folder with train files (and t10k files for test=(images, labels))."""
    directory = tmp_path / "idx"
    directory.mkdir()
    images = _varied(6) if images is None else images
    labels = np.arange(6) % 3 if labels is None else labels
    pack, suffix = (gzip.compress, ".gz") if compress else (bytes, "")
    for prefix, (x, y) in [("train", (images, labels)), *([("t10k", test)] if test else [])]:
        (directory / f"{prefix}-images-idx3-ubyte{suffix}").write_bytes(
            pack(_idx(x, images_type)))
        if y is not None:
            (directory / f"{prefix}-labels-idx1-ubyte{suffix}").write_bytes(
                pack(_idx(y, labels_type)))
    return directory


def _cut(path, keep):
    """Truncates a file to its first `keep` bytes (negative: drops the last -keep)."""
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    return path


def _idx_source(tmp_path, **kwargs):
    return f"idx:{_idx_dir(tmp_path, **kwargs)}", {}


IDX = [
    ("missing_folder", lambda p: (f"idx:{p / 'nowhere'}", {}), FileNotFoundError,
     r"IDX folder .*nowhere does not exist; give a folder holding train-images-idx3-ubyte"),
    ("no_idx_files", lambda p: (f"idx:{p}", {}), FileNotFoundError,
     r"no IDX files in .*; expected train-images-idx3-ubyte\[\.gz\] and "
     r"train-labels-idx1-ubyte\[\.gz\]"),
    ("labels_missing", lambda p: (f"idx:{_idx_dir_without_labels(p)}", {}), FileNotFoundError,
     r"has train-images-idx3-ubyte but no train-labels-idx1-ubyte\[\.gz\]; add the train labels"),
    ("truncated_images", lambda p: (f"idx:{_truncated_idx(p, compress=False)}", {}), ValueError,
     r"train-images-idx3-ubyte is truncated: the header gives shape \(6, 4, 4, 1\) \(96 data "
     r"bytes\) but the file has 86; download or extract it again\.$"),
    ("truncated_gzip", lambda p: (f"idx:{_truncated_idx(p, compress=True)}", {}), ValueError,
     r"train-images-idx3-ubyte\.gz is a corrupt or truncated gzip file \(.*\); download it again"),
    ("wrong_magic", lambda p: (f"idx:{_bad_magic_idx(p)}", {}), ValueError,
     r"is not an IDX file: it starts with bytes \[50 4b 03 04\], expected \[00 00 TT DD\]"),
    ("fewer_labels", lambda p: _idx_source(p, labels=np.arange(5) % 3), ValueError,
     r"6 images but 5 labels; every image needs one label\.$"),
    ("images_rank_two", lambda p: _idx_source(p, images=np.zeros((6, 16), np.uint8)), ValueError,
     r"image IDX files must have 3 or 4 dimensions \(N, H, W\[, C\]\)\. Received shape \(6, 16\)"),
    ("labels_out_of_range", lambda p: (f"idx:{_idx_dir(p)}", {"num_classes": 2}), ValueError,
     r"split 'train': label 2 is outside 0\.\.1 \(2 classes\); fix the labels or pass num_classes"),
    ("test_labels_beyond_train", lambda p: (f"idx:{_idx_dir(p, test=(_varied(2), np.array([0, 3])))}",
                                            {"split": "test"}), ValueError,
     r"split 'test': label 3 is outside 0\.\.2 \(3 classes\); fix the labels or pass num_classes"),
    ("float_labels", lambda p: _idx_source(p, labels=np.arange(6.0) % 3, labels_type=0x0D),
     ValueError, r"labels must be integers \(class indices\)\. Received dtype float32\.$"),
    ("float_pixels_0_255", lambda p: _idx_source(p, images=_varied(6).astype(np.float32),
                                                 images_type=0x0D), ValueError,
     r"float images must be in \[0, 1\]\. Received values in \[.*\]; divide by 255"),
    ("nan_pixels", lambda p: _idx_source(p, images=np.full((6, 4, 4, 1), NAN, np.float32),
                                         images_type=0x0D), ValueError,
     r"images hold 96 NaN or infinite pixel values; replace them \(e\.g\. with np\.nan_to_num\) "
     r"or drop those images\.$"),
    ("int32_pixels_above_255", lambda p: _idx_source(p, images=_varied(6).astype(np.int32) * 3,
                                                     images_type=0x0C), ValueError,
     r"integer images must be in 0\.\.255\. Received values in .*; rescale them to 0\.\.255"),
    ("constant_images", lambda p: _idx_source(p, images=np.full((6, 4, 4, 1), 9, np.uint8)),
     ValueError,
     r"split 'train': channel 0 has mean 0\.0352941 and standard deviation 0: every pixel holds "
     r"the same value .* give images that vary\.$"),
]


def _idx_dir_without_labels(tmp_path):
    directory = _idx_dir(tmp_path)
    os.remove(directory / "train-labels-idx1-ubyte")
    return directory


def _truncated_idx(tmp_path, compress):
    directory = _idx_dir(tmp_path, compress=compress)
    _cut(directory / ("train-images-idx3-ubyte" + (".gz" if compress else "")), -10)
    return directory


def _bad_magic_idx(tmp_path):
    directory = _idx_dir(tmp_path)
    (directory / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    return directory


def _npz(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **{"x_train": _varied(6), "y_train": np.arange(6) % 3, **arrays})
    return f"npz:{path}", {}


def _damaged_npz(tmp_path, damage):
    source, _ = _npz(tmp_path)
    damage(tmp_path / "data.npz")
    return source, {}


NPZ = [
    ("missing_file", lambda p: (f"npz:{p / 'none.npz'}", {}), FileNotFoundError,
     r"npz file .*none\.npz does not exist; save one with np\.savez\(path, x_train=\.\.\., "
     r"y_train=\.\.\.\)\.$"),
    ("truncated", lambda p: _damaged_npz(p, lambda f: _cut(f, 300)), ValueError,
     r"npz file .*data\.npz is not a readable \.npz \(BadZipFile: .*\); save it again with "
     r"np\.savez"),
    ("not_a_zip", lambda p: _damaged_npz(p, lambda f: f.write_bytes(b"hello, not a zip")),
     ValueError, r"npz file .*data\.npz is not a readable \.npz \(ValueError: .*\); save it again"),
    ("empty_file", lambda p: _damaged_npz(p, lambda f: f.write_bytes(b"")), ValueError,
     r"npz file .*data\.npz is not a readable \.npz \(EOFError: .*\); save it again"),
    ("one_npy_array", lambda p: _damaged_npz(p, lambda f: np.save(open(f, "wb"), _varied(2))),
     ValueError, r"npz file .*data\.npz holds a single array, not named arrays; save it with "
                 r"np\.savez"),
    ("object_array", lambda p: _npz(p, x_train=np.array([_varied(1), None], dtype=object)),
     ValueError, r"npz file .*data\.npz: array 'x_train' cannot be read \(ValueError: Object "
                 r"arrays cannot be loaded .*\); save numeric arrays again"),
    ("nan_pixels", lambda p: _npz(p, x_train=np.where(_varied(6) > 200, NAN, 0.5)), ValueError,
     r"\(x_train, y_train\): images hold \d+ NaN or infinite pixel values; replace them"),
    ("inf_pixels", lambda p: _npz(p, x_train=np.full((6, 4, 4), INF, np.float32)), ValueError,
     r"\(x_train, y_train\): images hold 96 NaN or infinite pixel values"),
    ("negative_ints", lambda p: _npz(p, x_train=_varied(6).astype(np.int16) - 128), ValueError,
     r"integer images must be in 0\.\.255\. Received values in -128\.\.\d+; rescale them"),
    ("uint16_above_255", lambda p: _npz(p, x_train=_varied(6).astype(np.uint16) * 256),
     ValueError, r"integer images must be in 0\.\.255\. Received values in 0\.\.\d+; rescale"),
    ("complex_pixels", lambda p: _npz(p, x_train=_varied(6).astype(np.complex64)), ValueError,
     r"images must be uint8, integer or float\. Received dtype complex64\.$"),
    ("no_images", lambda p: _npz(p, x_train=_varied(0), y_train=np.zeros(0, int)), ValueError,
     r"images must be a non-empty array \(N, H, W\) or \(N, H, W, C\)\. Received shape "
     r"\(0, 4, 4, 1\)\.$"),
    ("flat_images", lambda p: _npz(p, x_train=_varied(6).reshape(6, 16)), ValueError,
     r"images must be a non-empty array \(N, H, W\) or \(N, H, W, C\)\. Received shape "
     r"\(6, 16\)\.$"),
    ("labels_two_columns", lambda p: _npz(p, y_train=np.zeros((6, 2), int)), ValueError,
     r"labels must have shape \(N,\) or \(N, 1\)\. Received \(6, 2\)\.$"),
    ("splits_of_two_shapes", lambda p: (_npz(p, x_test=_varied(6, (2, 4, 1)),
                                             y_test=np.arange(6) % 3)[0], {"split": "test"}),
     ValueError, r"split 'test' has images of shape \(2, 4, 1\) but split 'train' has "
                 r"\(4, 4, 1\); give splits of one image shape\.$"),
    ("fewer_class_names_than_labels", lambda p: _npz(p, class_names=np.array(["a", "b"])),
     ValueError, r"label 2 is outside 0\.\.1 \(2 classes\); fix the labels or the class names\.$"),
    ("num_classes_too_small", lambda p: (_npz(p)[0], {"num_classes": 2}), ValueError,
     r"label 2 is outside 0\.\.1 \(2 classes\); fix the labels or pass num_classes\.$"),
    ("num_classes_against_names", lambda p: (_npz(p, class_names=np.array(["a", "b", "c"]))[0],
                                             {"num_classes": 4}), ValueError,
     r"names 3 classes but num_classes=4; drop num_classes\.$"),
    ("constant_images", lambda p: _npz(p, x_train=np.zeros((6, 4, 4, 3), np.uint8)), ValueError,
     r"split 'train': channel 0 has mean 0 and standard deviation 0: every pixel holds the same "
     r"value"),
]


def _png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(np.asarray(pixels)).numpy())


def _folder(tmp_path, pixels=None, damage=None):
    """folder:DIR with classes a and b, two 4x4 images each."""
    root = tmp_path / "folder"
    for c, name in enumerate("ab"):
        for i in range(2):
            image = _varied(1, seed=2 * c + i)[0] if pixels is None else pixels
            _png(root / name / f"{i}.png", image)
    if damage:
        damage(root)
    return f"folder:{root}", {}


FOLDER = [
    ("no_class_folders", lambda p: (f"folder:{p}", {}), ValueError,
     r"image folder .* has no class subfolders; put each class's images in .*/<class name>/\.$"),
    ("empty_png", lambda p: _folder(p, damage=lambda r: (r / "b" / "1.png").write_bytes(b"")),
     ValueError, r"cannot decode image .*b/1\.png \(.*\); replace or remove it\.$"),
    ("truncated_png", lambda p: _folder(p, damage=lambda r: _cut(r / "a" / "0.png", 20)),
     ValueError, r"cannot decode image .*a/0\.png \(.*\); replace or remove it\.$"),
    ("split_and_class_folders_mixed", lambda p: _folder(
        p, damage=lambda r: _png(r / "train" / "a" / "0.png", _varied(1)[0])), ValueError,
     r"class folder .*folder/train has no images \(\.png, \.jpg, \.jpeg, \.bmp, \.gif\); add "
     r"images or remove the folder\.$"),
    ("constant_images", lambda p: _folder(p, pixels=np.full((4, 4, 1), 7, np.uint8)), ValueError,
     r"folder:.* split 'train': channel 0 has mean 0\.027451 and standard deviation 0"),
    ("unknown_split", lambda p: (_folder(p)[0], {"split": "test"}), ValueError,
     r"folder has no split 'test'; its splits are train\.$"),
]


def _example(image=None, label=0, **extra):
    features = {} if image is None else {"image": image}
    if label is not None:
        features["label"] = label if isinstance(label, tf.train.Feature) else tf.train.Feature(
            int64_list=tf.train.Int64List(value=[label]))
    features.update(extra)
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _raw(pixels):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[np.asarray(pixels).tobytes()]))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _records(tmp_path, records, compression=None, name="data.tfrecord", damage=None,
             image_shape=(4, 4, 1)):
    path = tmp_path / name
    with tf.io.TFRecordWriter(str(path), compression) as writer:
        for record in records:
            writer.write(record)
    if damage:
        damage(path)
    return f"tfrecord:{path}", {"image_shape": image_shape}


def _good_records(count=6):
    return [_example(_raw(x), int(i % 3)) for i, x in enumerate(_varied(count))]


TFRECORD = [
    ("no_file_matches", lambda p: (f"tfrecord:{p}/*.tfrecord", {}), FileNotFoundError,
     r"no TFRecord files match .*\*\.tfrecord; give a glob of files of serialized tf\.Example\.$"),
    ("corrupt_file", lambda p: _records(p, [], damage=lambda f: f.write_bytes(b"\0" * 40)),
     ValueError, r"TFRecord file .*data\.tfrecord cannot be read \(corrupted record at 0.*\); "
                 r"write it again or leave it out of the glob\.$"),
    ("truncated_gzip", lambda p: _records(p, _good_records(), "GZIP",
                                          damage=lambda f: _cut(f, -20)), ValueError,
     r"TFRecord file .*data\.tfrecord cannot be read \(.*\); write it again or leave it out"),
    ("empty_file", lambda p: _records(p, []), ValueError,
     r"TFRecord files .*data\.tfrecord holds no records; write some tf\.Example records to it\.$"),
    ("not_an_example", lambda p: _records(p, [b"\xff\xff not a protocol buffer"]), ValueError,
     r"data\.tfrecord, record 0 is not a serialized tf\.Example \(.*\); write tf\.Example "
     r"records\.$"),
    ("label_as_float", lambda p: _records(p, [_example(_raw(_varied(1)[0]), _floats([1.0]))]),
     ValueError, r"record 0: feature 'label' must hold one int64 class index; write labels as an "
                 r"int64_list of one value"),
    ("no_label", lambda p: _records(p, [_example(_raw(_varied(1)[0]), None)]), ValueError,
     r"record 0 has no feature 'label' \(it has \['image'\]\); pass label_key=\.$"),
    ("negative_label", lambda p: _records(p, [_example(_raw(x), -1) for x in _varied(2)]),
     ValueError, r"labels must be class indices >= 0\. Received a label -1\.$"),
    ("nan_float_pixels", lambda p: _records(p, [_example(_floats([NAN] * 16), 0)] * 2),
     ValueError, r"images hold 32 NaN or infinite pixel values; replace them"),
    ("int_pixels_above_255", lambda p: _records(p, [_example(tf.train.Feature(
        int64_list=tf.train.Int64List(value=[300] * 16)), 0)] * 2), ValueError,
     r"integer images must be in 0\.\.255\. Received values in 300\.\.300; rescale them"),
    ("mixed_image_sizes", lambda p: _records(p, [
        _example(_raw(_varied(1)[0]), 0),
        _example(tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[tf.io.encode_png(_varied(1, (2, 2, 1))[0]).numpy()])), 1)]), ValueError,
     r"record 1 has shape \(2, 2, 1\) but record 0 has \(4, 4, 1\); resize or convert"),
    ("corrupt_png", lambda p: _records(p, [_example(tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[b"\x89PNG\r\n\x1a\n" + b"\0" * 30])), 0)], image_shape=None), ValueError,
     r"record 0: cannot decode the image \(.*\)"),
    ("constant_images", lambda p: _records(p, [_example(_raw(np.zeros((4, 4, 1), np.uint8)), i)
                                               for i in range(3)]), ValueError,
     r"tfrecord:.* split 'train': channel 0 has mean 0 and standard deviation 0"),
]


@pytest.mark.parametrize(
    "kind, make, error, message",
    [(kind, *row[1:]) for kind, table in (("idx", IDX), ("npz", NPZ), ("folder", FOLDER),
                                          ("tfrecord", TFRECORD)) for row in table],
    ids=[f"{kind}-{row[0]}" for kind, table in (("idx", IDX), ("npz", NPZ), ("folder", FOLDER),
                                                ("tfrecord", TFRECORD)) for row in table])
def test_load_arrays(tmp_path, kind, make, error, message):
    source, options = make(tmp_path)
    split = options.pop("split", "train")
    before = _files(tmp_path)
    _raises(error, message, lambda: load_arrays(source, split, **options))
    assert _files(tmp_path) == before  # nothing written next to the data


TFDS = [
    ("unknown_tfds_name", "tfds:no_such_dataset_xyz", {}, ValueError,
     r"^TFDS has no dataset 'no_such_dataset_xyz'; pick an image classification dataset from "),
    ("unknown_split", "fashion_mnist", {"split": "validation"}, ValueError,
     r"^fashion_mnist has no split 'validation'; its splits are train, test\.$"),
    ("wrong_class_count", "fashion_mnist", {"split": "test", "num_classes": 5}, ValueError,
     r"names 10 classes but num_classes=5; drop num_classes\.$"),
    ("not_prepared_and_offline", "mnist", {"download": False}, FileNotFoundError,
     r"^TFDS could not prepare mnist \(FileNotFoundError: mnist is not prepared in .* and "
     r"download=False\); connect to the internet once"),
]


@pytest.mark.parametrize("source, options, error, message", [row[1:] for row in TFDS],
                         ids=[row[0] for row in TFDS])
def test_load_arrays_tfds(source, options, error, message, tmp_path):
    options = dict(options)
    split = options.pop("split", "train")
    if source == "mnist":  # an empty data dir: nothing prepared, and nothing may be written
        options["data_dir"] = str(tmp_path / "tfds")
    _raises(error, message, lambda: load_arrays(source, split, **options))
    assert _files(tmp_path) == []


# === io.load_set ===

def _saved(tmp_path, formats=("npz",)):
    rng = np.random.default_rng(0)
    info = DatasetInfo(name="toy", source="npz:/data/toy.npz", num_classes=3,
                       image_shape=(8, 8, 1), class_names=("a", "b", "c"), mean=(0.4,),
                       std=(0.2,), split_sizes={})
    metadata = io.make_metadata(info, method="random", ipc=2)
    synthetic = io.SyntheticSet(rng.random((6, 8, 8, 1), dtype=np.float32),
                                np.repeat(np.arange(3), 2), metadata)
    return io.save_set(tmp_path / "set", synthetic, formats=formats)


def _metadata(**changes):
    def damage(path):
        metadata = json.loads((path / "metadata.json").read_text())
        metadata.update(changes)
        (path / "metadata.json").write_text(json.dumps(metadata))
    return damage


def _arrays(images=None, labels=None):
    def damage(path):
        with np.load(path / "images.npz") as npz:
            arrays = {"images": npz["images"], "labels": npz["labels"]}
        arrays.update({k: v for k, v in (("images", images), ("labels", labels))
                       if v is not None})
        np.savez(path / "images.npz", **arrays)
    return damage


def _one_record_feature(**replace):
    """Rewrites synthetic.tfrecord with one feature of every record replaced."""
    def damage(path):
        file = path / "synthetic.tfrecord"
        records = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(
            str(file))]
        for record in records:
            for key, feature in replace.items():
                record.features.feature[key].CopyFrom(feature)
        with tf.io.TFRecordWriter(str(file)) as writer:
            for record in records:
                writer.write(record.SerializeToString())
    return damage


LOAD_SET = [
    ("truncated_npz", "npz", lambda p: _cut(p / "images.npz", 200), ValueError,
     r"set/images\.npz is not a readable \.npz file \(.*\); re-save the set\.$"),
    ("empty_npz", "npz", lambda p: (p / "images.npz").write_bytes(b""), ValueError,
     r"set/images\.npz is not a readable \.npz file \(.*\); re-save the set\.$"),
    ("metadata_not_utf8", "npz", lambda p: (p / "metadata.json").write_bytes(b"\xff\xfe{"),
     ValueError, r"set/metadata\.json is not valid JSON \(.*\); re-save the set\.$"),
    ("metadata_nan_mean", "npz", _metadata(mean=[NAN]), ValueError,
     r"set: metadata has mean=\[nan\]; expected one finite number per channel \(1\)\.$"),
    ("metadata_std_negative", "npz", _metadata(std=[-0.2]), ValueError,
     r"set: metadata has std=\[-0\.2\]; expected one positive finite number per channel"),
    ("metadata_two_means_one_channel", "npz", _metadata(mean=[0.1, 0.2]), ValueError,
     r"set: metadata has mean=\[0\.1, 0\.2\]; expected one finite number per channel \(1\)\.$"),
    ("metadata_num_classes_zero", "npz", _metadata(num_classes=0), ValueError,
     r"set: metadata has num_classes=0; expected a positive integer\.$"),
    ("metadata_ipc_text", "npz", _metadata(ipc="2"), ValueError,
     r"set: metadata has ipc='2'; expected a positive integer\.$"),
    ("metadata_unknown_method", "npz", _metadata(method="mtt"), ValueError,
     r"set: metadata has method='mtt'; expected one of m3d, dm, random, herding, kcenter\.$"),
    ("metadata_rank_two_shape", "npz", _metadata(image_shape=[8, 8]), ValueError,
     r"set: metadata has image_shape=\[8, 8\]; expected \[height, width, channels\]\.$"),
    ("uint8_pixels", "npz", _arrays(images=np.zeros((6, 8, 8, 1), np.uint8)), ValueError,
     r"set: images must be float in \[0, 1\]\. Received dtype uint8 \(divide uint8 images by "
     r"255\)\.$"),
    ("inf_pixels", "npz", _arrays(images=np.full((6, 8, 8, 1), INF, np.float32)), ValueError,
     r"set: images hold 384 NaN or infinite pixels; re-create the set\.$"),
    ("flat_images", "npz", _arrays(images=np.zeros((6, 64), np.float32)), ValueError,
     r"set: images have shape \(6, 64\) but the metadata \(num_classes=3, ipc=2, image_shape="
     r"\[8, 8, 1\]\) needs \(6, 8, 8, 1\)\.$"),
    ("fewer_labels", "npz", _arrays(labels=np.array([0, 0, 1, 1, 2])), ValueError,
     r"set: labels must be integers of shape \(6,\)\. Received int64 \(5,\)\.$"),
    ("float_labels", "npz", _arrays(labels=np.repeat(np.arange(3.0), 2)), ValueError,
     r"set: labels must be integers of shape \(6,\)\. Received float64 \(6,\)\.$"),
    ("tfrecord_image_as_floats", "tfrecord", _one_record_feature(image=_floats([0.5] * 64)),
     ValueError, r"record 0 of .*synthetic\.tfrecord: feature 'image' holds 64 value\(s\) of "
                 r"float_list, not one bytes value; write the examples with m3d_tf\.io"),
    ("tfrecord_height_as_bytes", "tfrecord", _one_record_feature(height=_raw(np.uint8([8]))),
     ValueError, r"record 0 of .*: feature 'height' holds 1 value\(s\) of bytes_list, not one "
                 r"int64"),
    ("tfrecord_label_as_floats", "tfrecord", _one_record_feature(label=_floats([1.0])),
     ValueError, r"record 0 of .*: feature 'label' holds 1 value\(s\) of float_list, not one "
                 r"int64"),
    ("tfrecord_truncated", "tfrecord", lambda p: _cut(p / "synthetic.tfrecord", -30), ValueError,
     r"synthetic\.tfrecord is not a readable TFRecord \(compression: none; .*\)\.$"),
]


@pytest.mark.parametrize("formats, damage, error, message", [row[1:] for row in LOAD_SET],
                         ids=[row[0] for row in LOAD_SET])
def test_load_set(tmp_path, formats, damage, error, message):
    path = _saved(tmp_path, (formats,))
    damage(path)
    before = _files(tmp_path)
    _raises(error, message, lambda: io.load_set(path))
    assert _files(tmp_path) == before


# === checkpoints.restore_checkpoint (m3d condense --resume) ===

SMALL = dict(num_classes=3, image_shape=(8, 8, 1), ipc=2, factor=1, net_width=8)


def _checkpointed(tmp_path, pixels=None, **config):
    """A checkpoint at iteration 2 of a small condenser, written as CheckpointCallback does."""
    condenser = M3DCondenser(**{**SMALL, **config})
    condenser.compile()
    condenser.pixels.assign(np.full(condenser.pixels.shape, 0.5, np.float32)
                            if pixels is None else pixels)
    condenser.optimizer.iterations.assign(2)
    manager = tf.train.CheckpointManager(checkpoints._checkpoint(condenser),
                                         str(tmp_path / "ckpt"), max_to_keep=2)
    manager.save(checkpoint_number=2)
    return tmp_path / "ckpt"


def _damaged_checkpoint(damage, **config):
    def make(tmp_path):
        directory = _checkpointed(tmp_path, **config)
        damage(directory)
        return directory
    return make


HOW = r"; delete .*ckpt to start over, or start a new --out\.$"
RESTORE = [
    ("garbage_index", _damaged_checkpoint(lambda d: (d / "ckpt-2.index").write_bytes(b"\0" * 64)),
     r"^checkpoint .*ckpt/ckpt-2 is corrupt, truncated or of another condenser \(.*\)" + HOW),
    ("truncated_data", _damaged_checkpoint(
        lambda d: _cut(d / "ckpt-2.data-00000-of-00001", 100)),
     r"^checkpoint .*ckpt/ckpt-2 is corrupt, truncated or of another condenser \(.*\)" + HOW),
    ("missing_data", _damaged_checkpoint(lambda d: os.remove(d / "ckpt-2.data-00000-of-00001")),
     r"^checkpoint .*ckpt/ckpt-2 is corrupt, truncated or of another condenser \(.*\)" + HOW),
    ("garbage_state_file", _damaged_checkpoint(
        lambda d: (d / "checkpoint").write_text("model_checkpoint_path: {{{")),
     r"^.*ckpt/checkpoint cannot be read \(it names no checkpoint\)" + HOW),
    ("another_condenser", _damaged_checkpoint(lambda d: None, ipc=3),
     r"^checkpoint .*ckpt/ckpt-2 is corrupt, truncated or of another condenser \(.*\)" + HOW),
    ("nan_pixels", lambda p: _checkpointed(p, pixels=np.full((6, 8, 8, 1), NAN, np.float32)),
     r"^checkpoint .*ckpt/ckpt-2 holds 384 NaN or infinite pixels" + HOW),
    ("pixels_above_one", lambda p: _checkpointed(p, pixels=np.full((6, 8, 8, 1), 2, np.float32)),
     r"^checkpoint .*ckpt/ckpt-2 holds pixels in \[2, 2\], not \[0, 1\]" + HOW),
]


@pytest.mark.parametrize("make, message", [row[1:] for row in RESTORE],
                         ids=[row[0] for row in RESTORE])
def test_restore_checkpoint(tmp_path, make, message):
    directory = make(tmp_path)
    before = _files(directory)
    condenser = M3DCondenser(**SMALL)
    condenser.compile()
    _raises(ValueError, message, lambda: checkpoints.restore_checkpoint(condenser, directory))
    assert _files(directory) == before


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", r"run\.json holds no JSON object; delete .* to start over, or start a new --out"),
    ("\udcff", r"run\.json is not valid JSON \(.*\); delete .* to start over"),
], ids=["not_an_object", "not_utf8"])
def test_read_run(tmp_path, text, message):
    (tmp_path / "run.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    _raises(ValueError, message, lambda: checkpoints.read_run(tmp_path))


# === evaluate.evaluate ===

def _tiny():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(20, 12, 12, 1)).astype(np.float32), np.repeat(np.arange(2), 10)


EVALUATE = [
    ("train_images_flat", dict(train_images=lambda x: x.reshape(20, -1)),
     r"^train_images must be \(N, H, W, C\) with N >= 1\. Received shape \(20, 144\)\.$"),
    ("train_images_empty", dict(train_images=lambda x: x[:0]),
     r"^train_images must be \(N, H, W, C\) with N >= 1\. Received shape \(0, 12, 12, 1\)\.$"),
    ("train_images_int32", dict(train_images=lambda x: (x * 255).astype(np.int32)),
     r"^train_images must be uint8 or float in \[0, 1\]\. Received dtype int32\.$"),
    ("train_images_nan", dict(train_images=lambda x: np.where(x > 0.5, NAN, x)),
     r"^train_images hold \d+ NaN or infinite values; give finite pixels in \[0, 1\]"),
    ("test_images_inf", dict(test_images=lambda x: np.full_like(x, INF)),
     r"^test_images hold 2880 NaN or infinite values; give finite pixels in \[0, 1\]"),
    ("test_images_rgb", dict(test_images=lambda x: np.repeat(x, 3, axis=-1)),
     r"^test_images have shape \(12, 12, 3\) per image but the training set has \(12, 12, 1\); "
     r"evaluate a set against the dataset it was condensed from\.$"),
    ("train_labels_column", dict(train_labels=lambda y: y[:, None]),
     r"^train_labels must be integers of shape \(20,\)\. Received int64 \(20, 1\)\.$"),
    ("train_labels_fewer", dict(train_labels=lambda y: y[:-1]),
     r"^train_labels must be integers of shape \(20,\)\. Received int64 \(19,\)\.$"),
    ("train_labels_float_no_num_classes", dict(train_labels=lambda y: np.where(y, NAN, 0.0),
                                               num_classes=None),
     r"^train_labels must be integers of shape \(20,\)\. Received float64 \(20,\)\.$"),
    ("test_labels_empty_no_num_classes", dict(test_labels=lambda y: y[:0], num_classes=None),
     r"^test_labels must be integers of shape \(20,\)\. Received int64 \(0,\)\.$"),
    ("test_labels_negative", dict(test_labels=lambda y: y - 1),
     r"^test_labels lie in \[-1, 0\] but num_classes=2; evaluate against data with the same "
     r"classes\.$"),
    ("num_classes_one", dict(num_classes=1),
     r"^train_labels lie in \[0, 1\] but num_classes=1; evaluate against data with the same "
     r"classes\.$"),
    ("num_classes_zero", dict(num_classes=0),
     r"^num_classes must be a positive integer\. Received num_classes=0\.$"),
    ("mean_nan", dict(mean=(NAN,)),
     r"^mean must be finite per channel\. Received mean=\(nan,\)\.$"),
    ("std_negative", dict(std=(-0.25,)),
     r"^std must be positive per channel\. Received std=\(-0\.25,\)\.$"),
    ("std_text", dict(std="wide"),
     r"^std must be numbers, one per channel \(1\)\. Received std='wide'\.$"),
    ("validation_not_a_pair", dict(validation=lambda x, y: x),
     r"^validation must be an \(images, labels\) pair of held-out real training data\. "
     r"Received ndarray\.$"),
    ("validation_other_size", dict(validation=lambda x, y: (x[:, :6, :6], y)),
     r"^validation images have shape \(6, 6, 1\) per image; expected \(12, 12, 1\) like the "
     r"training set\.$"),
]


@pytest.mark.parametrize("change, message", [row[1:] for row in EVALUATE],
                         ids=[row[0] for row in EVALUATE])
def test_evaluate(change, message):
    x, y = _tiny()
    args = dict(train_images=x, train_labels=y, test_images=x, test_labels=y)
    kwargs = dict(mean=(0.5,), std=(0.25,), epochs=1, runs=1, arch="mlp", num_classes=2)
    for key, value in change.items():
        if key in args:
            args[key] = value(args[key])
        elif key == "validation":
            kwargs[key] = value(x, y)
        else:
            kwargs[key] = value
    _raises(ValueError, message, lambda: ev.evaluate(
        args["train_images"], args["train_labels"], args["test_images"], args["test_labels"],
        **kwargs))


# === The `m3d` command: exit status 2, one "m3d: error: ..." line, nothing written ===

@pytest.fixture(scope="module")
def cli_data(fmnist_small, tmp_path_factory):
    """npz sources (3 classes, 40 train and 30 test images each) and a saved random subset."""
    root = tmp_path_factory.mktemp("cli")

    def npz(name, offset=0, **extra):
        def first(images, labels, count):
            keep = np.concatenate([np.flatnonzero(labels == c + offset)[:count] for c in range(3)])
            return images[keep], labels[keep] - offset

        x_train, y_train = first(fmnist_small.x_train, fmnist_small.y_train, 40)
        x_test, y_test = first(fmnist_small.x_test, fmnist_small.y_test, 30)
        np.savez(root / name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                 **extra)
        return f"npz:{root / name}"

    paths = {
        "npz": npz("small.npz"),
        "other": npz("other.npz", offset=3),  # classes 3..5 as 0..2: same count and shape
        "named": npz("named.npz", class_names=np.array(["x", "y", "z"])),
        "constant": f"npz:{root / 'constant.npz'}",
        "corrupt": f"npz:{root / 'corrupt.npz'}",
        "set": root / "set",
        "truncated_set": root / "truncated_set",
        "not_a_set": root / "not_a_set",
    }
    np.savez(root / "constant.npz", x_train=np.full((9, 8, 8, 1), 3, np.uint8),
             y_train=np.arange(9) % 3)
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    for name in ("set", "truncated_set"):
        assert cli.main(["baseline", "--method", "random", "--dataset", paths["npz"], "--ipc",
                         "2", "--out", str(paths[name])]) == 0
    _cut(paths["truncated_set"] / "images.npz", 100)
    paths["not_a_set"].mkdir()
    return paths


def _corrupt_checkpoint(paths, out):
    """OUT.checkpoint as `m3d condense` leaves it, with the same settings and a garbage index."""
    directory = out.with_name(out.name + ".checkpoint")
    directory.mkdir()
    run = {"dataset": paths["npz"], "ipc": 2, "recipe": "m3d", "iterations": 4, "seed": 0,
           "learning_rate": None, "overrides": {"real_per_class": 8}, "learning_rate_used": 2.0}
    (directory / "run.json").write_text(json.dumps(run))
    (directory / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n')
    (directory / "ckpt-2.index").write_bytes(b"\0" * 64)
    (directory / "ckpt-2.data-00000-of-00001").write_bytes(b"\0" * 64)


# --no-flip declares the own data's mirroring, so that no note precedes the one error line.
CONDENSE = ("condense", "--ipc", "2", "--real-per-class", "8", "--iterations", "2", "--no-flip")
CLI = [
    ("no_command", lambda p: [],
     r"the following arguments are required: command \(see m3d --help\)$"),
    ("unknown_command", lambda p: ["fit"], r"argument command: invalid choice: 'fit'"),
    ("condense_ipc_zero", lambda p: [*CONDENSE, "--ipc", "0", "--dataset", p["npz"]],
     r"argument --ipc: must be a positive integer, got 0 \(see m3d condense --help\)$"),
    ("condense_ipc_text", lambda p: [*CONDENSE, "--ipc", "ten", "--dataset", p["npz"]],
     r"argument --ipc: must be a positive integer, got ten \(see m3d condense --help\)$"),
    ("condense_lr_negative", lambda p: [*CONDENSE, "--lr", "-1", "--dataset", p["npz"]],
     r"argument --lr: must be a positive number, got -1 \(see m3d condense --help\)$"),
    ("condense_lr_nan", lambda p: [*CONDENSE, "--lr", "nan", "--dataset", p["npz"]],
     r"argument --lr: must be a positive number, got nan \(see m3d condense --help\)$"),
    ("condense_seed_negative", lambda p: [*CONDENSE, "--seed", "-1", "--dataset", p["npz"]],
     r"argument --seed: must be a non-negative integer, got -1 \(see m3d condense --help\)$"),
    ("condense_strategy_unknown", lambda p: [*CONDENSE, "--strategy", "tpu"],
     r"argument --strategy: invalid choice: 'tpu' \(choose from"),
    ("condense_without_out", lambda p: [*CONDENSE, "--dataset", p["npz"], "--out", None],
     r"the following arguments are required: --out \(see m3d condense --help\)$"),
    ("condense_unknown_recipe", lambda p: [*CONDENSE, "--recipe", "m4d", "--dataset", p["npz"]],
     r"Unknown recipe 'm4d'\. Known recipes: dm, m3d\.$"),
    ("condense_unknown_kernel", lambda p: [*CONDENSE, "--kernel", "gauss", "--dataset", p["npz"]],
     r"Unknown kernel='gauss'; valid choices: gaussian_mix, linear, polynomial, rbf_fixed\.$"),
    ("condense_unknown_init", lambda p: [*CONDENSE, "--init", "zeros", "--dataset", p["npz"]],
     r"Unknown init='zeros'; valid choices: mix, real, noise\.$"),
    ("condense_constant_images", lambda p: [*CONDENSE, "--dataset", p["constant"]],
     r"constant\.npz split 'train': channel 0 has mean 0\.0117647 and standard deviation 0: "
     r"every pixel holds the same value"),
    ("condense_corrupt_npz", lambda p: [*CONDENSE, "--dataset", p["corrupt"]],
     r"npz file .*corrupt\.npz is not a readable \.npz \(BadZipFile: .*\); save it again"),
    ("condense_real_per_class_too_big", lambda p: [*CONDENSE, "--dataset", p["npz"],
                                                   "--real-per-class", "64"],
     r"class 0 of npz:.*small\.npz has 40 training images; --real-per-class 64 needs at least "
     r"64\. Lower --real-per-class\.$"),
    ("condense_ipc_too_big_for_its_init", lambda p: [*CONDENSE, "--dataset", p["npz"],
                                                     "--ipc", "20"],
     r"class 0 has 40 training images; init='mix' with ipc=20 and factor=2 needs 80\. Lower ipc "
     r"or factor, or use init='noise'\.$"),
    ("condense_resume_corrupt_checkpoint", lambda p: [*CONDENSE, "--dataset", p["npz"],
                                                      "--iterations", "4", "--resume"],
     r"checkpoint .*out\.checkpoint/ckpt-2 is corrupt, truncated or of another condenser "
     r"\(.*\); delete .*out\.checkpoint to start over, or start a new --out\.$"),
    ("evaluate_truncated_set", lambda p: ["evaluate", p["truncated_set"]],
     r"truncated_set/images\.npz is not a readable \.npz file \(.*\); re-save the set\.$"),
    ("evaluate_other_data_same_shape", lambda p: ["evaluate", p["set"], "--dataset", p["other"]],
     r"the set was condensed from 'small' \(npz:.*small\.npz; classes 0, 1, 2\) but npz:.*"
     r"other\.npz is npz:.*other\.npz \(classes 0, 1, 2\); evaluate it against the dataset it "
     r"was condensed from, or pass --allow-other-data\.$"),
    ("evaluate_other_class_names", lambda p: ["evaluate", p["set"], "--dataset", p["named"]],
     r"\(classes x, y, z\); evaluate it against the dataset it was condensed from, or pass "
     r"--allow-other-data\.$"),
    ("evaluate_unknown_dataset", lambda p: ["evaluate", p["set"], "--dataset", "nosuch"],
     r"unknown dataset 'nosuch'; known names: "),
    ("evaluate_unknown_arch", lambda p: ["evaluate", p["set"], "--dataset", p["npz"], "--arch",
                                         "lenet"],
     r"Unknown arch='lenet'; valid choices: convnet, mlp, alexnet, vgg11, resnet18\.$"),
    ("evaluate_unknown_protocol", lambda p: ["evaluate", p["set"], "--protocol", "mtt"],
     r"argument --protocol: invalid choice: 'mtt' \(choose from .*\) \(see m3d evaluate --help\)$"),
    ("evaluate_epochs_zero", lambda p: ["evaluate", p["set"], "--epochs", "0"],
     r"argument --epochs: must be a positive integer, got 0 \(see m3d evaluate --help\)$"),
    ("baseline_unknown_method", lambda p: ["baseline", "--method", "best", "--dataset", p["npz"]],
     r"argument --method: invalid choice: 'best'"),
    ("baseline_ipc_too_big", lambda p: ["baseline", "--method", "random", "--dataset", p["npz"],
                                        "--ipc", "50", "--no-flip"],
     r"class 0 has 40 training images; baseline 'random' with ipc=50 needs 50\. Lower ipc\.$"),
    ("baseline_constant_images", lambda p: ["baseline", "--method", "herding", "--dataset",
                                            p["constant"]],
     r"constant\.npz split 'train': channel 0 has mean .* and standard deviation 0"),
    ("show_not_a_set", lambda p: ["show", p["not_a_set"]],
     r"not_a_set/metadata\.json is missing; a saved set is a directory with metadata\.json"),
    ("main_ipc_zero", lambda p: ["main", "--ipc", "0"],
     r"argument --ipc: must be a positive integer, got 0 \(see m3d main --help\)$"),
    ("main_out_exists", lambda p: ["main"], r"--out .*out already exists; choose a new directory"),
]


@pytest.mark.parametrize("argv, message", [row[1:] for row in CLI], ids=[row[0] for row in CLI])
def test_cli(cli_data, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    argv = [str(a) for a in argv(cli_data)]
    needs_out = argv and argv[0] in ("condense", "baseline", "main")
    if "--out" in argv:  # the row drops --out
        argv = argv[:argv.index("--out")]
    elif needs_out:
        argv += ["--out", str(out)]
    if argv and argv[0] == "condense":
        argv += ["--cache-dir", str(tmp_path / "cache")]
    if "--resume" in argv:
        _corrupt_checkpoint(cli_data, out)
    if argv == ["main", "--out", str(out)]:  # main_out_exists
        (out / "kept").mkdir(parents=True)
    before = _files(tmp_path / "out"), _files(tmp_path / "out.checkpoint")
    status = cli.main(argv)
    stdout, stderr = capsys.readouterr()
    assert status == 2, stderr
    assert stderr.startswith("m3d: error: ") and stderr.count("\n") == 1, stderr
    assert re.search(message, stderr.rstrip("\n")), stderr
    assert (_files(tmp_path / "out"), _files(tmp_path / "out.checkpoint")) == before
    assert not any(tmp_path.glob(".out.saving-*"))


def test_cli_evaluates_other_data_when_told_to(cli_data, capsys):
    status = cli.main(["evaluate", str(cli_data["set"]), "--dataset", cli_data["other"],
                       "--allow-other-data", "--epochs", "1", "--runs", "1", "--arch", "mlp"])
    stdout, stderr = capsys.readouterr()
    assert status == 0, stderr
    row = stdout.strip().splitlines()[-1].split()
    assert row[:3] == [str(cli_data["set"]), "random", "2"] and 0 <= float(row[-3]) <= 100


# === Components: the executors' Do and the Trainer module's run_fn, on hand-built artifacts ===

from components import condense, dataset_gen, trainer_module  # noqa: E402
from test_component_condense import (  # noqa: E402
    PARAMS, _assert_nothing_published, _examples, _info, _outputs, _sample)
from test_component_trainer_module import _condensed, _fn_args  # noqa: E402
from tfx.types import artifact_utils, standard_artifacts  # noqa: E402


def _int(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _m3d_record(image=None, label=None, height=None):
    """One record in m3d_tf.io's layout (28x28x1 float32 bytes), with features replaced."""
    pixels = np.full((28, 28, 1), 0.5, "<f4")
    feature = {"image": image or _raw(pixels), "label": label or _int(0),
               "height": height or _int(28), "width": _int(28), "channels": _int(1)}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_split(directory, records):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "data_tfrecord-00000-of-00001.gz")
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for record in records:
            writer.write(record)


def _with_train_records(records, info=True):
    """Examples whose Split-train holds `records` (Split-eval: 10 good images)."""
    def make(tmp_path, fmnist_small):
        examples = standard_artifacts.Examples()
        examples.uri = str(tmp_path / "examples")
        _write_split(os.path.join(examples.uri, "Split-train"), records)
        dataset_gen.write_split(os.path.join(examples.uri, "Split-eval"),
                                fmnist_small.x_test[:10], fmnist_small.y_test[:10])
        if info:
            dataset_gen.describe_examples(examples, ("train", "eval"), _info(fmnist_small))
        else:
            examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
        return examples
    return make


def _good(info_change=None, dataset_info=None):
    """Real examples (10 images per class), their dataset_info changed or replaced."""
    def make(tmp_path, fmnist_small):
        import dataclasses
        info = dataclasses.replace(_info(fmnist_small), **(info_change or {}))
        examples = _examples(tmp_path / "examples", *_sample(fmnist_small), info)
        if dataset_info is not None:
            examples.set_string_custom_property("dataset_info", dataset_info)
        return examples
    return make


WHERE = r"^M3DCondense: input examples at .*examples, Split-train: "
M3D_CONDENSE = [
    ("image_as_floats", _with_train_records([_m3d_record(image=_floats([0.5] * 784))]), {},
     WHERE + r"record 0 of .*: feature 'image' holds 784 value\(s\) of float_list, not one bytes "
             r"value; write the examples with m3d_tf\.io\.write_examples \(or DatasetGen\)\. The "
             r"examples need features image \(float32 bytes\), label"),
    ("height_as_bytes", _with_train_records([_m3d_record(height=_raw(np.uint8([28])))]), {},
     WHERE + r"record 0 of .*: feature 'height' holds 1 value\(s\) of bytes_list, not one int64"),
    ("label_as_floats", _with_train_records([_m3d_record(label=_floats([1.0]))]), {},
     WHERE + r"record 0 of .*: feature 'label' holds 1 value\(s\) of float_list, not one int64"),
    ("nan_pixels", _with_train_records([_m3d_record(image=_raw(np.full((28, 28, 1), NAN, "<f4")))]),
     {}, WHERE + r"the records, chunk 0: float images must be in \[0, 1\] \(NaN is not\)\."),
    ("pixels_above_one", _with_train_records([_m3d_record(image=_raw(np.full((28, 28, 1), 2.0,
                                                                              "<f4")))]),
     {}, WHERE + r"the records, chunk 0: float images must be in \[0, 1\] \(NaN is not\)\. Divide "
                 r"0-255 pixels by 255"),
    ("constant_images_no_dataset_info", _with_train_records(
        [_m3d_record(label=_int(c)) for c in range(10)] * 8, info=False), {},
     WHERE + r"channel 0 has mean 0\.5 and standard deviation 0: every pixel holds the same value"),
    ("dataset_info_std_zero", _good({"std": (0.0,)}), {},
     WHERE + r"channel 0 has mean 0\.286 and standard deviation 0"),
    ("dataset_info_not_json", _good(dataset_info="{oops"), {},
     r"^M3DCondense: input examples at .*examples: their property dataset_info is not valid JSON "
     r"\(.*\)\. Regenerate them with DatasetGen\.$"),
    ("ipc_zero", _good(), {"ipc": 0},
     r"^M3DCondense: ipc must be a positive integer\. Received ipc=0; fix the component's ipc= "
     r"argument\.$"),
    ("seed_negative", _good(), {"seed": -1},
     r"^M3DCondense: seed must be a non-negative integer\. Received seed=-1; fix the "),
    ("iterations_zero", _good(), {"iterations": 0},
     r"^M3DCondense: iterations must be a positive integer\. Received iterations=0; fix the "),
    ("learning_rate_negative", _good(), {"learning_rate": -0.1},
     r"^M3DCondense: learning_rate must be a positive finite number \(or None for the recipe's\)\."
     r" Received learning_rate=-0\.1;"),
    ("real_per_class_zero", _good(), {"real_per_class": 0},
     r"^M3DCondense: real_per_class must be a positive integer\. Received real_per_class=0;"),
    ("factor_that_does_not_divide", _good(), {"factor": 3}, r"factor=3 does not divide"),
    ("unknown_kernel", _good(), {"kernel": "gauss"}, r"^Unknown kernel='gauss'; valid choices"),
]


@pytest.mark.tfx
@pytest.mark.parametrize("make, params, message", [row[1:] for row in M3D_CONDENSE],
                         ids=[row[0] for row in M3D_CONDENSE])
def test_m3d_condense_executor(tmp_path, fmnist_small, make, params, message):
    examples = make(tmp_path, fmnist_small)
    outputs = _outputs(tmp_path)
    _raises(ValueError, message, lambda: condense.Executor().Do(
        {"examples": [examples]}, outputs, {**PARAMS, **params}))
    _assert_nothing_published(tmp_path, outputs)


def _npz_source(tmp_path, fmnist_small, *, constant=False, test_label=None):
    keep = np.concatenate([np.flatnonzero(fmnist_small.y_train == c)[:6] for c in range(3)])
    x, y = fmnist_small.x_train[keep], fmnist_small.y_train[keep]
    x = np.full_like(x, 9) if constant else x
    y_test = y.copy()
    if test_label is not None:
        y_test[0] = test_label
    np.savez(tmp_path / "source.npz", x_train=x, y_train=y, x_test=x, y_test=y_test)
    return f"npz:{tmp_path / 'source.npz'}"


DATASET_GEN = [
    ("unknown_source", lambda p, f: "nosuch", {}, ValueError,
     r"^unknown dataset 'nosuch'; known names: "),
    ("corrupt_npz", lambda p, f: (p / "bad.npz").write_bytes(b"junk") and f"npz:{p / 'bad.npz'}",
     {}, ValueError, r"npz file .*bad\.npz is not a readable \.npz"),
    ("constant_images", lambda p, f: _npz_source(p, f, constant=True), {}, ValueError,
     r"source\.npz split 'train': channel 0 has mean 0\.0352941 and standard deviation 0"),
    ("test_label_beyond_train", lambda p, f: _npz_source(p, f, test_label=7), {}, ValueError,
     r"split 'test': label 7 is outside 0\.\.2 \(3 classes\); fix the labels or pass "
     r"num_classes\.$"),
    ("eval_per_class_negative", _npz_source, {"eval_per_class": -1}, ValueError,
     r"^eval_per_class must be an integer >= 0\. Received eval_per_class=-1\.$"),
    ("train_per_class_zero", _npz_source, {"train_per_class": 0}, ValueError,
     r"^train_per_class and test_per_class must be >= 1 \(or None for all images\)\."),
    ("too_few_images_per_class", _npz_source, {"eval_per_class": 6}, ValueError,
     r"^class 0 has 6 training images; eval_per_class=6 and train_per_class=None need 7\. "
     r"Lower them\.$"),
    ("seed_negative", _npz_source, {"seed": -1}, ValueError,
     r"^seed must be an integer >= 0\. Received seed=-1\.$"),
]


@pytest.mark.tfx
@pytest.mark.parametrize("source, params, error, message", [row[1:] for row in DATASET_GEN],
                         ids=[row[0] for row in DATASET_GEN])
def test_dataset_gen_executor(tmp_path, fmnist_small, source, params, error, message):
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    properties = {"source": source(tmp_path, fmnist_small), "eval_per_class": 1, "seed": 0,
                  **params}
    _raises(error, message, lambda: dataset_gen.Executor().Do(
        {}, {"examples": [examples]}, properties))
    assert not (tmp_path / "examples").exists() and not examples.split_names


def _rewrite_train(records):
    def damage(directory):
        for name in os.listdir(os.path.join(directory, "Split-train")):
            os.remove(os.path.join(directory, "Split-train", name))
        _write_split(os.path.join(directory, "Split-train"), records)
    return damage


def _rewrite_metadata(**changes):
    def damage(directory):
        path = os.path.join(directory, "metadata.json")
        metadata = {**json.load(open(path)), **changes}
        json.dump({k: v for k, v in metadata.items() if v is not None}, open(path, "w"))
    return damage


def _eval_of_size(size):
    def damage(directory):
        rng = np.random.default_rng(1)
        for name in os.listdir(os.path.join(directory, "Split-eval")):
            os.remove(os.path.join(directory, "Split-eval", name))
        dataset_gen.write_split(os.path.join(directory, "Split-eval"),
                                rng.uniform(0, 1, (10, size, size, 1)).astype(np.float32),
                                np.arange(10))
    return damage


TRAIN = r"Split-train/\* "
TRAINER = [
    ("image_as_floats", _rewrite_train([_m3d_record(image=_floats([0.5] * 784))]), {},
     ValueError, r"record 0 of .*Split-train/data_tfrecord-00000-of-00001\.gz: feature 'image' "
                 r"holds 784 value\(s\) of float_list, not one bytes value"),
    ("empty_train_split", _rewrite_train([]), {}, ValueError,
     r"Split-train/\* holds no records; write them with m3d_tf\.io\.write_examples\.$"),
    ("nan_pixels", _rewrite_train([_m3d_record(image=_raw(np.full((28, 28, 1), NAN, "<f4")))]),
     {}, ValueError, r"Split-train/\* holds pixels outside \[0, 1\] or not finite; the examples "
                     r"must hold float32 pixels in \[0, 1\]"),
    ("labels_beyond_the_classes", _rewrite_metadata(num_classes=5), {}, ValueError,
     r"Split-train/\* has labels in 0\.\.9 but the set has 5 classes; regenerate the examples"),
    ("metadata_without_std", _rewrite_metadata(std=None), {}, ValueError,
     r"metadata\.json beside .*condensed/Split-train lacks num_classes, mean or std; rerun "
     r"M3DCondense to write it again\.$"),
    ("metadata_std_zero", _rewrite_metadata(std=[0.0]), {}, ValueError,
     r"has num_classes=10, mean=\[0\.3\], std=\[0\.0\]; expected at least 2 classes and finite "
     r"mean/std per channel, std > 0\. Rerun M3DCondense\.$"),
    ("metadata_not_json", lambda d: open(os.path.join(d, "metadata.json"), "w").write("{oops"),
     {}, ValueError, r"metadata\.json is not valid JSON \(.*\); rerun M3DCondense to write it"),
    ("eval_images_of_another_size", _eval_of_size(14), {}, ValueError,
     r"Split-eval/\* holds images of shape \(14, 14, 1\), expected \(28, 28, 1\) as in the "
     r"condensed set; train on M3DCondense's condensed_examples\.$"),
    ("epochs_zero", lambda d: None, {"epochs": 0}, ValueError,
     r"^trainer custom_config epochs=0; it must be an integer >= 1\.$"),
    ("epochs_text", lambda d: None, {"epochs": "300"}, ValueError,
     r"^trainer custom_config epochs='300'; it must be an integer >= 1\.$"),
    ("seed_negative", lambda d: None, {"seed": -2}, ValueError,
     r"^trainer custom_config seed=-2; it must be an integer >= 0\.$"),
    ("flip_text", lambda d: None, {"flip": "no"}, ValueError,
     r"^trainer custom_config flip='no'; it must be true, false or null\.$"),
    ("unknown_protocol", lambda d: None, {"protocol": "mtt"}, ValueError,
     r"^Unknown protocol='mtt'; valid choices: dm, idc\.$"),
    ("unknown_arch", lambda d: None, {"arch": "lenet"}, ValueError,
     r"^Unknown arch='lenet'; valid choices: convnet, mlp, alexnet, vgg11, resnet18\.$"),
]


@pytest.mark.tfx
@pytest.mark.parametrize("damage, config, error, message", [row[1:] for row in TRAINER],
                         ids=[row[0] for row in TRAINER])
def test_trainer_run_fn(tmp_path, fmnist_small, damage, config, error, message):
    directory = str(tmp_path / "condensed")
    keep = np.concatenate([np.flatnonzero(fmnist_small.y_test == c)[:3] for c in range(10)])
    _condensed(directory, fmnist_small.x_test[keep].astype(np.float32) / 255.0,
               fmnist_small.y_test[keep])
    damage(directory)
    _raises(error, message, lambda: trainer_module.run_fn(
        _fn_args(directory, tmp_path, {"epochs": 1, "protocol": "dm", **config})))
    assert not (tmp_path / "serving").exists() and not (tmp_path / "run").exists()

"""A synthetic set on disk: float32 pixels in .npz or TFRecord, JSON metadata, a PNG grid.

A saved set is a directory holding metadata.json (every key of METADATA_KEYS), images.npz
(`images` float32 (C*ipc, H, W, ch) stored pixels in [0, 1], `labels` int64) and/or
synthetic.tfrecord (one tf.Example per stored image), and grid.png (one row per class).
Pixels stay float32, never quantised: rounding the continuous synthetic pixels to 8 bits would
change what a network learns from them. The PNG is for eyes only.

A reloaded set decodes (`SyntheticSet.decoded`, the condenser's own parameterization.decode) and
normalises (`SyntheticSet.normalized`, the dataset's mean/std) exactly like the in-memory one.
Saving validates first, writes a hidden sibling directory, fsyncs it and renames it into place:
an existing set is replaced only with overwrite=True and survives any failure, a full disk
included (DiskFullError names the place; the staging directory is removed). A process that
writes a set for a long time (the `m3d` command) holds `output_lock(directory)` meanwhile, so a
second writer to the same directory stops at once instead of mixing two runs.

Example:
    synthetic = SyntheticSet.from_condenser(condenser, info, iterations=1000, final_mmd=0.01)
    save_set("out/fmnist_ipc10", synthetic)
    images, labels = load_set("out/fmnist_ipc10").decoded()
"""

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import glob
import json
import os
import pathlib
import shutil
import tempfile
import uuid
import zipfile
import zlib

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

from m3d_tf import parameterization

FORMAT_VERSION = 1
DECODE_METHOD = "multi_formation_bilinear"
METHODS = ("m3d", "dm", "random", "herding", "kcenter")
FORMATS = ("npz", "tfrecord")
METADATA_KEYS = (
    "format_version", "method", "dataset", "dataset_source", "num_classes", "class_names",
    "image_shape", "mean", "std", "ipc", "factor", "decode", "kernel", "kernel_options",
    "iterations", "seed", "final_mmd", "library_version", "created",
)
# Keys every new set records but older sets may lack (so loading never requires them): "flip",
# whether training on the set may mirror its images (see set_flip).
LATER_METADATA_KEYS = ("flip",)
# M3DCondenser.get_config keys that configure its kernel (the options of m3d_tf.mmd).
# keras.Model.get_config entries that describe the Keras object, not the condensation.
_KERAS_CONFIG_KEYS = ("name", "trainable", "dtype")
_KERNEL_OPTIONS = ("estimator", "multipliers", "widths", "gammas", "degree", "coef0")
_METADATA, _NPZ, _TFRECORD, _GRID = "metadata.json", "images.npz", "synthetic.tfrecord", "grid.png"
_CONTENTS = (
    f"a saved set is a directory with {_METADATA}, {_NPZ} and/or {_TFRECORD}, and {_GRID}, "
    "written by m3d_tf.io.save_set"
)


# === Image grid (also used by m3d_tf.callbacks) ===

def image_grid(images, labels, num_classes, *, class_names=None, pad=2):
    """Tiles images into one row per class, optionally labelled with the class names.

    Args:
        images: float (N, H, W, ch) in [0, 1] (clipped), ch 1 or 3.
        labels: int (N,) in [0, num_classes); row c holds class c's images in input order.
        num_classes: number of rows C.
        class_names: None, or C strings written (PIL's default font) in a white strip left of
            the rows, when a line of text fits in a row (images at least ~12 pixels high).
        pad: white pixels between and around the images.

    Returns:
        uint8 (C*(H+pad)+pad, strip + K*(W+pad)+pad, ch), K = the largest class count,
        strip = 0 without names; pixel x becomes round(255 x).

    Raises:
        ValueError: a bad image shape, label or number of class names.
    """
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"image_grid needs images (N, H, W, 1 or 3). Received {images.shape}.")
    if len(labels) != len(images) or np.any((labels < 0) | (labels >= num_classes)):
        raise ValueError(
            f"image_grid needs {len(images)} labels in [0, {num_classes}). Received {len(labels)}"
            f" labels in [{labels.min(initial=0)}, {labels.max(initial=0)}]."
        )
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"image_grid needs {num_classes} class names. Received {len(class_names)}."
        )
    _, height, width, channels = images.shape
    columns = max(int(np.bincount(labels, minlength=num_classes).max(initial=1)), 1)
    grid = np.full(
        (num_classes * (height + pad) + pad, columns * (width + pad) + pad, channels), 255, np.uint8
    )
    pixels = np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    column = np.zeros(num_classes, np.int64)
    for image, label in zip(pixels, labels):
        top, left = pad + label * (height + pad), pad + column[label] * (width + pad)
        grid[top:top + height, left:left + width] = image
        column[label] += 1
    if class_names is None:
        return grid
    return _label_rows(grid, [str(name) for name in class_names], height, pad)


def _label_rows(grid, names, row_height, pad):
    """Prepends a white strip with names[c] centred on row c; unchanged if text won't fit."""
    font = ImageFont.load_default()
    boxes = [font.getbbox(name) for name in names]
    text_height = max(box[3] for box in boxes)
    if text_height > row_height:
        return grid
    strip = max(box[2] for box in boxes) + 2 * pad
    gray = grid.shape[-1] == 1
    canvas = Image.new("L" if gray else "RGB", (strip + grid.shape[1], grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid[..., 0] if gray else grid), (strip, 0))
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(names):
        top = pad + c * (row_height + pad) + (row_height - text_height) // 2
        draw.text((pad, top), name, fill="black", font=font)
    return np.asarray(canvas).reshape(grid.shape[0], -1, grid.shape[-1])


# === The set in memory ===

@dataclasses.dataclass(eq=False)
class SyntheticSet:
    """Stored synthetic images, their labels and the metadata that makes them usable.

    Attributes:
        images: float32 (C*ipc, H, W, ch) stored pixels in [0, 1] (other float dtypes are cast).
        labels: int64 (C*ipc,), exactly ipc per class.
        metadata: dict with every key of METADATA_KEYS (see `make_metadata`), kept in its JSON
            form, so a reloaded set's metadata compares equal.

    Raises:
        ValueError: on construction, if arrays and metadata disagree or are invalid.
    """

    images: np.ndarray
    labels: np.ndarray
    metadata: dict

    def __post_init__(self):
        self.metadata = _as_json(self.metadata, "SyntheticSet")
        self.images, self.labels = _check_set(
            self.images, self.labels, self.metadata, "SyntheticSet"
        )

    @classmethod
    def from_condenser(cls, condenser, info, *, iterations, final_mmd=None, method="m3d"):
        """The set an M3DCondenser holds, described by its config and the dataset.

        Args:
            condenser: m3d_tf.condenser.M3DCondenser.
            info: m3d_tf.data.DatasetInfo of the real data (name, class names, mean, std).
            iterations: condensation iterations run.
            final_mmd: total MMD^2 at the end (e.g. history.history["mmd"][-1]), or None.
            method: "m3d", or "dm" for the condenser with the linear kernel.

        The pixel learning rate of a compiled condenser's optimiser is recorded as
        "learning_rate" (None before compile): with iterations, real_per_class and ipm (in
        condenser_config) it is what a rerun needs to make the same set.
        """
        # The method's settings only: Keras' own entries (the layer name, which counts the
        # condensers made in the process, trainable, dtype policy) would make two identical runs
        # save different metadata.
        config = {k: v for k, v in condenser.get_config().items() if k not in _KERAS_CONFIG_KEYS}
        ours = (config["num_classes"], list(config["image_shape"]))
        if ours != (info.num_classes, list(info.image_shape)):
            raise ValueError(
                f"the condenser has (num_classes, image_shape) = {ours} but dataset {info.name!r}"
                f" has {(info.num_classes, list(info.image_shape))}; pass the matching info."
            )
        metadata = make_metadata(
            info, method=method, ipc=config["ipc"], factor=config["factor"],
            kernel=config["kernel"], kernel_options={k: config[k] for k in _KERNEL_OPTIONS},
            iterations=iterations, seed=config["seed"], final_mmd=final_mmd,
            condenser_config=config, learning_rate=_pixel_rate(condenser),
        )
        return cls(condenser.synthetic_images(), condenser.synthetic_labels(), metadata)

    def decoded(self):
        """The training images: parameterization.decode with the stored factor.

        Returns:
            (images float32 (C*ipc*f^2, H, W, ch) in [0, 1], labels int64 (C*ipc*f^2,)).
        """
        factor = self.metadata["factor"]
        images = np.asarray(parameterization.decode(self.images, factor), np.float32)
        labels = np.asarray(parameterization.decode_labels(self.labels, factor), np.int64)
        return images, labels

    def normalized(self, images):
        """(images - mean) / std with the dataset's per-channel mean and std (metadata).

        Args:
            images: float (..., ch) in [0, 1], e.g. `decoded()[0]` or real test images.

        Returns:
            float32, same shape.
        """
        mean = np.asarray(self.metadata["mean"], np.float32)
        std = np.asarray(self.metadata["std"], np.float32)
        return (np.asarray(images, np.float32) - mean) / std


def _pixel_rate(condenser):
    """The current learning rate of a compiled condenser's optimiser (float), else None."""
    optimizer = getattr(condenser, "optimizer", None)
    rate = getattr(optimizer, "learning_rate", None)
    return None if rate is None else float(np.asarray(rate))


def set_flip(metadata):
    """Whether a saved set's images may be mirrored when training on it: the recorded choice
    (metadata "flip", DatasetInfo.flips at condensation), or for sets saved before it was
    recorded, what was done then: flips unless the dataset's name is a digit dataset."""
    if "flip" in metadata:
        return metadata["flip"]
    from m3d_tf.data.catalog import mirroring_by_name

    return mirroring_by_name(metadata.get("dataset"))


def make_metadata(info, *, method, ipc, factor=1, kernel=None, kernel_options=None,
                  iterations=0, seed=None, final_mmd=None, **extra):
    """Metadata of a SyntheticSet: the dataset's description plus how the set was made.

    Args:
        info: m3d_tf.data.DatasetInfo (name, source, num_classes, image_shape, class_names,
            mean, std).
        method: one of METHODS. ipc: stored images per class. factor: multi-formation factor
            (1 for real subsets).
        kernel, kernel_options: the MMD kernel name and its options (None for subsets).
        iterations: condensation iterations (0 for subsets). seed: int or None.
        final_mmd: float or None.
        The dataset's flip (DatasetInfo.flips) is recorded as "flip" (see set_flip).
        **extra: more JSON-serialisable entries kept as given (e.g. condenser_config).

    Returns:
        dict with METADATA_KEYS and `extra`; "created" is the UTC time in ISO 8601.
    """
    import m3d_tf  # at call time: m3d_tf/__init__.py imports this module

    return {
        "format_version": FORMAT_VERSION, "method": method,
        "dataset": info.name, "dataset_source": info.source,
        "num_classes": info.num_classes, "class_names": list(info.class_names),
        "image_shape": list(info.image_shape),
        "mean": np.ravel(info.mean).tolist(), "std": np.ravel(info.std).tolist(),
        "ipc": ipc, "factor": factor, "decode": DECODE_METHOD,
        "kernel": kernel, "kernel_options": kernel_options, "iterations": iterations,
        "seed": seed, "final_mmd": None if final_mmd is None else float(final_mmd),
        "flip": info.flips,
        "library_version": m3d_tf.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


# === Validation (shared by construction, save and load) ===

def _as_json(metadata, where):
    """metadata in its JSON form (tuples -> lists, NumPy scalars -> Python numbers)."""
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: metadata must be a dict. Received {type(metadata).__name__}.")

    def default(value):
        if isinstance(value, (np.generic, np.ndarray)):
            return value.tolist()
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")

    try:
        return json.loads(json.dumps(metadata, default=default, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{where}: metadata must be JSON-serialisable and finite ({error})."
        ) from None


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_numbers(values, length):
    return isinstance(values, list) and len(values) == length and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values
    )


def _check_metadata(m, where):
    missing = [key for key in METADATA_KEYS if key not in m]
    if missing:
        raise ValueError(
            f"{where}: metadata lacks keys {missing}; re-save the set with m3d_tf.io.save_set."
        )
    shape_ok = _is_numbers(m["image_shape"], 3) and all(_is_count(d) for d in m["image_shape"])
    channels = m["image_shape"][2] if shape_ok else 0
    checks = [
        (_is_count(m["format_version"]) and m["format_version"] <= FORMAT_VERSION,
         "format_version", f"1..{FORMAT_VERSION} (a newer m3d_tf wrote it: upgrade)"),
        (m["method"] in METHODS, "method", f"one of {', '.join(METHODS)}"),
        (m["decode"] == DECODE_METHOD, "decode", repr(DECODE_METHOD)),
        (_is_count(m["num_classes"]), "num_classes", "a positive integer"),
        (_is_count(m["ipc"]), "ipc", "a positive integer"),
        (_is_count(m["factor"]), "factor", "a positive integer"),
        (shape_ok, "image_shape", "[height, width, channels]"),
        (isinstance(m["class_names"], list) and len(m["class_names"]) == m["num_classes"],
         "class_names", "one name per class"),
        (_is_numbers(m["mean"], channels), "mean", f"one finite number per channel ({channels})"),
        (_is_numbers(m["std"], channels) and min(m["std"]) > 0, "std",
         f"one positive finite number per channel ({channels})"),
        (isinstance(m.get("flip", False), bool), "flip",
         "true or false (whether a horizontal flip keeps an image's class)"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise ValueError(f"{where}: metadata has {key}={m[key]!r}; expected {expected}.")
    try:
        parameterization.validate_factor(m["image_shape"], m["factor"])
    except ValueError as error:
        raise ValueError(f"{where}: metadata: {error}") from None


def _check_set(images, labels, metadata, where):
    """Validates arrays against the metadata; returns (float32 images, int64 labels)."""
    _check_metadata(metadata, where)
    images, labels = np.asarray(images), np.asarray(labels)
    num_classes, ipc = metadata["num_classes"], metadata["ipc"]
    expected = (num_classes * ipc, *metadata["image_shape"])
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"{where}: images must be float in [0, 1]. Received dtype {images.dtype} "
            "(divide uint8 images by 255)."
        )
    if images.shape != expected:
        raise ValueError(
            f"{where}: images have shape {images.shape} but the metadata (num_classes="
            f"{num_classes}, ipc={ipc}, image_shape={metadata['image_shape']}) needs {expected}."
        )
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{where}: labels must be integers of shape ({len(images)},). "
            f"Received {labels.dtype} {labels.shape}."
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"{where}: labels lie in [{labels.min()}, {labels.max()}] but num_classes="
            f"{num_classes} needs [0, {num_classes})."
        )
    counts = np.bincount(labels, minlength=num_classes)
    if np.any(counts != ipc):
        c = int(np.argmax(counts != ipc))
        raise ValueError(
            f"{where}: class {c} has {counts[c]} images but the metadata says ipc={ipc}."
        )
    images = images.astype(np.float32, copy=False)
    bad = int(np.size(images) - np.isfinite(images).sum())
    if bad:
        raise ValueError(f"{where}: images hold {bad} NaN or infinite pixels; re-create the set.")
    if images.min() < 0.0 or images.max() > 1.0:
        raise ValueError(
            f"{where}: pixels lie in [{images.min():g}, {images.max():g}]; stored pixels must be "
            "unnormalised in [0, 1] (the metadata mean/std normalise them)."
        )
    return images, labels.astype(np.int64, copy=False)


# === Saving and loading ===

def _write_png(path, grid):
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path, format="PNG")


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_set(directory, synthetic_set, *, overwrite=False, formats=("npz",)):
    """Writes a SyntheticSet as a directory, atomically.

    Args:
        directory: the target; it must not exist, be empty, or (with overwrite=True) hold a
            saved set. Missing parents are created.
        synthetic_set: SyntheticSet.
        overwrite: replace an existing saved set.
        formats: non-empty subset of FORMATS: "npz" (images.npz), "tfrecord" (synthetic.tfrecord).

    Returns:
        pathlib.Path of the saved set.

    Raises:
        FileExistsError: the target is not empty and overwrite is False, or it is not a saved
            set (no metadata.json) and would be deleted.
        ValueError: bad formats or an invalid set (nothing is written).
    """
    formats = tuple(formats)
    if not formats or any(f not in FORMATS for f in formats):
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}. Received {formats}.")
    metadata = _as_json(synthetic_set.metadata, "save_set")
    images, labels = _check_set(synthetic_set.images, synthetic_set.labels, metadata, "save_set")
    target = pathlib.Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not overwrite:
            raise FileExistsError(
                f"{target} already exists; pass overwrite=True to replace it or choose another "
                "directory."
            )
        if not (target / _METADATA).is_file():
            raise FileExistsError(
                f"{target} exists and is not a saved set (no {_METADATA}); refusing to replace "
                "it. Choose another directory."
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_staged(target, metadata, images, labels, formats)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = " and the earlier set there is kept" if target.exists() else ""
            raise DiskFullError(
                f"no space left on the disk holding {target.parent} while saving {target}; "
                f"nothing was saved{kept}. Free some space there or save elsewhere."
            ) from None
        raise
    return target


def _write_staged(target, metadata, images, labels, formats):
    """save_set's writing: a hidden sibling, fsynced, renamed into place; removed on failure."""
    staging = pathlib.Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
    try:
        (staging / _METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        if "npz" in formats:
            np.savez(staging / _NPZ, images=images, labels=labels)
        if "tfrecord" in formats:
            write_examples(staging / _TFRECORD, images, labels)
        grid = image_grid(
            images, labels, metadata["num_classes"], class_names=metadata["class_names"]
        )
        _write_png(staging / _GRID, grid)
        for path in [*staging.iterdir(), staging]:
            _fsync(path)
        if target.exists():
            # The old set moves aside first and comes back if the final rename fails.
            aside = target.parent / f".{target.name}.replaced-{uuid.uuid4().hex[:8]}"
            os.rename(target, aside)
            try:
                os.rename(staging, target)
            except BaseException:
                os.rename(aside, target)
                raise
            _fsync(target.parent)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(staging, target)
            _fsync(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _staging_prefix(target):
    return f".{target.name}.saving-"


class DiskFullError(OSError):
    """A set did not fit on its disk (ENOSPC or EDQUOT); nothing partial was left."""


class OutputLocked(FileExistsError):
    """Another process holds the output's lock: it is writing the same directory now."""


@contextlib.contextmanager
def output_lock(directory):
    """Holds `DIRECTORY.lock` (an exclusive fcntl.flock) while the caller writes `directory`.

    One writer per output: two runs saving (and checkpointing) into the same place would leave a
    set made of both. The lock is the kernel's, not the file's: a writer killed by SIGKILL
    releases it with its last file descriptor, and the file it leaves behind blocks nobody.
    Holding the lock, it removes what a killed writer's save_set left (hidden staging
    directories of `directory`); no other process can be using them.

    The file is unlinked on release; a process that opened it just before checks, once it holds
    the lock, that the path still names the file it locked, else it tries again.

    Args:
        directory: the output (need not exist); its parent is created if missing.

    Raises:
        OutputLocked: another live process holds the lock (never waits).
    """
    target = pathlib.Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f"{target.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputLocked(
                f"{target} is being written by another process (pid {holder}, lock {path}); "
                "wait for it to finish or choose another output directory."
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # unlinked by its last holder meanwhile: lock the file that is there now
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        for stale in target.parent.glob(f"{glob.escape(_staging_prefix(target))}*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def load_set(directory):
    """Reads and validates a set written by `save_set`.

    Args:
        directory: the saved set's directory.

    Returns:
        SyntheticSet, pixels from images.npz, or from synthetic.tfrecord when there is no npz.

    Raises:
        FileNotFoundError: the directory, metadata.json, or both image files are missing.
        ValueError: unreadable JSON, npz or TFRecord; missing metadata keys (named); arrays
            that disagree with the metadata; labels out of range; NaN or out-of-range pixels.
    """
    path = pathlib.Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"no saved set at {path}: no such directory; {_CONTENTS}.")
    if not (path / _METADATA).is_file():
        raise FileNotFoundError(f"{path / _METADATA} is missing; {_CONTENTS}.")
    try:
        metadata = json.loads((path / _METADATA).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path / _METADATA} is not valid JSON ({error}); re-save the set."
        ) from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{path / _METADATA} holds no JSON object; re-save the set.")
    _check_metadata(metadata, str(path))
    if (path / _NPZ).is_file():
        images, labels = _read_npz(path / _NPZ)
    elif (path / _TFRECORD).is_file():
        images, labels = read_examples(path / _TFRECORD)
    else:
        raise FileNotFoundError(f"{path} has neither {_NPZ} nor {_TFRECORD}; {_CONTENTS}.")
    images, labels = _check_set(images, labels, metadata, str(path))
    return SyntheticSet(images, labels, metadata)


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, EOFError, ValueError, AttributeError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{path} is not a readable .npz file ({e}); re-save the set.") from None
    missing = [key for key in ("images", "labels") if key not in arrays]
    if missing:
        raise ValueError(f"{path} lacks the arrays {missing}; re-save the set.")
    return arrays["images"], arrays["labels"]


# === TFRecord of tf.Example ===
# "image": bytes, the float32 little-endian pixels in [0, 1], row-major (H, W, ch); "label",
# "height", "width", "channels": int64. Raw float32 rather than PNG: PNG rounds to 8 bits, so
# the set read back would not be the set that was made.

def write_examples(path, images, labels, *, compression=None, overwrite=False):
    """Writes one tf.Example per image to a TFRecord file, atomically (temporary name, rename).

    Args:
        path: a file path (local or any tf.io.gfile filesystem); an existing directory gets
            synthetic.tfrecord (.gz with GZIP) inside it.
        images: float (N, H, W, ch) in [0, 1], stored or decoded.
        labels: int (N,).
        compression: None, or "GZIP" as TFX Examples use.
        overwrite: replace an existing file.

    Returns:
        str, the file written.

    Raises:
        ValueError: bad shapes, non-finite or out-of-range pixels, bad compression.
        FileExistsError: the file exists and overwrite is False.
    """
    if compression not in (None, "GZIP"):
        raise ValueError(
            f"compression must be None or 'GZIP'. Received compression={compression!r}."
        )
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.ndim != 4 or len(labels) != len(images) or images.dtype.kind != "f":
        raise ValueError(
            "write_examples needs float images (N, H, W, ch) and N labels. Received images "
            f"{images.dtype} {images.shape} and {len(labels)} labels."
        )
    finite = np.all(np.isfinite(images))
    if not (finite and images.min(initial=0) >= 0 and images.max(initial=0) <= 1):
        raise ValueError("write_examples: pixels must be finite and unnormalised in [0, 1].")
    path = str(path)
    if tf.io.gfile.isdir(path):
        path = os.path.join(path, _TFRECORD + (".gz" if compression else ""))
    if tf.io.gfile.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True to replace it or choose another path."
        )
    shape = [tf.train.Feature(int64_list=tf.train.Int64List(value=[d])) for d in images.shape[1:]]
    partial = f"{path}.partial-{uuid.uuid4().hex[:8]}"
    try:
        options = tf.io.TFRecordOptions(compression_type=compression or "")
        with tf.io.TFRecordWriter(partial, options) as writer:
            for image, label in zip(images, labels):
                feature = dict(zip(("height", "width", "channels"), shape))
                feature["image"] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[image.astype("<f4").tobytes()])
                )
                feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
        tf.io.gfile.rename(partial, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(partial):
            tf.io.gfile.remove(partial)
        raise
    return path


def iter_examples(path, *, compression="auto"):
    """Reads what `write_examples` wrote one file at a time: memory holds one file's records.

    Args:
        path: a file, a directory (all its files, by name) or a glob pattern (as TFX passes).
        compression: "auto" (GZIP for names ending in .gz), None or "GZIP".

    Yields:
        (images float32 (n, H, W, ch), labels int64 (n,)) of each file holding records, in
        file order; the exact pixels written.

    Raises:
        FileNotFoundError: nothing matches `path`.
        ValueError: an unreadable file, a record lacking a feature, mixed image shapes, or no
            records at all (raised once every file has been read).
    """
    path = str(path)
    files = sorted(tf.io.gfile.glob(os.path.join(path, "*") if tf.io.gfile.isdir(path) else path))
    if not files:
        raise FileNotFoundError(f"no file matches {path}; write one with m3d_tf.io.write_examples.")
    shape, count = None, 0
    for name in files:
        images, labels, shape = _read_example_file(name, compression, shape)
        if labels:
            count += len(labels)
            yield np.stack(images).astype(np.float32), np.asarray(labels, np.int64)
    if not count:
        raise ValueError(f"{path} holds no records; write them with m3d_tf.io.write_examples.")


def _read_example_file(name, compression, shape):
    """(list of images, list of labels, image shape) of one file; `shape`: the earlier files'."""
    kind = compression or ""
    if compression == "auto":
        kind = "GZIP" if name.endswith(".gz") else ""
    try:
        records = [r.numpy() for r in tf.data.TFRecordDataset(name, compression_type=kind)]
    except tf.errors.OpError as error:
        raise ValueError(
            f"{name} is not a readable TFRecord (compression: {kind or 'none'}; "
            f"{error.message.splitlines()[0]})."
        ) from None
    images, labels = [], []
    for index, record in enumerate(records):
        feature = tf.train.Example.FromString(record).features.feature
        keys = ("image", "label", "height", "width", "channels")
        missing = [key for key in keys if key not in feature]
        if missing:
            raise ValueError(
                f"record {index} of {name} lacks the features {missing}; "
                "write it with m3d_tf.io.write_examples."
            )
        where = f"record {index} of {name}"
        dims = tuple(_single_value(feature, key, "int64_list", where) for key in keys[2:])
        raw = _single_value(feature, "image", "bytes_list", where)
        if shape not in (None, dims) or len(raw) != 4 * int(np.prod(dims)):
            raise ValueError(
                f"record {index} of {name} holds {len(raw)} bytes for a {dims} image; "
                f"expected float32 images of shape {shape or dims}."
            )
        shape = dims
        images.append(np.frombuffer(raw, "<f4").reshape(dims))
        labels.append(_single_value(feature, "label", "int64_list", where))
    return images, labels, shape


def _single_value(features, key, kind, where):
    """The one value of features[key] when it is a `kind` ("int64_list", "bytes_list"), else a
    ValueError naming the record, the feature and what it holds instead."""
    feature = features[key]
    held = feature.WhichOneof("kind")
    values = getattr(feature, held).value if held else []
    if held != kind or len(values) != 1:
        wanted = "one int64" if kind == "int64_list" else "one bytes value"
        found = f"{len(values)} value(s) of {held}" if held else "nothing"
        raise ValueError(
            f"{where}: feature {key!r} holds {found}, not {wanted}; "
            "write the examples with m3d_tf.io.write_examples (or DatasetGen)."
        )
    return values[0]


def read_examples(path, *, compression="auto"):
    """Reads back what `write_examples` wrote: the exact float32 pixels and the labels.

    Args:
        path, compression: as for `iter_examples`.

    Returns:
        (images float32 (N, H, W, ch), labels int64 (N,)), in file then record order.

    Raises:
        FileNotFoundError, ValueError: as `iter_examples`.
    """
    parts = list(iter_examples(path, compression=compression))
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def parse_examples(serialized, image_shape):
    """Parses a batch of Examples from `write_examples` in TensorFlow (tf.data, serving).

    Args:
        serialized: string tensor (B,) of serialized tf.Example.
        image_shape: (H, W, ch) of the images.

    Returns:
        (images float32 (B, H, W, ch) in [0, 1], labels int64 (B,)).
    """
    features = tf.io.parse_example(serialized, {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    })
    pixels = tf.io.decode_raw(features["image"], tf.float32, little_endian=True)
    return tf.reshape(pixels, (-1, *image_shape)), features["label"]

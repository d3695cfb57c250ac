"""Per-class image files written in one streaming pass: data larger than memory, on disk.

    class_files, info = stream_source("tfrecord:/data/shards/*.tfrecord")  # one streaming pass
    class_files.counts, info.mean, info.std                                 # from that pass

One pass over a source (TFRecord shards, TFDS's prepared files, the pipeline's Examples through
`example_chunks` or m3d_tf.io.iter_examples, or any m3d_tf.data source) writes its images class
by class into a cache directory (`write_class_files`), holding one chunk at a time: class c's
images back to back in class-0000c.bin as fixed-size raw records (uint8, or float32 when the
source stores floats), and index.json with the class counts and the per-channel mean/std
accumulated in the same pass (uint8: exact 256-bin histograms, the numbers `channel_stats`
gives; float: float64 means and squared deviations merged chunk by chunk, Chan et al.'s pairwise
update). Fixed-size records are random access, which m3d_tf.data.stream samples from.
"""

import dataclasses
import errno
import hashlib
import json
import math
import os
import pathlib
import shutil
import uuid

import numpy as np
import tensorflow as tf

from m3d_tf.data.arrays import DatasetInfo, check_channel_stats, with_flip

CACHE_FORMAT = 1
_INDEX = "index.json"
DTYPES = {"uint8": "u1", "float32": "<f4"}  # how each pixel dtype is stored: little-endian
_GLOB_CHARACTERS = "*?["


@dataclasses.dataclass(frozen=True)
class ClassFiles:
    """A cache directory of per-class image files (written by `write_class_files`).

    Attributes:
        directory: the directory (local disk: batches are read with os.pread).
        image_shape: (H, W, C).
        dtype: "uint8" (pixels 0..255) or "float32" (pixels in [0, 1]).
        counts: images of each class, (C,) ints; a class may have none.
        mean, std: per-channel mean and population std of all images, pixels in [0, 1].
        fingerprint: what the files were made from (`source_fingerprint`), "" if unknown.
    """

    directory: str
    image_shape: tuple
    dtype: str
    counts: tuple
    mean: tuple
    std: tuple
    fingerprint: str = ""

    @property
    def num_classes(self):
        return len(self.counts)

    @property
    def record_bytes(self):
        return math.prod(self.image_shape) * np.dtype(DTYPES[self.dtype]).itemsize

    def path(self, c):
        """The file of class c's images."""
        return os.path.join(self.directory, f"class-{c:05d}.bin")


# === One streaming pass: per-class files and statistics ===


class _ChannelStats:
    """Per-channel mean and population std accumulated chunk by chunk, in float64."""

    def __init__(self, channels, dtype):
        self.uint8 = dtype == "uint8"
        self.histograms = np.zeros((channels, 256), np.int64)
        self.count, self.mean, self.m2 = 0, np.zeros(channels), np.zeros(channels)

    def add(self, images):
        channels = images.shape[-1]
        if self.uint8:
            for c in range(channels):
                self.histograms[c] += np.bincount(images[..., c].ravel(), minlength=256)
            return
        pixels = images.reshape(-1, channels).astype(np.float64)
        count, mean = len(pixels), pixels.mean(axis=0)
        m2 = ((pixels - mean) ** 2).sum(axis=0)
        total, delta = self.count + count, mean - self.mean
        self.mean = self.mean + delta * count / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * count / total
        self.count = total

    def result(self):
        """(mean, std), two tuples of C floats."""
        if not self.uint8:
            return tuple(self.mean.tolist()), tuple(np.sqrt(self.m2 / self.count).tolist())
        values = np.arange(256, dtype=np.float64) / 255.0  # as channel_stats, bit for bit
        means, stds = [], []
        for counts in self.histograms.astype(np.float64):
            mean = float(counts @ values / counts.sum())
            means.append(mean)
            stds.append(float(counts @ (values - mean) ** 2 / counts.sum()) ** 0.5)
        return tuple(means), tuple(stds)


def _checked_chunk(images, labels, where):
    """(images uint8 or float32 (B, H, W, C), labels int64 (B,)) of one chunk, or ValueError."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or 0 in images.shape[1:]:
        raise ValueError(f"{where}: images must be (N, H, W[, C]). Received {images.shape}.")
    if images.dtype.kind == "f":
        if not np.all((images >= 0) & (images <= 1)):  # False for NaN too
            raise ValueError(
                f"{where}: float images must be in [0, 1] (NaN is not). Divide 0-255 pixels "
                "by 255, or store uint8."
            )
        images = images.astype(np.float32)
    elif images.dtype != np.uint8:
        raise ValueError(f"{where}: images must be uint8 or float. Received {images.dtype}.")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{where}: labels must be {len(images)} integers (N,). Received {labels.dtype} "
            f"{labels.shape}."
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"{where}: labels must be class indices >= 0. Received {labels.min()}.")
    return images, labels.astype(np.int64)


def write_class_files(chunks, directory, *, num_classes=None, fingerprint="", where="data"):
    """Writes a stream of (images, labels) chunks into per-class files, in one pass.

    Memory holds one chunk at a time. The files are written under a temporary name and renamed
    into place, so `directory` is either complete or absent.

    Args:
        chunks: iterable of (images uint8 (B, H, W[, C]) or float in [0, 1], labels int (B,)),
            all of one image shape and dtype.
        directory: where the files go (a new local directory).
        num_classes: C; default: the largest label + 1. Labels must be below it.
        fingerprint: text recorded with the files (see `source_fingerprint`).
        where: names the data in error messages.

    Returns:
        ClassFiles: counts in 0..C-1, image shape, dtype, mean and std.

    Raises:
        ValueError: no images, a chunk of another shape or dtype, pixels or labels out of range.
        FileExistsError: `directory` exists, or another process wrote it meanwhile.
    """
    directory = pathlib.Path(directory)
    if directory.exists():
        raise FileExistsError(f"{directory} already exists; remove it or choose another path.")
    partial = directory.with_name(f"{directory.name}.partial-{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        shape, dtype, stats, files, counts = None, None, None, {}, {}
        try:
            for number, (images, labels) in enumerate(chunks):
                images, labels = _checked_chunk(images, labels, f"{where}, chunk {number}")
                if shape is None:
                    shape, dtype = images.shape[1:], str(images.dtype)
                    stats = _ChannelStats(shape[-1], dtype)
                if (images.shape[1:], str(images.dtype)) != (shape, dtype):
                    raise ValueError(
                        f"{where}, chunk {number}: {images.dtype} images of shape "
                        f"{images.shape[1:]} after {dtype} images of shape {shape}; give images "
                        "of one shape and dtype."
                    )
                if num_classes is not None and labels.size and labels.max() >= num_classes:
                    raise ValueError(
                        f"{where}: label {labels.max()} is outside 0..{num_classes - 1} "
                        f"({num_classes} classes); fix the labels."
                    )
                stats.add(images)
                for c in np.unique(labels).tolist():
                    if c not in files:
                        files[c] = open(partial / f"class-{c:05d}.bin", "wb")  # noqa: SIM115
                    rows = images[labels == c]
                    files[c].write(rows.astype(DTYPES[dtype]).tobytes())
                    counts[c] = counts.get(c, 0) + len(rows)
        finally:
            for f in files.values():
                f.close()
        if shape is None:
            raise ValueError(f"{where} holds no images; give at least one labelled image.")
        num_classes = max(counts) + 1 if num_classes is None else num_classes
        for c in range(num_classes):
            (partial / f"class-{c:05d}.bin").touch()
        mean, std = stats.result()
        class_files = ClassFiles(
            str(directory), tuple(int(d) for d in shape), dtype,
            tuple(counts.get(c, 0) for c in range(num_classes)), mean, std, fingerprint,
        )
        index = {"format": CACHE_FORMAT, **dataclasses.asdict(class_files)}
        del index["directory"]
        (partial / _INDEX).write_text(json.dumps(index, indent=1) + "\n")
        try:
            os.rename(partial, directory)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            raise FileExistsError(
                f"{directory} was written by another process meanwhile."
            ) from e
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return class_files


def open_class_files(directory):
    """The ClassFiles of a directory `write_class_files` wrote.

    Raises:
        FileNotFoundError: no index.json there.
        ValueError: another cache format, or a class file of the wrong size (delete the
            directory to rebuild it).
    """
    index_path = pathlib.Path(directory) / _INDEX
    if not index_path.is_file():
        raise FileNotFoundError(
            f"{directory} has no {_INDEX}; write it with m3d_tf.data.write_class_files."
        )
    index = json.loads(index_path.read_text())
    if index.pop("format", None) != CACHE_FORMAT:
        raise ValueError(f"{directory} is not a format-{CACHE_FORMAT} cache; delete it to rebuild.")
    class_files = ClassFiles(str(directory), **{
        key: tuple(value) if isinstance(value, list) else value for key, value in index.items()
    })
    for c, count in enumerate(class_files.counts):
        size = os.path.getsize(class_files.path(c))
        if size != count * class_files.record_bytes:
            raise ValueError(
                f"{class_files.path(c)} holds {size} bytes, not {count} images of "
                f"{class_files.record_bytes} bytes; delete {directory} to rebuild it."
            )
    return class_files


# === Sources: a cache per (source, split), rebuilt when the files change ===


def source_fingerprint(source, split):
    """sha256 of a source string, a split and the paths, sizes and mtimes of its files.

    The files are those the source string names ("kind:PATH" or "kind:GLOB"; a directory
    counts every file under it); a source that names no local path (a TFDS name) is
    fingerprinted by its string alone.
    """
    _, _, where = str(source).partition(":")
    paths = sorted(tf.io.gfile.glob(where)) if any(c in where for c in _GLOB_CHARACTERS) else [where]
    entries = []
    for path in paths:
        if tf.io.gfile.isdir(path):
            for root, _, names in sorted(tf.io.gfile.walk(path)):
                entries.extend(os.path.join(root, name) for name in sorted(names))
        elif tf.io.gfile.exists(path):
            entries.append(path)
    stats = [(p, tf.io.gfile.stat(p).length, tf.io.gfile.stat(p).mtime_nsec) for p in entries]
    text = json.dumps({"format": CACHE_FORMAT, "source": str(source), "split": split,
                       "files": stats})
    return hashlib.sha256(text.encode()).hexdigest()


def _array_chunks(images, labels, chunk_size=4096):
    for begin in range(0, len(labels), chunk_size):
        yield images[begin:begin + chunk_size], labels[begin:begin + chunk_size]


def class_files_for(reader, split, cache_root, *, num_classes=None):
    """The ClassFiles of one split of a Reader, from the cache when its fingerprint matches.

    Readers with `chunks` (TFRecord files, TFDS) are streamed; the others (npz, IDX, image
    folders: formats read whole by nature) are read once, written, and released.
    """
    fingerprint = source_fingerprint(reader.source, split)
    directory = pathlib.Path(cache_root) / "streams" / f"{reader.name}-{split}-{fingerprint[:16]}"
    try:
        class_files = open_class_files(directory)
        if class_files.fingerprint == fingerprint:
            return class_files
    except (FileNotFoundError, ValueError):
        pass
    if reader.chunks is not None:
        chunks = reader.chunks(split)
    else:
        chunks = _array_chunks(*reader.read(split))
    if directory.exists():
        shutil.rmtree(directory)
    try:
        return write_class_files(chunks, directory, num_classes=num_classes,
                                 fingerprint=fingerprint, where=f"{reader.source} split {split!r}")
    except FileExistsError:  # another process wrote it meanwhile
        return open_class_files(directory)


def stream_source(source, split="train", *, num_classes=None, cache_dir=None, flip=None,
                  **options):
    """A source's split as per-class files on disk, and its DatasetInfo, by streaming passes.

    Args:
        source: as for `load_arrays` ("fashion_mnist", "tfrecord:GLOB", "npz:FILE", ...).
        split: the split to write.
        num_classes: for sources without class names (default: the largest label + 1).
        cache_dir: the m3d_tf cache (default: `default_cache_dir()`); the files go to
            cache_dir/streams/<name>-<split>-<fingerprint>, reused while the source's files
            are unchanged.
        flip: DatasetInfo.flip as declared by the user; None: the source's (see load_arrays).
        **options: data_dir, download (TFDS), image_key, label_key, image_shape (TFRecord).

    Returns:
        (ClassFiles, DatasetInfo). The info's mean and std are those of the "train" split (the
        first split when there is none), as load_arrays gives, computed in the streaming pass.

    Raises:
        ValueError, FileNotFoundError: bad sources or data, with what to do.
    """
    from m3d_tf.data.catalog import default_cache_dir
    from m3d_tf.data.sources import open_source

    cache_root = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    reader = open_source(source, cache_dir=cache_dir, **options)
    flip = with_flip(reader.flip, flip)
    if split not in reader.split_sizes:
        raise ValueError(
            f"{reader.name} has no split {split!r}; its splits are {', '.join(reader.split_sizes)}."
        )
    if reader.class_names is not None:
        if num_classes is not None and num_classes != len(reader.class_names):
            raise ValueError(
                f"{reader.source} names {len(reader.class_names)} classes but "
                f"num_classes={num_classes}; drop num_classes."
            )
        num_classes = len(reader.class_names)
    class_files = class_files_for(reader, split, cache_root, num_classes=num_classes)
    stats_split = "train" if "train" in reader.split_sizes else next(iter(reader.split_sizes))
    stats = class_files
    if split != stats_split:
        stats = class_files_for(reader, stats_split, cache_root,
                                num_classes=class_files.num_classes)
    num_classes = class_files.num_classes
    check_channel_stats(stats.mean, stats.std, f"{reader.source} split {stats_split!r}")
    info = DatasetInfo(
        name=reader.name, source=reader.source, num_classes=num_classes,
        image_shape=class_files.image_shape,
        class_names=reader.class_names or tuple(str(c) for c in range(num_classes)),
        mean=stats.mean, std=stats.std, split_sizes=dict(reader.split_sizes), flip=flip,
    )
    return class_files, info

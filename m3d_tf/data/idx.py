"""MNIST-format IDX files: the parser and a directory source.

IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): bytes 0-1 are zero, byte 2 is the element
type (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64, big-endian),
byte 3 the number of dimensions d, then d big-endian uint32 sizes, then the elements in C order.
Files may be gzipped (detected by the gzip magic bytes, not by the name).

A directory source holds `<prefix>train-images-idx3-ubyte[.gz]` and
`<prefix>train-labels-idx1-ubyte[.gz]`, and optionally the same with `t10k` (or `test`) for the
test split; MNIST, Fashion-MNIST, KMNIST and EMNIST files all follow this naming.
"""

import gzip
import math
import pathlib
import re
import struct
import zlib

import numpy as np

from m3d_tf.data.arrays import Reader, as_labels, as_uint8_images, located, ordered_splits

IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_NAME = re.compile(
    r"^(?P<prefix>.*?)(?P<split>train|t10k|test)-(?P<kind>images|labels)-idx\d-ubyte(\.gz)?$"
)
_SPLIT_NAMES = {"train": "train", "t10k": "test", "test": "test"}


def _check_magic(data, where):
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES or data[3] == 0:
        raise ValueError(
            f"{where} is not an IDX file: it starts with bytes [{data[:4].hex(' ')}], expected "
            "[00 00 TT DD] with type TT in 08/09/0b/0c/0d/0e and DD dimensions; give an "
            "MNIST-format file (gzipped or not)."
        )


def parse_idx(data, where="IDX data"):
    """Parses the bytes of one uncompressed IDX file.

    Args:
        data: bytes of the file (already gunzipped).
        where: text naming the file, used in error messages.

    Returns:
        np.ndarray with the header's shape and element type (native byte order, writable).

    Raises:
        ValueError: wrong magic bytes, or a data size that disagrees with the header
            (truncated or trailing bytes).

    Example:
        >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]))
        array([7, 9], dtype=uint8)
    """
    _check_magic(data, where)
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{where} is truncated: {len(data)} bytes, shorter than its {header}-byte header; "
            "download or extract it again."
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[data[2]]
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        problem = "truncated" if found < expected else "longer than its header says"
        raise ValueError(
            f"{where} is {problem}: the header gives shape {dims} ({expected} data bytes) but the "
            f"file has {found}; download or extract it again."
        )
    array = np.frombuffer(data, dtype, count=math.prod(dims), offset=header)
    return array.reshape(dims).astype(dtype.newbyteorder("="))


def _read_bytes(path):
    """Bytes of a file, gunzipped when it starts with the gzip magic bytes."""
    data = pathlib.Path(path).read_bytes()
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(
            f"{path} is a corrupt or truncated gzip file ({error}); download it again."
        ) from None


def read_idx(path):
    """Reads one IDX file, gzipped or not.

    Args:
        path: str or pathlib.Path of the file.

    Returns:
        np.ndarray, see `parse_idx`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: corrupt gzip data, wrong magic or wrong size.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} does not exist.")
    return parse_idx(_read_bytes(path), where=str(path))


def _idx_length(path):
    """First dimension of an IDX file (its number of items), from its header only."""
    with open(path, "rb") as f:
        opener = gzip.open if f.read(2) == _GZIP_MAGIC else open
    try:
        with opener(path, "rb") as f:
            head = f.read(8)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"{path} is a corrupt gzip file ({error}); download it again.") from None
    _check_magic(head, str(path))
    if len(head) < 8:
        parse_idx(head, where=str(path))  # raises the "shorter than its header" error
    return struct.unpack(">I", head[4:8])[0]


def has_idx_files(directory):
    """Whether `directory` holds at least one MNIST-style IDX file name."""
    return any(_IDX_NAME.match(p.name) and p.is_file() for p in pathlib.Path(directory).iterdir())


def find_idx_files(directory):
    """Maps every split found in `directory` to its (images, labels) IDX files.

    Args:
        directory: pathlib.Path of a folder.

    Returns:
        dict split ("train", "test") -> (images path, labels path).

    Raises:
        FileNotFoundError: no IDX files, or a split with images but no labels (or the reverse).
        ValueError: files of several datasets (different prefixes) in one folder.
    """
    found = {}
    for path in sorted(directory.iterdir()):
        match = _IDX_NAME.match(path.name)
        if match and path.is_file():
            key = (_SPLIT_NAMES[match["split"]], match["kind"])
            found.setdefault(key, []).append((match["prefix"], path))
    if not found:
        raise FileNotFoundError(
            f"no IDX files in {directory}; expected train-images-idx3-ubyte[.gz] and "
            "train-labels-idx1-ubyte[.gz] (t10k-... for the test split)."
        )
    prefixes = sorted({prefix for files in found.values() for prefix, _ in files})
    if len(prefixes) > 1:
        raise ValueError(
            f"{directory} holds IDX files of several datasets (prefixes {prefixes}); "
            "give a folder with one dataset."
        )
    splits = {}
    for split in ordered_splits({split for split, _ in found}):
        for kind, other in (("images", "labels"), ("labels", "images")):
            if (split, kind) in found and (split, other) not in found:
                prefix, present = found[(split, kind)][0]
                wanted = (
                    f"{prefix}{'train' if split == 'train' else 't10k'}-{other}-"
                    f"idx{1 if other == 'labels' else 3}-ubyte[.gz]"
                )
                raise FileNotFoundError(
                    f"{directory} has {present.name} but no {wanted}; add the {split} {other}."
                )
        # An uncompressed copy next to the .gz is the same data: take the first name.
        splits[split] = (found[(split, "images")][0][1], found[(split, "labels")][0][1])
    return splits


def read_idx_split(images_path, labels_path):
    """Reads one split's images and labels.

    Args:
        images_path: IDX file of shape (N, H, W) or (N, H, W, C).
        labels_path: IDX file of shape (N,).

    Returns:
        (uint8 (N, H, W, C), int64 (N,)).

    Raises:
        ValueError: corrupt files, wrong ranks or different counts.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim not in (3, 4):
        raise ValueError(
            f"{images_path}: image IDX files must have 3 or 4 dimensions (N, H, W[, C]). "
            f"Received shape {images.shape}."
        )
    where = f"IDX files {images_path.name} / {labels_path.name} in {images_path.parent}"
    return as_uint8_images(images, where), as_labels(labels, images.shape[0], where)


def open_idx_dir(directory, *, name=None, class_names=None):
    """A Reader over a directory of MNIST-format IDX files.

    Args:
        directory: str or pathlib.Path of the folder.
        name: DatasetInfo.name (default: the folder name).
        class_names: names of the classes, or None (classes are named by index).

    Returns:
        Reader with splits "train" and/or "test".

    Raises:
        FileNotFoundError: the folder or needed files are missing.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"IDX folder {directory} does not exist; give a folder holding "
            "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]."
        )
    files = find_idx_files(directory)
    return Reader(
        name=name or directory.name,
        source=located("idx", directory),
        split_sizes={split: _idx_length(labels) for split, (_, labels) in files.items()},
        class_names=class_names,
        read=lambda split: read_idx_split(*files[split]),
    )

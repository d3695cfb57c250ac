"""The in-memory form every source is read into, its description, and the checks at the boundary.

Every source ends as uint8 images (N, H, W, C) in 0..255 and int64 labels (N,) in
0..num_classes-1. uint8 keeps CIFAR-size data small (150 MB for CIFAR-10 train); conversion to
float32 in [0, 1] happens in the tf.data pipelines.
"""

import dataclasses
import os

import numpy as np


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a loaded dataset is and where it came from.

    Attributes:
        name: short name, e.g. "fashion_mnist", or the file/folder stem of a user source.
        source: how it was read, "<kind>:<where>"; kind is one of tfds, idx, npz, folder,
            tfrecord, e.g. "tfds:fashion_mnist/3.0.1 in /root/tensorflow_datasets" or
            "idx:/usr/share/datasets/fashion-mnist" (the fallback when TFDS fails).
        num_classes: number of classes; labels are 0..num_classes-1.
        image_shape: (H, W, C).
        class_names: one name per class (the label as text when the source has none).
        mean: per-channel mean of the training split, pixels scaled to [0, 1] (C floats).
        std: per-channel population standard deviation (ddof=0), same scale (C floats).
        split_sizes: number of examples of every split, e.g. {"train": 60000, "test": 10000}.
        flip: whether a horizontal flip keeps an image's class, so augmentation may mirror:
            True (a mirrored coat is a coat), False (a mirrored 2 is no digit), or None when
            nobody said (own data read without a declaration), which `flips` treats as
            UNDECLARED_FLIP. The catalogue knows it for named datasets (catalog.MIRRORING);
            for own data the user declares it (`m3d condense --flip/--no-flip`, flip= of the
            loaders, of M3DCondense and of the pipeline).
    """

    name: str
    source: str
    num_classes: int
    image_shape: tuple
    class_names: tuple
    mean: tuple
    std: tuple
    split_sizes: dict
    flip: bool | None = None

    def __post_init__(self):
        if self.flip is not None and not isinstance(self.flip, bool):
            raise ValueError(
                f"flip must be True, False or None (undeclared). Received flip={self.flip!r}."
            )

    @property
    def flips(self):
        """Whether augmentation mirrors this data: `flip`, or UNDECLARED_FLIP when undeclared."""
        return UNDECLARED_FLIP if self.flip is None else self.flip


# Own data whose mirroring nobody declared is not flipped. A flip that turns a digit or a letter
# into a shape of no class teaches the condensation and the evaluation networks wrong images;
# a missing flip on natural images only forgoes an augmentation (IDC measures ~1 point on
# CIFAR-10 for its whole augmentation, of which the flip is one part). Said once, in one line,
# with how to change it (undeclared_flip_note).
UNDECLARED_FLIP = False


def undeclared_flip_note(info, how="--flip"):
    """The one line announcing the default for data whose mirroring nobody declared, or None.

    Args:
        info: DatasetInfo.
        how: how the user declares it where the note is shown ("--flip", "flip=True").
    """
    if info.flip is not None:
        return None
    state = "on" if UNDECLARED_FLIP else "off"
    return (f"own data {info.source}: horizontal flips {state} (declare with {how} if mirroring "
            "keeps the class)")


def with_flip(reader_flip, declared):
    """A declared flip (True/False) wins over what the source knows; None keeps the source's."""
    if declared is not None and not isinstance(declared, bool):
        raise ValueError(
            f"flip must be True, False or None (the data's own). Received flip={declared!r}."
        )
    return reader_flip if declared is None else declared


def located(kind, where):
    """The source string "<kind>:<where>" of own data, with a local path made absolute.

    A saved set records it (metadata "dataset_source"), so `m3d evaluate SET` reads the same data
    again from any working directory; URLs (gs://...) are kept as given.
    """
    where = os.fspath(where)
    return f"{kind}:{where if '://' in where else os.path.abspath(where)}"


def channel_stats(images):
    """Per-channel mean and population std of uint8 images, in [0, 1] space, exactly.

    Counts pixel values per channel (a 256-bin histogram) instead of converting to float, so
    60,000 Fashion-MNIST images need no 376 MB float64 copy.

    Args:
        images: uint8 (N, H, W, C), N >= 1.

    Returns:
        (mean, std): two tuples of C Python floats; std uses ddof=0.

    Example:
        >>> channel_stats(np.array([[[[0]], [[255]]]], np.uint8))  # one 2x1 image, C=1
        ((0.5,), (0.5,))
    """
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[-1]):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        total = counts.sum()
        mean = float(counts @ values / total)
        var = float(counts @ (values - mean) ** 2 / total)
        means.append(mean)
        stds.append(var**0.5)
    return tuple(means), tuple(stds)


def check_channel_stats(mean, std, where):
    """Raises ValueError if a channel's std is not positive and finite (or its mean not finite).

    A channel whose pixels all hold one value has std 0: normalising by it divides by zero,
    and such images (e.g. a wrong image_key or image_shape that reads padding) carry nothing
    to condense. Checked where the statistics are computed, so the error names the data
    instead of surfacing later as a bad `std=` argument.

    Args:
        mean, std: per-channel statistics (C floats each), pixels in [0, 1].
        where: text naming the data, used in the error message.
    """
    for c, (m, s) in enumerate(zip(mean, std)):
        if not (np.isfinite(m) and np.isfinite(s) and s > 0):
            raise ValueError(
                f"{where}: channel {c} has mean {m:g} and standard deviation {s:g}: every pixel "
                "holds the same value (or a non-finite one), so the images cannot be "
                "normalised or condensed. Check that the images are read right (image_key, "
                "image_shape) and give images that vary."
            )


def as_uint8_images(images, where):
    """Checks and converts images to uint8 (N, H, W, C).

    Args:
        images: array (N, H, W) or (N, H, W, C); uint8, integers in 0..255, or floats in [0, 1]
            (rounded to the nearest of 256 levels: x -> round(255 x)).
        where: text naming the source, used in error messages.

    Returns:
        uint8 (N, H, W, C); (N, H, W) gains C = 1.

    Raises:
        ValueError: wrong rank, empty, unsupported dtype or values out of range.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[0] == 0 or 0 in images.shape[1:]:
        raise ValueError(
            f"{where}: images must be a non-empty array (N, H, W) or (N, H, W, C). "
            f"Received shape {images.shape}."
        )
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.integer):
        low, high = images.min(), images.max()
        if low < 0 or high > 255:
            raise ValueError(
                f"{where}: integer images must be in 0..255. Received values in {low}..{high}; "
                "rescale them to 0..255 or to floats in [0, 1]."
            )
        return images.astype(np.uint8)
    if np.issubdtype(images.dtype, np.floating):
        bad = int(images.size - np.isfinite(images).sum())
        if bad:
            raise ValueError(
                f"{where}: images hold {bad} NaN or infinite pixel values; replace them (e.g. "
                "with np.nan_to_num) or drop those images."
            )
        low, high = float(images.min()), float(images.max())
        if not (0.0 <= low and high <= 1.0):
            raise ValueError(
                f"{where}: float images must be in [0, 1]. Received values in [{low:g}, {high:g}]; "
                "divide by 255 (or give uint8 images)."
            )
        return np.round(images * 255.0).astype(np.uint8)
    raise ValueError(
        f"{where}: images must be uint8, integer or float. Received dtype {images.dtype}."
    )


def as_labels(labels, count, where):
    """Checks and converts class labels to int64 (N,).

    Args:
        labels: integer array (N,) or (N, 1) (Keras' CIFAR layout), values >= 0.
        count: the number of images N the labels belong to.
        where: text naming the source, used in error messages.

    Returns:
        int64 (N,).

    Raises:
        ValueError: not integers, negative, wrong shape or a count different from `count`.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            f"{where}: labels must have shape (N,) or (N, 1). Received {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{where}: labels must be integers (class indices). Received dtype {labels.dtype}."
        )
    if labels.shape[0] != count:
        raise ValueError(
            f"{where}: {count} images but {labels.shape[0]} labels; every image needs one label."
        )
    if count and labels.min() < 0:
        raise ValueError(
            f"{where}: labels must be class indices >= 0. Received a label {labels.min()}."
        )
    return labels.astype(np.int64)


def check_label_range(labels, num_classes, where, how="fix the labels or pass num_classes"):
    """Raises ValueError if a label is outside 0..num_classes-1.

    Args:
        labels: int64 (N,), already >= 0 (see `as_labels`).
        num_classes: the number of classes of the dataset.
        where: text naming the source, used in error messages.
        how: what to do, ending the message.
    """
    if labels.size and labels.max() >= num_classes:
        raise ValueError(
            f"{where}: label {labels.max()} is outside 0..{num_classes - 1} "
            f"({num_classes} classes); {how}."
        )


_SPLIT_ORDER = ("train", "validation", "test")


def ordered_splits(names):
    """Split names in a fixed order: train, validation, test, then the others sorted.

    Example:
        >>> ordered_splits({"test", "extra", "train"})
        ['train', 'test', 'extra']
    """
    rank = {name: i for i, name in enumerate(_SPLIT_ORDER)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


@dataclasses.dataclass(frozen=True)
class Reader:
    """A resolved source: what it is and how to read one of its splits.

    Every source module (idx, files, catalog) turns a location into a Reader; `load_arrays`
    uses it the same way whatever the source.

    Attributes:
        name: see DatasetInfo.name.
        source: see DatasetInfo.source.
        split_sizes: number of examples of every split, e.g. {"train": 60000, "test": 10000}.
        class_names: tuple of names, or None when the source has none (then the classes are
            named by their index).
        read: split name -> (uint8 images (N, H, W, C), int64 labels (N,)), both checked by
            `as_uint8_images` and `as_labels`.
        chunks: None, or split name -> an iterator of (images, labels) chunks of the split in
            order (m3d_tf.data.stream builds its per-class files from them without holding the
            split); sources without it are read whole once instead.
        flip: see DatasetInfo.flip; None when the source cannot know (own data).
    """

    name: str
    source: str
    split_sizes: dict
    class_names: tuple | None
    read: object
    chunks: object = None
    flip: bool | None = None

"""Source strings -> Readers, and the two loaders every caller uses: load_arrays, load_dataset.

A source is one of:
    a known name      fashion_mnist, mnist, cifar10, cifar100, svhn (through TFDS; see catalog)
    tfds:NAME         any other TFDS image classification dataset ('image' and 'label' features)
    idx:DIR           a folder of MNIST-format IDX files (see idx)
    npz:FILE          an .npz of x_train/y_train[/x_test/y_test] or images/labels (see files)
    folder:DIR        an image folder, one subfolder per class (see files)
    tfrecord:GLOB     TFRecord files of tf.Example (see files)
    a bare path       its kind is detected: *.npz -> npz; a glob or a name containing "tfrecord"
                      -> tfrecord; a folder with IDX files -> idx, with *tfrecord* files ->
                      tfrecord (all of them), with subfolders -> folder.
"""

import os
import pathlib

import tensorflow as tf

from m3d_tf.data.arrays import (
    DatasetInfo,
    channel_stats,
    check_channel_stats,
    check_label_range,
    with_flip,
)
from m3d_tf.data.catalog import KNOWN_DATASETS, open_tfds
from m3d_tf.data.files import open_image_folder, open_npz, open_tfrecord
from m3d_tf.data.idx import has_idx_files, open_idx_dir

SOURCE_FORMS = "idx:DIR, npz:FILE, folder:DIR, tfrecord:GLOB"
_GLOB_CHARACTERS = "*?["


def _detect(path, tfrecord_options):
    """The Reader of a bare existing path, by what it holds."""
    if path.is_file() and path.suffix == ".npz":
        return open_npz(path)
    if path.is_file():
        raise ValueError(
            f"cannot tell what {path} holds from its name (not *.npz, no 'tfrecord' in it); "
            "name the kind explicitly: npz:FILE or tfrecord:FILE."
        )
    if has_idx_files(path):
        return open_idx_dir(path)
    if any("tfrecord" in p.name for p in path.iterdir() if p.is_file()):
        return open_tfrecord(path / "*tfrecord*", **tfrecord_options)
    if any(p.is_dir() for p in path.iterdir()):
        return open_image_folder(path)
    raise ValueError(
        f"cannot tell what {path} holds: no IDX files, no *tfrecord* files and no class "
        f"subfolders; name the kind explicitly ({SOURCE_FORMS})."
    )


def open_source(
    source,
    *,
    data_dir=None,
    cache_dir=None,
    download=True,
    image_key="image",
    label_key="label",
    image_shape=None,
):
    """Resolves a source string (module docstring) to a Reader.

    Args:
        source: str or os.PathLike.
        data_dir, cache_dir, download: for TFDS sources, see `catalog.open_tfds`.
        image_key, label_key, image_shape: for TFRecord sources, see `files.open_tfrecord`.

    Returns:
        Reader.

    Raises:
        ValueError: an unknown name (the message lists the known names and source forms).
        FileNotFoundError: a path that does not exist, or data that cannot be obtained.
    """
    source = os.fspath(source)
    tfds_options = dict(data_dir=data_dir, cache_dir=cache_dir, download=download)
    tfrecord_options = dict(image_key=image_key, label_key=label_key, image_shape=image_shape)
    kind, colon, rest = source.partition(":")
    if colon and kind == "tfds":
        return open_tfds(rest, **tfds_options)
    if colon and kind == "idx":
        return open_idx_dir(rest)
    if colon and kind == "npz":
        return open_npz(rest)
    if colon and kind == "folder":
        return open_image_folder(rest)
    if colon and kind == "tfrecord":
        return open_tfrecord(rest, **tfrecord_options)
    if source in KNOWN_DATASETS:
        return open_tfds(source, **tfds_options)
    path = pathlib.Path(source)
    if any(c in source for c in _GLOB_CHARACTERS) or (
        "tfrecord" in path.name and not path.is_dir()
    ):
        return open_tfrecord(source, **tfrecord_options)
    if path.exists():
        return _detect(path, tfrecord_options)
    if os.sep in source or "." in source:
        raise FileNotFoundError(
            f"{source} does not exist; give an existing path ({SOURCE_FORMS}) or a known name "
            f"({', '.join(sorted(KNOWN_DATASETS))})."
        )
    raise ValueError(
        f"unknown dataset {source!r}; known names: {', '.join(sorted(KNOWN_DATASETS))} (or "
        f"tfds:NAME), or a user source: {SOURCE_FORMS} (a bare path's kind is detected)."
    )


def load_arrays(source, split="train", *, num_classes=None, flip=None, **options):
    """Loads one split of a source into memory.

    Args:
        source: see the module docstring, e.g. "fashion_mnist" or "npz:data/mine.npz".
        split: a split name of the source (DatasetInfo.split_sizes lists them).
        num_classes: for sources without class names: the number of classes (default: the
            largest training label + 1).
        flip: whether a horizontal flip keeps an image's class (DatasetInfo.flip); None: what
            the catalogue knows for a named dataset, undeclared (None) for own data.
        **options: data_dir, cache_dir, download (TFDS), image_key, label_key, image_shape
            (TFRecord); see `open_source`.

    Returns:
        (images uint8 (N, H, W, C), labels int64 (N,), DatasetInfo). The info's mean and std
        are those of the "train" split (the first split when there is none).

    Raises:
        ValueError, FileNotFoundError: bad sources or data, with what to do.

    Example:
        >>> x, y, info = load_arrays("fashion_mnist", "test")
        >>> x.shape, info.split_sizes
        ((10000, 28, 28, 1), {'train': 60000, 'test': 10000})
    """
    reader = open_source(source, **options)
    flip = with_flip(reader.flip, flip)
    if split not in reader.split_sizes:
        raise ValueError(
            f"{reader.name} has no split {split!r}; its splits are {', '.join(reader.split_sizes)}."
        )
    images, labels = reader.read(split)
    stats_split = "train" if "train" in reader.split_sizes else next(iter(reader.split_sizes))
    if split == stats_split:
        stats_images, stats_labels = images, labels
    else:
        stats_images, stats_labels = reader.read(stats_split)
    if reader.class_names is not None:
        if num_classes is not None and num_classes != len(reader.class_names):
            raise ValueError(
                f"{reader.source} names {len(reader.class_names)} classes but "
                f"num_classes={num_classes}; "
                "drop num_classes."
            )
        num_classes = len(reader.class_names)
    elif num_classes is None:
        num_classes = int(stats_labels.max()) + 1
    how = ("fix the labels or the class names" if reader.class_names is not None
           else "fix the labels or pass num_classes")
    for name, split_labels in ((split, labels), (stats_split, stats_labels)):
        check_label_range(split_labels, num_classes, f"{reader.source} split {name!r}", how)
    if images.shape[1:] != stats_images.shape[1:]:
        raise ValueError(
            f"{reader.source}: split {split!r} has images of shape {images.shape[1:]} but split "
            f"{stats_split!r} has {stats_images.shape[1:]}; give splits of one image shape."
        )
    mean, std = channel_stats(stats_images)
    check_channel_stats(mean, std, f"{reader.source} split {stats_split!r}")
    info = DatasetInfo(
        name=reader.name,
        source=reader.source,
        num_classes=num_classes,
        image_shape=tuple(int(d) for d in images.shape[1:]),
        class_names=reader.class_names or tuple(str(c) for c in range(num_classes)),
        mean=mean,
        std=std,
        split_sizes=dict(reader.split_sizes),
        flip=flip,
    )
    return images, labels, info


def load_dataset(source, split="train", **options):
    """Loads one split of a source as a tf.data pipeline.

    Args:
        source, split, **options: as for `load_arrays`.

    Returns:
        (tf.data.Dataset of (image float32 (H, W, C) in [0, 1], label int64 scalar), in the
        source's order, unbatched; DatasetInfo). The pixels are held in memory as uint8 and
        divided by 255 in the pipeline.

    Example:
        >>> dataset, info = load_dataset("fashion_mnist")
        >>> dataset = dataset.shuffle(60000, seed=0).batch(256)
    """
    images, labels, info = load_arrays(source, split, **options)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).map(
        lambda image, label: (tf.cast(image, tf.float32) / 255.0, label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset, info

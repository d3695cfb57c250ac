"""Users' own data: an .npz, an image folder, TFRecord files of tf.Example.

.npz: arrays `x_<split>` and `y_<split>` (Keras' layout: x_train, y_train, x_test, y_test; any
    split name works), or `images` and `labels` (one split, "train"). Images (N, H, W) or
    (N, H, W, C) as uint8 / integers in 0..255 / floats in [0, 1]; labels (N,) or (N, 1) integers.
    An optional `class_names` string array names the classes.
Image folder: one subfolder per class, named after it (classes sorted by name), holding .png, .jpg,
    .jpeg, .bmp or .gif files of one shape. If every subfolder is named train, test or
    validation, each is a split laid out that way (same class folders in each).
TFRecord: files of serialized tf.Example (gzipped or not), with the image under `image_key`
    (encoded PNG/JPEG/GIF/BMP bytes; or raw uint8 bytes, an int64 list or a float list in [0, 1],
    which need `image_shape`) and an int64 label under `label_key`. A glob; if it contains
    "{split}", it is filled with train, test and validation to find the splits, else its files
    are the "train" split.
    Streamed (m3d_tf.data.stream_source, through records.example_chunks), the files may also
    hold m3d_tf.io's layout: float32 pixel bytes with height, width and channels features.
"""

import math
import pathlib
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from m3d_tf.data.arrays import Reader, as_labels, as_uint8_images, located, ordered_splits
from m3d_tf.data.records import count_records, example_chunks, parse_example, record_dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SPLIT_FOLDERS = ("train", "test", "validation")
_ENCODED_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")


# === .npz ===


def _npz_splits(path, keys):
    """{split: (images key, labels key)} of an .npz with the given keys."""
    pairs = {}
    for key in sorted(keys):
        for kind, other in (("x_", "y_"), ("y_", "x_")):
            if key.startswith(kind) and other + key[2:] not in keys:
                raise ValueError(
                    f"npz file {path} has {key} but no {other + key[2:]}; add it or remove {key}."
                )
        if key.startswith("x_"):
            pairs[key[2:]] = (key, "y_" + key[2:])
    if pairs and ("images" in keys or "labels" in keys):
        raise ValueError(
            f"npz file {path} has both x_<split>/y_<split> and images/labels keys; keep one layout."
        )
    if "images" in keys and "labels" in keys:
        return {"train": ("images", "labels")}
    if not pairs:
        raise ValueError(
            f"npz file {path} has keys {sorted(keys)}; expected x_train and y_train (optionally "
            "x_test and y_test), or images and labels."
        )
    return {split: pairs[split] for split in ordered_splits(pairs)}


_NPZ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def _open_npz(path):
    """np.load of an .npz without pickles; a file that is not one is a ValueError naming it."""
    try:
        npz = np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as error:
        raise ValueError(
            f"npz file {path} is not a readable .npz ({type(error).__name__}: {error}); save it "
            "again with np.savez(path, x_train=..., y_train=...)."
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(
            f"npz file {path} holds a single array, not named arrays; save it with "
            "np.savez(path, x_train=..., y_train=...)."
        )
    return npz


def _npz_array(npz, key, path):
    """npz[key]; a truncated member or an array of Python objects is a ValueError naming it."""
    try:
        return npz[key]
    except _NPZ_ERRORS as error:
        raise ValueError(
            f"npz file {path}: array {key!r} cannot be read ({type(error).__name__}: {error}); "
            "save numeric arrays again with np.savez (object arrays are refused)."
        ) from None


def open_npz(path):
    """A Reader over an .npz file (layout in the module docstring).

    Args:
        path: str or pathlib.Path of the file.

    Returns:
        Reader named after the file stem.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: missing or unpaired keys.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"npz file {path} does not exist; save one with "
            "np.savez(path, x_train=..., y_train=...)."
        )
    with _open_npz(path) as npz:
        keys = set(npz.files)
        splits = _npz_splits(path, keys)
        sizes = {split: len(_npz_array(npz, labels, path)) for split, (_, labels) in splits.items()}
        class_names = None
        if "class_names" in keys:
            class_names = tuple(str(n) for n in _npz_array(npz, "class_names", path))

    def read(split):
        images_key, labels_key = splits[split]
        with _open_npz(path) as npz:
            where = f"npz file {path} ({images_key}, {labels_key})"
            images = as_uint8_images(_npz_array(npz, images_key, path), where)
            return images, as_labels(_npz_array(npz, labels_key, path), images.shape[0], where)

    return Reader(path.stem, located("npz", path), sizes, class_names, read)


# === Image folder ===


def _decode_image_file(path):
    try:
        return tf.io.decode_image(path.read_bytes(), expand_animations=False).numpy()
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(
            f"cannot decode image {path} ({error.message}); replace or remove it."
        ) from None


def _stack_same_shape(images, names, where):
    """np.stack with an error naming the first image of another shape."""
    for image, name in zip(images, names):
        if image.shape != images[0].shape:
            raise ValueError(
                f"{where}: {name} has shape {image.shape} but {names[0]} has {images[0].shape}; "
                "resize or convert the images to one shape."
            )
    return np.stack(images)


def _class_files(split_dir):
    """{class name: sorted image files} of one split folder."""
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(
            f"image folder {split_dir} has no class subfolders; put each class's images in "
            f"{split_dir}/<class name>/."
        )
    files = {}
    for folder in classes:
        files[folder.name] = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files[folder.name]:
            raise ValueError(
                f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); add images "
                "or remove the folder."
            )
    return files


def open_image_folder(path):
    """A Reader over an image folder (layout in the module docstring).

    Args:
        path: str or pathlib.Path of the folder.

    Returns:
        Reader named after the folder; class names are the sorted subfolder names.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: no class folders, an empty class, different classes across splits.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"image folder {path} does not exist; give a folder with one subfolder of images "
            "per class."
        )
    subdirs = [p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    split_dirs = {"train": path}
    if subdirs and all(name in SPLIT_FOLDERS for name in subdirs):
        split_dirs = {name: path / name for name in ordered_splits(subdirs)}
    files = {split: _class_files(folder) for split, folder in split_dirs.items()}
    class_names = tuple(next(iter(files.values())))
    for split, per_class in files.items():
        if tuple(per_class) != class_names:
            raise ValueError(
                f"image folder {split_dirs[split]} has classes {list(per_class)}, but "
                f"{next(iter(split_dirs.values()))} has {list(class_names)}; use the same class "
                "folders."
            )

    def read(split):
        paths = [p for class_files in files[split].values() for p in class_files]
        labels = np.repeat(np.arange(len(class_names)), [len(f) for f in files[split].values()])
        images = [_decode_image_file(p) for p in paths]
        names = [str(p.relative_to(path)) for p in paths]
        where = f"image folder {split_dirs[split]}"
        return as_uint8_images(_stack_same_shape(images, names, where), where), labels.astype(
            np.int64
        )

    sizes = {split: sum(len(f) for f in per_class.values()) for split, per_class in files.items()}
    return Reader(path.name, located("folder", path), sizes, class_names, read)


# === TFRecord of tf.Example ===


def _example_image(feature, image_shape, where):
    """uint8/int/float image array (H, W, C) of one tf.Example image feature."""
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value if kind else []
    size = math.prod(image_shape) if image_shape else None
    if kind == "bytes_list" and len(values) == 1:
        raw = values[0]
        if raw.startswith(_ENCODED_MAGIC) and len(raw) != size:
            try:
                return tf.io.decode_image(raw, expand_animations=False).numpy()
            except tf.errors.InvalidArgumentError as error:
                raise ValueError(f"{where}: cannot decode the image ({error.message}).") from None
        if size is None:
            raise ValueError(
                f"{where}: the image is raw bytes, not PNG/JPEG/GIF/BMP; pass "
                "image_shape=(H, W, C)."
            )
        if len(raw) != size:
            raise ValueError(
                f"{where}: {len(raw)} raw image bytes do not fit image_shape={tuple(image_shape)} "
                f"({size} bytes); fix image_shape."
            )
        return np.frombuffer(raw, np.uint8).reshape(image_shape)
    if kind in ("int64_list", "float_list") and size is not None and len(values) == size:
        return np.asarray(values).reshape(image_shape)
    if kind in ("int64_list", "float_list"):
        raise ValueError(
            f"{where}: the image is a list of {len(values)} numbers; pass image_shape=(H, W, C) "
            "with H * W * C equal to it."
        )
    raise ValueError(f"{where}: the image feature must hold one encoded or raw bytes value.")


def _read_examples(files, image_key, label_key, image_shape, where):
    images, labels, names = [], [], []
    for number, record in enumerate(record_dataset(files).as_numpy_iterator()):
        here = f"{where}, record {number}"
        features = parse_example(record, here).features.feature
        for key, argument in ((image_key, "image_key"), (label_key, "label_key")):
            if key not in features:
                raise ValueError(
                    f"{here} has no feature {key!r} (it has {sorted(features)}); pass {argument}=."
                )
        label = features[label_key].int64_list.value
        if len(label) != 1:
            raise ValueError(
                f"{here}: feature {label_key!r} must hold one int64 class index; write labels as "
                "an int64_list of one value (or pass label_key= of such a feature)."
            )
        images.append(_example_image(features[image_key], image_shape, here))
        labels.append(label[0])
        names.append(f"record {number}")
    if not images:
        raise ValueError(f"{where} holds no records; write some tf.Example records to it.")
    images = as_uint8_images(_stack_same_shape(images, names, where), where)
    return images, as_labels(np.asarray(labels), images.shape[0], where)


def open_tfrecord(pattern, *, image_key="image", label_key="label", image_shape=None):
    """A Reader over TFRecord files of tf.Example (layout in the module docstring).

    Args:
        pattern: glob of the files; "{split}" in it is filled with train, test, validation.
        image_key: feature holding the image.
        label_key: feature holding the int64 label.
        image_shape: (H, W, C) for raw or numeric images; not needed for encoded images.

    Returns:
        Reader named after the folder of the files.

    Raises:
        FileNotFoundError: no file matches.
    """
    pattern = str(pattern)
    if "{split}" in pattern:
        candidates = {split: pattern.format(split=split) for split in ordered_splits(SPLIT_FOLDERS)}
    else:
        candidates = {"train": pattern}
    files = {}
    for split, glob in candidates.items():
        matched = sorted(tf.io.gfile.glob(glob))
        if matched:
            files[split] = matched
    if not files:
        raise FileNotFoundError(
            f"no TFRecord files match {pattern}; give a glob of files of serialized tf.Example."
        )
    sizes = {split: count_records(f) for split, f in files.items()}

    def read(split):
        where = f"TFRecord files {candidates[split]}"
        return _read_examples(files[split], image_key, label_key, image_shape, where)

    def chunks(split):
        return example_chunks(files[split], image_key=image_key, label_key=label_key,
                              image_shape=image_shape)

    name = pathlib.Path(next(iter(files.values()))[0]).parent.name
    return Reader(name, located("tfrecord", pattern), sizes, None, read, chunks)

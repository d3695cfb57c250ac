"""TFRecord files of tf.Example read chunk by chunk with tf.data: never the whole split at once.

Two encodings of the image feature are read, told apart by the length of its raw bytes:
    m3d_tf.io (write_examples, DatasetGen, the pipeline's Examples): float32 little-endian pixels
        in [0, 1], row-major (H, W, C), with int64 features height, width and channels; the same
        layout with uint8 pixels (H * W * C bytes) is the compact form of it.
    users' files (m3d_tf.data.files): raw uint8 bytes with `image_shape` given, or encoded
        PNG/JPEG/GIF/BMP bytes.
The label is one int64 under `label_key`. Gzipped files (TFX Examples) are detected by their magic.

    for images, labels in example_chunks(["a.tfrecord.gz", "b.tfrecord.gz"]):
        ...  # images uint8 or float32 (<= 4096, H, W, C), labels int64
"""

import math
import re

import numpy as np
import tensorflow as tf
from google.protobuf import message

CHUNK_SIZE = 4096
_ENCODED_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")
_SHAPE_KEYS = ("height", "width", "channels")


def compression(path):
    """"GZIP" for a gzipped file (its first two bytes are the gzip magic), else ""."""
    with tf.io.gfile.GFile(path, "rb") as f:
        return "GZIP" if f.read(2) == b"\x1f\x8b" else ""


def record_dataset(files):
    """The files' serialized records in file then record order, one file open at a time.

    A flat_map over the file names, not a chain of Dataset.concatenate: every element of a chain
    of k files passes through up to k nested iterators (1,000 shards: hours instead of minutes).
    """
    kinds = [compression(f) for f in files]
    names = tf.data.Dataset.from_tensor_slices((list(files), kinds))
    return names.flat_map(lambda name, kind: tf.data.TFRecordDataset(name, compression_type=kind))


def _first_example(files, where):
    try:
        for record in record_dataset(files).take(1):
            return parse_example(record.numpy(), f"{where}: the first record").features.feature
    except tf.errors.OpError as error:
        raise ValueError(f"{where} cannot be read ({tf_reason(error)}); write them again.") from None
    raise ValueError(f"{where} hold no records; write some tf.Example records to them.")


def _layout(feature, image_key, label_key, image_shape, where):
    """(image shape, how the bytes decode: "uint8", "float32" or "encoded") from one record."""
    for key, argument in ((image_key, "image_key"), (label_key, "label_key")):
        if key not in feature:
            raise ValueError(
                f"{where}: the first record has no feature {key!r} (it has {sorted(feature)}); "
                f"pass {argument}=."
            )
    values = feature[image_key].bytes_list.value
    if len(values) != 1:
        raise ValueError(
            f"{where}: feature {image_key!r} must hold one bytes value (raw or encoded pixels); "
            "read lists of numbers with m3d_tf.data.load_arrays instead."
        )
    raw = values[0]
    if image_shape is None and all(key in feature for key in _SHAPE_KEYS):
        image_shape = tuple(int(feature[key].int64_list.value[0]) for key in _SHAPE_KEYS)
    if raw.startswith(_ENCODED_MAGIC) and (
            image_shape is None or len(raw) not in (math.prod(image_shape),
                                                    4 * math.prod(image_shape))):
        shape = tf.io.decode_image(raw, expand_animations=False).shape
        return tuple(int(d) for d in shape), "encoded"
    if image_shape is None:
        raise ValueError(
            f"{where}: the image is raw bytes without height/width/channels features; pass "
            "image_shape=(H, W, C)."
        )
    size = math.prod(image_shape)
    if len(raw) not in (size, 4 * size):
        raise ValueError(
            f"{where}: {len(raw)} image bytes fit neither uint8 ({size}) nor float32 "
            f"({4 * size}) pixels of shape {tuple(image_shape)}; fix image_shape."
        )
    return tuple(image_shape), "uint8" if len(raw) == size else "float32"


def example_chunks(files, *, image_key="image", label_key="label", image_shape=None,
                   chunk_size=CHUNK_SIZE):
    """Streams (images, labels) chunks of TFRecord files of tf.Example (module docstring).

    Memory holds one chunk (and tf.data's read buffers), whatever the files' total size.

    Args:
        files: list of file paths (local or tf.io.gfile), read in this order.
        image_key, label_key: the features holding the image and the int64 label.
        image_shape: (H, W, C) of raw bytes without height/width/channels features.
        chunk_size: records per chunk.

    Yields:
        (images uint8 or float32 (B, H, W, C), labels int64 (B,)), B <= chunk_size; uint8 for
        uint8 and encoded pixels, float32 for float32 pixels (every record like the first).

    Raises:
        ValueError: no files or records, missing features, or a record unlike the first
            (another length or shape), naming the files.
    """
    files = [str(f) for f in files]
    if not files:
        raise ValueError("example_chunks needs at least one TFRecord file; none were given.")
    where = f"TFRecord files {files[0]}{' ...' if len(files) > 1 else ''}"
    first = _first_example(files, where)
    shape, kind = _layout(first, image_key, label_key, image_shape, where)
    spec = {image_key: tf.io.FixedLenFeature([], tf.string),
            label_key: tf.io.FixedLenFeature([], tf.int64)}

    if kind == "encoded":
        def parse(serialized):
            parsed = tf.io.parse_single_example(serialized, spec)
            image = tf.io.decode_image(parsed[image_key], expand_animations=False)
            return tf.ensure_shape(image, shape), parsed[label_key]

        chunks = record_dataset(files).map(parse).batch(chunk_size)
    else:
        def parse(serialized):
            parsed = tf.io.parse_example(serialized, spec)
            pixels = tf.io.decode_raw(parsed[image_key], tf.as_dtype(kind), little_endian=True)
            return tf.reshape(pixels, (-1, *shape)), parsed[label_key]

        chunks = record_dataset(files).batch(chunk_size).map(parse)
    try:
        for images, labels in chunks.prefetch(1).as_numpy_iterator():
            yield images, labels
    except tf.errors.OpError as error:
        raise ValueError(
            f"{where}: a record does not match the first ({kind} pixels of shape {shape}, "
            f"features {image_key!r} and {label_key!r}): {error.message.splitlines()[0]}. "
            "Write every record with one encoding and image shape."
        ) from None


def count_records(files):
    """Number of records in the files (one streaming pass, nothing kept).

    Raises:
        ValueError: a file that is not TFRecord, or is truncated, named with what to do.
    """
    total = 0
    for name in (str(f) for f in files):  # file by file, so that an error names the file
        batches = record_dataset([name]).batch(CHUNK_SIZE)
        try:
            total += int(batches.reduce(np.int64(0), lambda n, b: n + tf.size(b, tf.int64)))
        except tf.errors.OpError as error:
            raise ValueError(
                f"TFRecord file {name} cannot be read ({tf_reason(error)}); write it again or "
                "leave it out of the glob."
            ) from None
    return total


def tf_reason(error):
    """The readable part of a TensorFlow op error: no function-node prefix, no op suffix."""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", error.message or "").strip()
    return text.split(" [Op:")[0].splitlines()[0] if text else type(error).__name__


def parse_example(record, where):
    """tf.train.Example of one serialized record; ValueError naming `where` if it is not one."""
    try:
        return tf.train.Example.FromString(record)
    except message.DecodeError as error:
        raise ValueError(
            f"{where} is not a serialized tf.Example ({error}); write tf.Example records."
        ) from None

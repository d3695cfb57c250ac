"""The real batches `M3DCondenser.fit` consumes: any labelled tf.data stream, every batch checked.

A Keras user already has `tfds.load(name, as_supervised=True).shuffle(...).batch(256)` or
`tf.data.Dataset.from_tensor_slices((x, y)).batch(256)`: uint8 or float images, integer labels of
any width, batches of any size with classes in any proportion. `checked_batches` turns such a stream
into float32 images in [0, 1] and int32 labels (B,), and checks it in two places:

- its element_spec, once, in Python and without reading data: structure (image, label) pairs,
  ranks, dtypes and the image size. Most mistakes (a dataset of images only, a dict from `tfds.load`
  without `as_supervised`, one-hot or float labels, an unbatched stream) are reported before any
  work, each by a one-line ValueError saying what to do.
- every batch, inside the tf.data graph: equal image and label counts, a non-empty batch, the
  runtime image size (when the spec leaves it open), labels in [0, num_classes) and float pixels in
  [0, 1] (NaN and Inf fail too): 0-255 floats would otherwise train, silently, on garbage. The
  checks are reductions over a batch the step reads anyway, and they run in the input pipeline,
  overlapped with the step. They sit there rather than in `train_step` because XLA drops Assert
  ops: with `jit_compile=True` a check in the step would silently never run.

A failed batch check raises tf.errors.InvalidArgumentError from deep inside Keras' loop;
`raise_batch_error` turns it into `BatchError`, one line, which is both an InvalidArgumentError
and a ValueError.

    batches = checked_batches(ds, num_classes=10, image_shape=(28, 28, 1))
"""

import re

import tensorflow as tf

# Every message of a batch check starts with this, so that its error can be told from others.
PREFIX = "fit(): "
_MESSAGE = re.compile(re.escape(PREFIX) + r"[^\n]*")


class BatchError(tf.errors.InvalidArgumentError, ValueError):
    """A real batch failed a check inside the input pipeline (one line: what and what to do)."""

    def __init__(self, message):
        super().__init__(None, None, message)

    def __str__(self):
        return self.message


# === Element spec: once, before any data is read ===


def _how_to_pair():
    return (
        "give (images, labels) batches, e.g. tfds.load(name, split='train', as_supervised=True)"
        ".batch(256) or tf.data.Dataset.from_tensor_slices((images, labels)).batch(256)"
    )


def _check_structure(spec):
    """The (image spec, label spec) of a dataset's element_spec, or a ValueError."""
    if isinstance(spec, dict):
        raise ValueError(
            f"{PREFIX}the dataset yields dicts with keys {sorted(spec)}, not (images, labels) "
            "pairs; use tfds.load(..., as_supervised=True) or "
            "ds.map(lambda d: (d['image'], d['label']))."
        )
    if not isinstance(spec, tuple):
        raise ValueError(
            f"{PREFIX}the dataset yields only images ({spec}); fit() needs their labels too: "
            f"{_how_to_pair()}."
        )
    if len(spec) != 2:
        raise ValueError(
            f"{PREFIX}the dataset yields {len(spec)}-tuples; fit() needs (images, labels) pairs "
            "(sample weights are not used): map it to (images, labels)."
        )
    for what, part in zip(("images", "labels"), spec):
        if not isinstance(part, tf.TensorSpec):
            raise ValueError(
                f"{PREFIX}{what} must be dense tensors. Received {type(part).__name__} {part}."
            )
    return spec


def _check_image_spec(spec, image_shape):
    """Checks an image spec; returns True if it is (B, H, W) (a single channel left out)."""
    dtype, shape = spec.dtype, spec.shape
    if not (dtype == tf.uint8 or dtype.is_floating):
        raise ValueError(
            f"{PREFIX}images must be uint8 (0..255) or float in [0, 1]. Received dtype "
            f"{dtype.name}; cast 0..255 integers with tf.cast(images, tf.uint8)."
        )
    expected = ", ".join(map(str, image_shape))
    if shape.rank is None:
        raise ValueError(
            f"{PREFIX}images of unknown rank; give them a shape (batch, {expected}), "
            "e.g. with tf.ensure_shape in a map."
        )
    if shape.rank == len(image_shape) and shape.is_compatible_with(image_shape):
        raise ValueError(
            f"{PREFIX}the dataset yields single images of shape {tuple(shape)}, not batches; "
            "batch it first, e.g. ds.batch(256)."
        )
    if shape.rank == 4 and shape[1:].is_compatible_with(image_shape):
        return False
    if image_shape[-1] == 1 and shape.rank == 3 and shape[1:].is_compatible_with(image_shape[:2]):
        return True
    raise ValueError(
        f"{PREFIX}image batches must have shape (batch, {expected}) to match image_shape. "
        f"Received {tuple(shape)}."
    )


def _check_label_spec(spec, num_classes):
    """Checks a label spec: integer class indices of shape (B,) or (B, 1)."""
    dtype, shape = spec.dtype, spec.shape
    one_hot = shape.rank == 2 and shape[-1] == num_classes and num_classes != 1
    if one_hot:
        raise ValueError(
            f"{PREFIX}labels of shape {tuple(shape)} look one-hot; pass class indices: "
            "ds.map(lambda x, y: (x, tf.argmax(y, axis=-1)))."
        )
    if not dtype.is_integer:
        raise ValueError(
            f"{PREFIX}labels must be integer class indices in [0, {num_classes}). Received dtype "
            f"{dtype.name}; cast whole-number labels with tf.cast(labels, tf.int64) (floats are "
            "never truncated silently)."
        )
    if shape.rank is None or not (shape.rank == 1 or (shape.rank == 2 and shape[-1] in (1, None))):
        raise ValueError(
            f"{PREFIX}labels must have shape (batch,) or (batch, 1). Received "
            f"{tuple(shape) if shape.rank is not None else 'unknown rank'}."
        )


def check_element_spec(dataset, num_classes, image_shape):
    """Checks what a dataset yields, without reading it.

    Returns:
        True if its images are (B, H, W) with the single channel left out.

    Raises:
        ValueError: one line naming what is wrong and what to do.
    """
    images, labels = _check_structure(dataset.element_spec)
    no_channel_axis = _check_image_spec(images, tuple(image_shape))
    _check_label_spec(labels, num_classes)
    batch_sizes = images.shape[0], labels.shape[0]
    if None not in batch_sizes and batch_sizes[0] != batch_sizes[1]:
        raise ValueError(
            f"{PREFIX}batches of {batch_sizes[0]} images carry {batch_sizes[1]} labels; "
            "they must match."
        )
    return no_channel_axis


# === Every batch: inside the tf.data graph ===


def _require(ok, template, values):
    """An op that fails with tf.strings.format(template, values) when `ok` is False.

    The message is only built on failure (tf.cond), so a passing check costs its condition.
    """

    def fail():
        message = tf.strings.format(template, values, summarize=8)
        return tf.debugging.Assert(ok, [message])

    def pass_():
        return tf.no_op()

    return tf.cond(ok, pass_, fail)


def _after(checks, *tensors):
    """`tensors`, computed only once every op in `checks` has run (and passed)."""
    with tf.control_dependencies(checks):
        return tuple(tf.identity(t) for t in tensors)


def _check_batch(images, labels, num_classes, image_shape, per_class):
    """The batch's checks, in order: a later check may assume the earlier ones passed."""
    count = tf.shape(images)[0]
    checks = [
        _require(
            tf.equal(count, tf.size(labels)) & (count > 0),
            PREFIX + "a batch has {} images and {} labels; every batch needs as many labels as "
            "images, and at least one.",
            (count, tf.size(labels)),
        )
    ]
    if not images.shape[1:].is_fully_defined():
        size = tf.shape(images)[1:]
        checks.append(_require(
            tf.reduce_all(tf.equal(size, image_shape)),
            PREFIX + "a batch has images of size {}; image_shape is "
            + str(list(image_shape)) + ". Resize them in the pipeline.",
            (size,),
        ))
    images, labels = _after(checks, images, labels)
    wide = tf.cast(labels, tf.int64)  # unsigned 64-bit labels past 2**63 turn negative: caught
    low, high = tf.reduce_min(wide), tf.reduce_max(wide)
    checks.append(_require(
        (low >= 0) & (high < num_classes),
        PREFIX + f"labels must lie in [0, {num_classes}); a batch has labels in [{{}}, {{}}]. "
        "Map them to class indices 0..num_classes-1 (or raise num_classes).",
        (low, high),
    ))
    if images.dtype.is_floating:
        checks.append(_require(
            tf.reduce_all((images >= 0) & (images <= 1)),  # NaN fails both comparisons
            PREFIX + "float images must lie in [0, 1] with no NaN or Inf; a batch has values in "
            "[{}, {}]. Divide 0..255 pixels by 255 (or pass uint8 images).",
            (tf.reduce_min(images), tf.reduce_max(images)),
        ))
    if per_class is not None:
        counts = tf.math.bincount(tf.cast(labels, tf.int32), minlength=num_classes)
        checks.append(_require(
            tf.reduce_all(tf.equal(counts, per_class)),
            PREFIX + f"a batch of a balanced stream must hold {per_class} images of every class; "
            "it has per-class counts {}. Pass the stream balanced_batches returned, unchanged.",
            (counts,),
        ))
    return _after(checks, images, labels)


def checked_batches(dataset, num_classes, image_shape, per_class=None):
    """A labelled tf.data stream as float32 images in [0, 1] and int32 labels, every batch checked.

    Args:
        dataset: tf.data.Dataset of (images, labels) batches: images uint8 (0..255) or float in
            [0, 1], (B, H, W, C) (or (B, H, W) for one channel); labels any integer dtype, (B,)
            or (B, 1). Any batch size; any mix of classes.
        num_classes: int, labels must lie in [0, num_classes).
        image_shape: (H, W, C) the images must have.
        per_class: None, or the number of images every class must have in every batch (a
            `balanced_batches` stream, which the condenser cuts into per-class blocks).

    Returns:
        tf.data.Dataset of (float32 (B, H, W, C) in [0, 1], int32 (B,)). uint8 pixels are divided
        by 255 as `balanced_batches` divides them; float32 batches in range pass unchanged.

    Raises:
        ValueError: what the dataset yields is not usable (checked from its element_spec).
        tf.errors.InvalidArgumentError (when iterated): a batch failed a check; its message holds
            a line starting with PREFIX (see `raise_batch_error`).
    """
    image_shape = tuple(int(d) for d in image_shape)
    no_channel_axis = check_element_spec(dataset, num_classes, image_shape)

    def check(images, labels):
        if no_channel_axis:
            images = images[..., None]
        labels = tf.reshape(labels, (-1,))  # (B,) and (B, 1) alike; a wrong count fails below
        images, labels = _check_batch(images, labels, num_classes, image_shape, per_class)
        if images.dtype == tf.uint8:
            images = tf.cast(images, tf.float32) / 255.0
        else:
            images = tf.cast(images, tf.float32)
        images = tf.ensure_shape(images, (None,) + image_shape)
        return images, tf.cast(labels, tf.int32)

    return dataset.map(check).prefetch(tf.data.AUTOTUNE)


def raise_batch_error(error):
    """Re-raises a failed batch check as a one-line BatchError; other errors are left alone.

    Args:
        error: a tf.errors.InvalidArgumentError caught around Keras' fit().
    """
    found = _MESSAGE.search(error.message or "")
    if found is None:
        return
    message = found.group(0).rstrip()
    if message.endswith("]"):  # Assert wraps its data in brackets
        message = message[:-1]
    raise BatchError(message) from None

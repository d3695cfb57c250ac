"""Class-balanced sampling of real images: what condensation consumes.

DM and M3D match, class by class, the synthetic images of class c with a batch of real images of
class c drawn without replacement (DM's `get_images(c, n)`: a fresh random subset every
iteration). Here every class walks through epochs instead: epoch e of class c is a seeded
permutation of its k_c images, cut into floor(k_c / n) batches of n; the k_c mod n images left at
the end of a permutation wait for a later epoch (a new permutation), so no image repeats within a
batch and every image is seen about equally often. The batch at step t is a pure function of
(seed, t): the same seed gives the same stream, and resuming at step t needs only `start=t`.

The dataset object `balanced_batches` returns carries its layout (`balanced_layout`), so that
M3DCondenser.fit can take its fast path (per-class blocks) for it alone, with no per-batch test
in the step; a transformed stream (.take, .map, ...) is a new object without the mark.
"""

import numpy as np
import tensorflow as tf

from m3d_tf.checks import nonnegative_int, positive_int
from m3d_tf.data.arrays import as_labels, as_uint8_images, check_label_range


def _materialise(data):
    """(images, labels) arrays from arrays or from a tf.data.Dataset of (image, label)."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(
                f"data must be a tf.data.Dataset of (image, label) pairs. Received elements {spec}."
            )
        batched = data if spec[0].shape.rank == 4 else data.batch(4096)
        parts = list(batched.as_numpy_iterator())
        if not parts:
            raise ValueError(
                "data is an empty tf.data.Dataset; give at least n_per_class images per class."
            )
        return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    raise ValueError(
        "data must be (images, labels) arrays or a tf.data.Dataset of (image, label). "
        f"Received {type(data).__name__}."
    )


def _checked_images(images, where):
    """uint8 images unchanged, float images in [0, 1] as float32, (N, H, W, C)."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        return as_uint8_images(images, where)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.size == 0:
        raise ValueError(
            f"{where}: images must be (N, H, W) or (N, H, W, C). Received {images.shape}."
        )
    low, high = float(images.min()), float(images.max())
    if not (0.0 <= low and high <= 1.0):
        raise ValueError(
            f"{where}: float images must be in [0, 1]. Received values in [{low:g}, {high:g}]."
        )
    return images.astype(np.float32)


def images_by_class(images, labels, num_classes):
    """Splits images by class, keeping their order within each class.

    Args:
        images: array (N, ...), any dtype.
        labels: integer array (N,) in 0..num_classes-1.
        num_classes: number of classes C.

    Returns:
        list of C arrays; entry c is images[labels == c] (possibly empty).

    Raises:
        ValueError: different counts, or labels outside 0..num_classes-1.

    Example:
        >>> images_by_class(np.arange(4), np.array([1, 0, 1, 0]), 3)
        [array([1, 3]), array([0, 2]), array([], dtype=int64)]
    """
    images = np.asarray(images)
    labels = as_labels(labels, len(images), "images_by_class")
    check_label_range(labels, num_classes, "images_by_class")
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=num_classes)
    return np.split(images[order], np.cumsum(counts)[:-1])


def balanced_batches(data, n_per_class, *, num_classes=None, classes=None, seed=0, start=0):
    """An endless tf.data stream of batches with exactly n images of every chosen class.

    Args:
        data: (images, labels) arrays, images uint8 in 0..255 or float in [0, 1], (N, H, W[, C]),
            labels integers (N,); or a tf.data.Dataset of (image, label) (read into memory).
        n_per_class: images of each class in a batch, n >= 1.
        num_classes: number of classes C (default: largest label + 1).
        classes: the classes to sample (default: all C); sorted, no duplicates.
        seed: int seed of the permutations.
        start: step of the first batch (to resume a stream where it stopped).

    Returns:
        tf.data.Dataset of (images float32 (K * n, H, W, C) in [0, 1], labels int32 (K * n,))
        for K chosen classes, sorted by class: the first n rows are the smallest chosen class.
        Under tf.distribute the batch axis is split across replicas, so each replica gets a
        contiguous run of classes.

    Raises:
        ValueError: bad arguments, or a chosen class with fewer than n_per_class images.

    Example:
        >>> batches = balanced_batches((x_train, y_train), 128, seed=0)
        >>> images, labels = next(iter(batches))  # (1280, 28, 28, 1), labels 0 x128, 1 x128, ...
    """
    positive_int("n_per_class", n_per_class)
    for name, value in (("seed", seed), ("start", start)):
        nonnegative_int(name, value)
    images, labels = _materialise(data)
    images = _checked_images(images, "balanced_batches")
    labels = as_labels(labels, images.shape[0], "balanced_batches")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    check_label_range(labels, num_classes, "balanced_batches")
    if classes is None:
        classes = range(num_classes)
    chosen = sorted(int(c) for c in classes)
    if (
        not chosen
        or len(set(chosen)) != len(chosen)
        or not 0 <= chosen[0] <= chosen[-1] < num_classes
    ):
        raise ValueError(
            f"classes must be distinct class indices in 0..{num_classes - 1}. "
            f"Received classes={classes!r}."
        )
    counts = np.bincount(labels, minlength=num_classes)
    for c in chosen:
        if counts[c] < n_per_class:
            raise ValueError(
                f"class {c} has {counts[c]} images; n_per_class={n_per_class} needs at least "
                f"{n_per_class}. Lower n_per_class or leave the class out with classes=."
            )

    # One pool of the chosen classes' images, class after class; the k-th starts at offsets[k].
    members = [np.flatnonzero(labels == c) for c in chosen]
    pool = tf.constant(images[np.concatenate(members)])
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in members])[:-1]]).tolist()
    sizes = [len(m) for m in members]
    n = int(n_per_class)
    integer_pixels = images.dtype == np.uint8

    def batch(step):
        picked = []
        for c, offset, size in zip(chosen, offsets, sizes):
            per_epoch = size // n
            epoch, j = step // per_epoch, step % per_epoch
            permutation = tf.random.experimental.stateless_shuffle(
                tf.range(size, dtype=tf.int64),
                seed=tf.stack([tf.constant(seed, tf.int64), c * 2**32 + epoch]),
                alg="philox",
            )
            picked.append(offset + tf.slice(permutation, [j * n], [n]))  # static length n
        batch_images = tf.cast(tf.gather(pool, tf.concat(picked, 0)), tf.float32)
        if integer_pixels:  # divided as in load_dataset: the same floats for the same pixels
            batch_images = batch_images / 255.0
        batch_labels = tf.repeat(tf.constant(chosen, tf.int32), n)
        return batch_images, batch_labels

    stream = (
        tf.data.Dataset.counter(start=start, dtype=tf.int64)
        .map(batch, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return mark_balanced(stream, chosen, n)


def mark_balanced(stream, classes, n_per_class):
    """Marks a stream whose every batch is `n_per_class` images of each of `classes`, class-major.

    For streams that guarantee the layout by construction (balanced_batches,
    m3d_tf.data.stream.streamed_batches): M3DCondenser.fit then builds only its fast path
    (balanced_layout), which still asserts the class counts of every batch.

    Returns:
        `stream`, marked.
    """
    stream._m3d_balanced_layout = (tuple(int(c) for c in classes), int(n_per_class))
    return stream


def balanced_layout(dataset):
    """(classes, n_per_class) of a stream `balanced_batches` returned, else None.

    Only the very object `balanced_batches` returned is recognised: any transformation of it
    (.take, .map, .repeat) gives a new dataset whose batches are no longer guaranteed.

    Example:
        >>> balanced_layout(balanced_batches((x, y), 8, num_classes=3))
        ((0, 1, 2), 8)
    """
    return getattr(dataset, "_m3d_balanced_layout", None)

"""Class-balanced batches streamed from per-class files on disk (m3d_tf.data.class_files).

    class_files, info = stream_source("tfrecord:/data/shards/*.tfrecord")  # one streaming pass
    batches = streamed_batches(class_files, 128, seed=0)   # balanced_batches' layout, from disk

`streamed_batches` yields balanced_batches' elements (images float32 (K*n, H, W, C) in [0, 1],
labels int32, class-major) and samples as it does: epoch e of class c is a seeded permutation of
its k_c images cut into floor(k_c / n) batches of n, no image repeated within an epoch. The
permutation is a keyed bijection evaluated only at the n positions a step needs (TensorFlow's
RandomIndexShuffle keyed by (seed, c, e)), and the images are read at those positions with
os.pread (fixed-size records), so a step costs O(K n) time and memory whatever k_c, and the
batch of step t is a pure function of (seed, t): `start=t` resumes exactly, without replay. The
batches are not those of balanced_batches (which materialises each permutation, O(k_c) per class
per step, over images held in the graph); they are drawn the same way.

Designs not taken: one tf.data dataset per class with a shuffle buffer, zipped: a buffer is not a
permutation (the end of a file comes late) and resuming at step t replays t steps; filtering the
source by class: O(N) reads per class per epoch.
"""

import os

import numpy as np
import tensorflow as tf

from m3d_tf.checks import nonnegative_int, positive_int
from m3d_tf.data.balanced import mark_balanced
from m3d_tf.data.class_files import DTYPES

# Rounds of RandomIndexShuffle's keyed bijection: with its minimum (4), consecutive positions
# land at nearly evenly spaced indices, a stratified rather than a random batch.
_SHUFFLE_ROUNDS = 16


# === Sampling: class-balanced batches and the initialisation sample ===


def _pread(class_files, c, rows):
    """Class c's images at the given row indices, (len(rows), H, W, C), by os.pread."""
    size, dtype = class_files.record_bytes, DTYPES[class_files.dtype]
    with open(class_files.path(c), "rb", buffering=0) as f:
        raw = b"".join(os.pread(f.fileno(), size, int(i) * size) for i in rows)
    images = np.frombuffer(raw, dtype).reshape((-1, *class_files.image_shape))
    return images.astype(class_files.dtype)


def streamed_batches(class_files, n_per_class, *, classes=None, seed=0, start=0):
    """An endless tf.data stream of batches with n images of every chosen class, read from disk.

    Args:
        class_files: ClassFiles (`write_class_files`, `open_class_files`, `stream_source`).
        n_per_class: images of each class in a batch, n >= 1.
        classes: the classes to sample (default: all); distinct indices.
        seed: int seed of the permutations, >= 0.
        start: step of the first batch (to resume a stream where it stopped).

    Returns:
        tf.data.Dataset of (images float32 (K * n, H, W, C) in [0, 1], labels int32 (K * n,)),
        sorted by class as balanced_batches' (rows [k n, (k + 1) n) are the k-th chosen class);
        uint8 pixels are divided by 255 as load_dataset does.

    Raises:
        ValueError: bad arguments, or a chosen class with fewer than n_per_class images.

    Example:
        >>> batches = streamed_batches(open_class_files("cache/fm-train"), 128, start=500)
    """
    positive_int("n_per_class", n_per_class)
    for name, value in (("seed", seed), ("start", start)):
        nonnegative_int(name, value)
    num_classes = class_files.num_classes
    chosen = sorted(int(c) for c in (range(num_classes) if classes is None else classes))
    if not chosen or len(set(chosen)) != len(chosen) or not 0 <= chosen[0] <= chosen[-1] < num_classes:
        raise ValueError(
            f"classes must be distinct class indices in 0..{num_classes - 1}. "
            f"Received classes={classes!r}."
        )
    for c in chosen:
        if class_files.counts[c] < n_per_class:
            raise ValueError(
                f"class {c} has {class_files.counts[c]} images; n_per_class={n_per_class} needs "
                f"at least {n_per_class}. Lower n_per_class or leave the class out with classes=."
            )
    n = int(n_per_class)
    shape = (len(chosen) * n, *class_files.image_shape)

    def read(indices):  # int64 (K, n) -> (K * n, H, W, C)
        return np.concatenate([_pread(class_files, c, rows) for c, rows in zip(chosen, indices)])

    def batch(step):
        rows = []
        for c in chosen:
            size = class_files.counts[c]
            epoch, j = step // (size // n), step % (size // n)
            rows.append(tf.raw_ops.RandomIndexShuffle(
                index=j * n + tf.range(n, dtype=tf.int64),
                seed=tf.stack([tf.constant(seed, tf.int64), tf.constant(c, tf.int64), epoch]),
                max_index=tf.constant(size - 1, tf.int64), rounds=_SHUFFLE_ROUNDS,
            ))
        pixels = tf.numpy_function(read, [tf.stack(rows)], tf.as_dtype(class_files.dtype),
                                   stateful=False)
        images = tf.cast(tf.ensure_shape(pixels, shape), tf.float32)
        if class_files.dtype == "uint8":
            images = images / 255.0
        return images, tf.repeat(tf.constant(chosen, tf.int32), n)

    stream = (
        tf.data.Dataset.counter(start=start, dtype=tf.int64)
        .map(batch, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return mark_balanced(stream, chosen, n)  # M3DCondenser's fast path, as balanced_batches


def initialization_sample(class_files, *, init, ipc, factor, seed):
    """The few real images per class from which M3DCondenser.initialize picks exactly what it
    would pick from the whole class.

    parameterization.initial_images draws, for class c, rng.choice(k_c, m, replace=False) with
    rng = NumPy's default_rng([seed, c]) and m = ipc * factor^2 ("mix") or ipc ("real"). Given
    exactly m images of a class it draws a permutation p of them instead; placing the whole
    class's draw at rows p makes both draws land on the same images, so a streamed condensation
    starts from the set the in-memory one starts from. "noise" reads one image per class.

    Args:
        class_files: ClassFiles.
        init, ipc, factor, seed: the condenser's.

    Returns:
        (images uint8 or float32 (<= C m, H, W, C), labels int64), m images of each class (all
        of a class with fewer, for initialize to report).
    """
    per_class = ipc * factor**2 if init == "mix" else ipc if init == "real" else 1
    images, labels = [], []
    for c, count in enumerate(class_files.counts):
        if count < per_class:
            rows = np.arange(count)
        else:
            picked = np.random.default_rng([seed, c]).choice(count, size=per_class, replace=False)
            order = np.random.default_rng([seed, c]).choice(per_class, size=per_class,
                                                            replace=False)
            rows = np.empty(per_class, np.int64)
            rows[order] = picked
        images.append(_pread(class_files, c, rows))
        labels.append(np.full(len(rows), c, np.int64))
    return np.concatenate(images), np.concatenate(labels)

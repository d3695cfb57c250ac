"""A validation split carved from the training split, so that settings are never chosen on test.

Benchmarks that choose a learning rate, a budget or an epoch count hold out a fixed number of
training images of every class and measure on them; the test split is read once, at the end, for
the settings chosen. The split is a pure function of the labels and a seed.
"""

import numpy as np

from m3d_tf.checks import positive_int


def holdout_split(labels, per_class, *, seed=0):
    """Indices of a class-balanced validation split and of the training images that remain.

    Args:
        labels: int labels of the training split, shape (N,).
        per_class: validation images of every class (e.g. 500 of Fashion-MNIST's 6,000).
        seed: which images are held out.

    Returns:
        (train_indices, validation_indices): disjoint sorted int64 arrays covering range(N);
        the validation indices hold `per_class` images of every class present.

    Raises:
        ValueError: per_class not a positive integer, or a class with no more than per_class
            images (nothing would be left to train on).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional; received shape {labels.shape}.")
    positive_int("per_class", per_class)
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) <= per_class:
            raise ValueError(
                f"class {int(label)} has {len(rows)} training images; holding out {per_class} "
                "would leave none to train on. Hold out fewer per class."
            )
        held.append(rng.choice(rows, per_class, replace=False))
    validation = np.sort(np.concatenate(held)).astype(np.int64)
    keep = np.ones(len(labels), bool)
    keep[validation] = False
    return np.flatnonzero(keep).astype(np.int64), validation

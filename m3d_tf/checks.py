"""The small argument checks every public entry point shares, each written once.

A leaf: it imports nothing from m3d_tf, so even the modules at the bottom (mmd,
parameterization) use it without a cycle. Registries (the valid kernels, initialisations, augmentation strategies, ...) stay in the module
that implements them (mmd.KERNELS, parameterization.INITS, augment.STRATEGIES); this module only
holds the checks, so a rule changes in one place and every message reads the same: the argument,
what was expected and what was received (Keras' style).
"""

import numpy as np


def positive_int(name, value):
    """`value` as a Python int if it is an integer >= 1 (bool is not), else ValueError.

    Example:
        >>> positive_int("ipc", np.int64(10))
        10
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received {name}={value!r}.")
    return int(value)


def nonnegative_int(name, value):
    """`value` as a Python int if it is an integer >= 0 (bool is not), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer. Received {name}={value!r}.")
    return int(value)


def choice(name, value, choices):
    """`value` if it is one of `choices` (a tuple, or a dict's keys), else ValueError listing them."""
    if value not in choices:
        raise ValueError(f"Unknown {name}={value!r}; valid choices: {', '.join(choices)}.")
    return value


def per_channel(name, value, channels, *, positive=False):
    """One finite float per channel: a tuple of `channels` Python floats.

    The one rule for a dataset's mean and std, wherever they enter (the condenser, evaluate):
    a single number stands for every channel (0.286 for Fashion-MNIST's one channel, or the same
    value on all three of an RGB set); otherwise exactly one number per channel. NaN and Inf are
    refused (a NaN std would pass `s <= 0`), and with `positive` so is any value <= 0 (a std of
    0 divides by zero).

    Raises:
        ValueError: not numbers, the wrong count, NaN/Inf, or (positive) a value <= 0.

    Example:
        >>> per_channel("std", 0.5, 3, positive=True)
        (0.5, 0.5, 0.5)
    """
    try:
        values = np.ravel(np.asarray(value, np.float64))
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be numbers, one per channel ({channels}). Received {name}={value!r}."
        ) from None
    if values.size == 1:
        values = np.repeat(values, channels)
    if values.shape != (channels,):
        raise ValueError(
            f"{name} needs one value per channel ({channels}), or one for all. "
            f"Received {name}={value!r}."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite per channel. Received {name}={value!r}.")
    if positive and not np.all(values > 0):
        raise ValueError(
            f"{name} must be positive per channel. Received {name}={value!r}."
        )
    return tuple(float(v) for v in values)

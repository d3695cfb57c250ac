"""m3d_tf/checks.py: the shared argument checks, and that every entry point uses the one rule."""

import numpy as np
import pytest

from m3d_tf import checks, evaluate
from m3d_tf.condenser import M3DCondenser


def test_positive_and_nonnegative_int():
    assert checks.positive_int("ipc", np.int64(3)) == 3
    assert type(checks.positive_int("ipc", np.int64(3))) is int
    assert checks.nonnegative_int("seed", 0) == 0
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=rf"^ipc must be a positive integer\. Received "
                                             rf"ipc={bad!r}\.$".replace("(", r"\(")):
            checks.positive_int("ipc", bad)
    with pytest.raises(ValueError, match=r"^seed must be a non-negative integer\. Received "
                                         r"seed=-1\.$"):
        checks.nonnegative_int("seed", -1)


def test_choice_lists_the_choices():
    assert checks.choice("kernel", "linear", ("gaussian_mix", "linear")) == "linear"
    with pytest.raises(ValueError, match=r"^Unknown kernel='gauss'; valid choices: "
                                         r"gaussian_mix, linear\.$"):
        checks.choice("kernel", "gauss", ("gaussian_mix", "linear"))


@pytest.mark.parametrize("value, channels, expected", [
    (0.5, 3, (0.5, 0.5, 0.5)),            # one number stands for every channel
    ((0.5,), 3, (0.5, 0.5, 0.5)),
    ([0.1, 0.2, 0.3], 3, (0.1, 0.2, 0.3)),
    (np.float32(0.25), 1, (0.25,)),
])
def test_per_channel_accepts_one_value_or_one_per_channel(value, channels, expected):
    got = checks.per_channel("mean", value, channels)
    assert got == pytest.approx(expected) and all(type(v) is float for v in got)


@pytest.mark.parametrize("value, positive, message", [
    ((0.1, 0.2), False, r"mean needs one value per channel \(3\), or one for all\. "
                        r"Received mean=\(0\.1, 0\.2\)\."),
    ((), False, r"mean needs one value per channel \(3\)"),
    ((0.1, float("nan"), 0.3), False, r"mean must be finite per channel"),
    (float("inf"), False, r"mean must be finite per channel"),
    ("abc", False, r"mean must be numbers, one per channel \(3\)"),
    ((0.1, 0.0, 0.3), True, r"mean must be positive per channel"),
    (-0.5, True, r"mean must be positive per channel"),
])
def test_per_channel_refuses(value, positive, message):
    with pytest.raises(ValueError, match=message):
        checks.per_channel("mean", value, 3, positive=positive)


def test_condenser_and_evaluate_apply_the_same_per_channel_rule():
    """Both take a single number for every channel, and refuse NaN and a std of 0 alike."""
    condenser = M3DCondenser(2, (4, 4, 3), ipc=1, factor=1, mean=0.5, std=0.25)
    assert condenser.mean == (0.5,) * 3 and condenser.std == (0.25,) * 3
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 4, 4, 3)).astype(np.float32)
    labels = np.array([0, 1, 0, 1])
    for bad, message in (({"std": 0.0}, "std must be positive per channel"),
                         ({"mean": float("nan")}, "mean must be finite per channel"),
                         ({"std": (0.2, 0.3)}, r"std needs one value per channel \(3\)")):
        kwargs = {"mean": 0.5, "std": 0.25, **bad}
        with pytest.raises(ValueError, match=message):
            M3DCondenser(2, (4, 4, 3), ipc=1, factor=1, **kwargs)
        with pytest.raises(ValueError, match=message):
            evaluate.evaluate(images, labels, images, labels, epochs=1, runs=1, **kwargs)

"""m3d_tf: dataset condensation by multi-kernel Maximum Mean Discrepancy (M3D) for Keras 3.

The data path: any labelled tf.data.Dataset (or `balanced_batches(...)`, the fast path) ->
`M3DCondenser(...).fit(ds)` -> `synthetic_images()` -> `io.save_set` -> `evaluate` or TFX
Examples. A condenser saves as `.keras` (`condenser.save`, `load_condenser`).

The names below load on first use (PEP 562), so `import m3d_tf` alone does not import
TensorFlow: the `m3d` command (m3d_tf/cli.py) sets TensorFlow's log level and Python's warning
filters before TensorFlow loads, which is the only moment they take effect.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "M3DCondenser": "m3d_tf.condenser",
    "load_condenser": "m3d_tf.condenser",
    "DatasetInfo": "m3d_tf.data",
    "balanced_batches": "m3d_tf.data",
    "images_by_class": "m3d_tf.data",
    "load_arrays": "m3d_tf.data",
    "load_dataset": "m3d_tf.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'm3d_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])

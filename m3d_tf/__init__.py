"""m3d_tf: dataset condensation by multi-kernel Maximum Mean Discrepancy (M3D) for Keras 3.

The data path: any labelled tf.data.Dataset (or `balanced_batches(...)`, the fast path) ->
`M3DCondenser(...).fit(ds)` -> `synthetic_images()` -> `io.save_set` -> `evaluate` or TFX
Examples. A condenser saves as `.keras` (`condenser.save`, `load_condenser`).
"""

__version__ = "0.1.0"

# The `m3d` command prints only its own lines: TensorFlow's log is set up before it loads.
from m3d_tf import console  # noqa: E402

console.prepare()

from m3d_tf.condenser import M3DCondenser, load_condenser  # noqa: E402
from m3d_tf.data import (  # noqa: E402
    DatasetInfo,
    balanced_batches,
    images_by_class,
    load_arrays,
    load_dataset,
)

__all__ = [
    "DatasetInfo",
    "M3DCondenser",
    "balanced_batches",
    "images_by_class",
    "load_arrays",
    "load_condenser",
    "load_dataset",
]

"""m3d_tf: dataset condensation by multi-kernel Maximum Mean Discrepancy (M3D) for Keras 3.

The data path: `load_arrays` / `load_dataset` -> `M3DCondenser(...).fit(balanced_batches(...))`
-> `synthetic_images()` -> `io.save_set` -> `evaluate` or TFX Examples.
"""

__version__ = "0.1.0"

from m3d_tf.condenser import M3DCondenser  # noqa: E402
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
    "load_dataset",
]

"""m3d_tf: dataset condensation by multi-kernel Maximum Mean Discrepancy (M3D) for Keras 3."""

__version__ = "0.1.0"

"""The SyntheticSet artifact: a condensed image set in the m3d_tf.io format, traceable in MLMD.

Its uri is a directory that `m3d_tf.io.load_set(uri)` reads: metadata.json, images.npz (the
stored float32 pixels, C*ipc images, not yet decoded) and grid.png, plus logs/ (TensorBoard event
files of the condensation that made it). The properties repeat what matters for queries in ML
Metadata (which IPC, which kernel, how far the MMD went down); metadata.json holds the rest.

They are MLMD custom properties (`artifact.custom_properties["ipc"].int_value`): Kubeflow
Pipelines v2 compiles a custom artifact type to its generic schema, which declares no typed
properties, so a type with PROPERTIES cannot be compiled for it.
"""

from tfx.types.artifact import Artifact

# Property name -> Python type; every name is also a key of the set's metadata.json.
PROPERTY_TYPES = {
    "dataset": str,       # DatasetInfo.name of the condensed data
    "method": str,        # "m3d" (Gaussian-mix kernel), "dm" (linear kernel)
    "num_classes": int,
    "ipc": int,           # stored images per class
    "factor": int,        # multi-formation factor: each stored image decodes into f*f
    "kernel": str,        # m3d_tf.condenser.KERNELS
    "iterations": int,    # condensation iterations run
    "seed": int,
    "final_mmd": float,   # history["mmd"][-1] of the run (Keras' mean over its one epoch)
}


class SyntheticSet(Artifact):
    """A directory written by m3d_tf.io.save_set, with the condensation's TensorBoard logs.

    TYPE_NAME is also the class's import path. Kubeflow Pipelines v2 requires custom artifact
    type names of the form "<namespace>.<Title>", and TFX's KFP v2 container entrypoint (and
    Vertex AI's) rebuilds an input artifact by importing its type name as a class path
    (kubeflow_v2_entrypoint_utils._retrieve_class_path). "components.SyntheticSet" satisfies
    both: the `components` package exports this class. The library m3d_tf knows nothing of TFX,
    so the name cannot live under it.
    """

    TYPE_NAME = "components.SyntheticSet"


def record_properties(artifact, metadata):
    """Sets the PROPERTY_TYPES custom properties of `artifact` from a set's metadata dict."""
    setters = {str: artifact.set_string_custom_property, int: artifact.set_int_custom_property,
               float: artifact.set_float_custom_property}
    for name, kind in PROPERTY_TYPES.items():
        setters[kind](name, kind(metadata[name]))

"""TFX components around m3d_tf: DatasetGen, M3DCondense, SyntheticSet, a Trainer module.

`components.SyntheticSet` is the artifact class at the import path that its TYPE_NAME names
(components/artifacts.py); it is imported on first use, so importing a submodule such as
components.trainer_module does not pull in TFX's artifact machinery.

Importing TFX imports tensorflow_transform, which sets TF_USE_LEGACY_KERAS=1 (TensorFlow's keras
attribute becomes Keras 2) for the whole process when the variable is unset. m3d_tf is Keras 3
(`import keras`) and TFMA uses tf_keras directly either way; "0" keeps TensorFlow on Keras 3 here,
in subprocesses and in the pipeline image (pipelines/Dockerfile), the configuration the tests run.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")


def __getattr__(name):
    if name == "SyntheticSet":
        from components.artifacts import SyntheticSet

        return SyntheticSet
    raise AttributeError(f"module 'components' has no attribute {name!r}")

"""Packaging for m3d-tf.

The core library (m3d_tf) needs only TensorFlow, Keras 3 and tensorflow-datasets; the TFX
components and pipelines need the "pipeline" extra. Ranges are the ones known to work together
(../shared/docs/environment.md); requirements/env.lock pins the exact set that scripts/m3d-env
installs (regenerate it with `make lock` after changing anything here).
"""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).resolve().parent


def read_version():
    """Returns __version__ from m3d_tf/__init__.py without importing the package (and TF)."""
    text = (HERE / "m3d_tf" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise ValueError(
            "m3d_tf/__init__.py has no line '__version__ = \"X.Y.Z\"'; add one so setup.py can read it."
        )
    return match.group(1)


CORE = [
    "tensorflow>=2.21,<2.22",
    "keras>=3.15,<3.16",
    # TF 2.21 no longer pulls TensorBoard in; keras.callbacks.TensorBoard needs it.
    "tensorboard>=2.21,<2.22",
    "tensorflow-datasets>=4.9",
    # tensorflow-datasets 4.9 imports it to build datasets but declares it only below Python 3.9.
    "importlib-resources>=6",
    "numpy>=1.26,<3",
    "pillow>=10",
]

PIPELINE = [
    "tfx==1.21.*",
    # tfx[kfp] only applies below Python 3.12, so kfp is listed here directly.
    "kfp>=2.16,<2.17",
    # The range tfx 1.21 and tensorflow-model-analysis 0.52 both accept.
    "apache-beam[gcp]>=2.53,<3",
    # TFMA imports tf_keras; our own code never does (we use Keras 3).
    "tf-keras==2.21.*",
    "tensorflow-model-analysis==0.52.*",
]

DEV = [
    "pytest>=8",
    "pytest-timeout>=2.3",
]

setup(
    name="m3d-tf",
    version=read_version(),
    description="Dataset condensation by multi-kernel MMD (M3D) for Keras 3, with TFX components.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["m3d_tf", "m3d_tf.*", "components", "components.*",
                                    "pipelines", "pipelines.*"]),
    python_requires=">=3.11",
    install_requires=CORE,
    extras_require={"pipeline": PIPELINE, "dev": DEV},
    entry_points={"console_scripts": ["m3d = m3d_tf.cli:main"]},
)

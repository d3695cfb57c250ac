"""M3D pipelines: the graph (pipeline.py) and its runners (local.py, beam.py, kubeflow.py).

`python -m pipelines.<runner>` runs this first, before TFX loads: see components/__init__.py
for why TF_USE_LEGACY_KERAS is "0".
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")

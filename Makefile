# Every target runs inside the project environment, which scripts/m3d-env builds on first use
# (a Debian 13 root on Debian 12 hosts, a venv where glibc >= 2.39); see README.md.
ENV := scripts/m3d-env
IMAGE := scripts/m3d-image

.PHONY: run test pipeline kubeflow-run image image-gpu env info shell lock

# The main job: Fashion-MNIST at IPC 10, M3D vs DM vs random (m3d_tf/cli.py, `m3d main`).
run:
	$(ENV) run python -m m3d_tf main

# The whole suite, TFX tests included; pytest's summary closes the output and its exit status is
# make's. The pipeline image is built or reused first; pytest gets a podman API socket for the
# container tests (M3D_CONTAINER_HOST, M3D_PIPELINE_IMAGE; see scripts/m3d-image serve), which
# stops when pytest ends. TESTS picks a part, e.g. TESTS=tests/test_pipeline_image.py.
TESTS ?= tests
test: image
	$(IMAGE) serve $(ENV) run python -m pytest -ra $(TESTS)

# The TFX pipeline end to end on Fashion-MNIST, locally (pipelines/local.py): DatasetGen,
# M3DCondense, Trainer, Evaluator; artifacts and ML Metadata under runs/pipeline. A short run by
# default; e.g. PIPELINE_ARGS="--iterations 5000 --epochs 1000" for the m3d recipe in full.
PIPELINE_ARGS ?= --iterations 200 --epochs 100
pipeline:
	$(ENV) run python -m pipelines.local --root runs/pipeline $(PIPELINE_ARGS)

# The Kubeflow pipeline as a cluster runs it, here: compile the KFP v2 spec for the local image
# (pipelines/kubeflow.py), then run the compiled spec's tasks one by one in that image with podman,
# no network, as the KFP v2 launcher would (pipelines/launcher.py). Artifacts, executor outputs and
# the pushed model under runs/kubeflow/<run>; no ML Metadata (the cluster's). A short run by default.
KUBEFLOW_ARGS ?= --iterations 200 --epochs 100
kubeflow-run: image
	mkdir -p runs/kubeflow
	$(IMAGE) serve $(ENV) run sh -ec 'python -m pipelines.kubeflow --image "$$M3D_PIPELINE_IMAGE" \
	  --pipeline-root $(CURDIR)/runs/kubeflow --output runs/kubeflow/job.json $(KUBEFLOW_ARGS); \
	  python -m pipelines.launcher runs/kubeflow/job.json'

# The Kubeflow pipeline image, localhost/m3d-tf:VERSION (pipelines/Dockerfile), built with podman
# without any registry: its base is the environment's Debian 13 root, imported once per environment
# (a few minutes), then the build takes seconds when nothing changed. Needs root; installs podman.
image:
	$(IMAGE) build

# The same plus TensorFlow's CUDA libraries (tensorflow[and-cuda] at the locked TensorFlow),
# localhost/m3d-tf:VERSION-gpu: 4.4 GB more, downloaded from PyPI (about 3.5 min here). It needs an
# NVIDIA GPU to be of any use. Our machines have none: it builds and imports there, but its GPU
# path has never run.
image-gpu:
	$(IMAGE) build-gpu

# Build (or reuse) the environment only.
env:
	$(ENV) build

info:
	$(ENV) info

shell:
	$(ENV) shell

# Regenerate requirements/lock.txt after changing the requirements in setup.py.
lock:
	$(ENV) lock

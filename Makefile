# Every target runs inside the project environment, which scripts/m3d-env builds on first use
# (a Debian 13 root on Debian 12 hosts, a venv where glibc >= 2.39); see README.md.
ENV := scripts/m3d-env

.PHONY: run test pipeline env info shell lock

# The main job: Fashion-MNIST at IPC 10, M3D vs DM vs random (m3d_tf/cli.py, `m3d main`).
run:
	$(ENV) run python -m m3d_tf main

# The whole suite, TFX tests included; pytest's summary closes the output.
test:
	$(ENV) run python -m pytest -ra tests

# The TFX pipeline end to end on Fashion-MNIST, locally (pipelines/local.py): DatasetGen,
# M3DCondense, Trainer, Evaluator; artifacts and ML Metadata under runs/pipeline. A short run by
# default; e.g. PIPELINE_ARGS="--iterations 5000 --epochs 1000" for the m3d recipe in full.
PIPELINE_ARGS ?= --iterations 200 --epochs 100
pipeline:
	$(ENV) run python -m pipelines.local --root runs/pipeline $(PIPELINE_ARGS)

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

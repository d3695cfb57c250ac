# Every target runs inside the project environment, which scripts/m3d-env builds on first use
# (a Debian 13 root on Debian 12 hosts, a venv where glibc >= 2.39); see README.md.
ENV := scripts/m3d-env

.PHONY: run test env info shell lock

# The main job. For now a Fashion-MNIST data summary (m3d_tf/__main__.py).
run:
	$(ENV) run python -m m3d_tf main

# The whole suite, TFX tests included; pytest's summary closes the output.
test:
	$(ENV) run python -m pytest -ra tests

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

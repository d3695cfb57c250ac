"""pipelines/Dockerfile, scripts/m3d-image and the image they build: the Kubeflow steps' image.

The container tests run the image through the podman API socket that `make test` serves
(`scripts/m3d-image serve` sets M3D_CONTAINER_HOST and M3D_PIPELINE_IMAGE). docker-py talks to it
from inside the project environment, whose /tmp is the host's, so a /tmp path binds as it is.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import tfx

import m3d_tf
from pipelines import kubeflow

pytestmark = pytest.mark.tfx

PROJECT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = PROJECT / "scripts" / "m3d-image"
CONTAINER_VARIABLES = ("M3D_CONTAINER_HOST", "M3D_PIPELINE_IMAGE")

# Runs in the image: what the Kubeflow steps will import, from the installed package (the working
# directory is /, so the copy of the sources in /opt/m3d_tf cannot stand in for it).
REPORT = """
import importlib.metadata, json, os, socket
import keras, tfx
import components, components.condense, m3d_tf
report = {
    "m3d_tf": m3d_tf.__version__,
    "installed": importlib.metadata.version("m3d-tf"),
    "from_site_packages": "/site-packages/" in m3d_tf.__file__ and "/site-packages/" in components.__file__,
    "keras": keras.version().split(".")[0],
    "tf_use_legacy_keras": os.environ.get("TF_USE_LEGACY_KERAS"),
    "tfx": tfx.__version__,
    "synthetic_set": components.SyntheticSet.TYPE_NAME,
    "condense_executor": components.condense.Executor.__name__,
    "interfaces": sorted(name for _, name in socket.if_nameindex()),
}
with open("/out/report.json", "w") as f:
    json.dump(report, f)
"""


def test_dockerfile_defaults_to_the_tfx_image_of_our_version():
    dockerfile = (PROJECT / "pipelines" / "Dockerfile").read_text()
    # Users with a registry build on the official image; make image passes our local base instead.
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert default == f"gcr.io/tfx-oss-public/tfx:{tfx.__version__}"
    assert re.findall(r"^FROM (\S+)$", dockerfile, re.MULTILINE) == ["${BASE_IMAGE}"]
    for folder in ("m3d_tf", "components", "pipelines"):
        assert re.search(rf"^COPY {folder} {folder}$", dockerfile, re.MULTILINE)
        assert (PROJECT / folder / "__init__.py").is_file()
    assert re.search(r"^ENV TF_USE_LEGACY_KERAS=0\b", dockerfile, re.MULTILINE)


def test_image_tag_is_the_default_image_of_the_kubeflow_spec():
    result = subprocess.run(["bash", str(SCRIPT), "tag"], capture_output=True, text=True, check=True)
    assert result.stdout == f"localhost/m3d-tf:{m3d_tf.__version__}\n"
    assert result.stdout.strip() == f"localhost/{kubeflow.DEFAULT_IMAGE}"


def test_image_script_rejects_a_package_without_version(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "m3d-image")
    (tmp_path / "m3d_tf").mkdir()
    (tmp_path / "m3d_tf" / "__init__.py").write_text('VERSION = "0.1.0"\n')
    result = subprocess.run(["bash", str(tmp_path / "scripts" / "m3d-image"), "tag"],
                            capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("m3d-image: error: m3d_tf/__init__.py has no line "
                             "'__version__ = \"X.Y.Z\"'; add one.\n")


def test_image_script_names_its_commands_on_a_wrong_one():
    result = subprocess.run(["bash", str(SCRIPT), "push"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == ("m3d-image: error: unknown command 'push'; "
                             "use build, build-gpu, serve, info or tag.\n")


def _container_client():
    """(docker client, image tag) for the socket of `scripts/m3d-image serve`."""
    missing = [name for name in CONTAINER_VARIABLES if not os.environ.get(name)]
    # A failure, never a skip, in CI or not: conftest.py fails skipped tfx tests anyway.
    if missing:
        pytest.fail(f"{' and '.join(missing)} not set: the image tests need the podman socket of "
                    "`scripts/m3d-image serve`. Run `make test`, or `scripts/m3d-image serve "
                    "scripts/m3d-env run python -m pytest tests/test_pipeline_image.py`.")
    import docker

    # The SDK's default 60 s read timeout is shorter than a busy 2-core machine takes to import
    # TensorFlow and TFX in the container before it prints anything (CI failed on it once);
    # the launcher's ContainerRuntime allows 600 s too.
    client = docker.DockerClient(base_url=os.environ["M3D_CONTAINER_HOST"], timeout=600)
    return client, os.environ["M3D_PIPELINE_IMAGE"]


@pytest.mark.slow
def test_image_runs_our_package_offline_with_keras_3(tmp_path):
    client, image = _container_client()
    # The container writes into a host directory: host paths are valid in volume binds.
    assert str(tmp_path).startswith("/tmp/"), f"{tmp_path} is not under /tmp, the shared directory"
    client.containers.run(image, ["python", "-c", REPORT], network_mode="none", working_dir="/",
                          volumes={str(tmp_path): {"bind": "/out", "mode": "rw"}}, remove=True)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == {
        "m3d_tf": m3d_tf.__version__,
        "installed": m3d_tf.__version__,
        "from_site_packages": True,
        "keras": "3",
        "tf_use_legacy_keras": "0",
        "tfx": tfx.__version__,
        "synthetic_set": "components.SyntheticSet",
        "condense_executor": "Executor",
        "interfaces": ["lo"],
    }


@pytest.mark.slow
def test_image_has_the_kubeflow_v2_entrypoint():
    client, image = _container_client()
    output = client.containers.run(
        image, ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor",
                "--help"], network_mode="none", remove=True)
    assert b"--executor_class_path" in output
    assert b"--json_serialized_invocation_args" in output

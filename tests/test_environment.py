"""The project environment (scripts/m3d-env) holds the stack we support and nothing pulls in TFX.

Run inside the environment: `make test`, or `scripts/m3d-env run python -m pytest tests/test_environment.py`.
Outside it (e.g. a venv without TFX) the TFX checks fail on purpose: a run that cannot import
TFX is a failure, never a skip.
"""

import gzip
import importlib
import importlib.metadata
import inspect
import json
import os
import pathlib
import re
import struct
import subprocess
import sys
import textwrap

import pytest

PROJECT = pathlib.Path(__file__).resolve().parents[1]
FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")

# (import name, distribution, required version prefix): the versions in
# ../shared/docs/environment.md that work together; requirements/lock.txt pins them.
CORE_STACK = [
    ("tensorflow", "tensorflow", "2.21."),
    ("keras", "keras", "3.15."),
    ("tensorboard", "tensorboard", "2.21."),
    ("tensorflow_datasets", "tensorflow-datasets", "4.9."),
]
PIPELINE_STACK = [
    ("tfx", "tfx", "1.21."),
    ("ml_metadata", "ml-metadata", "1.21."),
    ("tensorflow_model_analysis", "tensorflow-model-analysis", "0.52."),
    ("tf_keras", "tf-keras", "2.21."),
    ("kfp", "kfp", "2.16."),
    ("apache_beam", "apache-beam", "2."),
]
STACK = CORE_STACK + [pytest.param(*entry, marks=pytest.mark.tfx) for entry in PIPELINE_STACK]

# Packages of the pipeline stack: the core library must work without any of them.
PIPELINE_MODULES = ["tfx", "ml_metadata", "tensorflow_model_analysis", "kfp", "apache_beam",
                    "tfx_bsl", "tensorflow_transform", "tensorflow_data_validation", "tf_keras"]


def _run_python(code):
    """Runs code in a fresh interpreter of this environment; returns stdout, fails on error."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=PROJECT,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, f"subprocess failed:\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.mark.parametrize("module, distribution, prefix", STACK,
                         ids=[entry[0] for entry in CORE_STACK + PIPELINE_STACK])
def test_stack_imports_with_expected_version(module, distribution, prefix):
    imported = importlib.import_module(module)
    installed = importlib.metadata.version(distribution)
    assert installed.startswith(prefix), f"{distribution} {installed}, expected {prefix}*"
    # The module really is that distribution's (no stray copy shadowing it on sys.path).
    assert pathlib.Path(imported.__file__).resolve().is_relative_to(
        pathlib.Path(importlib.metadata.distribution(distribution).locate_file("")).resolve())


def test_python_is_supported():
    assert sys.version_info >= (3, 11), sys.version


def test_keras_is_keras_3_not_legacy_tf_keras():
    import keras

    # TF_USE_LEGACY_KERAS=1 (set in the official TFX image) would turn tf.keras into Keras 2.
    assert os.environ.get("TF_USE_LEGACY_KERAS", "0").lower() in ("0", "false", "")
    assert keras.version().startswith("3.15.")
    assert keras.backend.backend() == "tensorflow"
    assert keras.Model.__module__.startswith("keras.src."), keras.Model.__module__


def test_project_code_never_uses_tf_keras():
    pattern = re.compile(r"\btf\.keras\b|from tensorflow import keras|\btensorflow\.keras\b")
    offenders = []
    for folder in ("m3d_tf", "components", "pipelines"):
        for path in sorted((PROJECT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(PROJECT)}:{number}: {line.strip()}")
    assert offenders == [], "use `import keras`, never tf.keras:\n" + "\n".join(offenders)


def test_core_library_imports_without_the_pipeline_stack():
    """Every m3d_tf module imports with the TFX stack made unimportable, and none loads it."""
    out = _run_python(f"""
        import importlib, importlib.abc, json, pkgutil, sys

        BLOCKED = {PIPELINE_MODULES!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is blocked: m3d_tf must not need it")
                return None

        sys.meta_path.insert(0, Block())
        import m3d_tf
        names = ["m3d_tf"] + [m.name for m in pkgutil.walk_packages(m3d_tf.__path__, "m3d_tf.")]
        for name in names:
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({{"modules": names, "loaded": loaded}}))
    """)
    report = json.loads(out.strip().splitlines()[-1])
    assert "m3d_tf" in report["modules"]
    assert report["loaded"] == []


def test_plain_import_of_m3d_tf_does_not_load_tfx():
    out = _run_python("""
        import sys
        import m3d_tf
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tfx", "ml_metadata", "kfp")))
    """)
    assert out.strip() == "[]"


def test_installed_distributions_satisfy_setup_py():
    """The environment (from requirements/lock.txt) meets every requirement of m3d-tf[pipeline,dev]."""
    from packaging.requirements import Requirement

    requires = importlib.metadata.requires("m3d-tf")
    assert requires, "m3d-tf is not installed in this environment (scripts/m3d-env installs it)"
    unmet = []
    checked = 0
    for text in requires:
        requirement = Requirement(text)
        if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in ("", "pipeline", "dev")):
            continue
        checked += 1
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(f"{requirement}: not installed")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{requirement}: {version} installed")
    assert checked >= 13, requires
    assert unmet == [], "run `make lock` and rebuild:\n" + "\n".join(unmet)


def test_m3d_console_script_points_at_the_cli():
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="m3d")
    assert entry.value == "m3d_tf.cli:main"
    assert importlib.metadata.version("m3d-tf") == importlib.import_module("m3d_tf").__version__


@pytest.mark.parametrize("stem, magic, count, dims", [
    ("train-images-idx3-ubyte", 2051, 60000, (28, 28)),
    ("train-labels-idx1-ubyte", 2049, 60000, ()),
    ("t10k-images-idx3-ubyte", 2051, 10000, (28, 28)),
    ("t10k-labels-idx1-ubyte", 2049, 10000, ()),
])
def test_fashion_mnist_idx_files_are_installed(stem, magic, count, dims):
    path = FASHION_MNIST_DIR / f"{stem}.gz"
    assert path.is_file(), f"{path} missing: the environment installs Debian's dataset-fashion-mnist"
    header_size = 4 * (2 + len(dims))
    with gzip.open(path, "rb") as f:
        header = struct.unpack(f">{2 + len(dims)}I", f.read(header_size))
        payload = len(f.read())
    assert header == (magic, count, *dims)
    assert payload == count * (28 * 28 if dims else 1)


@pytest.mark.tfx
def test_kfp_compiler_compiles_a_pipeline(tmp_path):
    import yaml
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.13")
    def add(a: int, b: int) -> int:
        return a + b

    @dsl.pipeline(name="m3d-env-check")
    def pipeline(x: int = 1):
        add(a=x, b=2)

    package = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, str(package))
    spec = yaml.safe_load(package.read_text())
    assert spec["pipelineInfo"]["name"] == "m3d-env-check"
    assert list(spec["root"]["dag"]["tasks"]) == ["add"]


@pytest.mark.tfx
@pytest.mark.filterwarnings("ignore:DEFAULT_FILE_NAME will be deprecated")  # raised inside tfx
def test_tfx_kubeflow_v2_runner_compiles_a_pipeline(tmp_path):
    from tfx import v1 as tfx

    (tmp_path / "data").mkdir()
    example_gen = tfx.components.ImportExampleGen(input_base=str(tmp_path / "data"))
    pipeline = tfx.dsl.Pipeline(pipeline_name="m3d-env-check", pipeline_root=str(tmp_path / "root"),
                                components=[example_gen])
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image="m3d-tf:check"),
        output_dir=str(tmp_path), output_filename="pipeline.json")
    runner.run(pipeline)
    spec = json.loads((tmp_path / "pipeline.json").read_text())["pipelineSpec"]
    assert spec["pipelineInfo"]["name"] == "m3d-env-check"
    assert list(spec["root"]["dag"]["tasks"]) == ["ImportExampleGen"]
    (executor,) = spec["deploymentSpec"]["executors"].values()
    assert executor["container"]["image"] == "m3d-tf:check"


@pytest.mark.tfx
def test_ml_metadata_records_an_artifact():
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.fake_database.SetInParent()
    store = metadata_store.MetadataStore(config)
    artifact_type = metadata_store_pb2.ArtifactType(name="SyntheticSet")
    type_id = store.put_artifact_type(artifact_type)
    (artifact_id,) = store.put_artifacts([metadata_store_pb2.Artifact(type_id=type_id, uri="/x")])
    (stored,) = store.get_artifacts_by_id([artifact_id])
    assert stored.uri == "/x"


def test_skipped_tfx_test_is_reported_as_failure(pytester):
    """tests/conftest.py turns a skip of a tfx-marked test into a failure; other skips stay skips."""
    import conftest

    pytester.makeconftest("import pytest\n\n\n" + inspect.getsource(conftest.pytest_runtest_makereport))
    pytester.makeini("[pytest]\nmarkers =\n    tfx: needs TFX\n")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.tfx
        def test_tfx_skipped():
            pytest.skip("tfx not importable")

        @pytest.mark.tfx
        def test_tfx_runs():
            assert 1 + 1 == 2

        def test_other_skipped():
            pytest.skip("not tfx")
    """)
    result = pytester.runpytest_subprocess("-ra")
    result.assert_outcomes(failed=1, passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*test_tfx_skipped*marked tfx and was skipped (tfx not importable)*"])


def _unshared(shared, *args):
    """scripts/m3d-env's check of a command's host paths (chroot mode): (path, dir to bind) or None."""
    result = subprocess.run(["bash", str(PROJECT / "scripts" / "m3d-env"), "__unshared", *shared,
                             "--", *args], capture_output=True, text=True, timeout=60, check=True)
    line = result.stdout.strip()
    return tuple(line.split("\t")) if line else None


def test_m3d_env_names_a_host_path_the_root_would_not_see(tmp_path):
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    (outside / "sets").mkdir(parents=True)
    shared = [str(project), "/var/cache/uv"]
    # A new output under an existing host directory: bind that directory.
    assert _unshared(shared, "m3d", "condense", "--out", f"{outside}/sets/new") == (
        f"{outside}/sets/new", f"{outside}/sets")
    # An existing directory: bind it; --name=PATH and SCHEME:PATH are paths too.
    assert _unshared(shared, f"--ledger={outside}/sets") == (f"{outside}/sets", f"{outside}/sets")
    assert _unshared(shared, "--dataset", f"idx:{outside}/sets") == (
        f"{outside}/sets", f"{outside}/sets")
    # A relative path that climbs out of the project is resolved against the project root.
    assert _unshared(shared, "../elsewhere")[0] == str(PROJECT.parent / "elsewhere")
    # A sibling whose name only starts like a shared directory is not inside it.
    assert _unshared(shared, f"{project}x/out") == (f"{project}x/out", f"{project}x")


def test_m3d_env_lets_shared_system_and_non_path_arguments_through(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    assert _unshared([str(project)], "python", "-m", "m3d_tf", "condense", "--ipc", "10",
                     f"--out={project}/runs/a", str(project), f"folder:{project}/imgs",
                     "/usr/bin/python3", "/opt/venv/bin/python", "/etc/hosts",
                     "gs://bucket/root", "bench/quality.py", "-k", "a or b") is None

"""pipelines/kubeflow.py: a valid KFP v2 spec running our image (the image: test_pipeline_image.py)."""

import json

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines import kubeflow, pipeline

pytestmark = pytest.mark.tfx

IMAGE = "registry.example.com/m3d-tf:0.1.0"
# node -> {input key: (producer node, its output key)}
INPUTS = {
    "dataset_gen": {},
    "m3d_condense": {"examples": ("dataset_gen", "examples")},
    "trainer": {"examples": ("m3d_condense", "condensed_examples")},
    "evaluator": {"examples": ("dataset_gen", "examples"), "model": ("trainer", "model")},
    "pusher": {"model": ("trainer", "model"), "model_blessing": ("evaluator", "blessing")},
    "statistics_gen": {"examples": ("dataset_gen", "examples")},
    "schema_gen": {"statistics": ("statistics_gen", "statistics")},
    "condensed_statistics_gen": {"examples": ("m3d_condense", "condensed_examples")},
    "example_validator": {"statistics": ("condensed_statistics_gen", "statistics"),
                          "schema": ("schema_gen", "schema")},
}
NODES = set(INPUTS)
# Container resources given to compile_pipeline: a default, overrides, two accelerators.
RESOURCES = {"cpu": "2", "memory": "8G", "node_cpu": {"m3d_condense": "8", "pusher": "500m"},
             "node_memory": {"m3d_condense": "32Gi"},
             "accelerators": {"m3d_condense": "NVIDIA_TESLA_T4:2", "trainer": "nvidia.com/gpu"}}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    output = tmp_path_factory.mktemp("kfp") / "m3d.json"
    compiled = kubeflow.compile_pipeline(output, image=IMAGE, pipeline_root="gs://bucket/m3d",
                                         name="m3d-fashion-mnist", iterations=50,
                                         devices="/gpu:0,/gpu:1", **RESOURCES)
    assert json.loads(output.read_text()) == compiled
    return compiled


def test_spec_parses_as_a_kfp_v2_pipeline_spec(spec):
    # Strict parse: an unknown or mistyped field fails.
    parsed = json_format.ParseDict(spec["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    assert parsed.pipeline_info.name == "m3d-fashion-mnist"
    assert parsed.schema_version == "2.0.0"
    assert spec["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/m3d"


def test_every_node_is_in_the_dag_with_its_dependencies(spec):
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert set(tasks) == NODES
    assert set(spec["pipelineSpec"]["components"]) == NODES
    dependencies = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert dependencies == {node: {producer for producer, _ in inputs.values()}
                            for node, inputs in INPUTS.items()}
    wiring = {
        name: {key: (value["taskOutputArtifact"]["producerTask"],
                     value["taskOutputArtifact"]["outputArtifactKey"])
               for key, value in task.get("inputs", {}).get("artifacts", {}).items()}
        for name, task in tasks.items()
    }
    assert wiring == INPUTS
    iterations = tasks["m3d_condense"]["inputs"]["parameters"]["iterations"]
    assert iterations["runtimeValue"]["constantValue"] == {"intValue": "50"}
    outputs = spec["pipelineSpec"]["components"]["m3d_condense"]["outputDefinitions"]
    schema = outputs["artifacts"]["synthetic_set"]["artifactType"]["instanceSchema"]
    assert schema.startswith("title: components.SyntheticSet\n")


def test_statistics_schema_and_push_settings(spec):
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]

    def constant(node, name):
        return tasks[node]["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]

    # The Pusher's default destination is inside the pipeline root.
    destination = json.loads(constant("pusher", "push_destination")["stringValue"])
    assert destination == {"filesystem": {"base_directory": "gs://bucket/m3d/serving"}}
    assert constant("schema_gen", "infer_feature_shape") == {"intValue": "1"}
    for node in ("statistics_gen", "condensed_statistics_gen", "example_validator"):
        assert constant(node, "exclude_splits") == {"stringValue": "[]"}  # every split


def _resources(cpu, memory, gigabytes, accelerator=None):
    """The container.resources of one executor in the compiled JSON (requests = limits)."""
    cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    expected = {"cpuLimit": cores, "cpuRequest": cores, "resourceCpuLimit": cpu,
                "resourceCpuRequest": cpu, "memoryLimit": gigabytes, "memoryRequest": gigabytes,
                "resourceMemoryLimit": memory, "resourceMemoryRequest": memory}
    if accelerator is not None:
        kind, count = accelerator
        expected["accelerator"] = {"type": kind, "resourceType": kind, "count": str(count),
                                   "resourceCount": str(count)}
    return expected


def test_executors_carry_their_resources(spec):
    executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
    default = _resources("2", "8G", 8.0)
    expected = {f"{node}_executor": default for node in NODES}
    expected["m3d_condense_executor"] = _resources("8", "32Gi", 32 * 2**30 / 1e9,
                                                   ("NVIDIA_TESLA_T4", 2))
    expected["trainer_executor"] = _resources("2", "8G", 8.0, ("nvidia.com/gpu", 1))
    expected["pusher_executor"] = _resources("500m", "8G", 8.0)
    assert {name: e["container"]["resources"] for name, e in executors.items()} == expected
    # The same as KFP's own proto: a field TFX or we misnamed would not parse.
    parsed = json_format.ParseDict(spec["pipelineSpec"]["deploymentSpec"],
                                   pipeline_spec_pb2.PipelineDeploymentConfig())
    condense = parsed.executors["m3d_condense_executor"].container.resources
    assert (condense.cpu_limit, condense.accelerator.count) == (8.0, 2)


def test_m3d_condense_gets_its_mirrored_strategy_devices(spec):
    parameters = spec["pipelineSpec"]["root"]["dag"]["tasks"]["m3d_condense"]["inputs"]["parameters"]
    assert parameters["devices"]["runtimeValue"]["constantValue"] == {"stringValue": "/gpu:0,/gpu:1"}


def test_every_executor_runs_our_image(spec):
    executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
    assert len(executors) == len(NODES)
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}
    classes = {e["container"]["args"][1] for e in executors.values()}
    assert classes == {
        "components.dataset_gen.Executor", "components.condense.Executor",
        "tfx.components.trainer.executor.GenericExecutor",
        "tfx.components.evaluator.executor.Executor", "tfx.components.pusher.executor.Executor",
        "tfx.components.statistics_gen.executor.Executor",
        "tfx.components.schema_gen.executor.Executor",
        "tfx.components.example_validator.executor.Executor",
    }


def test_pipeline_names_follow_kubeflow_rules(tmp_path):
    with pytest.raises(ValueError, match=r"pipeline_name='m3d_fashion' must match "
                                         r"\[a-z0-9\]\[a-z0-9-\]\*"):
        pipeline.create_pipeline("m3d_fashion", tmp_path)
    with pytest.raises(ValueError, match=r"accuracy_threshold is a fraction in \[0, 1\]\. "
                                         r"Received accuracy_threshold=50"):
        pipeline.create_pipeline("m3d", tmp_path, accuracy_threshold=50)


def test_the_kfp_package_is_the_pipeline_spec_that_kfps_client_loads(spec, tmp_path):
    from kfp.client import client

    path = tmp_path / "m3d.yaml"
    kubeflow.write_kfp_package(spec, path)
    loaded = client._extract_pipeline_yaml(str(path))  # what create_run_from_pipeline_package reads
    assert loaded.pipeline_spec.default_pipeline_root == "gs://bucket/m3d"
    assert loaded.pipeline_spec.pipeline_info.name == "m3d-fashion-mnist"
    assert set(loaded.pipeline_spec.root.dag.tasks) == NODES
    with pytest.raises(pipeline.SettingsError, match=r"--kfp-package \S*m3d\.json: Kubeflow "
                                                     r"Pipelines' client reads only \.yaml/\.yml"):
        kubeflow.write_kfp_package(spec, tmp_path / "m3d.json")


def test_main_writes_both_formats_or_nothing(tmp_path, capsys):
    job, package = tmp_path / "job.json", tmp_path / "job.yaml"
    assert kubeflow.main(["--pipeline-root", "gs://b/r", "--output", str(job),
                          "--kfp-package", str(package), "--iterations", "3"]) == 0
    assert json.loads(job.read_text())["pipelineSpec"]["root"] == yaml.safe_load(
        package.read_text())["root"]
    with pytest.raises(SystemExit) as exit_info:
        kubeflow.main(["--pipeline-root", "gs://b/r", "--output", str(tmp_path / "other.json"),
                       "--kfp-package", str(tmp_path / "other.txt")])
    assert exit_info.value.code == 2
    assert "reads only .yaml/.yml packages" in capsys.readouterr().err
    assert not (tmp_path / "other.json").exists()

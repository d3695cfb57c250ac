"""pipelines/kubeflow.py: a valid KFP v2 spec running our image (the image: test_pipeline_image.py)."""

import json

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines import kubeflow, pipeline

pytestmark = pytest.mark.tfx

IMAGE = "registry.example.com/m3d-tf:0.1.0"
NODES = {"dataset_gen", "m3d_condense", "trainer", "evaluator"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    output = tmp_path_factory.mktemp("kfp") / "m3d.json"
    compiled = kubeflow.compile_pipeline(output, image=IMAGE, pipeline_root="gs://bucket/m3d",
                                         name="m3d-fashion-mnist", iterations=50)
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
    assert dependencies == {"dataset_gen": set(), "m3d_condense": {"dataset_gen"},
                            "trainer": {"m3d_condense"},
                            "evaluator": {"dataset_gen", "trainer"}}
    trainer_input = tasks["trainer"]["inputs"]["artifacts"]["examples"]["taskOutputArtifact"]
    assert trainer_input == {"outputArtifactKey": "condensed_examples",
                             "producerTask": "m3d_condense"}
    iterations = tasks["m3d_condense"]["inputs"]["parameters"]["iterations"]
    assert iterations["runtimeValue"]["constantValue"] == {"intValue": "50"}
    outputs = spec["pipelineSpec"]["components"]["m3d_condense"]["outputDefinitions"]
    schema = outputs["artifacts"]["synthetic_set"]["artifactType"]["instanceSchema"]
    assert schema.startswith("title: components.SyntheticSet\n")


def test_every_executor_runs_our_image(spec):
    executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
    assert len(executors) == len(NODES)
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}
    classes = {e["container"]["args"][1] for e in executors.values()}
    assert {"components.dataset_gen.Executor", "components.condense.Executor"} <= classes


def test_pipeline_names_follow_kubeflow_rules(tmp_path):
    with pytest.raises(ValueError, match=r"pipeline_name='m3d_fashion' must match "
                                         r"\[a-z0-9\]\[a-z0-9-\]\*"):
        pipeline.create_pipeline("m3d_fashion", tmp_path)
    with pytest.raises(ValueError, match=r"accuracy_threshold is a fraction in \[0, 1\]\. "
                                         r"Received accuracy_threshold=50"):
        pipeline.create_pipeline("m3d", tmp_path, accuracy_threshold=50)

"""pipelines/launcher.py: the compiled KFP v2 spec runs end to end, each task as on a cluster.

The module-scoped `run` compiles the pipeline with a tiny budget and executes the compiled
PipelineJob: every task's own command + args from the spec, with the ExecutorInput the KFP v2
launcher would build, inside the pipeline image through podman with no network
(M3D_CONTAINER_HOST and M3D_PIPELINE_IMAGE, which `make test` sets after `make image`). Without
them, outside CI, the tasks run in this environment instead and the test says so with a warning;
in CI (CI=true) their absence is a failure, never a silent substitute.

The other tests check the launcher's pieces (DAG order, ExecutorInput, placeholders, bad jobs)
on the compiled spec without running anything.
"""

import copy
import json
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format

import m3d_tf
from m3d_tf import io
from pipelines import kubeflow, launcher

pytestmark = pytest.mark.tfx

NAME = "m3d-launcher-test"
# Small enough for CI (about 2 minutes in-process, a few in containers), real enough to train.
TINY = dict(iterations=2, train_per_class=30, test_per_class=20, eval_per_class=5,
            real_per_class=8, ipc=1, epochs=2, accuracy_threshold=0.0)


def _runtime():
    """(runtime, image) as the environment says; fails in CI without a container engine."""
    host = os.environ.get("M3D_CONTAINER_HOST")
    image = os.environ.get("M3D_PIPELINE_IMAGE", f"localhost/m3d-tf:{m3d_tf.__version__}")
    if host:
        return launcher.ContainerRuntime(host), image
    if os.environ.get("CI"):
        pytest.fail("CI=true but M3D_CONTAINER_HOST is not set: in CI the compiled spec must run "
                    "in the pipeline image through podman (make test builds the image and starts "
                    "the engine); run the suite with `make test`.")
    warnings.warn("M3D_CONTAINER_HOST is not set: the compiled spec's tasks run in this "
                  "environment, not in the pipeline image (make test runs them in containers).")
    return launcher.InProcessRuntime(), image


@pytest.fixture(scope="module")
def pipeline_root(tmp_path_factory):
    """The compiled pipeline root: a local directory, as a cluster's bucket would be."""
    return str(tmp_path_factory.mktemp("pipeline_root"))


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory, pipeline_root):
    path = tmp_path_factory.mktemp("kfp") / "job.json"
    kubeflow.compile_pipeline(path, image=os.environ.get(
        "M3D_PIPELINE_IMAGE", f"localhost/m3d-tf:{m3d_tf.__version__}"),
        pipeline_root=pipeline_root, name=NAME, **TINY)
    return path


@pytest.fixture(scope="module")
def run(spec_path, pipeline_root):
    runtime, _ = _runtime()
    job = launcher.load_job(spec_path)
    results = launcher.run_job(job, pipeline_root, runtime, run_id="run-1")
    return job, pipeline_root, results


def test_every_task_of_the_compiled_spec_exits_zero_in_dependency_order(run):
    job, _, results = run
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    assert set(results) == set(tasks)
    assert all(r.exit_code == 0 for r in results.values())
    order = list(results)
    for name, task in tasks.items():
        for upstream in task.get("dependentTasks", []):
            assert order.index(upstream) < order.index(name)


def test_the_trainer_exports_serving_default_over_serialized_examples(run):
    _, _, results = run
    model_dir = os.path.join(results["trainer"].output_uri("model"), "Format-Serving")
    model = tf.saved_model.load(model_dir)
    serve = model.signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    examples_uri = results["dataset_gen"].output_uri("examples")
    images, labels = io.read_examples(os.path.join(examples_uri, "Split-test"))
    serialized = [tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[image.astype("<f4").tobytes()])),
    })).SerializeToString() for image in images[:8]]
    probabilities = serve(tf.constant(serialized))["probabilities"].numpy()
    assert probabilities.shape == (8, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_the_evaluator_blesses_the_model_and_reports_it(run):
    _, _, results = run
    blessing = results["evaluator"].executor_output.artifacts["blessing"].artifacts[0]
    assert os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    assert blessing.metadata["blessed"] == 1


def test_the_synthetic_set_loads_with_m3d_tf(run):
    _, _, results = run
    output = results["m3d_condense"].executor_output.artifacts["synthetic_set"].artifacts[0]
    synthetic = io.load_set(output.uri)
    assert synthetic.images.shape == (10, 28, 28, 1)  # 10 classes x ipc 1, stored (not decoded)
    assert synthetic.metadata["iterations"] == TINY["iterations"]
    assert output.metadata["ipc"] == 1 and output.metadata["kernel"] == "gaussian_mix"


def test_the_pusher_pushes_the_blessed_model_under_the_pipeline_root(run):
    _, root, results = run
    pushed = results["pusher"].executor_output.artifacts["pushed_model"].artifacts[0]
    assert pushed.metadata["pushed"] == 1
    destination = pushed.metadata["pushed_destination"]
    assert destination.startswith(os.path.join(root, "serving") + os.sep)
    assert tf.saved_model.load(destination).signatures["serving_default"] is not None


def test_inputs_come_from_the_producer_typed_by_the_consumer(run):
    job, root, results = run
    trainer_input = results["trainer"].executor_input
    (examples,) = trainer_input.inputs.artifacts["examples"].artifacts
    condensed = results["m3d_condense"].executor_output.artifacts["condensed_examples"].artifacts[0]
    assert examples.uri == condensed.uri == os.path.join(root, "run-1", "m3d_condense",
                                                         "condensed_examples")
    assert examples.metadata["split_names"] == condensed.metadata["split_names"]
    declared = job["pipelineSpec"]["components"]["trainer"]["inputDefinitions"]["artifacts"]
    assert examples.type.instance_schema == declared["examples"]["artifactType"]["instanceSchema"]
    assert trainer_input.outputs.output_file == os.path.join(root, "run-1", "trainer",
                                                             launcher.OUTPUT_FILE)


# === The launcher's pieces, on the compiled spec, without running it ===


@pytest.fixture(scope="module")
def job(spec_path):
    return launcher.load_job(spec_path)


def test_task_order_respects_dependencies_and_rejects_cycles(job):
    order = launcher.task_order(job)
    assert order.index("dataset_gen") < order.index("m3d_condense") < order.index("trainer")
    assert order.index("trainer") < order.index("evaluator")
    cyclic = copy.deepcopy(job)
    cyclic["pipelineSpec"]["root"]["dag"]["tasks"]["dataset_gen"]["dependentTasks"] = ["trainer"]
    with pytest.raises(launcher.LaunchError, match=r"the DAG has a cycle among \[.*'dataset_gen'"):
        launcher.task_order(cyclic)
    missing = copy.deepcopy(job)
    missing["pipelineSpec"]["root"]["dag"]["tasks"]["trainer"]["dependentTasks"] = ["nowhere"]
    with pytest.raises(launcher.LaunchError, match=r"task 'trainer' depends on unknown tasks "
                                                   r"\['nowhere'\]"):
        launcher.task_order(missing)


def test_executor_input_carries_parameters_outputs_and_the_output_file(job, tmp_path):
    message = launcher.executor_input(job, "m3d_condense", str(tmp_path), "r", produced={
        "dataset_gen": json_format.ParseDict({"artifacts": {"examples": {"artifacts": [
            {"name": "r/dataset_gen/examples", "uri": "/x/examples",
             "metadata": {"split_names": '["train"]'}}]}}},
            launcher.pipeline_spec_pb2.ExecutorOutput()),
    })
    assert message.inputs.parameters["iterations"].int_value == TINY["iterations"]
    assert message.inputs.parameter_values["iterations"].number_value == TINY["iterations"]
    assert message.inputs.parameters["recipe"].string_value == "m3d"
    (examples,) = message.inputs.artifacts["examples"].artifacts
    assert examples.uri == "/x/examples" and examples.name == "r/dataset_gen/examples"
    assert examples.type.instance_schema.startswith("title: tfx.Examples\n")
    synthetic = message.outputs.artifacts["synthetic_set"].artifacts[0]
    assert synthetic.uri == os.path.join(tmp_path, "r", "m3d_condense", "synthetic_set")
    assert synthetic.type.instance_schema.startswith("title: components.SyntheticSet\n")
    assert message.outputs.output_file == os.path.join(tmp_path, "r", "m3d_condense",
                                                       "executor_output.json")


def test_an_input_whose_producer_did_not_report_it_is_an_error(job, tmp_path):
    with pytest.raises(launcher.LaunchError, match=r"task 'm3d_condense' needs "
                                                   r"dataset_gen\.examples, which 'dataset_gen' "
                                                   r"did not report"):
        launcher.executor_input(job, "m3d_condense", str(tmp_path), "r", produced={})


def test_only_the_executor_input_placeholder_is_substituted(job):
    container = launcher.container_spec(job, "trainer")
    argv = launcher.task_argv(container, '{"inputs": {}}', "trainer")
    assert argv[:3] == ["python", "-m",
                        "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
    assert argv[-1] == '{"inputs": {}}' and "{{$}}" not in argv
    other = {"command": ["run"], "args": ["{{$.inputs.parameters['x']}}"]}
    with pytest.raises(launcher.LaunchError, match=r"task 't' uses the placeholder "
                                                   r"\{\{\$\.inputs\.parameters\['x'\]\}\}"):
        launcher.task_argv(other, "{}", "t")


@pytest.mark.parametrize("content, message", [
    ("not json", r"cannot read the pipeline job .*job\.json"),
    ('{"displayName": "x"}', r"has no pipelineSpec; give the PipelineJob JSON"),
    ('{"pipelineSpec": {"root": {"dag": {"tasks": 3}}}}',
     r"pipelineSpec is not a valid KFP v2 PipelineSpec"),
])
def test_bad_job_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "job.json"
    path.write_text(content)
    with pytest.raises(launcher.LaunchError, match=message):
        launcher.load_job(path)


def test_the_command_line_needs_a_container_host_or_in_process(spec_path, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.delenv("M3D_CONTAINER_HOST", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        launcher.main([str(spec_path), "--pipeline-root", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "give --container-host (or set M3D_CONTAINER_HOST), or --in-process" in (
        capsys.readouterr().err)
    unreachable = "unix://" + str(tmp_path / "no-such.sock")
    assert launcher.main([str(spec_path), "--pipeline-root", str(tmp_path),
                          "--container-host", unreachable]) == 1
    assert f"no container engine answers at {unreachable}" in capsys.readouterr().err

    job = launcher.load_job(spec_path)
    job["runtimeConfig"]["gcsOutputDirectory"] = "gs://bucket/root"
    remote = tmp_path / "remote.json"
    remote.write_text(json.dumps(job))
    assert launcher.main([str(remote), "--in-process"]) == 1
    assert ("the job's pipeline root 'gs://bucket/root' is not a local directory; give "
            "--pipeline-root") in capsys.readouterr().err


def test_containers_get_the_compiled_cpu_and_memory_limits_and_no_accelerator(tmp_path):
    job = kubeflow.compile_pipeline(
        tmp_path / "job.json", image="i", pipeline_root=str(tmp_path), name=NAME, cpu="500m",
        memory="2Gi", node_cpu={"m3d_condense": "2"}, accelerators={"trainer": "nvidia.com/gpu"},
        **TINY)
    resources = {name: launcher.container_spec(job, name).get("resources", {})
                 for name in ("dataset_gen", "m3d_condense", "trainer")}
    assert launcher.container_limits("dataset_gen", resources["dataset_gen"]) == {
        "nano_cpus": 500_000_000, "mem_limit": 2 * 2**30}
    assert launcher.container_limits("m3d_condense", resources["m3d_condense"])["nano_cpus"] == 2e9
    with pytest.raises(launcher.LaunchError, match=r"task 'trainer' requests an accelerator .*"
                                                   r"this machine has none"):
        launcher.container_limits("trainer", resources["trainer"])


def test_a_failing_task_stops_the_run_with_its_log(job, tmp_path):
    broken = copy.deepcopy(job)
    executors = broken["pipelineSpec"]["deploymentSpec"]["executors"]
    executors["dataset_gen_executor"]["container"]["args"][1] = "components.no_such_module.Executor"
    with pytest.raises(launcher.LaunchError, match=r"(?s)task 'dataset_gen' exited with 1; log "
                                                   r".*task\.log, last lines:.*no_such_module"):
        launcher.run_job(broken, tmp_path, launcher.InProcessRuntime(), run_id="r")
    assert not (tmp_path / "r" / "m3d_condense").exists()
    with open(tmp_path / "r" / "dataset_gen" / "task.log") as f:
        assert "no_such_module" in f.read()

"""Runs a compiled Kubeflow Pipelines v2 job here, task by task, the way the KFP v2 launcher does.

    python -m pipelines.launcher m3d_pipeline.json \
        --container-host unix:///tmp/podman.sock       # every task in its image, network none
    python -m pipelines.launcher m3d_pipeline.json --in-process
                                                        # no containers: this environment's python
    make kubeflow-run                                   # compile, then run in the image (podman)

The run's artifacts go under the job's pipeline root (runtimeConfig.gcsOutputDirectory, which must
then be a local absolute path), or under --pipeline-root.

`python -m pipelines.kubeflow` writes a PipelineJob JSON for a cluster. This module executes that
file, not the Python pipeline it came from, so what it proves is what the cluster would run:

1. The DAG (`pipelineSpec.root.dag.tasks`) is walked in dependency order (`dependentTasks` and
   the producers of input artifacts).
2. For each task it builds the ExecutorInput that the launcher hands the container for `{{$}}`:
   - inputs.parameters: each `runtimeValue.constantValue` of the task (schema 2.0.0's Value, which
     TFX's entrypoint reads when no inputs spec is passed), and inputs.parameterValues, the same
     values as google.protobuf.Value;
   - inputs.artifacts: the artifact the producer task reported in its ExecutorOutput (uri, name,
     metadata), typed by the *consumer's* declared artifact type (its inputDefinitions);
   - outputs.artifacts: one new artifact per output definition, its uri
     `{pipeline_root}/{run_id}/{task}/{output key}`, typed by the output definition;
   - outputs.outputFile: `{pipeline_root}/{run_id}/{task}/executor_output.json`.
3. It runs the task's own `command` + `args` from `deploymentSpec.executors` (only `{{$}}` is
   substituted, as in TFX-compiled specs; any other placeholder is an error), either in the
   task's `image` through a Docker-compatible API (podman's, `podman system service`) with no
   network and the pipeline root mounted at its own path, CPU and memory limits from the task's
   resources applied, or as a subprocess of this environment (`--in-process`).
4. It reads the task's ExecutorOutput back; its artifacts feed the consumers.

What it does not do: ML Metadata (the launcher records executions in the cluster's MLMD; here the
ExecutorOutput files are the record), caching, retries, parallel tasks, accelerators (a task that
requests one is refused: there is none here), and placeholders other than `{{$}}`.
"""

import argparse
import dataclasses
import json
import os
import re
import signal
import sys
import time
import uuid

from google.protobuf import json_format, struct_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.runtimes import ContainerRuntime, InProcessRuntime, LaunchError, container_limits

__all__ = ["ContainerRuntime", "InProcessRuntime", "LaunchError", "TaskResult", "container_limits",
           "container_spec", "executor_input", "load_job", "run_job", "task_argv", "task_order"]

EXECUTOR_INPUT_PLACEHOLDER = "{{$}}"
OUTPUT_FILE = "executor_output.json"
LOG_FILE = "task.log"


# === Reading the job ===


def load_job(path):
    """The PipelineJob dict of a compiled spec file, with its pipelineSpec checked strictly.

    Raises:
        LaunchError: not JSON, no pipelineSpec, or a pipelineSpec that the KFP v2 proto rejects.
    """
    try:
        with open(path, encoding="utf-8") as f:
            job = json.load(f)
    except (OSError, ValueError) as error:
        raise LaunchError(f"cannot read the pipeline job {path}: {error}") from None
    if not isinstance(job, dict) or "pipelineSpec" not in job:
        raise LaunchError(
            f"{path} has no pipelineSpec; give the PipelineJob JSON that `python -m "
            "pipelines.kubeflow` writes."
        )
    try:
        json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    except json_format.ParseError as error:
        raise LaunchError(
            f"{path}: pipelineSpec is not a valid KFP v2 PipelineSpec: {error}") from None
    return job


def _tasks(job):
    return job["pipelineSpec"]["root"]["dag"]["tasks"]


def _producers(task):
    """Names of the tasks whose output artifacts `task` consumes."""
    artifacts = task.get("inputs", {}).get("artifacts", {})
    return {spec["taskOutputArtifact"]["producerTask"] for spec in artifacts.values()
            if "taskOutputArtifact" in spec}


def task_order(job):
    """Task names in an order where every task comes after the tasks it depends on.

    Ties are broken by name, so the order is deterministic.

    Raises:
        LaunchError: a dependency on an unknown task, or a cycle.
    """
    tasks = _tasks(job)
    needs = {}
    for name, task in tasks.items():
        needs[name] = set(task.get("dependentTasks", [])) | _producers(task)
        unknown = sorted(needs[name] - set(tasks))
        if unknown:
            raise LaunchError(f"task {name!r} depends on unknown tasks {unknown}.")
    order, done = [], set()
    while len(order) < len(tasks):
        ready = sorted(n for n in tasks if n not in done and needs[n] <= done)
        if not ready:
            raise LaunchError(f"the DAG has a cycle among {sorted(set(tasks) - done)}.")
        order.append(ready[0])
        done.add(ready[0])
    return order


def container_spec(job, task_name):
    """The task's executor container: {"image", "command", "args", "resources", "env"}."""
    task = _tasks(job)[task_name]
    component = job["pipelineSpec"]["components"][task["componentRef"]["name"]]
    executor = job["pipelineSpec"]["deploymentSpec"]["executors"][component["executorLabel"]]
    if "container" not in executor:
        raise LaunchError(
            f"task {task_name!r}: executor {component['executorLabel']!r} is not a container "
            f"executor ({sorted(executor)}); only container tasks can run here."
        )
    return executor["container"]


# === The ExecutorInput ===


def _legacy_value_to_struct(value):
    """schema 2.0.0's Value {intValue|doubleValue|stringValue} -> google.protobuf.Value."""
    ((kind, raw),) = value.items()
    if kind == "intValue":
        return struct_pb2.Value(number_value=int(raw))
    if kind == "doubleValue":
        return struct_pb2.Value(number_value=float(raw))
    if kind == "stringValue":
        return struct_pb2.Value(string_value=raw)
    raise LaunchError(f"unknown parameter value kind {kind!r}.")


def _task_root(pipeline_root, run_id, task_name):
    return os.path.join(pipeline_root, run_id, task_name)


def executor_input(job, task_name, pipeline_root, run_id, produced):
    """The ExecutorInput proto of one task, as the KFP v2 launcher builds it.

    Args:
        job: the PipelineJob dict.
        task_name: a key of the root DAG's tasks.
        pipeline_root: local directory where outputs go (the job's gcsOutputDirectory on a
            cluster).
        run_id: this run's directory under pipeline_root.
        produced: {task name: ExecutorOutput proto} of the tasks that already ran.

    Raises:
        LaunchError: an input from a task that has not run or did not report the artifact, or a
            parameter form this launcher does not support.
    """
    task = _tasks(job)[task_name]
    component = job["pipelineSpec"]["components"][task["componentRef"]["name"]]
    message = pipeline_spec_pb2.ExecutorInput()
    for name, spec in task.get("inputs", {}).get("parameters", {}).items():
        runtime = spec.get("runtimeValue", {})
        if "constantValue" in runtime:
            json_format.ParseDict(runtime["constantValue"], message.inputs.parameters[name])
            message.inputs.parameter_values[name].CopyFrom(
                _legacy_value_to_struct(runtime["constantValue"]))
        elif "constant" in runtime:
            json_format.ParseDict(runtime["constant"], message.inputs.parameter_values[name])
        else:
            raise LaunchError(
                f"task {task_name!r}, parameter {name!r}: only constant parameters can run here "
                f"(got {sorted(spec)})."
            )
    declared = component.get("inputDefinitions", {}).get("artifacts", {})
    for name, spec in task.get("inputs", {}).get("artifacts", {}).items():
        source = spec.get("taskOutputArtifact")
        if source is None:
            raise LaunchError(
                f"task {task_name!r}, input artifact {name!r}: only outputs of other tasks can "
                f"run here (got {sorted(spec)})."
            )
        producer, key = source["producerTask"], source["outputArtifactKey"]
        output = produced.get(producer)
        if output is None or key not in output.artifacts:
            raise LaunchError(
                f"task {task_name!r} needs {producer}.{key}, which {producer!r} did not report "
                "in its executor output."
            )
        for upstream in output.artifacts[key].artifacts:
            artifact = message.inputs.artifacts[name].artifacts.add()
            artifact.CopyFrom(upstream)
            artifact.type.Clear()
            json_format.ParseDict(declared[name]["artifactType"], artifact.type)
    task_root = _task_root(pipeline_root, run_id, task_name)
    for name, spec in component.get("outputDefinitions", {}).get("artifacts", {}).items():
        artifact = message.outputs.artifacts[name].artifacts.add()
        artifact.name = f"{run_id}/{task_name}/{name}"
        artifact.uri = os.path.join(task_root, name)
        json_format.ParseDict(spec["artifactType"], artifact.type)
    for name in component.get("outputDefinitions", {}).get("parameters", {}):
        message.outputs.parameters[name].output_file = os.path.join(task_root, "parameters", name)
    message.outputs.output_file = os.path.join(task_root, OUTPUT_FILE)
    return message


def task_argv(container, executor_input_json, task_name):
    """command + args with `{{$}}` replaced by the ExecutorInput JSON.

    Raises:
        LaunchError: another `{{...}}` placeholder (TFX-compiled specs use only `{{$}}`).
    """
    argv = []
    for word in [*container.get("command", []), *container.get("args", [])]:
        word = word.replace(EXECUTOR_INPUT_PLACEHOLDER, executor_input_json)
        leftover = re.search(r"\{\{\$[^}]*\}\}", word)
        if leftover:
            raise LaunchError(
                f"task {task_name!r} uses the placeholder {leftover.group(0)}; this launcher "
                f"substitutes only {EXECUTOR_INPUT_PLACEHOLDER}."
            )
        argv.append(word)
    return argv


# === Running the job ===


@dataclasses.dataclass
class TaskResult:
    """What one task did: exit code, seconds, its log, its ExecutorOutput (None if it failed)."""

    name: str
    exit_code: int
    seconds: float
    log: str
    executor_input: pipeline_spec_pb2.ExecutorInput
    executor_output: pipeline_spec_pb2.ExecutorOutput = None

    def output_uri(self, key):
        """The uri of output artifact `key` as the task reported it."""
        return self.executor_output.artifacts[key].artifacts[0].uri


def run_job(job, pipeline_root, runtime, *, run_id=None, echo=None):
    """Runs every task of a compiled job in dependency order; stops at the first failure.

    Args:
        job: a PipelineJob dict (load_job).
        pipeline_root: an absolute local directory for the run's artifacts.
        runtime: ContainerRuntime or InProcessRuntime.
        run_id: the run's directory name under pipeline_root (default: a new unique one).
        echo: None, or a function of one line, told when each task starts and ends.

    Returns:
        {task name: TaskResult}, in the order the tasks ran.

    Raises:
        LaunchError: a task exited non-zero or wrote no executor output (the message names the
            task, its exit code and the end of its log).
    """
    pipeline_root = os.path.abspath(pipeline_root)
    run_id = run_id or f"{job['pipelineSpec']['pipelineInfo']['name']}-{uuid.uuid4().hex[:8]}"
    say = echo or (lambda line: None)
    results, produced = {}, {}
    for name in task_order(job):
        message = executor_input(job, name, pipeline_root, run_id, produced)
        container = container_spec(job, name)
        argv = task_argv(container, json_format.MessageToJson(message, indent=None), name)
        task_root = _task_root(pipeline_root, run_id, name)
        os.makedirs(task_root, exist_ok=True)
        log_path = os.path.join(task_root, LOG_FILE)
        say(f"{name}: running ({runtime.name})")
        started = time.monotonic()
        code = runtime.run(name, container, argv, pipeline_root, log_path)
        result = TaskResult(name, code, time.monotonic() - started, log_path, message)
        results[name] = result
        output_file = message.outputs.output_file
        if code != 0 or not os.path.exists(output_file):
            with open(log_path, encoding="utf-8", errors="replace") as f:
                tail = "".join(f.readlines()[-25:])
            why = f"exited with {code}" if code else f"exited 0 but wrote no {output_file}"
            raise LaunchError(f"task {name!r} {why}; log {log_path}, last lines:\n{tail}")
        result.executor_output = json_format.Parse(
            open(output_file, encoding="utf-8").read(), pipeline_spec_pb2.ExecutorOutput())
        produced[name] = result.executor_output
        say(f"{name}: done in {result.seconds:.0f} s")
    return results


def _exit_on_signal(signum, frame):
    del frame
    raise SystemExit(128 + signum)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.launcher",
        description="Run a compiled KFP v2 pipeline job here, task by task, as the KFP v2 "
                    "launcher does.",
    )
    parser.add_argument("job", help="PipelineJob JSON (python -m pipelines.kubeflow --output)")
    parser.add_argument("--pipeline-root",
                        help="local directory for the run's artifacts (default: the job's "
                             "pipeline root, when it is a local absolute path)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--container-host", default=os.environ.get("M3D_CONTAINER_HOST"),
                       help="Docker-compatible API of a container engine, e.g. "
                            "unix:///tmp/podman.sock (default: $M3D_CONTAINER_HOST)")
    where.add_argument("--in-process", action="store_true",
                       help="run each task's command in this environment, without containers")
    parser.add_argument("--run-id", help="directory of this run under --pipeline-root")
    args = parser.parse_args(argv)
    # A TERM (a CI timeout, kill) unwinds like Ctrl-C, so a running task's container is removed.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if not args.in_process and not args.container_host:
        parser.error("give --container-host (or set M3D_CONTAINER_HOST), or --in-process")
    try:
        job = load_job(args.job)
        root = args.pipeline_root or job.get("runtimeConfig", {}).get("gcsOutputDirectory", "")
        if not os.path.isabs(root):
            raise LaunchError(
                f"the job's pipeline root {root!r} is not a local directory; give --pipeline-root "
                "(or compile with --pipeline-root /an/absolute/path)."
            )
        runtime = InProcessRuntime() if args.in_process else ContainerRuntime(args.container_host)
        results = run_job(job, root, runtime, run_id=args.run_id,
                          echo=lambda line: print(line, flush=True))
    except LaunchError as error:
        print(f"pipelines.launcher: error: {error}", file=sys.stderr)
        return 1
    for name, result in results.items():
        outputs = result.executor_output.artifacts
        print(f"{name}: exit {result.exit_code}, {result.seconds:.0f} s, outputs "
              + ", ".join(f"{key}={value.artifacts[0].uri}" for key, value in outputs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compiles the M3D pipeline to a Kubeflow Pipelines v2 JSON spec (KubeflowV2DagRunner).

    python -m pipelines.kubeflow --image REGISTRY/m3d-tf:0.1.0 \
        --pipeline-root gs://BUCKET/m3d --output m3d_pipeline.json

    python -m pipelines.kubeflow --image REGISTRY/m3d-tf:0.1.0 --pipeline-root gs://BUCKET/m3d \
        --cpu 2 --memory 8G --node-cpu m3d_condense=8 --node-memory m3d_condense=32G \
        --accelerator m3d_condense=NVIDIA_TESLA_T4:1 --accelerator trainer=NVIDIA_TESLA_T4:1

    python -m pipelines.kubeflow ... --output m3d_pipeline.json --kfp-package m3d_pipeline.yaml

Every step runs in --image, built from pipelines/Dockerfile (`make image`). Two formats, one per
backend: --output is TFX's PipelineJob JSON (pipelineSpec + runtimeConfig), which Vertex AI
Pipelines takes as a template and pipelines.launcher runs here; --kfp-package is the bare
PipelineSpec as YAML, with the pipeline root as its defaultPipelineRoot, which is what the Kubeflow
Pipelines v2 API and its SDK client (kfp.Client().create_run_from_pipeline_package) accept. ML
Metadata is the backend's.
A blessed model is pushed to --serving-dir (default: PIPELINE_ROOT/serving). Container resources
are pipelines.resources. Every setting is checked while compiling: a bad one ends the command
with one line and status 2, before any JSON is written.
"""

import json
import os
import sys

import yaml
from tfx import v1 as tfx

import m3d_tf
from pipelines import pipeline, resources

DEFAULT_IMAGE = f"m3d-tf:{m3d_tf.__version__}"


def compile_pipeline(output, *, image, pipeline_root, name, **settings):
    """Writes the pipeline's KFP v2 job spec to `output` and returns it as a dict.

    Args:
        output: path of the JSON file to write.
        image: container image of every step (pipelines/Dockerfile).
        pipeline_root: where the steps write artifacts (e.g. gs://BUCKET/m3d).
        name: pipeline name, [a-z0-9][a-z0-9-]*.
        **settings: create_pipeline keywords, container resources included.

    Raises:
        SettingsError: a bad setting (pipelines.checks, pipelines.resources).
    """
    output = os.path.abspath(output)
    built = pipeline.create_pipeline(name, pipeline_root, **settings)
    config = tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=config, output_dir=os.path.dirname(output),
        output_filename=os.path.basename(output),
    )
    runner.run(built, write_out=True)
    with open(output, encoding="utf-8") as f:
        return json.load(f)


def check_kfp_package_path(path):
    """Raises SettingsError unless `path` ends in .yaml or .yml (KFP's client needs it)."""
    if not str(path).endswith((".yaml", ".yml")):
        raise pipeline.SettingsError(
            f"--kfp-package {path}: Kubeflow Pipelines' client reads only .yaml/.yml packages; "
            "name the file e.g. m3d_pipeline.yaml."
        )


def write_kfp_package(job, path):
    """Writes the PipelineSpec of a compiled job as a Kubeflow Pipelines v2 package (YAML).

    The open-source KFP v2 backend takes a PipelineSpec, not Vertex's PipelineJob, and reads the
    artifact root from the spec's defaultPipelineRoot (the job's runtimeConfig carries it).

    Args:
        job: the PipelineJob dict compile_pipeline returned.
        path: the .yaml file to write (KFP's client wants the .yaml suffix).
    """
    check_kfp_package_path(path)
    spec = dict(job["pipelineSpec"])
    spec["defaultPipelineRoot"] = job["runtimeConfig"]["gcsOutputDirectory"]
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(spec, f, sort_keys=True)
    return spec


def main(argv=None):
    parser = pipeline.argument_parser(
        "python -m pipelines.kubeflow",
        "Compile the M3D pipeline to a Kubeflow Pipelines v2 JSON spec.",
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE,
                        help="container image of every step, built from pipelines/Dockerfile")
    parser.add_argument("--pipeline-root", required=True,
                        help="artifact root the cluster can write, e.g. gs://BUCKET/m3d")
    parser.add_argument("--output", default="m3d_pipeline.json",
                        help="PipelineJob JSON to write (Vertex AI, pipelines.launcher)")
    parser.add_argument("--kfp-package",
                        help="also write the PipelineSpec as YAML for Kubeflow Pipelines v2")
    resources.add_resource_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if args.kfp_package:
            check_kfp_package_path(args.kfp_package)  # before anything is written
        settings = {**pipeline.settings(args), **resources.resource_settings(args)}
        spec = compile_pipeline(args.output, image=args.image, pipeline_root=args.pipeline_root,
                                name=args.name, **settings)
        if args.kfp_package:
            write_kfp_package(spec, args.kfp_package)
    except pipeline.SettingsError as error:
        pipeline.exit_on_settings_error(parser, error)
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    print(f"wrote {args.output}: {len(tasks)} steps ({', '.join(tasks)}), image {args.image}")
    if args.kfp_package:
        print(f"wrote {args.kfp_package}: the PipelineSpec for Kubeflow Pipelines v2")
    return 0


if __name__ == "__main__":
    sys.exit(main())

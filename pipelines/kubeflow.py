"""Compiles the M3D pipeline to a Kubeflow Pipelines v2 JSON spec (KubeflowV2DagRunner).

    python -m pipelines.kubeflow --image REGISTRY/m3d-tf:0.1.0 \
        --pipeline-root gs://BUCKET/m3d --output m3d_pipeline.json

    python -m pipelines.kubeflow --image REGISTRY/m3d-tf:0.1.0 --pipeline-root gs://BUCKET/m3d \
        --cpu 2 --memory 8G --node-cpu m3d_condense=8 --node-memory m3d_condense=32G \
        --accelerator m3d_condense=NVIDIA_TESLA_T4:1 --accelerator trainer=NVIDIA_TESLA_T4:1

Every step runs in --image, built from pipelines/Dockerfile (the TFX 1.21 image plus this
package). Upload the JSON to Kubeflow Pipelines or Vertex AI Pipelines; ML Metadata is theirs.
A blessed model is pushed to --serving-dir (default: PIPELINE_ROOT/serving). Container resources
are pipelines.resources. Every setting is checked while compiling: a bad one ends the command
with one line and status 2, before any JSON is written.
"""

import json
import os
import sys

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


def main(argv=None):
    parser = pipeline.argument_parser(
        "python -m pipelines.kubeflow",
        "Compile the M3D pipeline to a Kubeflow Pipelines v2 JSON spec.",
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE,
                        help="container image of every step, built from pipelines/Dockerfile")
    parser.add_argument("--pipeline-root", required=True,
                        help="artifact root the cluster can write, e.g. gs://BUCKET/m3d")
    parser.add_argument("--output", default="m3d_pipeline.json", help="JSON spec to write")
    resources.add_resource_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = {**pipeline.settings(args), **resources.resource_settings(args)}
        spec = compile_pipeline(args.output, image=args.image, pipeline_root=args.pipeline_root,
                                name=args.name, **settings)
    except pipeline.SettingsError as error:
        pipeline.exit_on_settings_error(parser, error)
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    print(f"wrote {args.output}: {len(tasks)} steps ({', '.join(tasks)}), image {args.image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

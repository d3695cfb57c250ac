"""Compiles the M3D pipeline to a Kubeflow Pipelines v2 JSON spec (KubeflowV2DagRunner).

    python -m pipelines.kubeflow --image REGISTRY/m3d-tf:0.1.0 \
        --pipeline-root gs://BUCKET/m3d --output m3d_pipeline.json

Every step runs in --image, built from pipelines/Dockerfile (the TFX 1.21 image plus this
package). Upload the JSON to Kubeflow Pipelines or Vertex AI Pipelines; ML Metadata is theirs.
"""

import json
import os
import sys

from tfx import v1 as tfx

import m3d_tf
from pipelines import pipeline

DEFAULT_IMAGE = f"m3d-tf:{m3d_tf.__version__}"


def compile_pipeline(output, *, image, pipeline_root, name, **settings):
    """Writes the pipeline's KFP v2 job spec to `output` and returns it as a dict.

    Args:
        output: path of the JSON file to write.
        image: container image of every step (pipelines/Dockerfile).
        pipeline_root: where the steps write artifacts (e.g. gs://BUCKET/m3d).
        name: pipeline name, [a-z0-9][a-z0-9-]*.
        **settings: create_pipeline keywords.
    """
    output = os.path.abspath(output)
    config = tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=config, output_dir=os.path.dirname(output),
        output_filename=os.path.basename(output),
    )
    runner.run(pipeline.create_pipeline(name, pipeline_root, **settings), write_out=True)
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
    args = parser.parse_args(argv)
    spec = compile_pipeline(args.output, image=args.image, pipeline_root=args.pipeline_root,
                            name=args.name, **pipeline.settings(args))
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    print(f"wrote {args.output}: {len(tasks)} steps ({', '.join(tasks)}), image {args.image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

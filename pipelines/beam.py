"""Runs the M3D pipeline with BeamDagRunner: DirectRunner here, any Beam runner elsewhere.

    python -m pipelines.beam --root runs/pipeline-beam
    python -m pipelines.beam --root gs://BUCKET/m3d --metadata-sqlite /data/mlmd.sqlite \
        --beam-arg=--runner=DataflowRunner --beam-arg=--project=P --beam-arg=--region=R

The orchestration runs as a Beam pipeline on the local DirectRunner; --beam-arg options (Beam
pipeline arguments) go to the components' own Beam jobs (StatisticsGen's TFDV, the Evaluator's
TFMA), which is where another runner such as Dataflow or Flink applies. ML Metadata is a SQLite
file; a blessed model is pushed to ROOT/serving unless --serving-dir says otherwise. Container
resources (pipelines.resources) are Kubeflow's: a bad setting or a resource setting ends the
command with one line and status 2.
"""

import os
import sys

from absl import logging
from tfx import v1 as tfx
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

from pipelines import pipeline, resources, results


def beam_pipeline(root, name, *, metadata_sqlite=None, beam_args=(), serving_dir=None,
                  **settings):
    """create_pipeline with its artifacts under `root` and Beam options for its components.

    Args:
        root: pipeline root (any tf.io.gfile filesystem).
        name: pipeline name.
        metadata_sqlite: SQLite file for ML Metadata (default: {root}/metadata.sqlite; root
            must then be local).
        beam_args: Beam pipeline arguments; "--runner=DirectRunner" unless they name a runner.
        serving_dir: where a blessed model is pushed (default: {root}/serving).
        **settings: create_pipeline keywords.

    Raises:
        SettingsError: a bad setting, container resources (Kubeflow only), or a remote root
            without metadata_sqlite.
    """
    resources.reject_resources(settings, "BeamDagRunner")
    root = str(root)
    if metadata_sqlite is None and "://" in root:
        raise pipeline.SettingsError(
            f"root={root!r} is not a local directory, so ML Metadata cannot live in it; pass "
            "metadata_sqlite (--metadata-sqlite) with a local file."
        )
    metadata_sqlite = metadata_sqlite or os.path.join(root, "metadata.sqlite")
    os.makedirs(os.path.dirname(os.path.abspath(metadata_sqlite)), exist_ok=True)
    beam_args = list(beam_args)
    if not any(arg.startswith("--runner") for arg in beam_args):
        beam_args.append("--runner=DirectRunner")
    return pipeline.create_pipeline(
        name, os.path.join(root, "artifacts"),
        serving_dir=serving_dir or os.path.join(root, pipeline.SERVING_DIR),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.abspath(metadata_sqlite)
        ),
        beam_pipeline_args=beam_args, **settings,
    )


def main(argv=None):
    parser = pipeline.argument_parser(
        "python -m pipelines.beam", "Run the M3D pipeline with BeamDagRunner."
    )
    parser.add_argument("--root", default="runs/pipeline-beam", help="pipeline root directory")
    parser.add_argument("--metadata-sqlite", default=None,
                        help="ML Metadata SQLite file (default: ROOT/metadata.sqlite)")
    parser.add_argument("--beam-arg", dest="beam_args", action="append", default=[],
                        help="a Beam pipeline argument for the components, repeatable")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)  # TFX reports each component's progress at INFO
    try:
        beam = beam_pipeline(args.root, args.name, metadata_sqlite=args.metadata_sqlite,
                             beam_args=args.beam_args, **pipeline.settings(args))
    except pipeline.SettingsError as error:
        pipeline.exit_on_settings_error(parser, error)
    BeamDagRunner().run(beam)
    print(results.format_summary(results.summary(beam.metadata_connection_config, args.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

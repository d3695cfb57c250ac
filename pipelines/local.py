"""Runs the M3D pipeline in this process with LocalDagRunner and a SQLite ML Metadata store.

    python -m pipelines.local --root runs/pipeline              # Fashion-MNIST, the defaults
    python -m pipelines.local --help                             # every setting

Everything goes under --root: artifacts/ (the pipeline root), metadata.sqlite (ML Metadata) and
serving/ (where the Pusher puts a blessed model, unless --serving-dir says otherwise). The last
lines printed summarise the run (pipelines.results). Container resources (pipelines.resources)
are Kubeflow's: a bad setting or a resource setting ends the command with one line and status 2.
"""

import pathlib
import sys

from absl import logging
from tfx import v1 as tfx

from pipelines import pipeline, resources, results


def local_pipeline(root, name, *, serving_dir=None, **settings):
    """create_pipeline with the pipeline root, SQLite store and serving dir under `root`.

    Raises:
        SettingsError: a bad setting, or container resources (Kubeflow only).
    """
    resources.reject_resources(settings, "LocalDagRunner")
    root = pathlib.Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        str(root / "metadata.sqlite")
    )
    return pipeline.create_pipeline(
        name, root / "artifacts",
        serving_dir=pathlib.Path(serving_dir or root / pipeline.SERVING_DIR).resolve(),
        metadata_connection_config=metadata, **settings,
    )


def main(argv=None):
    parser = pipeline.argument_parser(
        "python -m pipelines.local", "Run the M3D pipeline locally (LocalDagRunner, SQLite MLMD)."
    )
    parser.add_argument("--root", default="runs/pipeline",
                        help="directory for the artifacts, metadata.sqlite and serving/")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)  # TFX reports each component's progress at INFO
    try:
        local = local_pipeline(args.root, args.name, **pipeline.settings(args))
    except pipeline.SettingsError as error:
        pipeline.exit_on_settings_error(parser, error)
    tfx.orchestration.LocalDagRunner().run(local)
    print(results.format_summary(results.summary(local.metadata_connection_config, args.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs the M3D pipeline in this process with LocalDagRunner and a SQLite ML Metadata store.

    python -m pipelines.local --root runs/pipeline              # Fashion-MNIST, the defaults
    python -m pipelines.local --help                             # every setting

Everything goes under --root: artifacts/ (the pipeline root) and metadata.sqlite (ML Metadata).
The last lines printed summarise the run (pipelines.results).
"""

import pathlib
import sys

from absl import logging
from tfx import v1 as tfx

from pipelines import pipeline, results


def local_pipeline(root, name, **settings):
    """create_pipeline with the pipeline root and SQLite store under `root`."""
    root = pathlib.Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        str(root / "metadata.sqlite")
    )
    return pipeline.create_pipeline(
        name, root / "artifacts", metadata_connection_config=metadata, **settings
    )


def main(argv=None):
    parser = pipeline.argument_parser(
        "python -m pipelines.local", "Run the M3D pipeline locally (LocalDagRunner, SQLite MLMD)."
    )
    parser.add_argument("--root", default="runs/pipeline",
                        help="directory for the artifacts and metadata.sqlite")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)  # TFX reports each component's progress at INFO
    local = local_pipeline(args.root, args.name, **pipeline.settings(args))
    tfx.orchestration.LocalDagRunner().run(local)
    print(results.format_summary(results.summary(local.metadata_connection_config, args.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

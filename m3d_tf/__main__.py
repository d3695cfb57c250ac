"""`python -m m3d_tf main [SOURCE]`: the project's main job, what `make run` runs.

Until the condenser exists the main job is the summary of a data source (default: the offline
Fashion-MNIST), printed by m3d_tf.data; the condensation job replaces it.
"""

import sys

USAGE = "usage: python -m m3d_tf main [SOURCE] [--split SPLIT] [--no-download]"


def main(argv=None):
    """Runs the job named by the first argument. Returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] != ["main"]:
        print(f"{USAGE}\nexpected the job name 'main' first, got {args[:1] or 'nothing'}.",
              file=sys.stderr)
        return 2
    # Imported here so that `python -m m3d_tf` with a wrong argument answers without loading TF.
    from m3d_tf.data.__main__ import summary_main

    return summary_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())

"""`python -m m3d_tf ...` is the `m3d` command (m3d_tf/cli.py); `make run` runs `main`."""

import sys

from m3d_tf.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m m3d_tf.data [SOURCE]`: load a source and print what it holds.

Until the condenser exists this is the project's main job (the set-up's `make run`): it proves
that real data loads, and shows which route was used (DatasetInfo.source: tfds:... or idx:...).
"""

import argparse
import sys

import numpy as np

from m3d_tf.data.sources import SOURCE_FORMS, load_arrays


def format_summary(info, split, labels):
    """Human-readable lines describing a loaded split.

    Args:
        info: DatasetInfo.
        split: the split `labels` belong to.
        labels: int64 (N,) labels of that split.

    Returns:
        str, one fact per line.
    """
    counts = np.bincount(labels, minlength=info.num_classes)
    per_class = ", ".join(f"{name} {count}" for name, count in zip(info.class_names, counts))
    height, width, channels = info.image_shape
    return "\n".join(
        [
            f"dataset      {info.name}",
            f"source       {info.source}",
            f"classes      {info.num_classes}",
            f"image shape  {height}x{width}x{channels}",
            f"splits       {', '.join(f'{s} {n}' for s, n in info.split_sizes.items())}",
            f"mean         {', '.join(f'{m:.4f}' for m in info.mean)}  (train, pixels in [0, 1])",
            f"std          {', '.join(f'{s:.4f}' for s in info.std)}",
            f"{split} per class  {per_class}",
        ]
    )


def summary_main(argv=None):
    """Entry point: parse arguments, load, print the summary. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m m3d_tf.data", description="Load a dataset source and describe it."
    )
    parser.add_argument(
        "source",
        nargs="?",
        default="fashion_mnist",
        help=f"a known name (fashion_mnist, mnist, cifar10, cifar100, svhn) or {SOURCE_FORMS}",
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir (default: $TFDS_DATA_DIR)")
    parser.add_argument("--no-download", action="store_true", help="never download (TFDS)")
    args = parser.parse_args(argv)
    try:
        _, labels, info = load_arrays(
            args.source, args.split, data_dir=args.data_dir, download=not args.no_download
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_summary(info, args.split, labels))
    return 0


if __name__ == "__main__":
    sys.exit(summary_main())

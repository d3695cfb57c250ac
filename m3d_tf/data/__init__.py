"""Real classification data for condensation: sources -> uint8 arrays / tf.data, balanced batches.

    images, labels, info = load_arrays("fashion_mnist")           # uint8 (N, H, W, C), int64 (N,)
    dataset, info = load_dataset("npz:mine.npz", "test")            # (float32 [0, 1], int64)
    batches = balanced_batches((images, labels), n_per_class=128)   # n images of every class
    class_files, info = stream_source("tfrecord:shards/*.tfrecord")  # per-class files on disk
    batches = streamed_batches(class_files, n_per_class=128)       # the same layout, streamed

Sources (see sources.py): the names fashion_mnist, mnist, cifar10, cifar100, svhn (through
tensorflow-datasets, downloading when online; Fashion-MNIST works offline from Debian's
dataset-fashion-mnist package, see catalog.py), tfds:NAME, and users' own data as
idx:DIR, npz:FILE, folder:DIR, tfrecord:GLOB or a bare path whose kind is detected.
`python -m m3d_tf.data SOURCE` prints a summary of a source.

Modules: arrays (DatasetInfo, checks), idx (IDX parser and folders), files (npz, image folder,
TFRecord), catalog (TFDS and the offline Fashion-MNIST), sources (source strings, loaders),
balanced (class-balanced batches), records (TFRecord files chunk by chunk), class_files
(per-class files on disk written in one streaming pass, with counts, mean and std), stream
(class-balanced batches read from them: data larger than memory), holdout (a validation split
carved from train), __main__ (the summary).
"""

from m3d_tf.data.arrays import (
    UNDECLARED_FLIP,
    DatasetInfo,
    channel_stats,
    check_channel_stats,
    undeclared_flip_note,
)
from m3d_tf.data.balanced import balanced_batches, images_by_class
from m3d_tf.data.catalog import (
    KNOWN_DATASETS,
    default_cache_dir,
    mirroring,
    mirroring_by_name,
    restore_gzip_header,
)
from m3d_tf.data.holdout import holdout_split
from m3d_tf.data.idx import parse_idx, read_idx
from m3d_tf.data.records import example_chunks
from m3d_tf.data.sources import load_arrays, load_dataset, open_source
from m3d_tf.data.class_files import (
    ClassFiles,
    open_class_files,
    stream_source,
    write_class_files,
)
from m3d_tf.data.stream import initialization_sample, streamed_batches

__all__ = [
    "KNOWN_DATASETS",
    "UNDECLARED_FLIP",
    "ClassFiles",
    "DatasetInfo",
    "balanced_batches",
    "channel_stats",
    "check_channel_stats",
    "default_cache_dir",
    "example_chunks",
    "holdout_split",
    "images_by_class",
    "initialization_sample",
    "load_arrays",
    "load_dataset",
    "mirroring",
    "mirroring_by_name",
    "open_class_files",
    "open_source",
    "parse_idx",
    "read_idx",
    "restore_gzip_header",
    "stream_source",
    "streamed_batches",
    "undeclared_flip_note",
    "write_class_files",
]

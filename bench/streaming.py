"""Memory and speed of condensing from files (issue 13, item 2): 60 k, 600 k and 6 M images.

    nice -n 10 scripts/m3d-env run python bench/streaming.py              # writes the docs table
    nice -n 10 scripts/m3d-env run python bench/streaming.py --scales 1 --no-docs   # smoke run

Data: the 60,000 real Fashion-MNIST training images (Debian's IDX files through m3d_tf.data)
written once as 10 TFRecord shards of tf.Example in the m3d_tf.io layout with uint8 pixel bytes
(the compact form m3d_tf.data.example_chunks reads: 784 bytes an image, 0.85 KB a record), then
"written out repeatedly": the data set of scale k is k copies of the 10 shards (hard links, so
600 k and 6 M images cost no extra disk, while every record is read and parsed k times).

Each scale runs in a fresh child process, which measures itself:
    pass      seconds of the one streaming pass (m3d_tf.data.stream_source): per-class files
              in the cache, class counts, mean and std
    s/iter    seconds per condensation iteration (recipe "m3d", IPC 10, 128 real images per
              class, m3d_tf.recipes.condense on m3d_tf.data.streamed_batches): median of the
              gaps between consecutive step ends after `--warmup` steps
    peak RSS  the child's ru_maxrss (resource.getrusage) at the end: the most memory it held
For contrast, the in-memory path (balanced_batches over the uint8 arrays, tiled k times) runs
at 1x and 10x in the same way. The machine is shared: the 1-minute load average is recorded.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Streaming from files: memory and speed (issue 13)"
SHARDS = 10


def write_shards(directory):
    """The 60 k Fashion-MNIST training images as SHARDS TFRecord files with uint8 pixels."""
    import numpy as np
    import tensorflow as tf

    from m3d_tf.data.catalog import DEBIAN_FASHION_MNIST_DIR
    from m3d_tf.data.idx import open_idx_dir

    images, labels = open_idx_dir(DEBIAN_FASHION_MNIST_DIR).read("train")
    directory.mkdir(parents=True, exist_ok=True)
    shape = [tf.train.Feature(int64_list=tf.train.Int64List(value=[d])) for d in images.shape[1:]]
    for shard, rows in enumerate(np.array_split(np.arange(len(labels)), SHARDS)):
        with tf.io.TFRecordWriter(str(directory / f"fmnist-{shard:05d}.tfrecord")) as writer:
            for i in rows:
                feature = dict(zip(("height", "width", "channels"), shape))
                feature["image"] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[images[i].tobytes()]))
                feature["label"] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[int(labels[i])]))
                writer.write(tf.train.Example(
                    features=tf.train.Features(feature=feature)).SerializeToString())
    return len(labels)


def link_copies(shards, directory, copies):
    """`copies` hard-linked copies of the shards in `directory` (the data set of scale k)."""
    directory.mkdir(parents=True, exist_ok=True)
    for copy in range(copies):
        for shard in sorted(shards.glob("*.tfrecord")):
            target = directory / f"copy{copy:03d}-{shard.name}"
            if not target.exists():
                os.link(shard, target)


class _StepTimes:
    def __init__(self):
        self.ends = []

    def __call__(self):
        import keras

        times = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                times.ends.append(time.perf_counter())

        return Callback()


def child(args):
    """One measurement in this process; prints a JSON line."""
    import numpy as np

    from m3d_tf import recipes
    from m3d_tf.data import (balanced_batches, initialization_sample, stream_source,
                             streamed_batches)

    recipe = recipes.get_recipe("m3d")
    result = {"mode": args.mode, "scale": args.scale}
    started = time.perf_counter()
    class_files, info = stream_source(f"tfrecord:{args.data}/*.tfrecord", cache_dir=args.cache)
    result["pass_seconds"] = time.perf_counter() - started
    result["images"] = int(sum(class_files.counts))
    result["mean"], result["std"] = info.mean[0], info.std[0]
    condenser = recipes.build_condenser(info, args.ipc, recipe="m3d", seed=0)
    sample = initialization_sample(class_files, init=condenser.init, ipc=condenser.ipc,
                                   factor=condenser.factor, seed=0)
    if args.mode == "stream":
        batches = streamed_batches(class_files, condenser.real_per_class, seed=0)
    else:  # the in-memory path: every image in the process
        from m3d_tf.data.catalog import DEBIAN_FASHION_MNIST_DIR
        from m3d_tf.data.idx import open_idx_dir

        images, labels = open_idx_dir(DEBIAN_FASHION_MNIST_DIR).read("train")
        images, labels = np.tile(images, (args.scale, 1, 1, 1)), np.tile(labels, args.scale)
        result["images"] = len(labels)
        batches = balanced_batches((images, labels), condenser.real_per_class, seed=0)
    condenser.initialize(sample)
    condenser.compile(learning_rate=recipe.learning_rate_for(args.ipc))
    times = _StepTimes()
    recipes.condense(None, None, info, args.ipc, iterations=args.warmup + args.iterations,
                     condenser=condenser, batches=batches, callbacks=[times()])
    gaps = np.diff(times.ends[args.warmup - 1:])
    result["seconds_per_iteration"] = statistics.median(gaps.tolist())
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["load"] = os.getloadavg()[0]
    print(json.dumps(result), flush=True)


def measure(mode, scale, data, cache, args):
    command = [sys.executable, __file__, "--child", mode, "--scale", str(scale), "--data",
               str(data), "--cache", str(cache), "--iterations", str(args.iterations),
               "--warmup", str(args.warmup), "--ipc", str(args.ipc)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{mode} x{scale} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows):
    lines = ["| path | images | pass (s) | s/iter | peak RSS (MB) | load (1 min) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['images']:,} | "
            f"{r['pass_seconds']:.0f} | {r['seconds_per_iteration']:.3f} | "
            f"{r['peak_rss_mb']:.0f} | {r['load']:.1f} |")
    return "\n".join(lines)


def write_docs(rows, args, seconds):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"""{SECTION}

Command: `nice -n 10 scripts/m3d-env run python bench/streaming.py` ({stamp}, {seconds / 60:.0f}
min in all, {platform.node()}: 2 cores shared with other agents' jobs; the 1-minute load average
at the end of each row is in the table). Data: the 60,000 real Fashion-MNIST training images
written as {SHARDS} TFRecord shards of tf.Example (m3d_tf.io's layout with uint8 pixel bytes:
784 bytes an image), repeated 1x, 10x and 100x as hard links: every record is read and parsed
100 times at 6 M, while the disk holds one copy of the shards. Each row is a fresh process:
"pass" is `m3d_tf.data.stream_source` (the TFRecord Reader's record count, then the one
streaming pass that writes the per-class files and gives class counts, mean and std), then
{args.warmup} warm-up and {args.iterations} timed iterations of the "m3d" recipe (IPC
{args.ipc}, factor 2, 128 real images per class) through `recipes.condense`; s/iter is the median
step time, peak RSS the process's ru_maxrss. "stream" rows condense from `streamed_batches`;
"in-memory" rows from `balanced_batches` over the arrays tiled 1x and 10x, the path `m3d
condense` took before (their pass reuses the per-class files the stream row just wrote: only
the count and the fingerprint). The per-class files (784 bytes an image: 4.7 GB at 6 M) are
deleted after each scale.

{table(rows)}

What stays flat: the streamed process holds one chunk of 4,096 records while it writes the
per-class files, and one batch of 10 x 128 images (read with os.pread from files that live on
disk or in the page cache, outside the process) while it condenses. Its peak is the
condensation step itself (the random ConvNet-3's activations for 1,280 real and 400 decoded
images), with a few hundred MB of run-to-run variation from the allocator, whatever the data
size; the in-memory path adds the images it holds (and balanced_batches embeds them in the
graph as a constant, which TensorFlow's 2 GB graph limit stops at about 2.7 M Fashion-MNIST
images). Seconds per iteration follow the machine's load, not the data: compare rows run at
similar load. The pass is linear in the records read; at 6 M it is dominated by writing the
4.7 GB of per-class files back to disk, while the 10 x smaller ones stay in the page cache.
"""
    current = DOCS.read_text()
    if SECTION in current:
        start = current.index(SECTION)
        end = current.find("\n## ", start + len(SECTION))
        current = current[:start] + text + (current[end + 1:] if end != -1 else "")
    else:
        current = current.rstrip("\n") + "\n\n" + text
    DOCS.write_text(current)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/m3d-bench-streaming")
    parser.add_argument("--scales", default="1,10,100")
    parser.add_argument("--memory-scales", default="1,10",
                        help="scales also run through the in-memory path")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--child", choices=("stream", "in-memory"))
    parser.add_argument("--scale", type=int)
    parser.add_argument("--data")
    parser.add_argument("--cache")
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        return child(args)

    started = time.time()
    work = pathlib.Path(args.work)
    shards = work / "shards"
    if not shards.is_dir():
        print(f"writing {write_shards(shards)} images as {SHARDS} shards", flush=True)
    rows = []
    try:
        for scale in [int(s) for s in args.scales.split(",")]:
            data = work / f"x{scale}"
            link_copies(shards, data, scale)
            for mode in ("stream", "in-memory"):
                if mode == "in-memory" and str(scale) not in args.memory_scales.split(","):
                    continue
                rows.append(measure(mode, scale, data, work / "cache", args))
                print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(work / "cache", ignore_errors=True)  # 4.7 GB at 100x
    finally:
        shutil.rmtree(work / "cache", ignore_errors=True)
    print(table(rows))
    if not args.no_docs:
        write_docs(rows, args, time.time() - started)


if __name__ == "__main__":
    main()

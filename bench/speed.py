"""Speed of M3DCondenser on the CIFAR-shaped workload of issue 4 ("Speed").

    scripts/m3d-env run python bench/speed.py            # full run (~30 min), updates docs
    scripts/m3d-env run python bench/speed.py --quick    # smoke run (~5 min), prints only
    PYTHONPATH=. /work/devvenv/bin/python bench/speed.py --quick

Workload: 32x32x3 images, 10 classes, 10 stored images per class (ipc), 256 real images per
class in every batch, the random ConvNet-3 (width 128, instance norm). No CIFAR-10 ships with
any registry we can reach, so the real images are random uint8 pixels of that shape (with CIFAR's
per-channel mean and std for the normalisation): every op here costs the same whatever the
pixel values. Three modes:

    dm      kernel="linear", ipm=1, factor=1, augmentation="color_crop_cutout_flip_scale_rotate",
            init="real"                 (DM: 10 synthetic images per class enter each step)
    m3d     kernel="gaussian_mix", ipm=5, factor=2, augmentation="color_crop_cutout", init="mix"
                                        (M3D: 10 x 2^2 = 40 decoded images per class)
    m3d_f1  M3D with factor=1           (M3D's objective on DM's 10 images per class: what the
                                        multi-kernel MMD itself costs over DM's linear one)

Seconds per iteration are timed through `M3DCondenser.fit` on `m3d_tf.data.balanced_batches`
(the data pipeline, Keras' loop and the optimiser included): the time between the ends of
consecutive steps, median over the timed steps after a warm-up (tracing and XLA compilation).
The process CPU seconds of the same steps are reported too: the work done, which other
processes on the machine disturb much less than the wall time.

Achieved GFLOP/s, in the spirit of nanoGPT's `estimate_mfu`, counts only the convolutions
(multiply + add = 2 FLOP), since they are almost all the arithmetic:

    F   = sum over blocks d of 2 * 9 * c_in(d) * width * h(d) * w(d)   (one image, forward)
        = 2 * 9 * (3*128*32*32 + 128*128*16*16 + 128*128*8*8) = 0.1014 GFLOP for ConvNet-3
    per step = F * (C * n + 2 * C * m)

with C classes, n real images per class and m synthetic images per class in the step
(ipc * factor^2, at most 200): 280 GFLOP in DM mode, 341 in M3D mode (so factor 2 cannot
run in less than 341 / 280 = 1.22x DM's time at equal efficiency). The real images
only go forward (no gradient). The synthetic images go forward and backward; the backward pass
needs only the gradient with respect to each conv's input (the random net is not trained, so no
filter gradients), which costs what the forward conv costs: hence 2 F, not nanoGPT's 3 F. Not
counted: instance norm, ReLU, pooling, augmentation, decoding and the MMD (for "gaussian_mix" its
Gram matrices add 2 * C * (m + n)^2 * 2048 FLOP forward, about 1% of the convolutions here).
The peak is measured in the same process: the best of ten large `tf.linalg.matmul`s in float32
and in bfloat16, and a run's GFLOP/s is compared with the peak of its compute dtype.

The machine has 2 cores and is shared, so every measurement records the 1-minute load average
before and after it (`os.getloadavg`), `--max-load` waits for a quieter machine before each
measurement, and the main table runs every configuration `--rounds` times, interleaved.
"""

import argparse
import datetime
import os
import pathlib
import platform
import re
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the working tree's m3d_tf, also when run as bench/speed.py

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from m3d_tf import M3DCondenser, augment, mmd, networks  # noqa: E402
from m3d_tf.data import balanced_batches  # noqa: E402
from m3d_tf.networks.random_convnet import first_padding  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Speed"
BEGIN = "<!-- bench/speed.py: begin generated results -->"
END = "<!-- bench/speed.py: end generated results -->"

IMAGE_SHAPE = (32, 32, 3)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

# Condenser settings of the two modes, and their pixel learning rates (DM's lr 1 on normalised
# pixels is ~0.1 on pixels in [0, 1]; M3D uses lr = ipc). Speed does not depend on them.
MODES = {
    "dm": dict(
        kernel="linear", ipm=1, factor=1,
        augmentation="color_crop_cutout_flip_scale_rotate", init="real",
    ),
    "m3d": dict(
        kernel="gaussian_mix", ipm=5, factor=2, augmentation="color_crop_cutout", init="mix",
    ),
    "m3d_f1": dict(
        kernel="gaussian_mix", ipm=5, factor=1, augmentation="color_crop_cutout", init="mix",
    ),
}
LEARNING_RATE = {"dm": lambda ipc: 0.1, "m3d": float, "m3d_f1": float}
BASE = dict(classes=10, real=256, ipc=10)


# === Machine ===


def machine():
    """dict: CPU model, cores, BF16/AMX flags, OS, Python, TF and Keras versions, TF settings."""
    cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    flags = set(re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M).group(1).split())
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "isa": " ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags),
        "os": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "environment": os.environ.get("M3D_ENV", "not scripts/m3d-env"),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        "threads": (
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        ),
    }


def load_average():
    """The 1-minute load average."""
    return os.getloadavg()[0]


def wait_for_quiet(max_load, max_wait):
    """Sleeps until the 1-minute load average is at most `max_load` (or `max_wait` s passed)."""
    if max_load is None:
        return
    deadline = time.monotonic() + max_wait
    while load_average() > max_load and time.monotonic() < deadline:
        time.sleep(15)


def matmul_peak(dtype, size=2048, repeats=10):
    """Best GFLOP/s of a (size x size) @ (size x size) tf.linalg.matmul in `dtype`."""
    a = tf.cast(tf.random.stateless_normal((size, size), [0, 1]), dtype)
    b = tf.cast(tf.random.stateless_normal((size, size), [0, 2]), dtype)
    product = tf.function(tf.linalg.matmul)
    product(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# === FLOPs ===


def conv_flops_per_image(image_shape, width=128, depth=3):
    """Forward FLOPs of the ConvNet's convolutions on one image (2 per multiply-add)."""
    height, wide, channels = image_shape
    grow = 2 * first_padding(channels) - 2
    h, w = height + grow, wide + grow
    flops = 0
    for _ in range(depth):
        flops += 2 * 9 * channels * width * h * w
        channels, h, w = width, h // 2, w // 2
    return flops


def step_flops(condenser):
    """Convolution FLOPs of one step: real forward + synthetic forward and input-gradient."""
    per_image = conv_flops_per_image(
        condenser.image_shape, condenser.net_width, condenser.net_depth
    )
    real = condenser.num_classes * condenser.real_per_class
    synthetic = condenser.num_classes * condenser.subset_per_class
    return per_image * (real + 2 * synthetic)


# === Timed runs through fit ===


def random_data(classes, per_class, seed=0):
    """Random uint8 CIFAR-shaped images, `per_class` of each class, and their labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (classes * per_class,) + IMAGE_SHAPE, dtype=np.uint8)
    return images, np.repeat(np.arange(classes), per_class)


def build(mode, dtype, jit, *, classes, real, ipc, seed=0):
    """An initialised, compiled condenser and its batch stream for one configuration."""
    settings = MODES[mode]
    per_class = max(2 * real, ipc * settings["factor"] ** 2)
    data = random_data(classes, per_class, seed)
    condenser = M3DCondenser(
        classes, IMAGE_SHAPE, ipc, real_per_class=real, compute_dtype=dtype,
        mean=CIFAR_MEAN, std=CIFAR_STD, seed=seed, **settings,
    )
    condenser.initialize(data)
    condenser.compile(learning_rate=LEARNING_RATE[mode](ipc), jit_compile=jit)
    return condenser, balanced_batches(data, real, num_classes=classes, seed=seed)


class StepTimer(keras.callbacks.Callback):
    """Wall and process CPU time at the end of every step, and each step's own loss.

    Keras reports the running mean of the MMD over the epoch; step t's loss is recovered as
    t * mean_t - (t - 1) * mean_{t-1}.
    """

    def on_train_begin(self, logs=None):
        self.ends = [time.perf_counter()]
        self.cpu = [time.process_time()]
        self.means = []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(float(logs["mmd"]))  # also waits for the step to finish
        self.ends.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def losses(self):
        means = np.asarray(self.means, np.float64)
        totals = means * np.arange(1, len(means) + 1)
        return np.diff(totals, prepend=0.0)


def timed_fit(mode, dtype, jit, *, classes, real, ipc, steps, warmup):
    """Runs warmup + steps iterations through fit; returns timings, losses and pixels."""
    condenser, batches = build(mode, dtype, jit, classes=classes, real=real, ipc=ipc)
    initial = condenser.synthetic_images()
    timer = StepTimer()
    load_before = load_average()
    condenser.fit(
        batches, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer]
    )
    seconds = np.diff(timer.ends)[warmup:]
    cpu_seconds = np.diff(timer.cpu)[warmup:]
    return {
        "mode": mode, "dtype": dtype, "jit": jit,
        "classes": classes, "real": real, "ipc": ipc,
        "seconds": seconds,
        "median": float(np.median(seconds)),
        "cpu": float(np.median(cpu_seconds)),
        "flops": step_flops(condenser),
        "losses": timer.losses(),
        "initial": initial,
        "pixels": condenser.synthetic_images(),
        "load": (load_before, load_average()),
    }


# === Pieces of one step, each timed on its own ===


def median_time(fn, repeats):
    """Median (wall, process CPU) seconds of fn() over `repeats` calls after an untimed one."""
    tf.nest.map_structure(np.asarray, fn())
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        tf.nest.map_structure(np.asarray, fn())
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return float(np.median(wall)), float(np.median(cpu))


def pieces(mode, dtype, repeats, *, classes, real, ipc):
    """Seconds of each part of one step of `mode` in `dtype`, without XLA.

    Returns a list of (name, (wall seconds, CPU seconds)): the data pipeline's next batch,
    augmenting the real batch, the real forward pass, the synthetic side (decode, augment,
    forward, MMD and the gradient to the pixels, with the real features given), the MMD with
    its gradient alone, and the whole loss + gradient of one step (matching_terms under a
    tape) for comparison.
    """
    condenser, batches = build(mode, dtype, False, classes=classes, real=real, ipc=ipc)
    iterator = iter(batches)
    images, labels = next(iterator)
    c = condenser
    step = tf.constant(3, tf.int64)
    weights = networks.convnet_weights(
        tf.constant([0, 1], tf.int64), 3, IMAGE_SHAPE[:2], width=c.net_width, depth=c.net_depth
    )
    seed = tf.constant([0, 2], tf.int64)
    options = c._kernel_options()

    def augment_real():
        return augment.siamese_augment(
            c._normalize(images), labels, seed, c.augmentation, num_groups=c.num_classes
        )

    real_augmented = tf.function(augment_real)()
    real_features = tf.reshape(
        tf.function(c._features)(real_augmented, weights), (c.num_classes, c.real_per_class, -1)
    )

    def synthetic_features():
        return c._synthetic_features(weights, seed, step)

    def synthetic_side():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(mmd.grouped_mmd2(synthetic_features(), real_features, **options))
        return tf.convert_to_tensor(tape.gradient(loss, c.pixels))  # DM: IndexedSlices

    syn_features = tf.function(synthetic_features)()

    def mmd_alone():
        with tf.GradientTape() as tape:
            tape.watch(syn_features)
            loss = tf.reduce_sum(mmd.grouped_mmd2(syn_features, real_features, **options))
        return tape.gradient(loss, syn_features)

    def whole():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(c.matching_terms(images, labels, step))
        return tf.convert_to_tensor(tape.gradient(loss, c.pixels))

    return [
        ("data: next balanced batch", median_time(lambda: next(iterator), repeats)),
        ("augment the real batch", median_time(tf.function(augment_real), repeats)),
        ("forward, real batch", median_time(
            tf.function(lambda: c._features(real_augmented, weights)), repeats)),
        ("synthetic: decode, augment, forward, MMD, backward",
         median_time(tf.function(synthetic_side), repeats)),
        ("of which MMD forward + backward", median_time(tf.function(mmd_alone), repeats)),
        ("whole loss + gradient (no optimiser, no data)",
         median_time(tf.function(whole), repeats)),
    ]


# === Report ===


def run_label(run):
    return f"{run['mode']} {run['dtype']}{' XLA' if run['jit'] else ''}"


def load_text(run):
    return f"{run['load'][0]:.1f}/{run['load'][1]:.1f}"


def agreement(low, full):
    """bfloat16 vs float32 (or XLA vs not) on the same seed, data and steps.

    Returns (mean relative loss difference per step, max |pixel diff|, mean |pixel diff|,
    mean |pixel change from the start| in the reference run).
    """
    losses = np.abs(low["losses"] - full["losses"]) / np.maximum(np.abs(full["losses"]), 1e-30)
    diff = np.abs(low["pixels"] - full["pixels"])
    moved = np.abs(full["pixels"] - full["initial"])
    return float(losses.mean()), float(diff.max()), float(diff.mean()), float(moved.mean())


def targets(runs, modes):
    """Table lines: each mode's fastest run per compute dtype (XLA or not), and each / DM."""
    dtypes = ("float32", "bfloat16")
    best = {
        (m, d): min((r for r in runs if r["mode"] == m and r["dtype"] == d),
                    key=lambda r: r["median"])
        for m in modes for d in dtypes
    }
    lines = [
        "| fastest run (median s/iter) | float32 | bfloat16 |",
        "| --- | --- | --- |",
    ]
    for m in modes:
        cells = [f"{best[m, d]['median']:.2f}{' (XLA)' if best[m, d]['jit'] else ''}"
                 for d in dtypes]
        lines.append(f"| {m} | {' | '.join(cells)} |")
    for m in modes:
        if m != "dm" and "dm" in modes:
            ratios = [f"{best[m, d]['median'] / best['dm', d]['median']:.2f}" for d in dtypes]
            lines.append(f"| {m} / dm | {' | '.join(ratios)} |")
    return lines


def markdown(info, peaks, runs, pieces_table, scaling, args, started, minutes):
    """The generated part of the Speed section."""
    lines = [
        f"Command: `{args.command}`; {started:%Y-%m-%d %H:%M} UTC, {minutes:.0f} min.",
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['isa']}), {info['os']}; "
        f"environment {info['environment']}; "
        f"Python {info['python']}, TensorFlow {info['tensorflow']}, Keras {info['keras']}, "
        f"oneDNN {info['onednn']}, intra/inter-op threads {info['threads']} (0 = TF default).",
        f"Matmul peak (best of 10, 2048^3): float32 {peaks['float32']:.0f} GFLOP/s, "
        f"bfloat16 {peaks['bfloat16']:.0f} GFLOP/s.",
        "Workload: random uint8 32x32x3 images (no CIFAR here; speed does not depend on pixel "
        f"values), {BASE['classes']} classes, ipc {BASE['ipc']}, {BASE['real']} real images "
        f"per class, ConvNet-3 (width 128, instance norm); {args.warmup} warm-up steps, then "
        f"the median of {args.steps} steps, {args.rounds} interleaved round(s).",
        "",
        "| mode | compute | XLA | s/iter (each round) | CPU s/iter | conv GFLOP/step | GFLOP/s "
        "| % of peak | load before/after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    by_config = {}
    for run in runs:
        by_config.setdefault((run["mode"], run["dtype"], run["jit"]), []).append(run)
    for (mode, dtype, jit), group in by_config.items():
        best = min(r["median"] for r in group)
        walls = " / ".join(f"{r['median']:.2f}" for r in group)
        cpus = " / ".join(f"{r['cpu']:.2f}" for r in group)
        gflops = group[0]["flops"] / 1e9
        lines.append(
            f"| {mode} | {dtype} | {'yes' if jit else 'no'} | {walls} | {cpus} | {gflops:.0f} | "
            f"{gflops / best:.0f} | {100 * gflops / best / peaks[dtype]:.0f}% | "
            f"{'; '.join(map(load_text, group))} |"
        )
    modes = sorted({run["mode"] for run in runs})
    lines += ["", *targets(runs, modes)]
    lines += [
        "",
        "Agreement after the timed runs (same seed, data and steps; first round):",
        "",
        "| runs compared | mean rel. loss diff per step | max abs pixel diff "
        "| mean abs pixel diff | mean abs pixel change from init (reference) |",
        "| --- | --- | --- | --- | --- |",
    ]
    first = {}
    for run in runs:
        first.setdefault((run["mode"], run["dtype"], run["jit"]), run)
    for mode in modes:
        pairs = [((mode, "bfloat16", jit), (mode, "float32", jit)) for jit in (False, True)]
        pairs.append(((mode, "float32", True), (mode, "float32", False)))
        pairs = [(low, full) for low, full in pairs if low in first and full in first]
        for low, full in pairs:
            loss, worst, mean, moved = agreement(first[low], first[full])
            lines.append(
                f"| {run_label(first[low])} vs {run_label(first[full])} | {loss:.2e} | "
                f"{worst:.2e} | {mean:.2e} | {moved:.2e} |"
            )
    lines += [
        "",
        "Under XLA the stateless generator draws other random nets from the same seeds (see "
        "tests/test_condenser.py), so the last row of each mode compares two different random "
        "trajectories: it is the scale of a run-to-run difference, not an error.",
    ]
    lines += [
        "",
        f"Pieces of one step ({pieces_table['label']}, each timed on its own, median of "
        f"{args.piece_repeats}):",
        "",
        "| piece | seconds | CPU seconds |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {wall:.3f} | {cpu:.3f} |" for name, (wall, cpu) in pieces_table["rows"]]
    lines += [
        "",
        f"Scaling ({scaling['label']}; {args.scaling_warmup} warm-up steps, median of "
        f"{args.scaling_steps}; one round):",
        "",
        "| mode | classes | real per class | ipc | s/iter | CPU s/iter | conv GFLOP/step "
        "| GFLOP/s | load before/after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in scaling["runs"]:
        gflops = run["flops"] / 1e9
        lines.append(
            f"| {run['mode']} | {run['classes']} | {run['real']} | {run['ipc']} | "
            f"{run['median']:.2f} | {run['cpu']:.2f} | {gflops:.0f} | "
            f"{gflops / run['median']:.0f} | {load_text(run)} |"
        )
    return "\n".join(lines)


def write_section(generated, path=DOC):
    """Puts the generated block into the Speed section, leaving every other line as it was.

    The block between the BEGIN and END markers is replaced; without markers it goes at the end
    of the section whose heading starts with SECTION, or into a new section at the end.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{generated}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block.rstrip("\n") + rest.split(END, 1)[1]
    elif f"\n{SECTION}" in text:
        head, rest = text.split(f"\n{SECTION}", 1)
        section, separator, tail = rest.partition("\n## ")
        text = f"{head}\n{SECTION}{section.rstrip()}\n\n{block}"
        if separator:
            text += f"{separator}{tail}"
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{block}"
    path.write_text(text)


# === Main ===


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="few steps, one round, small scaling grid; prints, writes nothing")
    parser.add_argument("--steps", type=int, help="timed steps per run (default 20, quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed first steps (default 3, quick 2)")
    parser.add_argument("--rounds", type=int, help="repeats of the main table (default 2)")
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=sorted(MODES))
    parser.add_argument("--max-load", type=float, default=None,
                        help="wait until the 1-minute load average is at most this")
    parser.add_argument("--max-wait", type=float, default=600.0,
                        help="seconds to wait for --max-load before measuring anyway")
    parser.add_argument("--inter-op", type=int, default=0,
                        help="TensorFlow inter-op threads (default 0: TensorFlow's choice)")
    parser.add_argument("--intra-op", type=int, default=0,
                        help="TensorFlow intra-op threads (default 0: TensorFlow's choice)")
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=True,
                        help="also time every mode with jit_compile=True (default: yes)")
    parser.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=True,
                        help="time the classes / real per class / ipc grid (default: yes)")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                        help="update docs/benchmarks.md (default: yes, except with --quick)")
    args = parser.parse_args(argv)
    defaults = (3, 2, 1, 3, 1, 3) if args.quick else (20, 3, 2, 8, 2, 7)
    args.steps = args.steps or defaults[0]
    args.warmup = args.warmup if args.warmup is not None else defaults[1]
    args.rounds = args.rounds or defaults[2]
    args.scaling_steps, args.scaling_warmup, args.piece_repeats = defaults[3:]
    args.write = not args.quick if args.write is None else args.write
    runner = "scripts/m3d-env run " if os.environ.get("M3D_ENV") else ""
    args.command = f"{runner}python bench/speed.py" + (f" {' '.join(argv)}" if argv else "")
    return args


def scaling_grid(quick):
    """(classes, real per class, ipc) around the base workload, one axis at a time."""
    if quick:
        return [(2, 256, 10), (10, 64, 10), (10, 256, 1)]
    grid = [(c, 256, 10) for c in (2, 5, 10, 20)]
    grid += [(10, r, 10) for r in (64, 128)]
    grid += [(10, 256, i) for i in (1, 50)]
    return grid


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.monotonic()
    info = machine()
    print(info, flush=True)

    wait_for_quiet(args.max_load, args.max_wait)
    peaks = {d: matmul_peak(d) for d in ("float32", "bfloat16")}
    print(f"matmul peak GFLOP/s: {peaks}", flush=True)

    dtypes, jits = ("float32", "bfloat16"), ((False, True) if args.xla else (False,))
    configs = [(m, d, j) for m in args.modes for d in dtypes for j in jits]
    runs = []
    for _ in range(args.rounds):
        for mode, dtype, jit in configs:
            wait_for_quiet(args.max_load, args.max_wait)
            run = timed_fit(mode, dtype, jit, steps=args.steps, warmup=args.warmup, **BASE)
            runs.append(run)
            print(f"{run_label(run)}: {run['median']:.3f} s/iter "
                  f"(min {run['seconds'].min():.3f}, max {run['seconds'].max():.3f}), "
                  f"{run['flops'] / run['median'] / 1e9:.0f} GFLOP/s, load {run['load']}",
                  flush=True)

    fastest = min(runs, key=lambda r: r["median"])
    pieces_table = {"label": f"{fastest['dtype']}, no XLA", "rows": []}
    for mode in args.modes:
        wait_for_quiet(args.max_load, args.max_wait)
        rows = pieces(mode, fastest["dtype"], args.piece_repeats, **BASE)
        pieces_table["rows"] += [(f"{mode}: {name}", seconds) for name, seconds in rows]
        for name, (wall, cpu) in rows:
            print(f"{mode} piece {name}: {wall:.3f} s (CPU {cpu:.3f} s)", flush=True)

    scaling = {"label": f"{fastest['dtype']}{', XLA' if fastest['jit'] else ''}", "runs": []}
    for mode in args.modes:
        for classes, real, ipc in scaling_grid(args.quick) if args.scaling else ():
            wait_for_quiet(args.max_load, args.max_wait)
            run = timed_fit(mode, fastest["dtype"], fastest["jit"], classes=classes, real=real,
                            ipc=ipc, steps=args.scaling_steps, warmup=args.scaling_warmup)
            scaling["runs"].append(run)
            print(f"scaling {mode} classes={classes} real={real} ipc={ipc}: "
                  f"{run['median']:.3f} s/iter, load {run['load']}", flush=True)

    generated = markdown(info, peaks, runs, pieces_table, scaling, args, started,
                         (time.monotonic() - clock) / 60)
    print(generated)
    if args.write:
        write_section(generated)
        print(f"updated {DOC}")


if __name__ == "__main__":
    main()

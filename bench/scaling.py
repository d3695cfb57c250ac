"""What one condensation step costs as the image size grows, and what crosses the network.

    nice scripts/m3d-env run python bench/scaling.py                # measure (~3 min), print
    scripts/m3d-env run python bench/scaling.py --no-measure        # the arithmetic only

docs/scaling.md quotes its output. bench/speed.py already measured how a step grows with
classes, real images per class and ipc at 32x32x3; this adds image size (28x28x1, 32x32x3,
64x64x3), timed the same way (`speed.timed_fit`'s StepTimer through `M3DCondenser.fit`), and
prints, for a list of workloads, the convolution FLOPs of a step (speed.step_flops' formula) and
the bytes that replicas exchange in one step under MirroredStrategy or
MultiWorkerMirroredStrategy (M3DCondenser.matching_terms and train_step):

    all-gather  real features   C * n * D float32 (every replica receives the others' shards)
                real labels     C * n int32
    all-reduce  pixel gradient  C * ipc * H * W * ch float32 (summed by Keras' optimizer)
                logged values   1 + K float32 (the loss and its K kernel terms)

with C classes, n real images per class, D = the random net's feature size.
"""

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # bench/speed.py

import speed  # noqa: E402

from m3d_tf import M3DCondenser  # noqa: E402
from m3d_tf.data import balanced_batches  # noqa: E402
from m3d_tf.networks.random_convnet import convnet_feature_shape  # noqa: E402

# (name, image shape, classes, ipc, real per class, depth): CIFAR-10 is speed.py's workload.
WORKLOADS = [
    ("Fashion-MNIST", (28, 28, 1), 10, 10, 256, 3),
    ("CIFAR-10", (32, 32, 3), 10, 10, 256, 3),
    ("CIFAR-100", (32, 32, 3), 100, 10, 256, 3),
    ("Tiny ImageNet", (64, 64, 3), 200, 10, 256, 4),
    ("ImageNet-1k at 64x64", (64, 64, 3), 1000, 10, 256, 4),
]
MEASURED_SHAPES = [(28, 28, 1), (32, 32, 3), (64, 64, 3)]


def exchange_bytes(image_shape, classes, ipc, real, depth, kernel_terms=5, width=128):
    """Bytes of one step's all-gathers and all-reduces (whole tensors, before ring splitting)."""
    h, w, _ = convnet_feature_shape(image_shape, width=width, depth=depth)
    features = h * w * width
    height, wide, channels = image_shape
    return {
        "feature_size": features,
        "gather": classes * real * (features * 4 + 4),
        "reduce": classes * ipc * height * wide * channels * 4 + (1 + kernel_terms) * 4,
    }


def step_cost(image_shape, classes, ipc, real, depth, factor=2, cap=200, width=128):
    """Convolution FLOPs of one M3D step: real forward, synthetic forward + input gradient."""
    per_image = speed.conv_flops_per_image(image_shape, width, depth)
    synthetic = min(ipc * factor**2, cap)
    return per_image * classes * (real + 2 * synthetic), per_image * classes * real


def arithmetic():
    rows = ["| workload | image | C | ipc | n | conv GFLOP / step (real forward) | D | "
            "all-gather MB | all-reduce MB |", "|" + " --- |" * 9]
    for name, shape, classes, ipc, real, depth in WORKLOADS:
        total, real_part = step_cost(shape, classes, ipc, real, depth)
        sizes = exchange_bytes(shape, classes, ipc, real, depth)
        rows.append(
            f"| {name} | {'x'.join(map(str, shape))} | {classes} | {ipc} | {real} | "
            f"{total / 1e9:,.0f} ({real_part / 1e9:,.0f}) | {sizes['feature_size']} | "
            f"{sizes['gather'] / 1e6:,.1f} | {sizes['reduce'] / 1e6:,.2f} |"
        )
    return "\n".join(rows)


def measure(shape, *, real, steps, warmup, dtype="bfloat16"):
    """Median seconds and CPU seconds per M3D iteration at image `shape` (10 classes, ipc 10)."""
    classes, ipc = 10, 10
    rng = np.random.default_rng(0)
    per_class = 2 * real
    images = rng.integers(0, 256, (classes * per_class,) + shape, dtype=np.uint8)
    labels = np.repeat(np.arange(classes), per_class)
    depth = 4 if shape[0] >= 64 else 3
    condenser = M3DCondenser(classes, shape, ipc, real_per_class=real, compute_dtype=dtype,
                             net_depth=depth, **speed.MODES["m3d"])
    condenser.initialize((images, labels))
    condenser.compile(learning_rate=float(ipc))
    timer = speed.StepTimer()
    load_before = speed.load_average()
    condenser.fit(balanced_batches((images, labels), real, num_classes=classes),
                  steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer])
    seconds = float(np.median(np.diff(timer.ends)[warmup:]))
    cpu = float(np.median(np.diff(timer.cpu)[warmup:]))
    flops = speed.step_flops(condenser)
    return seconds, cpu, flops, depth, (load_before, speed.load_average())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--real", type=int, default=64, help="real images per class per step")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    print(arithmetic())
    if not args.measure:
        return
    print(f"\nmachine: {speed.machine()}")
    print(f"\nM3D, bfloat16, 10 classes, ipc 10, {args.real} real per class, median of "
          f"{args.steps} steps after {args.warmup}:\n")
    print("| image | depth | s / iteration | CPU s / iteration | conv GFLOP / step | GFLOP/s | "
          "load before / after |\n" + "|" + " --- |" * 7)
    for shape in MEASURED_SHAPES:
        seconds, cpu, flops, depth, load = measure(
            shape, real=args.real, steps=args.steps, warmup=args.warmup
        )
        print(f"| {'x'.join(map(str, shape))} | {depth} | {seconds:.2f} | {cpu:.2f} | "
              f"{flops / 1e9:.0f} | {flops / 1e9 / seconds:.0f} | {load[0]:.1f} / {load[1]:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()

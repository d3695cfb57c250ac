"""Evaluation speed: the same networks trained in float32 and in bfloat16, time and accuracy.

Evaluation (fresh networks trained for hundreds of epochs on a set) dominates the quality table and
the main job. This trains `--runs` ConvNet-3 on each set with the float32 loop and the same runs
with Keras' mixed_bfloat16 policy (bfloat16 convs and matmuls, float32 weights, loss and update),
alternating the two so both see the same machine load, and reports seconds per epoch and final
test accuracy of each. Sets: random real subsets of Fashion-MNIST (no condensation needed; the
cost depends on the number of images, not their content), or saved sets given with --set.

    scripts/m3d-env run python bench/eval_speed.py --ipc 10 40 --epochs 100 --runs 3
"""

import argparse
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import ledger as ledgers  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, nargs="*", default=[10, 40],
                        help="random subsets of this many images per class (40: the size of "
                        "M3D's decoded IPC 10 set)")
    parser.add_argument("--set", nargs="*", default=[], help="saved sets to evaluate too")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--protocol", default="idc")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)

    from m3d_tf import baselines, evaluate, io, load_arrays

    images, labels, info = load_arrays("fashion_mnist")
    test_images, test_labels, _ = load_arrays("fashion_mnist", "test")
    sets = [(f"random subset, {ipc} per class", baselines.baseline_set(
        "random", images, labels, ipc, info, seed=0)) for ipc in args.ipc]
    sets += [(path, io.load_set(path)) for path in args.set]
    started = time.time()
    lines = ["| set | images | compute | s / epoch | test accuracy (%) | runs |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, synthetic in sets:
        results = {"float32": [], "bfloat16": []}
        seconds = {"float32": [], "bfloat16": []}
        for run in range(args.runs):
            for dtype in results:  # alternated: both dtypes see the same load
                result = evaluate.evaluate_set(
                    synthetic, test_images, test_labels, protocol=args.protocol, runs=1,
                    first_run=run, epochs=args.epochs, seed=0, compute_dtype=dtype)
                results[dtype].append(result.accuracies[0])
                seconds[dtype].append(result.seconds_per_epoch)
                print(f"{name} {dtype} run {run}: {100 * result.accuracies[0]:.2f} %, "
                      f"{result.seconds_per_epoch:.3f} s/epoch", flush=True)
        count = len(synthetic.decoded()[1])
        for dtype in results:
            mean, std = ledgers.mean_std(results[dtype])
            lines.append(f"| {name} | {count} | {dtype} | {sum(seconds[dtype]) / args.runs:.3f} | "
                         f"{100 * mean:.2f} ± {100 * std:.2f} | "
                         f"{', '.join(f'{100 * a:.2f}' for a in results[dtype])} |")
    text = (f"### Evaluation in float32 and bfloat16\n\n"
            f"{ledgers.command_line('eval_speed.py', argv, started)}. ConvNet-3, {args.protocol} "
            f"protocol, {args.epochs} epochs; the two dtypes alternate run by run.\n\n"
            + "\n".join(lines))
    ledgers.write_section(args.out, "eval-speed", text)
    print(text)


if __name__ == "__main__":
    main()

"""Two jobs on two cores: one thread each, or TensorFlow's default of one per core each?

The long benchmarks (the quality table, the searches) run as several background jobs on these 2
cores. TensorFlow gives each process one intra-op thread per core, so two jobs side by side run
four threads on two cores. This measures the work done per second, for an evaluation network
(ConvNet-3, IDC protocol, bfloat16, on a random subset) and for an M3D condensation (bfloat16 random
nets), three ways: one job alone with the default threads (what one command gets), two jobs side
by side with the default threads, and two jobs side by side with TF_NUM_INTRAOP_THREADS=1 and
TF_NUM_INTEROP_THREADS=1 each. Each job is a child process of this script; the layouts run one
after the other, so give the script a quiet machine.

    scripts/m3d-env run python bench/threads.py --ipc 40 --epochs 30 --iterations 25
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import ledger as ledgers  # noqa: E402

LAYOUTS = (  # (name, jobs side by side, TensorFlow threads per job: None = its default)
    ("1 job, default threads", 1, None),
    ("2 jobs, default threads each", 2, None),
    ("2 jobs, 1 thread each", 2, 1),
)
WARMUP = 5  # condensation iterations left out of the timing (tracing, first steps)


def child(args):
    """One job: prints 'RESULT <seconds per unit> <accuracy or nan>' on its last line."""
    from m3d_tf import baselines, evaluate, load_arrays, recipes

    images, labels, info = load_arrays("fashion_mnist")
    if args.child == "evaluate":
        test_images, test_labels, _ = load_arrays("fashion_mnist", "test")
        subset = baselines.baseline_set("random", images, labels, args.ipc, info, seed=0)
        result = evaluate.evaluate_set(
            subset, test_images, test_labels, protocol="idc", runs=1, first_run=args.run,
            epochs=args.epochs, seed=0, compute_dtype="bfloat16")
        print(f"RESULT {result.seconds_per_epoch:.4f} {result.accuracies[0]:.4f}", flush=True)
        return
    import keras

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == WARMUP - 1:
                self.started = time.time()

    clock = Clock()
    recipes.condense(images, labels, info, args.condense_ipc, iterations=args.iterations,
                     seed=args.run, compute_dtype="bfloat16", callbacks=[clock])
    per_iteration = (time.time() - clock.started) / (args.iterations - WARMUP)
    print(f"RESULT {per_iteration:.4f} nan", flush=True)


def side_by_side(work, jobs, threads, args):
    """Runs `jobs` children of kind `work` at once; their (seconds per unit, accuracy) each."""
    env = dict(os.environ)
    if threads is not None:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads))
    common = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", work,
              "--ipc", str(args.ipc), "--epochs", str(args.epochs),
              "--iterations", str(args.iterations), "--condense-ipc", str(args.condense_ipc)]
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(jobs)]  # no pipe to fill and block
    children = [subprocess.Popen(common + ["--run", str(run)], env=env, stdout=subprocess.PIPE,
                                 stderr=logs[run], text=True) for run in range(jobs)]
    results = []
    try:
        for run, process in enumerate(children):
            out, _ = process.communicate()
            logs[run].seek(0)
            err = logs[run].read()
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            if process.returncode or not lines:
                tail = "\n".join(err.splitlines()[-15:])
                raise SystemExit(f"{work} job {run} failed (exit {process.returncode}); the end "
                                 f"of its stderr:\n{tail}")
            seconds, accuracy = lines[-1].split()[1:]
            results.append((float(seconds), float(accuracy)))
    finally:  # one job failed (or we were interrupted): its siblings stop with it
        for process in children:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, default=40,
                        help="evaluation set: a random subset of this many images per class "
                        "(40: the size of M3D's decoded IPC 10 set)")
    parser.add_argument("--epochs", type=int, default=30, help="evaluation epochs per job")
    parser.add_argument("--condense-ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=25,
                        help=f"condensation iterations per job (the first {WARMUP} not timed)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--child", choices=("evaluate", "condense"), help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iterations <= WARMUP:
        parser.error(f"--iterations must be above {WARMUP} (the untimed warm-up)")
    if args.child:
        return child(args)

    started = time.time()
    lines = ["| work | layout | seconds per unit, each job | units per second, all jobs | "
             "against 1 job | accuracy (%) |", "| --- | --- | --- | --- | --- | --- |"]
    for work, unit in (("evaluate", "epoch"), ("condense", "iteration")):
        alone = None
        for name, jobs, threads in LAYOUTS:
            results = side_by_side(work, jobs, threads, args)
            rate = sum(1 / seconds for seconds, _ in results)
            alone = alone or rate
            accuracies = ", ".join(f"{100 * a:.2f}" for _, a in results if a == a) or "-"
            lines.append(f"| {work} ({unit}) | {name} | "
                         f"{', '.join(f'{s:.3f}' for s, _ in results)} | {rate:.3f} | "
                         f"{rate / alone:.2f}x | {accuracies} |")
            print(lines[-1], flush=True)
    text = (f"### Two jobs on two cores: threads per job\n\n"
            f"{ledgers.command_line('threads.py', argv, started)}. Evaluation: ConvNet-3, IDC "
            f"protocol, bfloat16, {args.epochs} epochs on a random subset of {args.ipc} images "
            f"per class (the 'accuracy' column: each job's network, job i is network i). "
            f"Condensation: M3D at IPC {args.condense_ipc}, bfloat16 random nets, "
            f"{args.iterations - WARMUP} timed iterations.\n\n" + "\n".join(lines))
    ledgers.write_section(args.out, "threads", text)
    print(text)


if __name__ == "__main__":
    main()

"""Quality benchmark: M3D vs DM vs random vs herding on Fashion-MNIST, equal budget.

For each IPC, condenses the real Fashion-MNIST training set with the m3d and dm
recipes for the same number of iterations (with each recipe's own pixel learning rate
and random-net schedule, as every run documented in docs/benchmarks.md did, or with
`--settings tuned` the values chosen on a validation split, recipes.TUNED, that the
`m3d` command and bench/quality_table.py use), selects random and herding subsets at
the same storage budget, trains `--runs` fresh ConvNet-3 on each set (IDC/M3D
protocol by default) and tests them on the real 10,000-image test split. Final
accuracies only (never the best epoch). Appends a dated section with the
command, the machine, the budget, wall times and the table to
docs/benchmarks.md.

    scripts/m3d-env run python bench/quality.py --ipc 10 --iterations 1000 --epochs 300 --runs 3
"""

import argparse
import datetime
import os
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from bench.quality_table import PUBLISHED  # noqa: E402
from m3d_tf import baselines, evaluate, io, load_arrays, recipes  # noqa: E402


def _machine():
    model = "unknown CPU"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = os.getloadavg()[0]
    return (f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"TensorFlow {tf.__version__}, load average {load:.1f} at the start")


def _reused(directory, method, ipc, args):
    """Loads a set saved by an earlier run; refuses one built with a different budget."""
    synthetic = io.load_set(directory)
    m = synthetic.metadata
    config = m.get("condenser_config") or {}
    want = {"method": method, "ipc": ipc, "seed": args.seed}
    have = {"method": m.get("method"), "ipc": m.get("ipc"), "seed": m.get("seed")}
    if method in recipes.RECIPES:
        chosen = _rate_and_ipm(method, ipc, args.settings)
        want.update(iterations=args.iterations, real_per_class=args.real_per_class,
                    ipm=chosen["ipm"], compute_dtype="bfloat16" if args.bf16 else "float32")
        have.update(iterations=m.get("iterations"), real_per_class=config.get("real_per_class"),
                    ipm=config.get("ipm"), compute_dtype=config.get("compute_dtype"))
        if m.get("learning_rate") is not None:  # sets saved before it was recorded lack it
            want["learning_rate"] = chosen["learning_rate"]
            have["learning_rate"] = m["learning_rate"]
    if want != have:
        differ = ", ".join(f"{k} {have[k]!r} (asked {want[k]!r})" for k in want
                           if want[k] != have[k])
        sys.exit(f"--reuse: {directory} was built with {differ}; drop --reuse to build it again "
                 "or point --sets at a matching directory")
    return synthetic


def _rate_and_ipm(method, ipc, settings):
    """The pixel learning rate and ipm a recipe condenses with at `ipc` under --settings.

    "recipe": the recipe's own (m3d: lr = IPC, a new random net every 5 iterations), as every
    run of this script before recipes.TUNED; "tuned": recipes.settings_for on Fashion-MNIST
    (the values chosen on a validation split where there are some, else the recipe's).
    """
    chosen = recipes.settings_for(method, ipc, "fashion_mnist" if settings == "tuned" else None)
    return {"learning_rate": chosen["learning_rate"], "ipm": chosen["ipm"]}


def _settings_text(methods, ipcs, settings):
    """'m3d IPC 10 lr 10 ipm 5, dm IPC 10 lr 0.1 ipm 1': the rates and ipm a run condenses with."""
    return ", ".join(
        f"{method} IPC {ipc} lr {chosen['learning_rate']:g} ipm {chosen['ipm']}"
        for method in methods if method in recipes.RECIPES for ipc in ipcs
        for chosen in [_rate_and_ipm(method, ipc, settings)]) or "none condensed"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--real-per-class", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--protocol", default="idc", choices=sorted(evaluate.PROTOCOLS))
    parser.add_argument("--methods", nargs="+", default=["m3d", "dm", "random", "herding"])
    parser.add_argument("--settings", choices=["recipe", "tuned"], default="recipe",
                        help="m3d's pixel learning rate and ipm: the recipe's own (lr = IPC, "
                        "ipm 5; default, as in the documented runs) or the values chosen on a "
                        "validation split (recipes.TUNED)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 random-net compute")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--sets", help="also save every set under this directory")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate the sets already saved under --sets by an earlier run with "
                             "the same budget instead of building them again")
    args = parser.parse_args(argv)
    if args.reuse and not args.sets:
        parser.error("--reuse evaluates the sets saved under --sets DIR: give --sets too")

    command = "python bench/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    machine = _machine()
    started = time.time()
    images, labels, info = load_arrays("fashion_mnist")
    test_images, test_labels, _ = load_arrays("fashion_mnist", "test")
    rows = []
    for ipc in args.ipc:
        for method in args.methods:
            t0 = time.time()
            saved = pathlib.Path(args.sets) / f"ipc{ipc}-{method}" if args.sets else None
            reused = args.reuse and saved.exists()
            if reused:
                synthetic = _reused(saved, method, ipc, args)
            elif method in recipes.RECIPES:
                overrides = {"real_per_class": args.real_per_class,
                             **_rate_and_ipm(method, ipc, args.settings)}
                if args.bf16:
                    overrides["compute_dtype"] = "bfloat16"
                condenser, history = recipes.condense(
                    images, labels, info, ipc, recipe=method, iterations=args.iterations,
                    seed=args.seed, **overrides,
                )
                synthetic = io.SyntheticSet.from_condenser(
                    condenser, info, iterations=args.iterations,
                    final_mmd=history["mmd"][-1], method=method,
                )
            else:
                synthetic = baselines.baseline_set(method, images, labels, ipc, info,
                                                   seed=args.seed)
            build_seconds = None if reused else time.time() - t0
            if saved is not None and not reused:
                io.save_set(saved, synthetic, overwrite=True)
            train_images, train_labels = synthetic.decoded()
            t0 = time.time()
            result = evaluate.evaluate(
                train_images, train_labels, test_images, test_labels, mean=info.mean,
                std=info.std, protocol=args.protocol, runs=args.runs, epochs=args.epochs,
                seed=args.seed, num_classes=info.num_classes,
                flip=io.set_flip(synthetic.metadata),
            )
            rows.append((ipc, method, synthetic.metadata["factor"], build_seconds,
                         time.time() - t0, result))
            print(f"IPC {ipc:>2} {method:>8}: {100 * result.mean:.2f} ± {100 * result.std:.2f} "
                  f"({result.accuracies})", flush=True)

    chosen_by = ("chosen on a validation split (recipes.TUNED)" if args.settings == "tuned"
                 else "each recipe's own")
    lines = [
        "",
        f"## Quality: Fashion-MNIST, {datetime.date.today().isoformat()}",
        "",
        f"Command: `scripts/m3d-env run {command}`",
        f"Machine: {machine}. Wall time: {(time.time() - started) / 60:.1f} min.",
        f"Budget: {args.iterations} condensation iterations with {args.real_per_class} real images "
        f"per class per step for m3d and dm (recipes in m3d_tf/recipes.py"
        f"{', bfloat16 random nets' if args.bf16 else ''}; pixel learning rate and ipm "
        f"{chosen_by}: {_settings_text(args.methods, args.ipc, args.settings)}); evaluation: "
        f"protocol {args.protocol}, ConvNet-3, {args.epochs} epochs, {args.runs} runs, final "
        "test accuracy on the real 10,000-image test split (mean ± std over runs). Published "
        "numbers (1,000 epochs, m3d_reference.md) for context."
        + (f" Build 'saved': the set was loaded from `{args.sets}`, built there by an earlier run "
           "of this command without --reuse (same budget, checked against its metadata)."
           if args.reuse else ""),
        "",
        "| IPC | method | factor | build (s) | evaluation (s) | accuracy (%) | runs | published |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for ipc, method, factor, build, seconds, result in rows:
        published = PUBLISHED.get(method, {}).get(ipc)
        lines.append(
            f"| {ipc} | {method} | {factor} | {'saved' if build is None else f'{build:.0f}'} | "
            f"{seconds:.0f} | "
            f"{100 * result.mean:.2f} ± {100 * result.std:.2f} | "
            f"{', '.join(f'{100 * a:.2f}' for a in result.accuracies)} | "
            f"{'-' if published is None else published} |"
        )
    with open(args.out, "a") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

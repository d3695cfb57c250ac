"""What choosing on the test split adds: IDC's "best" reading against the final accuracy.

IDC's released evaluation (test.py and train.py of snu-mllab/Efficient-Dataset-Condensation)
tests each network on the test split every epochs // 4 epochs and prints the best of those four
checks beside the last one; M3D's released code selects on the test split too (m3d_reference.md,
section 6). The quality table (bench/quality_table.py) reports the final accuracy and chooses
nothing on test. This script measures how far apart the two readings are on the same networks: it
trains the table's networks again (its sets, seeds, protocol and dtype) and tests each one at
every check, recording the final accuracy and the best check's. The test split chooses nothing
here that we report as our result or use: the numbers put the published ones in context.

Each network is a line of bench/results/selection.jsonl as soon as it is tested (a stopped run
keeps them and a rerun trains only what is missing); a network in training is checkpointed every
50 epochs in <set>.selection beside its set. The table's sets are read from bench/results/sets,
and built (and recorded in the quality ledger) when missing, as bench/quality_table.py would.

    scripts/m3d-env run python bench/selection.py --ipc 10 --methods m3d dm
    scripts/m3d-env run python bench/selection.py --table-only
"""

import argparse
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import ledger as ledgers  # noqa: E402
from bench import quality_table as quality  # noqa: E402

CHECKS = 4  # IDC's test_data(num_val=4): a test every epochs // 4 epochs


def selection_key(skey, arch, protocol, epochs, net, eval_dtype, checks):
    """A network's key here: its key in the quality ledger, in this table, with its checks."""
    return {**quality.net_key(skey, arch, protocol, epochs, net, eval_dtype),
            "table": "selection", "checks": checks}


def quality_key(key):
    """The quality ledger's key of the same network (its final accuracy is recorded there)."""
    return {**{k: v for k, v in key.items() if k != "checks"}, "table": "quality"}


def summary(ledger, quality_ledger):
    """The markdown table: per (IPC, arch, protocol, method, checks), the networks' final and
    best-check accuracies, their difference, and the quality table's final for the same
    networks (trained in another run: equal up to the order of sums)."""
    groups = {}
    for entry in sorted(ledger.entries(table="selection"), key=lambda e: e["when"]):
        key = entry["key"]
        group = (key["ipc"], key["arch"], key["protocol"], key["method"], key["checks"],
                 key["epochs"], key.get("eval_dtype", "float32"))
        groups.setdefault(group, []).append(entry)
    lines = [
        "| IPC | arch / protocol | method | networks | final (%) | best of checks (%) | "
        "best - final (points) | best epochs | quality table's final, same networks (%) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def pm(values):
        mean, std = ledgers.mean_std(values)
        return f"{100 * mean:.2f} ± {100 * std:.2f}"

    for group in sorted(groups):
        entries = sorted(groups[group], key=lambda e: (e["key"]["seed"], e["key"]["net"]))
        finals = [e["value"]["final"] for e in entries]
        bests = [e["value"]["best"] for e in entries]
        gains = [b - f for b, f in zip(bests, finals)]
        table_finals = [quality_ledger.get(quality_key(e["key"])) for e in entries]
        table_finals = [t["accuracy"] for t in table_finals if t is not None]
        nets = [(e["key"]["seed"], e["key"]["net"]) for e in entries]
        ipc, arch, protocol, method, checks, epochs, _ = group
        lines.append(
            f"| {ipc} | {arch} / {protocol} | {method} | {len(entries)} (seed, net: "
            f"{', '.join(f'{s}.{n}' for s, n in nets)}) | {pm(finals)} | {pm(bests)} | "
            f"{100 * ledgers.mean_std(gains)[0]:+.2f} (max {100 * max(gains):+.2f}) | "
            f"{', '.join(str(e['value']['best_epoch']) for e in entries)} | "
            f"{pm(table_finals) if len(table_finals) == len(entries) else '-'} |")
    return "\n".join(lines)


def write(args, ledger, quality_ledger):
    ledgers.write_section(args.out, "selection-table", (
        "### Choosing on the test split: IDC's best check against the final accuracy\n\n"
        "The table's networks trained again (same sets, seeds, protocol and dtype) and tested on "
        "the real test split at every check (every epochs / checks epochs, IDC's test.py: 4 "
        "checks of 1,000 epochs); 'best of checks' is the test accuracy of the best check, as "
        "IDC's code prints it beside the last. Mean ± std over the networks. The test split "
        "chooses nothing we report: this measures what such a choice would add.\n\n"
        + summary(ledger, quality_ledger)
        + "\n\nFilled by `scripts/m3d-env run python bench/selection.py` (resumable; every "
        "network is a line of bench/results/selection.jsonl, with its commit, machine, load and "
        "time)."))


def run(args, ledger, filler):
    """Trains and records every missing network of the flags' sets; `filler` a
    quality_table.Filler (it loads or builds the table's sets, and reads the data)."""
    from m3d_tf import evaluate

    every = args.epochs // args.checks
    for ipc in args.ipc:
        for method in args.methods:
            for seed in args.seeds:
                skey = quality.set_key(method, ipc, seed, args.dtype)
                keys = [selection_key(skey, args.arch, args.protocol, args.epochs, n,
                                      args.eval_dtype, args.checks) for n in args.nets]
                missing = [k for k in keys if ledger.get(k) is None]
                if not missing:
                    continue
                synthetic = filler.synthetic(skey)
                test = filler.data()[3:]
                for key in missing:
                    directory = quality.set_dir(args.sets, skey)
                    saved = directory.with_name(directory.name + ".selection") / \
                        ledgers.digest(key)
                    done = evaluate.checkpointed(saved, key["net"])
                    started = time.time()
                    result = evaluate.evaluate_set(
                        synthetic, *test, protocol=args.protocol, arch=args.arch, runs=1,
                        first_run=key["net"], epochs=args.epochs, seed=0,
                        compute_dtype=args.eval_dtype, validation=test, validate_every=every,
                        checkpoint_dir=saved)
                    seconds = time.time() - started + (0.0 if done is None else done[1])
                    ledger.add(key, {"final": result.final_accuracies[0],
                                     "best": result.accuracies[0],
                                     "best_epoch": result.selected_epochs[0],
                                     "seconds": round(seconds, 1)})
                    ledgers.drop_recorded(saved)
                    print(f"IPC {ipc} {method} seed {seed} net {key['net']}: final "
                          f"{100 * result.final_accuracies[0]:.2f} %, best of {args.checks} "
                          f"checks {100 * result.accuracies[0]:.2f} % (epoch "
                          f"{result.selected_epochs[0]}; {seconds:.0f} s)", flush=True)
                    write(args, ledger, filler.ledger)


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, nargs="+", default=[10])
    parser.add_argument("--methods", nargs="+", default=["m3d", "dm"], choices=quality.METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="the sets' seeds")
    parser.add_argument("--nets", type=int, nargs="+", default=[0, 1, 2],
                        help="the networks (the table's net indices, so its seeds)")
    parser.add_argument("--arch", default="convnet")
    parser.add_argument("--protocol", default="idc", choices=("idc", "dm"))
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--checks", type=int, default=CHECKS,
                        help="tests on the test split per network, evenly spaced (IDC: 4)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                        help="the sets' condensation compute, as in the quality table")
    parser.add_argument("--eval-dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--sets", default=str(ROOT / "bench" / "results" / "sets"))
    parser.add_argument("--checkpoint-every", type=int, default=quality.CHECKPOINT_EVERY,
                        help="iterations between checkpoints of a set being built")
    parser.add_argument("--ledger", default=str(ROOT / "bench" / "results" / "selection.jsonl"))
    parser.add_argument("--quality-ledger",
                        default=str(ROOT / "bench" / "results" / "quality.jsonl"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--table-only", action="store_true",
                        help="only rewrite the docs table from the ledger")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.epochs % args.checks:
        raise SystemExit(f"--epochs {args.epochs} is not a multiple of --checks {args.checks}: "
                         "the checks must fall on whole epochs, the last on the final one.")
    ledger, quality_ledger = ledgers.Ledger(args.ledger), ledgers.Ledger(args.quality_ledger)
    if not args.table_only:
        run(args, ledger, quality.Filler(args, quality_ledger))
    write(args, ledger, quality_ledger)


if __name__ == "__main__":
    main()

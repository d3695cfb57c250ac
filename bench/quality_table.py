"""Quality table: M3D vs DM vs random vs herding on Fashion-MNIST, equal budget, filled piece by piece.

The plan (PLAN below, narrowed by the flags) is the issue's table: at IPC 1, 10 and 50 each
method's sets (one per seed: condensed, or a random / herding subset at the same storage budget)
are trained on by fresh networks (ConvNet-3, IDC protocol, 1,000 epochs by default) and tested on
the real 10,000-image test split; at IPC 10 also the DM protocol and two other architectures.
Final-epoch accuracy, never the best epoch; mean ± std over every network of every set.
The evaluation networks train in bfloat16 mixed precision by default (float32 weights, bfloat16
convolutions and matmuls: 1.3 to 1.7x faster on these CPUs); --eval-dtype float32 trains them in
the published precision, as entries of their own. Where the same network was trained both ways,
the pair goes into a parity table, the evidence that the two give the same accuracy.

Nothing is lost when a run stops: each set is saved under --sets as it is built, and each
network's accuracy is a line of the ledger (bench/results/quality.jsonl) as soon as it is tested.
The sets and the checkpoints of builds under way live beside the ledger (bench/results/sets, a
few MB) and are committed with it, so a run on another machine trains on the same sets and goes
on with the same builds.
A condensation (up to an hour at IPC 10) is checkpointed every --checkpoint-every iterations
beside its set, so a stopped build resumes where it stopped and gives the set an uninterrupted
one would; its build time is the sum of its runs. So is a network in training, every 50 of its
1,000 epochs (m3d_tf.evaluate's checkpoint_dir; an AlexNet on M3D's IPC 10 set trains for about
50 min at one thread, a ConvNet-3 on its IPC 50 set over an hour), in <set>.nets beside the set
until its accuracy is in the ledger: a stopped network goes on to the accuracy an uninterrupted
one reaches, and its time is the sum of its runs' training.
The same command run again builds and trains only what is missing, then rewrites the table in
docs/benchmarks.md from every line of the ledger. Work is done cheapest first, so an interrupted
run leaves whole rows rather than a scattering.

Two long jobs side by side on these 2 cores (this one beside a search, say) do more work per hour
with one TensorFlow thread each: prefix each with TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
(bench/threads.py: evaluation does 1.19x the work of one job alone, 1.06x at default threads).

The condensation budget of m3d at each IPC is its recipe's, chosen on a validation split by
bench/search.py (m3d_tf/recipes.py TUNED); dm runs the same iterations with the same real images
per class (its own kernel, schedule and learning rate).

    scripts/m3d-env run python bench/quality_table.py                      # the whole plan
    scripts/m3d-env run python bench/quality_table.py --ipc 1 --methods random herding
    scripts/m3d-env run python bench/quality_table.py --table-only         # rewrite the table
"""

import argparse
import dataclasses
import os
import pathlib
import shutil
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import ledger as ledgers  # noqa: E402

PUBLISHED = {  # ConvNet-3, Fashion-MNIST, m3d_reference.md section 7 (IPC 1 / 10 / 50)
    "random": {1: 51.4, 10: 73.8, 50: 82.5},
    "dm": {1: 70.7, 10: 83.5, 50: 88.1},
    "idc": {1: 81.0, 10: 86.0, 50: 86.2},
}
METHODS = ("m3d", "dm", "random", "herding")
CONDENSED = ("m3d", "dm")
CHECKPOINT_EVERY = 100  # iterations between a condensation's checkpoints (--checkpoint-every)


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the plan: these sets, each trained `nets` times this way."""

    ipc: int
    arch: str
    protocol: str
    seeds: tuple
    nets: int


# Cheapest first. At IPC 50 one 1,000-epoch network on M3D's 2,000 decoded images is over an hour
# on 2 cores: one set, two networks.
PLAN = (
    Row(1, "convnet", "idc", (0, 1), 3),
    Row(10, "convnet", "idc", (0, 1), 3),
    Row(10, "convnet", "dm", (0,), 3),
    Row(10, "alexnet", "idc", (0,), 3),
    Row(10, "vgg11", "idc", (0,), 3),
    Row(50, "convnet", "idc", (0,), 2),
)


def budget(method, ipc, dtype):
    """What a set's content depends on besides (method, ipc, seed), as a JSON-able dict.

    The factor is in it only where the chosen one differs from the method's recipe (the sets
    built before the factor could be chosen keep their keys and directories).
    """
    from m3d_tf import recipes

    if method not in CONDENSED:
        return {}
    m3d = recipes.settings_for("m3d", ipc, "fashion_mnist")
    chosen = m3d if method == "m3d" else recipes.settings_for(
        method, ipc, "fashion_mnist", iterations=m3d["iterations"],
        real_per_class=m3d["real_per_class"])
    if chosen["factor"] == recipes.get_recipe(method).factor:
        del chosen["factor"]  # settings_for's dict is a new one on every call
    return {**chosen, "compute_dtype": dtype}


def set_factor(skey):
    """The factor of a condensed set's key: its recipe's where budget() left it out."""
    from m3d_tf import recipes

    return skey.get("factor", recipes.get_recipe(skey["method"]).factor)


def spent(skey):
    """A set key's budget as the table shows it ('-' for a subset)."""
    if "iterations" not in skey:
        return "-"
    return (f"{skey['iterations']} it, {skey['real_per_class']} real/class, lr "
            f"{skey['learning_rate']:g}, ipm {skey['ipm']}, factor {set_factor(skey)}")


def set_key(method, ipc, seed, dtype):
    return {"table": "quality", "dataset": "fashion_mnist", "method": method, "ipc": ipc,
            "seed": seed, **budget(method, ipc, dtype)}


# A network's ledger key is its set's key and these.
NET_FIELDS = ("arch", "protocol", "epochs", "net", "eval_dtype")


def net_key(skey, arch, protocol, epochs, net, eval_dtype="float32"):
    """A network's ledger key. float32 evaluation (the published) has no eval_dtype in its key."""
    key = {**skey, "arch": arch, "protocol": protocol, "epochs": epochs, "net": net}
    return key if eval_dtype == "float32" else {**key, "eval_dtype": eval_dtype}


def set_dir(sets, skey):
    """A directory name that changes with anything the set depends on."""
    return pathlib.Path(sets) / (f"ipc{skey['ipc']}-{skey['method']}-seed{skey['seed']}-"
                                 f"{ledgers.digest(skey)}")


def checkpoint_dir(directory):
    """Where the condensation of the set at `directory` keeps its checkpoints until it is saved."""
    return directory.with_name(directory.name + ".checkpoints")


def net_checkpoint_dir(directory, key):
    """Where the network of ledger key `key`, trained on the set at `directory`, keeps its
    checkpoint until its accuracy is recorded (a network can outlast the job that started it)."""
    return directory.with_name(directory.name + ".nets") / ledgers.digest(key)


class Filler:
    """Builds the missing sets and trains the missing networks of the plan, recording each."""

    def __init__(self, args, ledger):
        self.args, self.ledger = args, ledger
        self._data = None

    def data(self):
        if self._data is None:
            from m3d_tf import load_arrays

            images, labels, info = load_arrays("fashion_mnist")
            test_images, test_labels, _ = load_arrays("fashion_mnist", "test")
            self._data = (images, labels, info, test_images, test_labels)
        return self._data

    def synthetic(self, skey):
        """The set of `skey`: loaded when saved, else built, saved and recorded."""
        from m3d_tf import baselines, io

        directory = set_dir(self.args.sets, skey)
        if (directory / "metadata.json").exists():
            return io.load_set(directory)
        images, labels, info = self.data()[:3]
        method, ipc, seed = skey["method"], skey["ipc"], skey["seed"]
        started, before, extra = time.time(), 0.0, {}
        if method in CONDENSED:
            synthetic, before, extra = self._condensed(skey, directory)
        else:
            synthetic = baselines.baseline_set(method, images, labels, ipc, info, seed=seed)
        seconds = before + time.time() - started
        io.save_set(directory, synthetic)
        self.ledger.add(skey, {"seconds": round(seconds, 1), "path": ledgers.shown(directory),
                               **extra})
        shutil.rmtree(checkpoint_dir(directory), ignore_errors=True)  # the set is whole now
        print(f"built {directory.name} in {seconds:.0f} s", flush=True)
        return synthetic

    def _condensed(self, skey, directory):
        """(the condensed set of `skey`, seconds of earlier runs of its build, ledger extras).

        Goes on from the build's latest checkpoint when a stopped run left one (the extras then
        say at which iteration), else starts it; checkpoints every --checkpoint-every iterations.
        """
        from m3d_tf import checkpoints, io, recipes

        images, labels, info = self.data()[:3]
        saved = checkpoint_dir(directory)
        clock = ledgers.Clock(saved / "seconds.json")
        try:
            step = checkpoints.latest_step(saved)
        except FileNotFoundError:
            step = None
        before, extra = 0.0, {}
        if step is not None:
            extra = {"resumed_at": step}
            before = clock.at(step) or 0.0  # None: a build checkpointed before the clock
            print(f"resuming {directory.name} at iteration {step} of {skey['iterations']}",
                  flush=True)
        every = getattr(self.args, "checkpoint_every", CHECKPOINT_EVERY)
        callbacks = [checkpoints.CheckpointCallback(saved, skey, every=every),
                     clock.callback(every, before)]
        condenser, history = recipes.condense(
            images, labels, info, skey["ipc"], recipe=skey["method"],
            iterations=skey["iterations"], learning_rate=skey["learning_rate"],
            seed=skey["seed"], real_per_class=skey["real_per_class"], ipm=skey["ipm"],
            factor=set_factor(skey),
            compute_dtype=skey["compute_dtype"], callbacks=callbacks,
            resume_from=None if step is None else saved,
        )
        synthetic = io.SyntheticSet.from_condenser(
            condenser, info, iterations=skey["iterations"],
            final_mmd=history.get("mmd", [None])[-1], method=skey["method"])
        return synthetic, before, extra

    def fill(self, row, method):
        """Trains every missing network of one method in one row."""
        from m3d_tf import evaluate

        for seed in row.seeds:
            skey = set_key(method, row.ipc, seed, self.args.dtype)
            keys = {n: net_key(skey, row.arch, row.protocol, self.args.epochs, n,
                               self.args.eval_dtype) for n in range(row.nets)}
            missing = [n for n, key in keys.items() if self.ledger.get(key) is None]
            if not missing:
                continue
            synthetic = self.synthetic(skey)
            test_images, test_labels = self.data()[3:]
            for net in missing:
                saved = net_checkpoint_dir(set_dir(self.args.sets, skey), keys[net])
                done = evaluate.checkpointed(saved, net)
                extra = {} if done is None else {"resumed_at": done[0]}
                if done is not None:
                    print(f"resuming {method} seed {seed} {row.arch}/{row.protocol} net {net} "
                          f"at epoch {done[0]} of {self.args.epochs}", flush=True)
                started = time.time()
                result = evaluate.evaluate_set(
                    synthetic, test_images, test_labels, protocol=row.protocol, arch=row.arch,
                    runs=1, first_run=net, epochs=self.args.epochs, seed=0,
                    compute_dtype=self.args.eval_dtype, checkpoint_dir=saved,
                )
                seconds = time.time() - started + (0.0 if done is None else done[1])
                self.ledger.add(keys[net], {"accuracy": result.accuracies[0],
                                            "seconds": round(seconds, 1), **extra})
                ledgers.drop_recorded(saved)  # the accuracy is kept: its state is not needed
                print(f"IPC {row.ipc} {method} seed {seed} {row.arch}/{row.protocol} "
                      f"({self.args.eval_dtype}) net {net}: "
                      f"{100 * result.accuracies[0]:.2f} % ({seconds:.0f} s)", flush=True)


def _fmt_seconds(seconds):
    if seconds is None:
        return "-"
    return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{seconds:.0f} s"


def earlier_budgets(ledger, row, method, current, epochs, dtype, eval_dtype):
    """Set keys of this row and method that the ledger has networks for but the current budget
    (`current`: {seed: set key}) no longer gives (a recipe's chosen settings changed since),
    grouped by budget: {budget digest: {seed: set key}}, in the order of their first network."""
    groups = {}
    for entry in sorted(ledger.entries(table="quality", ipc=row.ipc, method=method, arch=row.arch,
                                       protocol=row.protocol, epochs=epochs,
                                       eval_dtype=None if eval_dtype == "float32" else eval_dtype),
                        key=lambda e: e["when"]):
        skey = {k: v for k, v in entry["key"].items() if k not in NET_FIELDS}
        if (skey["seed"] not in current or skey == current[skey["seed"]]
                or skey.get("compute_dtype", dtype) != dtype):
            continue
        shared = {k: v for k, v in skey.items() if k != "seed"}
        groups.setdefault(ledgers.digest(shared), {})[skey["seed"]] = skey
    return groups


def table(ledger, plan, methods, epochs, dtype, eval_dtype="float32"):
    """The markdown table of the plan from the ledger: what is there, and what is missing.

    Networks of sets built under an earlier budget (before a recipe's chosen settings changed)
    keep rows of their own, marked "earlier setting", under the current budget's row.
    """
    lines = [
        "| IPC | arch / protocol | method | budget | networks from sets | test accuracy (%) | "
        "build per set | per network | published |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def line(row, method, skeys, earlier):
        accuracies, builds, costs, sets = [], [], [], 0
        for skey in skeys.values():
            found = [ledger.get(net_key(skey, row.arch, row.protocol, epochs, n, eval_dtype))
                     for n in range(row.nets)]
            found = [f for f in found if f is not None]
            if found:
                sets += 1
                built = ledger.get(skey)
                if built is not None:
                    builds.append(built["seconds"])
            accuracies += [f["accuracy"] for f in found]
            costs += [f["seconds"] for f in found]
        if accuracies:
            mean, std = ledgers.mean_std(accuracies)
            score = f"{100 * mean:.2f} ± {100 * std:.2f}"
        else:
            score = "(not yet run)"
        published = None
        if (row.arch, row.protocol) == ("convnet", "idc") and not earlier:  # the target: IDC's
            published = (f"(IDC {PUBLISHED['idc'][row.ipc]})" if method == "m3d"
                         else PUBLISHED.get(method, {}).get(row.ipc))
        what = spent(next(iter(skeys.values()))) + (" (earlier setting)" if earlier else "")
        return (
            f"| {row.ipc} | {row.arch} / {row.protocol} | {method} | {what} | "
            f"{len(accuracies)} from {sets} of {len(row.seeds) * row.nets} from "
            f"{len(row.seeds)} | "
            f"{score} | {_fmt_seconds(sum(builds) / len(builds) if builds else None)} | "
            f"{_fmt_seconds(sum(costs) / len(costs) if costs else None)} | "
            f"{'-' if published is None else published} |"
        )

    for row in plan:
        for method in methods:
            current = {seed: set_key(method, row.ipc, seed, dtype) for seed in row.seeds}
            lines.append(line(row, method, current, earlier=False))
            for skeys in earlier_budgets(ledger, row, method, current, epochs, dtype,
                                         eval_dtype).values():
                lines.append(line(row, method, skeys, earlier=True))
    return "\n".join(lines)


def parity(ledger, epochs, eval_dtype):
    """The markdown table of every network trained in both float32 and `eval_dtype`.

    The two runs of a pair share the set, the initial weights and every random draw (shuffles,
    augmentation, CutMix): they differ only in the network's arithmetic. None when there is no pair.
    """
    pairs = {}  # (ipc, arch, protocol, method) -> [(float32 entry, eval_dtype entry)]
    for entry in ledger.entries(table="quality", epochs=epochs, eval_dtype=eval_dtype):
        key = dict(entry["key"])
        del key["eval_dtype"]
        reference = ledger.get(key)
        if reference is not None:
            group = (key["ipc"], key["arch"], key["protocol"], key["method"])
            pairs.setdefault(group, []).append((reference, entry["value"]))
    if not pairs:
        return None
    lines = [
        f"| IPC | arch / protocol | method | networks | float32 (%) | {eval_dtype} (%) | "
        f"difference per network (points) | time {eval_dtype} / float32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (ipc, arch, protocol, method), found in sorted(pairs.items()):
        full = [100 * a["accuracy"] for a, _ in found]
        fast = [100 * b["accuracy"] for _, b in found]
        difference = ledgers.mean_std([b - a for a, b in zip(full, fast)])
        ratio = sum(b["seconds"] for _, b in found) / sum(a["seconds"] for a, _ in found)
        lines.append(
            f"| {ipc} | {arch} / {protocol} | {method} | {len(found)} | "
            "{:.2f} ± {:.2f} | {:.2f} ± {:.2f} | ".format(*ledgers.mean_std(full),
                                                        *ledgers.mean_std(fast))
            + "{:+.2f} ± {:.2f} | {:.2f} |".format(*difference, ratio))
    return "\n".join(lines)


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, nargs="+", help="only these IPC rows")
    parser.add_argument("--arch", nargs="+", help="only these architectures' rows")
    parser.add_argument("--protocol", nargs="+", help="only these protocols' rows")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--epochs", type=int, default=1000, help="evaluation epochs (published: 1000)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                        help="random-net compute of the condensation (bfloat16: the fast mode, "
                        "parity measured in docs/benchmarks.md)")
    parser.add_argument("--eval-dtype", default="bfloat16", choices=("float32", "bfloat16"),
                        help="the evaluation networks' compute (bfloat16: mixed precision, 1.3 to "
                        "1.7x faster here, the same accuracy network by network: the parity "
                        "table; float32: the published precision)")
    parser.add_argument("--sets", default=str(ROOT / "bench" / "results" / "sets"),
                        help="the saved sets and the checkpoints of builds under way (default: "
                        "tracked beside the ledger, so a commit keeps them when the machine goes)")
    parser.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY,
                        help="iterations between a condensation's checkpoints (a stopped build "
                        "resumes from the latest)")
    parser.add_argument("--ledger", default=str(ROOT / "bench" / "results" / "quality.jsonl"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--table-only", action="store_true",
                        help="only rewrite the table from the ledger")
    return parser


def select(plan, args):
    return [r for r in plan if (args.ipc is None or r.ipc in args.ipc)
            and (args.arch is None or r.arch in args.arch)
            and (args.protocol is None or r.protocol in args.protocol)]


def write_table(args, ledger):
    text = (
        f"### The table: {args.epochs} evaluation epochs, evaluation in {args.eval_dtype}\n\n"
        f"ConvNet-3 unless named; {args.epochs} evaluation epochs; final-epoch accuracy on the "
        "real 10,000-image test split, mean ± std over every network of every set (sets are "
        "seeds of the condensation or of the subset's draw). Random nets of the condensation in "
        f"{args.dtype}; evaluation networks in {args.eval_dtype}"
        + (" (the published precision)" if args.eval_dtype == "float32" else
           " (mixed precision: its parity with float32, measured on the same networks, is below)")
        + ". 'networks from sets': what the ledger holds, of what the plan asks. "
        "Published numbers (1,000 epochs; m3d_reference.md) for context: DM and random under "
        "the DM protocol, IDC's in the idc row. Times are wall clock on a shared 2-core "
        "machine (the load of each line is in the ledger).\n\n"
        + table(ledger, PLAN, METHODS, args.epochs, args.dtype, args.eval_dtype)
        + "\n\nFilled by `scripts/m3d-env run python bench/quality_table.py"
        + ("" if args.eval_dtype == "bfloat16" else f" --eval-dtype {args.eval_dtype}")
        + "` (resumable; every set "
        "and network is a line of bench/results/quality.jsonl, with its commit, machine, load "
        "and time)."
    )
    ledgers.write_section(args.out, f"quality-table-{args.epochs}", text)
    pairs = parity(ledger, args.epochs, "bfloat16")
    if pairs is not None:
        ledgers.write_section(args.out, f"quality-eval-parity-{args.epochs}", (
            "### bfloat16 evaluation against float32, network by network\n\n"
            f"The same networks ({args.epochs} epochs, same sets, initial weights, shuffles, "
            "augmentation and CutMix draws) trained in float32 and in bfloat16 mixed precision "
            "(float32 weights, bfloat16 convolutions and matmuls); final test accuracy. "
            "'difference': bfloat16 minus float32, mean ± std over the pairs. 'time': the ratio "
            "of their wall clocks, run at different loads of a shared machine (the controlled "
            "speed measurement is 'Evaluation in float32 and bfloat16').\n\n" + pairs
            + "\n\nFilled by `scripts/m3d-env run python bench/quality_table.py` (bfloat16) over "
            "sets that also have networks from `... --eval-dtype float32`."))


def main(argv=None):
    args = _parser().parse_args(argv)
    ledger = ledgers.Ledger(args.ledger)
    if ledger.torn:
        print(f"{args.ledger}: {ledger.torn} unreadable line(s) (a run killed mid-write) ignored")
    if not args.table_only:
        filler = Filler(args, ledger)
        for row in select(PLAN, args):
            for method in args.methods:
                filler.fill(row, method)
                write_table(args, ledger)
    write_table(args, ledger)


if __name__ == "__main__":
    main()

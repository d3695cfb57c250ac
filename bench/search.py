"""Settings search on a validation split carved from train: never on the test split.

For one recipe and each IPC, holds out `--validation-per-class` training images of every class
(m3d_tf.data.holdout_split), condenses the remaining training images with every setting of a small
grid (pixel learning rate as a multiple of the recipe's, real images per class per step, iterations
per random model, and with --factor the multi-formation factor), and measures each set by ConvNet-3
networks trained on it and tested on the held-out images (in float32, or with --eval-dtype bfloat16
in mixed precision: a search of its own). Successive halving spends the budget: every setting runs
the first rung's iterations; the better half (by mean validation accuracy) continues to the next
rung's iterations (the same condenser goes on, so rung r costs only its extra iterations), and so
on. The winner is the best setting at the last rung; its iterations are the rung where its
validation accuracy was best (a longer run can overshoot). Its set at those iterations is then
trained for each of `--final-epochs` evaluation lengths, and the length with the best validation
accuracy is chosen (the shorter on a tie, as for the iterations).

Every trial is recorded in a Ledger as it finishes (bench/results/search.jsonl); run the same
command again and it does only what is missing. A trial's cost is its condensing from the previous
rung, read from a clock kept with the setting's checkpoints (so a stop between condensing and
evaluating loses none of it), plus its validation networks' training. The networks are
checkpointed too, every 5 % of their epochs, until their trial is recorded, so a stop mid-
evaluation loses at most that. The table goes to
docs/benchmarks.md (a section per recipe and IPC, replaced on every run). The test split is never
read.

Two long jobs side by side on these 2 cores (the table beside a search, say) do more work per hour
with one TensorFlow thread each: prefix each with TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
(bench/threads.py: evaluation does 1.19x the work of one job alone, 1.06x at default threads).

    scripts/m3d-env run python bench/search.py --ipc 1
"""

import argparse
import dataclasses
import itertools
import math
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import ledger as ledgers  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Setting:
    """One point of the grid: lr = lr_scale * the recipe's rate for the IPC.

    factor: the multi-formation factor; None is the recipe's. A setting's key leaves None out,
    so the settings of a search run before factor was a dimension keep their names.
    """

    lr_scale: float
    real_per_class: int
    ipm: int
    factor: int = None

    def label(self):
        factor = "" if self.factor is None else f", factor {self.factor}"
        return f"lr x{self.lr_scale:g}, {self.real_per_class} real/class, ipm {self.ipm}{factor}"

    def key(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def grid(lr_scales, real_per_class, ipms, factors=(None,)):
    """Every combination, in a fixed order."""
    return [Setting(*values)
            for values in itertools.product(lr_scales, real_per_class, ipms, factors)]


def factors(given, recipe_factor):
    """The grid's factors: the recipe's own as None (one setting, one name), in the given order.

    Raises:
        SystemExit: a factor below 1.
    """
    if given is None:
        return [None]
    if any(f < 1 for f in given):
        sys.exit(f"--factor must be positive integers. Received {given}.")
    return list(dict.fromkeys(None if f == recipe_factor else f for f in given))


def survivors(scores, keep):
    """The settings that go on to the next rung: the best ceil(keep * n) by score.

    Args:
        scores: {Setting: mean validation accuracy}.
        keep: fraction kept, in (0, 1].

    Returns:
        The kept settings, best first; ties keep the grid's order (stable sort).
    """
    ranked = sorted(scores, key=lambda s: -scores[s])
    return ranked[:max(1, math.ceil(keep * len(ranked)))]


def best_shortest(scores):
    """The length (iterations or epochs) with the best validation accuracy; the shorter on a tie.

    Args:
        scores: {length: mean validation accuracy}.
    """
    return min(scores, key=lambda length: (-scores[length], length))


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--recipe", default="m3d")
    parser.add_argument("--lr-scale", type=float, nargs="+", default=[0.3, 1.0, 3.0],
                        help="pixel learning rates, as multiples of the recipe's for the IPC")
    parser.add_argument("--real-per-class", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--ipm", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--factor", type=int, nargs="+",
                        help="multi-formation factors (stored image -> factor^2 decoded images); "
                        "default: the recipe's only")
    parser.add_argument("--rungs", type=int, nargs="+", default=[100, 200, 400, 800],
                        help="cumulative condensation iterations of each rung")
    parser.add_argument("--keep", type=float, default=0.5, help="fraction kept at each rung")
    parser.add_argument("--epochs", type=int, default=300, help="evaluation epochs while searching")
    parser.add_argument("--final-epochs", type=int, nargs="+", default=[300, 1000],
                        help="evaluation lengths tried on the winner's set")
    parser.add_argument("--nets", type=int, default=2, help="networks per measurement")
    parser.add_argument("--validation-per-class", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float32", action="store_true",
                        help="float32 random nets (default: bfloat16, the benchmarks' fast mode)")
    parser.add_argument("--eval-dtype", default="float32", choices=("float32", "bfloat16"),
                        help="the validation networks' compute (bfloat16: mixed precision, "
                        "1.3-1.7x faster here; parity with float32 in docs/benchmarks.md)")
    parser.add_argument("--ledger", default=str(ROOT / "bench" / "results" / "search.jsonl"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--table-only", action="store_true",
                        help="only write the tables of what the ledger holds (a search under way)")
    parser.add_argument("--work", default=str(ROOT / "bench" / "results" / "search"),
                        help="each setting's checkpoints and the set of each of its trials "
                        "(default: tracked beside the ledger, so a commit keeps a search's "
                        "progress when the machine goes)")
    return parser


def search_key(args, ipc):
    """What every trial of one search (a recipe at one IPC) shares in its ledger key.

    float32 validation networks (the published precision, and every search before the choice
    existed) leave eval_dtype out of the key.
    """
    key = {"search": "validation", "dataset": "fashion_mnist", "recipe": args.recipe, "ipc": ipc,
           "seed": args.seed, "validation_per_class": args.validation_per_class,
           "compute_dtype": "float32" if args.float32 else "bfloat16", "nets": args.nets}
    return key if args.eval_dtype == "float32" else {**key, "eval_dtype": args.eval_dtype}


class Unfinished(Exception):
    """A replay from the ledger alone (Search(..., data=None)) reached a trial not yet run."""


class Search:
    """Runs the successive halving of one recipe at one IPC, recording every trial.

    With data=None it only replays the ledger: run() gives the search's choice when every trial
    it needs is recorded, and raises Unfinished at the first that is not.
    """

    def __init__(self, args, ledger, data):
        self.args, self.ledger = args, ledger
        self.replay = data is None
        self.x_train, self.y_train, self.x_val, self.y_val, self.info = data or (None,) * 5
        self.live = {}  # Setting -> (condenser, iterations it has run)

    def base_key(self, ipc):
        return search_key(self.args, ipc)

    def setting_key(self, ipc, setting):
        return {**self.base_key(ipc), **setting.key()}

    def condense_key(self, ipc, setting):
        """What a setting's sets depend on: its key without the validation networks' dtype, so
        a bfloat16 search reuses the sets and checkpoints of a float32 one."""
        key = self.setting_key(ipc, setting)
        key.pop("eval_dtype", None)
        return key

    def trial_key(self, ipc, setting, iterations, epochs):
        return {**self.setting_key(ipc, setting), "iterations": iterations, "epochs": epochs}

    def setting_dir(self, ipc, setting):
        """Where one setting's checkpoints and sets live: a name that changes with its key."""
        return (pathlib.Path(self.args.work)
                / f"{self.args.recipe}-ipc{ipc}-{ledgers.digest(self.condense_key(ipc, setting))}")

    def condensed(self, ipc, setting, iterations):
        """(the set after `iterations`, the seconds of condensing its trial is charged).

        A set saved by an earlier trial is loaded (the chosen rung's, when the final evaluation
        lengths come after longer rungs). Otherwise this setting's condenser goes on:
        the live one of this process, else the latest of its checkpoints (so a stopped search
        resumes mid-trial), else a new one. Checkpoints are exact (m3d_tf.checkpoints): a
        resumed trial gives the set an uninterrupted one would.

        The charge is the condensing from the previous rung to `iterations`, read from the
        setting's clock (ledger.Clock, kept with its checkpoints), so it counts the work of
        earlier processes too: a set condensed before a stop and evaluated after, or a trial
        resumed mid-way. Without clock entries (sets condensed before the clock) it is this
        process's seconds.
        """
        from m3d_tf import checkpoints, io, recipes

        directory = self.setting_dir(ipc, setting)
        saved = directory / f"set-{iterations}"
        clock = ledgers.Clock(directory / "checkpoints" / "seconds.json")
        earlier = max((r for r in self.args.rungs if r < iterations), default=0)

        def charge(fallback):
            end, start = clock.at(iterations), clock.at(earlier)
            return fallback if end is None or start is None else end - start

        condenser, done = self.live.get(setting, (None, 0))
        if (saved / "metadata.json").exists() and (condenser is None or done >= iterations):
            return io.load_set(saved), charge(0.0)  # (a live condenser behind it goes on itself)
        if done > iterations:
            condenser, done = None, 0
        resume, callbacks = None, []
        try:
            step = checkpoints.latest_step(directory / "checkpoints")
        except FileNotFoundError:
            step = None
        if condenser is None and step is not None and step <= iterations:
            resume = directory / "checkpoints"
        start = step if resume else done
        before = clock.at(start)  # the seconds spent reaching the step it starts from
        if before is None and not clock.read():  # condensed before the clock: it counts from here
            before = 0.0
            clock.record(start, before)
        if step is None or step <= iterations:  # a longer run's checkpoints are kept
            every = math.gcd(*self.args.rungs)
            callbacks = [checkpoints.CheckpointCallback(
                directory / "checkpoints", self.condense_key(ipc, setting), every=every)]
            if before is not None:
                callbacks.append(clock.callback(every, before))
        rate = setting.lr_scale * recipes.get_recipe(self.args.recipe).learning_rate_for(ipc)
        factor = {} if setting.factor is None else {"factor": setting.factor}
        started = time.time()
        condenser, history = recipes.condense(
            self.x_train, self.y_train, self.info, ipc, recipe=self.args.recipe,
            iterations=iterations, learning_rate=rate, seed=self.args.seed,
            condenser=condenser, initial_step=done, real_per_class=setting.real_per_class,
            ipm=setting.ipm, compute_dtype=self.base_key(ipc)["compute_dtype"],
            resume_from=resume, callbacks=callbacks, **factor,
        )
        self.live[setting] = (condenser, iterations)
        final = history.get("mmd", [None])[-1]
        synthetic = io.SyntheticSet.from_condenser(condenser, self.info, iterations=iterations,
                                                   final_mmd=final, method=self.args.recipe)
        io.save_set(saved, synthetic, overwrite=True)
        seconds = time.time() - started
        if before is not None:
            clock.record(iterations, before + seconds)
        return synthetic, charge(seconds)

    def measure(self, ipc, setting, iterations, epochs, synthetic=None):
        """Mean validation accuracy of a trial, from the ledger or measured and recorded now."""
        from m3d_tf import evaluate

        key = self.trial_key(ipc, setting, iterations, epochs)
        value = self.ledger.get(key)
        if value is None and self.replay:
            raise Unfinished(f"{setting.label()}, {iterations} it, {epochs} ep")
        if value is None:
            seconds = 0.0
            if synthetic is None:
                synthetic, seconds = self.condensed(ipc, setting, iterations)
            # The networks' checkpoints (m3d_tf.evaluate's checkpoint_dir) until the trial is
            # recorded: a stopped trial goes on where its networks stopped.
            saved = self.setting_dir(ipc, setting) / "networks" / ledgers.digest(key)
            done = [evaluate.checkpointed(saved, r) for r in range(self.args.nets)]
            before = sum(d[1] for d in done if d is not None)
            started = time.time()
            result = evaluate.evaluate_set(
                synthetic, self.x_val, self.y_val, protocol="idc", runs=self.args.nets,
                epochs=epochs, seed=self.args.seed, compute_dtype=self.args.eval_dtype,
                checkpoint_dir=saved,
            )
            value = {"accuracies": list(result.accuracies), "mean": result.mean,
                     "condense_seconds": round(seconds, 1),
                     "evaluate_seconds": round(before + time.time() - started, 1)}
            self.ledger.add(key, value)
            ledgers.drop_recorded(saved)  # the trial is recorded: its networks' states go
            print(f"IPC {ipc} {setting.label()}, {iterations} it, {epochs} ep: "
                  f"validation {100 * result.mean:.2f} %", flush=True)
        return value["mean"]

    def run(self, ipc):
        """(winner Setting, chosen iterations, chosen evaluation epochs)."""
        from m3d_tf import recipes

        a = self.args
        alive = grid(a.lr_scale, a.real_per_class, a.ipm, factors(
            a.factor, recipes.get_recipe(a.recipe).factor))
        self.live = {}
        for rung, iterations in enumerate(a.rungs):
            scores = {s: self.measure(ipc, s, iterations, a.epochs) for s in alive}
            if rung + 1 < len(a.rungs):
                alive = survivors(scores, a.keep)
                self.live = {s: v for s, v in self.live.items() if s in alive}
        winner = max(alive, key=lambda s: scores[s])
        iterations = best_shortest({r: self.measure(ipc, winner, r, a.epochs) for r in a.rungs})
        synthetic = None
        if not self.replay and any(
                self.ledger.get(self.trial_key(ipc, winner, iterations, e)) is None
                for e in a.final_epochs):
            synthetic, _ = self.condensed(ipc, winner, iterations)
        by_epochs = {e: self.measure(ipc, winner, iterations, e, synthetic)
                     for e in a.final_epochs}
        return winner, iterations, best_shortest(by_epochs)


def search_trials(ledger, key):
    """The ledger's trials of the search `key`: those with its validation networks' dtype
    (float32 trials have no eval_dtype, and None matches only those)."""
    return ledger.entries(**{"eval_dtype": None, **key})


def table(ledger, key, rungs, winner=None, iterations=None, epochs=None):
    """The markdown section of one search (recipe, IPC) from its ledger entries."""
    eval_dtype = key.get("eval_dtype", "float32")
    entries = search_trials(ledger, key)
    lines = [
        f"### Validation search: {key['recipe']} at IPC {key['ipc']} ({key['dataset']})",
        "",
        "Validation: "
        f"{key['validation_per_class']} training images per class held out (seed {key['seed']}); "
        f"the sets are condensed from the rest; each number is the mean final accuracy of "
        f"{key['nets']} ConvNet-3 (IDC protocol, {eval_dtype}) on the held-out images. Random "
        f"nets in {key['compute_dtype']}. The test split is not read. Cost: the seconds of a "
        "setting's trials, each its condensing from the previous rung and its validation "
        "networks (condensing done before the clock of 2026-12-02 was kept only if the same "
        "process evaluated it).",
        "",
    ]
    settings = {}
    for e in entries:
        k = e["key"]
        s = Setting(k["lr_scale"], k["real_per_class"], k["ipm"], k.get("factor"))
        settings.setdefault(s, {})[(k["iterations"], k["epochs"])] = e["value"]
    search_epochs = min((k[1] for v in settings.values() for k in v), default=None)
    # Every rung of this command and of earlier rounds of the same search (other grids).
    rungs = sorted(set(rungs) | {i for v in settings.values() for i, ep in v
                                 if ep == search_epochs})
    lines += [
        "| setting | " + " | ".join(f"{r} it" for r in rungs) + " | condense + evaluate (s) |",
        "| --- |" + " --- |" * (len(rungs) + 1),
    ]
    for s, trials in sorted(settings.items(), key=lambda item: -max(
            (v["mean"] for (i, ep), v in item[1].items()), default=0)):
        cells = []
        for r in rungs:
            value = trials.get((r, search_epochs))
            cells.append("-" if value is None else f"{100 * value['mean']:.2f}")
        cost = sum(v["condense_seconds"] + v["evaluate_seconds"] for v in trials.values())
        name = f"**{s.label()}**" if s == winner else s.label()
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {cost:.0f} |")
    if winner is not None:
        finals = {ep: v for (i, ep), v in settings[winner].items() if i == iterations}
        lines += ["", f"Chosen: {winner.label()}, {iterations} iterations (its best rung); "
                  "evaluation epochs on that set: " + ", ".join(f"{ep}: {100 * v['mean']:.2f} %"
                                          for ep, v in sorted(finals.items()))
                  + f" -> {epochs} epochs."]
    return "\n".join(lines)


def main(argv=None):
    args = _parser().parse_args(argv)
    if not 0 < args.keep <= 1:
        sys.exit("--keep must be in (0, 1]")
    if args.rungs != sorted(set(args.rungs)):
        sys.exit("--rungs must be increasing iteration counts")

    ledger = ledgers.Ledger(args.ledger)
    if ledger.torn:
        print(f"{args.ledger}: {ledger.torn} unreadable line(s) (a run killed mid-write) ignored")
    command = ledgers.command("search.py", argv, omit=("--table-only",))
    finished = (f"\n\nCommand: `{command}` (machine: {ledgers.machine()}; resumable: each "
                f"trial is a line of {os.path.relpath(args.ledger, ROOT)}).")
    if args.table_only:
        replay = Search(args, ledger, None)
        for ipc in args.ipc:
            key = search_key(args, ipc)
            if not search_trials(ledger, key):
                continue
            try:
                section = table(ledger, key, args.rungs, *replay.run(ipc)) + finished
            except Unfinished:
                section = (table(ledger, key, args.rungs) + f"\n\nUnder way, not finished: "
                           f"`{command}` picks up where it stopped.")
            ledgers.write_section(args.out, f"search-{args.recipe}-ipc{ipc}", section)
        return

    from m3d_tf import data
    from m3d_tf.data import channel_stats, holdout_split

    images, labels, info = data.load_arrays("fashion_mnist")
    train, validation = holdout_split(labels, args.validation_per_class, seed=args.seed)
    mean, std = channel_stats(images[train])
    info = dataclasses.replace(info, mean=tuple(mean), std=tuple(std),
                               split_sizes={"train": len(train), "validation": len(validation)})
    search = Search(args, ledger, (images[train], labels[train], images[validation],
                                   labels[validation], info))
    for ipc in args.ipc:
        started = time.time()
        winner, iterations, epochs = search.run(ipc)
        print(f"IPC {ipc}: chosen {winner.label()}, {iterations} iterations, {epochs} evaluation "
              f"epochs ({(time.time() - started) / 60:.1f} min)", flush=True)
        section = table(ledger, search.base_key(ipc), args.rungs, winner, iterations, epochs)
        ledgers.write_section(args.out, f"search-{args.recipe}-ipc{ipc}", section + finished)


if __name__ == "__main__":
    main()

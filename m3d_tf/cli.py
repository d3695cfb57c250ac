"""The `m3d` command: parse, call the library, print a summary.

    m3d condense --dataset fashion_mnist --ipc 10 --out sets/fm10
    m3d evaluate sets/fm10 --protocol idc --runs 3
    m3d baseline --method herding --dataset fashion_mnist --ipc 10 --out sets/fm10-herding
    m3d show sets/fm10
    m3d main            # the README's main job: M3D vs DM vs random on Fashion-MNIST, IPC 10

Every error a user can cause ends in one line on stderr ("m3d: error: ...") and exit
status 2; nothing here re-implements loading, condensing, saving or evaluating.

Only our own lines are printed: TensorFlow's C++ log (its loading notices included) and its
Python logger are turned off before TensorFlow loads (m3d_tf/console.py); `--verbose` (before
or after the command) lets them all through.

A command that writes --out first checks that it can write there (a read-only disk is refused
before any data is read), then holds OUT.lock (m3d_tf.io.output_lock) until it ends: a second
command writing the same --out stops at once, and a run killed with SIGKILL blocks nobody.

`m3d condense` never holds the training set in memory: m3d_tf.data.stream_source writes it
class by class into --cache-dir in one streaming pass (reused while the source's files are
unchanged) and the condensation reads its batches from there (m3d_tf.data.streamed_batches).
"""

import argparse
import contextlib
import datetime
import glob
import json
import os
import pathlib
import sys
import tempfile
import time

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in the command line or its inputs, reported in one line."""


# === Argument parsing ===


def _positive(value):
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _non_negative(value):
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return number


def _positive_float(value):
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not (0 < number < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return number


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are a UsageError: one "m3d: error: ..." line, exit status 2."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def _parser():
    parser = _Parser(
        prog="m3d", description="Dataset condensation by multi-kernel MMD (M3D) for Keras 3."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    condense = commands.add_parser("condense", help="learn a synthetic set from a dataset")
    _dataset_args(condense)
    condense.add_argument("--ipc", type=_positive, default=10, help="stored images per class")
    condense.add_argument("--out", required=True, help="directory of the saved set (must not exist)")
    condense.add_argument("--recipe", default="m3d", help="m3d (default) or dm")
    condense.add_argument("--kernel", help="gaussian_mix, linear, polynomial or rbf_fixed")
    condense.add_argument("--iterations", type=_positive,
                          help="default: the recipe's, or the values chosen for this dataset "
                          "and IPC (m3d_tf.recipes.TUNED)")
    condense.add_argument("--factor", type=_positive, help="multi-formation factor")
    condense.add_argument("--real-per-class", type=_positive, help="real images per class per step")
    condense.add_argument("--ipm", type=_positive, help="iterations per random model")
    condense.add_argument("--lr", type=_positive_float, help="pixel learning rate")
    condense.add_argument("--init", help="mix, real or noise")
    condense.add_argument("--seed", type=_non_negative, default=0)
    condense.add_argument("--bf16", action="store_true", help="bfloat16 random-net compute")
    condense.add_argument("--xla", action="store_true", help="compile the step with XLA")
    condense.add_argument(
        "--strategy", choices=("default", "mirrored", "multiworker"), default="default",
        help="mirrored: every GPU of this machine; multiworker: the machines in TF_CONFIG",
    )
    condense.add_argument("--cluster-timeout", type=float, default=300.0,
                          help="multiworker: seconds for every worker to join (and the longest "
                          "a running worker may stay silent)")
    condense.add_argument("--tensorboard", help="TensorBoard log directory")
    condense.add_argument("--image-every", type=_positive, default=100,
                          help="TensorBoard image grid every N iterations")
    condense.add_argument("--checkpoint-every", type=_positive, default=100)
    condense.add_argument("--resume", action="store_true",
                          help="continue from OUT.checkpoint (same settings)")
    condense.add_argument("--tfrecord", action="store_true", help="also save a TFRecord copy")
    condense.add_argument("--cache-dir", help="where the streamed per-class image files go "
                          "(default: $M3D_TF_CACHE_DIR, else ~/.cache/m3d_tf)")
    _flip_arg(condense, "whether a horizontal flip keeps an image's class, so augmentation may "
              "mirror (default: the catalogue's for named datasets; off for own data)")

    evaluate = commands.add_parser("evaluate", help="train fresh networks on a saved set")
    evaluate.add_argument("set", help="directory of a saved set")
    evaluate.add_argument("--dataset", help="real test data; default: the data the set was "
                          "condensed from (recorded in it, own data by its absolute path)")
    evaluate.add_argument("--data-dir", help="TFDS data directory")
    evaluate.add_argument("--protocol", choices=("dm", "idc"), default="idc")
    evaluate.add_argument("--runs", type=_positive, default=3)
    evaluate.add_argument("--epochs", type=_positive, default=1000)
    evaluate.add_argument("--arch", default="convnet", help="convnet, mlp, alexnet, vgg11, resnet18")
    evaluate.add_argument("--seed", type=_non_negative, default=0)
    evaluate.add_argument("--tensorboard", help="also log the accuracies to this directory")
    evaluate.add_argument("--checkpoint-dir", help="keep each network's training state here "
                          "(every 5 %% of its epochs): the same command after a stop goes on "
                          "from there to the same accuracies; delete it once the result is kept")
    evaluate.add_argument("--allow-other-data", action="store_true",
                          help="evaluate against --dataset even if its classes are not the set's")
    _flip_arg(evaluate, "horizontal flips while training the networks (default: the choice "
              "recorded in the set)")

    baseline = commands.add_parser("baseline", help="select a real subset at the same budget")
    _dataset_args(baseline)
    baseline.add_argument("--method", choices=("random", "herding", "kcenter"), required=True)
    baseline.add_argument("--ipc", type=_positive, default=10)
    baseline.add_argument("--out", required=True)
    baseline.add_argument("--seed", type=_non_negative, default=0)
    _flip_arg(baseline, "whether a horizontal flip keeps an image's class, recorded in the set "
              "for its evaluation (default: the catalogue's; off for own data)")

    show = commands.add_parser("show", help="print a saved set's description and its PNG grid")
    show.add_argument("set")
    show.add_argument("--open", action="store_true", help="open the grid with the desktop viewer")

    main = commands.add_parser("main", help="the README's main job (Fashion-MNIST, IPC 10)")
    main.add_argument("--out", help="default: runs/main-<time>")
    main.add_argument("--dataset", default="fashion_mnist",
                      help="any source --dataset of condense takes (default fashion_mnist)")
    main.add_argument("--data-dir", help="TFDS data directory")
    main.add_argument("--ipc", type=_positive, default=10)
    main.add_argument("--iterations", type=_positive, default=120)
    main.add_argument("--epochs", type=_positive, default=40)
    main.add_argument("--runs", type=_positive, default=2)
    main.add_argument("--seed", type=_non_negative, default=0)
    for each in (parser, *commands.choices.values()):  # `m3d --verbose CMD` or `m3d CMD --verbose`
        each.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="also print TensorFlow's own log lines")
    return parser


def _flip_arg(parser, help):
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help=help)


def _dataset_args(parser):
    parser.add_argument(
        "--dataset", default="fashion_mnist",
        help="a TFDS name (fashion_mnist, mnist, cifar10, cifar100, svhn) or idx:DIR, npz:FILE, "
        "folder:DIR, tfrecord:GLOB",
    )
    parser.add_argument("--data-dir", help="TFDS data directory")


# === Shared steps ===


def _load(source, split, data_dir=None, flip=None):
    from m3d_tf import data

    return data.load_arrays(source, split, data_dir=data_dir, flip=flip)


def _say(message):
    print(message, flush=True)


_STRATEGIES = {}


def _strategy(name, timeout=300.0):
    """The tf.distribute strategy called `name`, made once per process.

    "multiworker" must be made before any other TensorFlow op: main() makes it first.
    """
    import tensorflow as tf

    if name not in _STRATEGIES:
        if name == "multiworker":
            from m3d_tf import distribute

            _STRATEGIES[name] = distribute.multi_worker_strategy(
                distribute.read_tf_config(), timeout=timeout
            )
        elif name == "mirrored":
            _STRATEGIES[name] = tf.distribute.MirroredStrategy()
        else:
            return tf.distribute.get_strategy()
    return _STRATEGIES[name]


def _start_cluster(args):
    """Checks TF_CONFIG and the outputs, then joins the cluster, before any TensorFlow op.

    Every task checks --out here, before the join: after it a fast chief may already have
    made OUT.checkpoint, which a slower worker would take for an earlier run's.
    """
    from m3d_tf import distribute

    distribute.read_tf_config()
    _check_new_dir(args.out)
    if not args.resume:
        _check_no_checkpoint(pathlib.Path(f"{args.out}.checkpoint"))
    if not args.cluster_timeout > 0:
        raise UsageError(f"--cluster-timeout must be positive, got {args.cluster_timeout}")
    _strategy("multiworker", args.cluster_timeout)


def _table(rows, headers):
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _check_new_dir(path, flag="--out"):
    if pathlib.Path(path).exists():
        raise UsageError(
            f"{flag} {path} already exists; choose a new directory (saved sets are never "
            "overwritten)."
        )


def _check_writable(path, flag="--out"):
    """Refuses an output whose parent (or nearest existing ancestor) takes no new files.

    Probed by creating a file, not by permission bits: root ignores those, and a read-only
    mount refuses root too.
    """
    ancestor = pathlib.Path(path).absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    try:
        with tempfile.TemporaryFile(dir=ancestor, prefix=".m3d-probe-"):
            pass
    except OSError as error:
        raise UsageError(
            f"{flag} {path}: cannot write in {ancestor} ({error.strerror}); choose a writable "
            "directory."
        ) from None


def _output_lock(args):
    """OUT.lock for the commands that write --out; nothing for the others.

    Under --strategy multiworker only the chief writes, so only it locks: the other tasks of
    the same run may name the same --out on the same machine.
    """
    if args.command not in ("condense", "baseline", "main"):
        return contextlib.nullcontext()
    _check_writable(args.out)
    if getattr(args, "strategy", None) == "multiworker":
        from m3d_tf import distribute

        if not distribute.read_tf_config().is_chief:
            return contextlib.nullcontext()
    from m3d_tf import io

    return io.output_lock(args.out)


def _check_no_checkpoint(checkpoint_dir):
    if checkpoint_dir.exists():
        raise UsageError(
            f"{checkpoint_dir} exists from an earlier run; pass --resume to continue it, or "
            "delete it to start over."
        )


def _condense(args, real, info, *, out, recipe, iterations, quiet=False, **overrides):
    """Runs (or resumes) one condensation through recipes.condense and saves the set; returns
    (set, seconds).

    `real` is the training data: (images, labels) arrays, or m3d_tf.data.ClassFiles streamed
    from disk (`m3d condense`: never the whole data set in memory).

    Under --strategy multiworker every task runs this; only the chief writes (checkpoints,
    TensorBoard, the set), and a lost worker ends every task with one line naming the
    checkpoint to --resume from.
    """
    from m3d_tf import callbacks, checkpoints, data, distribute, io, recipes

    checkpoint_dir = pathlib.Path(f"{out}.checkpoint")
    run = {
        "dataset": args.dataset, "ipc": args.ipc, "recipe": recipe, "iterations": iterations,
        "seed": args.seed, "learning_rate": getattr(args, "lr", None),
        "overrides": {k: v for k, v in overrides.items()}, "flip": info.flips,
    }
    strategy = _strategy(getattr(args, "strategy", "default"))
    writer = distribute.is_writer(strategy)
    rate = run["learning_rate"]
    if rate is None:
        rate = recipes.settings_for(recipe, args.ipc, info.name)["learning_rate"]
    resume, start = getattr(args, "resume", False), 0
    if resume:
        saved = checkpoints.read_run(checkpoint_dir)
        # Checkpoints from before flip was recorded carry no "flip": nothing to compare.
        changed = sorted(k for k in run if k != "iterations" and saved.get(k) != run[k]
                         and not (k == "flip" and k not in saved))
        if changed:
            raise UsageError(
                f"--resume: {checkpoint_dir} was made with different settings ("
                + ", ".join(f"{k}: {saved.get(k)!r} then, {run[k]!r} now" for k in changed)
                + "); rerun with the original flags or start a new --out."
            )
        rate = saved["learning_rate_used"]
        start = checkpoints.latest_step(checkpoint_dir)
        _say(f"resuming {checkpoint_dir} at iteration {start} of {iterations}")
    elif writer:  # other workers checked before joining: by now the chief may have made it
        _check_no_checkpoint(checkpoint_dir)
    run["learning_rate_used"] = rate
    hooks = [checkpoints.CheckpointCallback(checkpoint_dir, run, every=getattr(args, "checkpoint_every", 100))]
    if getattr(args, "tensorboard", None):
        hooks.append(callbacks.TensorBoardCallback(
            args.tensorboard, class_names=info.class_names,
            image_every=getattr(args, "image_every", 100), initial_step=start,
        ))
    images, labels = (real, None) if isinstance(real, data.ClassFiles) else real
    started = time.time()
    try:
        condenser, history = recipes.condense(
            images, labels, info, args.ipc, recipe=recipe, iterations=iterations,
            learning_rate=rate, seed=args.seed, callbacks=hooks, verbose=0 if quiet else 1,
            strategy=strategy, jit_compile=getattr(args, "xla", False),
            resume_from=checkpoint_dir if resume else None, **overrides,
        )
    except _collective_errors(strategy) as error:
        raise distribute.ClusterError(distribute.cluster_failure(error, checkpoint_dir)) from None
    seconds = time.time() - started
    final = history.get("mmd", [None])[-1]
    synthetic = io.SyntheticSet.from_condenser(
        condenser, info, iterations=iterations, final_mmd=final,
        method=recipes.get_recipe(recipe).method,
    )
    formats = ("npz", "tfrecord") if getattr(args, "tfrecord", False) else ("npz",)
    if writer:
        io.save_set(out, synthetic, formats=formats)
    return synthetic, seconds


def _collective_errors(strategy):
    """What a lost worker raises in fit: TF's runtime errors, only under several workers."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                tf.errors.CancelledError, tf.errors.InternalError, tf.errors.AbortedError)
    return ()


def _evaluate(synthetic, test_images, test_labels, *, protocol, arch, runs, epochs, seed,
              flip=None, checkpoint_dir=None):
    """evaluate_set with a progress line; flip None: the set's recorded choice (io.set_flip)."""
    from m3d_tf import evaluate

    options = {} if flip is None else {"flip": flip}
    return evaluate.evaluate_set(
        synthetic, test_images, test_labels, protocol=protocol, arch=arch, runs=runs,
        epochs=epochs, seed=seed, progress=evaluate.ProgressPrinter(),
        checkpoint_dir=checkpoint_dir, **options,
    )


def _announce_flip(info):
    """Says once, in one line, that own data without --flip/--no-flip is not mirrored."""
    from m3d_tf import data

    note = data.undeclared_flip_note(info)
    if note:
        print(f"m3d: {note}", file=sys.stderr, flush=True)


_OWN_KINDS = ("idx", "npz", "folder", "tfrecord")  # sources read from a path the user gave


def _recorded_source(meta):
    """The source `m3d evaluate SET` reads by default: the data the set was condensed from.

    A catalogued dataset by its name (wherever TFDS keeps it); own data by the location the set
    recorded (an absolute path since sets record one), checked to still be there. Never by the
    name alone for own data: a folder called mnist is not the catalogue's MNIST.
    """
    from m3d_tf import data
    from m3d_tf.data import catalog

    name, recorded = meta["dataset"], meta["dataset_source"]
    kind, _, where = recorded.partition(":")
    if kind == "tfds":
        return name if name in data.KNOWN_DATASETS else f"tfds:{name}"
    offline_copy = name in data.KNOWN_DATASETS and where == str(catalog.DEBIAN_FASHION_MNIST_DIR)
    if kind not in _OWN_KINDS or offline_copy:
        return name  # the catalogue's (Fashion-MNIST read from Debian's files), or unknown
    if _moved(recorded):
        raise UsageError(
            f"the set was condensed from {recorded}, which is no longer there; pass --dataset "
            "with where those data are now."
        )
    return recorded


def _moved(recorded):
    """Whether own data recorded as "kind:where" are no longer there (False for other sources)."""
    kind, _, where = recorded.partition(":")
    return kind in _OWN_KINDS and not glob.glob(where.replace("{split}", "*"))


def _check_matches(synthetic, info, source):
    meta = synthetic.metadata
    if (meta["num_classes"], list(meta["image_shape"])) != (info.num_classes, list(info.image_shape)):
        raise UsageError(
            f"the set has {meta['num_classes']} classes of shape {tuple(meta['image_shape'])} but "
            f"{source} has {info.num_classes} classes of shape {tuple(info.image_shape)}; evaluate "
            "it against the dataset it was condensed from."
        )


def _check_same_data(synthetic, info, source, allow_other):
    """Refuses test data other than the set's own: the class names must match or, when neither
    side names its classes, the recorded source must (unless own data recorded there have
    moved: the user's --dataset is then their new place).

    Class count and image shape alone let a digits set be "evaluated" on Fashion-MNIST.
    """
    meta = synthetic.metadata
    names, theirs = list(meta["class_names"]), list(info.class_names)
    same = names == theirs
    if same and names == [str(c) for c in range(len(names))]:  # neither side names its classes
        # The recorded source, unless it has moved: `m3d evaluate` then asks for its new place.
        recorded = meta["dataset_source"]
        same = recorded == info.source or _moved(recorded)
    if same or allow_other:
        return
    shown = lambda n: ", ".join(n[:4]) + (", ..." if len(n) > 4 else "")  # noqa: E731
    raise UsageError(
        f"the set was condensed from {meta['dataset']!r} ({meta['dataset_source']}; classes "
        f"{shown(names)}) but {source} is {info.source} (classes {shown(theirs)}); evaluate it "
        "against the dataset it was condensed from, or pass --allow-other-data."
    )


def _check_class_sizes(class_files, real_per_class, source):
    """Every class needs real_per_class images for one balanced batch: said with the flag."""
    counts = class_files.counts
    if min(counts) < real_per_class:
        c = counts.index(min(counts))
        raise UsageError(
            f"class {c} of {source} has {counts[c]} training images; --real-per-class "
            f"{real_per_class} needs at least {real_per_class}. Lower --real-per-class."
        )


# === Commands ===


def cmd_condense(args):
    from m3d_tf import data, recipes

    _check_new_dir(args.out)
    recipes.get_recipe(args.recipe)  # an unknown recipe fails before the streaming pass
    class_files, info = data.stream_source(args.dataset, "train", data_dir=args.data_dir,
                                           cache_dir=args.cache_dir, flip=args.flip)
    _announce_flip(info)
    defaults = recipes.settings_for(args.recipe, args.ipc, info.name)
    _check_class_sizes(class_files, args.real_per_class or defaults["real_per_class"], args.dataset)
    overrides = {
        k: v for k, v in dict(
            kernel=args.kernel, factor=args.factor, real_per_class=args.real_per_class,
            ipm=args.ipm, init=args.init, compute_dtype="bfloat16" if args.bf16 else None,
        ).items() if v is not None
    }
    iterations = defaults["iterations"] if args.iterations is None else args.iterations
    synthetic, seconds = _condense(
        args, class_files, info, out=args.out, recipe=args.recipe, iterations=iterations,
        **overrides,
    )
    meta = synthetic.metadata
    _say(_table(
        [[args.out, meta["method"], meta["ipc"], meta["factor"], meta["kernel"], iterations,
          f"{meta['final_mmd']:.4f}" if meta["final_mmd"] is not None else "-", f"{seconds:.0f}"]],
        ["set", "method", "ipc", "factor", "kernel", "iterations", "final MMD", "seconds"],
    ))
    _say(f"grid: {pathlib.Path(args.out) / 'grid.png'}")


def cmd_evaluate(args):
    from m3d_tf import callbacks, io

    synthetic = io.load_set(args.set)
    source = args.dataset or _recorded_source(synthetic.metadata)
    test_images, test_labels, info = _load(source, "test", args.data_dir)
    _check_matches(synthetic, info, source)
    _check_same_data(synthetic, info, source, args.allow_other_data)
    result = _evaluate(synthetic, test_images, test_labels, protocol=args.protocol,
                       arch=args.arch, runs=args.runs, epochs=args.epochs, seed=args.seed,
                       flip=args.flip, checkpoint_dir=args.checkpoint_dir)
    if args.tensorboard:
        callbacks.log_evaluation(args.tensorboard, result.accuracies,
                                 step=synthetic.metadata["iterations"])
    meta = synthetic.metadata
    _say(_table(
        [[args.set, meta["method"], meta["ipc"], args.arch, args.protocol, args.epochs, args.runs,
          f"{100 * result.mean:.2f} ± {100 * result.std:.2f}"]],
        ["set", "method", "ipc", "arch", "protocol", "epochs", "runs", "test accuracy (%)"],
    ))


def cmd_baseline(args):
    from m3d_tf import baselines, io

    _check_new_dir(args.out)
    images, labels, info = _load(args.dataset, "train", args.data_dir, flip=args.flip)
    _announce_flip(info)
    synthetic = baselines.baseline_set(args.method, images, labels, args.ipc, info, seed=args.seed)
    io.save_set(args.out, synthetic)
    _say(f"{args.method} subset of {args.ipc} images per class saved to {args.out}")


def cmd_show(args):
    from m3d_tf import io

    synthetic = io.load_set(args.set)
    meta = synthetic.metadata
    grid = pathlib.Path(args.set) / "grid.png"
    config = meta.get("condenser_config") or {}  # condensed sets: how they were made
    made = {"learning_rate": meta.get("learning_rate"), "real_per_class":
            config.get("real_per_class"), "ipm": config.get("ipm"), "flip": io.set_flip(meta)}
    rows = [[k, json.dumps(made[k] if k in made else meta[k])] for k in (
        "method", "dataset", "num_classes", "image_shape", "ipc", "factor", "kernel",
        "iterations", "learning_rate", "real_per_class", "ipm", "flip", "seed", "final_mmd",
        "library_version", "created",
    )]
    _say(_table(rows, ["key", "value"]))
    _say(f"grid: {grid}")
    if args.open:
        import webbrowser

        webbrowser.open(grid.resolve().as_uri())


def cmd_main(args):
    """Condense --dataset at IPC 10 with M3D and DM, pick a random subset, evaluate all."""
    import numpy as np

    from m3d_tf import baselines, io

    out = pathlib.Path(args.out)
    _check_new_dir(out)
    images, labels, info = _load(args.dataset, "train", args.data_dir)
    test_images, test_labels, _ = _load(args.dataset, "test", args.data_dir)
    out.mkdir(parents=True)
    args.strategy, args.checkpoint_every = "default", 100
    _say(f"{info.name} via {info.source}: {len(images)} train, {len(test_images)} test images")

    # 32 real images per class and step (the real forward is most of a step: the main job's
    # budget on a shared 2-core machine, docs/benchmarks.md), or all of a small --dataset's
    # smallest class.
    real_per_class = min(32, int(np.bincount(labels).min()))
    sets, seconds = {}, {}
    for recipe in ("m3d", "dm"):
        _say(f"\n== condensing with {recipe.upper()}: IPC {args.ipc}, {args.iterations} iterations ==")
        args.tensorboard = str(out / "tensorboard" / recipe)
        sets[recipe], seconds[recipe] = _condense(
            args, (images, labels), info, out=out / recipe, recipe=recipe,
            iterations=args.iterations, real_per_class=real_per_class,
            compute_dtype="bfloat16",
        )
    started = time.time()
    sets["random"] = baselines.baseline_set("random", images, labels, args.ipc, info, seed=args.seed)
    io.save_set(out / "random", sets["random"])
    seconds["random"] = time.time() - started

    rows = []
    for name, synthetic in sets.items():
        _say(f"\n== evaluating {name}: {args.runs} ConvNet-3 runs x {args.epochs} epochs (IDC protocol) ==")
        result = _evaluate(synthetic, test_images, test_labels, protocol="idc", arch="convnet",
                           runs=args.runs, epochs=args.epochs, seed=args.seed)
        meta = synthetic.metadata
        rows.append([name, meta["ipc"], meta["factor"], meta["iterations"],
                     f"{seconds[name]:.0f}", f"{100 * result.mean:.2f} ± {100 * result.std:.2f}"])
    table = _table(rows, ["method", "ipc", "factor", "iterations", "seconds", "test accuracy (%)"])
    (out / "summary.txt").write_text(table + "\n")
    _say("\n" + table)
    _say(f"\nsets and grids: {out}/<method>/grid.png; TensorBoard: tensorboard --logdir {out / 'tensorboard'}")


COMMANDS = {
    "condense": cmd_condense, "evaluate": cmd_evaluate, "baseline": cmd_baseline,
    "show": cmd_show, "main": cmd_main,
}


def main(argv=None):
    """Entry point of the `m3d` console script; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except UsageError as error:
        print(f"m3d: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not getattr(args, "verbose", False):
        from m3d_tf import console

        console.quiet()
    if args.command == "main" and args.out is None:
        args.out = f"runs/main-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    from m3d_tf.distribute import ClusterError

    try:
        if getattr(args, "strategy", None) == "multiworker":
            _start_cluster(args)
        with _output_lock(args):
            COMMANDS[args.command](args)
    # OSError: a full or read-only disk, a file that vanished, another writer (io.OutputLocked).
    except (UsageError, ValueError, OSError, ClusterError) as error:
        print(f"m3d: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())

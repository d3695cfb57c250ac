"""What the long benchmarks have finished, kept so that a stopped run loses nothing.

A Ledger is an append-only JSON-lines file: one line per finished measurement (a set built, one
network trained and tested, one search trial), written and fsynced the moment it finishes. A
later run of the same command reads the file and does only what has no line yet, so a table of
many hours fills piece by piece across sessions. A line cut short by a kill is ignored (and
counted), never fatal.

Each line is {"key": {...}, "value": {...}, "when": ISO time, "commit": ..., "machine": ...}:
`key` names the measurement (what was run, with every setting that changes its result), `value`
holds what it produced.

`write_section` puts a generated table into docs/benchmarks.md between two marker comments,
replacing the previous version of the same table and leaving the rest of the file alone.
"""

import datetime
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _canonical(key):
    return json.dumps(key, sort_keys=True)


def digest(key):
    """8 hex digits that change with anything in `key`: names a directory of work for a key."""
    return hashlib.sha1(_canonical(key).encode()).hexdigest()[:8]


def commit():
    """The repository's HEAD commit (short), "+dirty" when tracked files differ from it.

    Falls back to reading .git directly where git is not installed (the project environment's
    root has none); the dirty mark is then unknown and left out.
    """
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--"],
                               capture_output=True).returncode != 0
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return _read_head(ROOT / ".git")


def _read_head(git):
    """HEAD's commit (short) read from a .git directory (or a clone's .git file), else "unknown"."""
    try:
        if git.is_file():  # a worktree: "gitdir: PATH"
            git = pathlib.Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:7]
        ref = head[5:]
        common = git / "commondir"
        roots = [git] + ([git / common.read_text().strip()] if common.exists() else [])
        for root in roots:
            if (root / ref).exists():
                return (root / ref).read_text().strip()[:7]
            packed = root / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line[:7]
    except (OSError, IndexError):
        pass
    return "unknown"


def machine():
    """CPU model and core count, e.g. "AMD EPYC 9B14, 2 cores"."""
    model = "unknown CPU"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


class Ledger:
    """Finished measurements in a JSON-lines file (created on first add).

    Args:
        path: the file; its directory is created when needed.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.torn = 0
        self._entries = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self._entries[_canonical(entry["key"])] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.torn += 1  # a line cut short when a run was killed mid-write

    def get(self, key):
        """The value recorded for `key` (a JSON-able dict), or None."""
        entry = self._entries.get(_canonical(key))
        return None if entry is None else entry["value"]

    def entries(self, **match):
        """Every entry whose key has all the items of `match` (latest line wins per key); a
        None value matches keys without that item."""
        return [e for e in self._entries.values()
                if all(e["key"].get(k) == v for k, v in match.items())]

    def add(self, key, value, **extra):
        """Records `value` for `key` now: appended, flushed and fsynced before returning."""
        entry = {"key": key, "value": value,
                 "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "commit": commit(), "machine": machine(),
                 "load": round(os.getloadavg()[0], 1), "threads": threads(), **extra}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True)
        with open(self.path, "ab+") as handle:
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line  # a torn last line must not swallow this one
            handle.write((line + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())
        self._entries[_canonical(key)] = entry
        return entry


class Clock:
    """Seconds a resumable job had spent when it reached each step, in a small JSON file beside
    its checkpoints ({"seconds": {step: seconds}}), so that a run stopped and resumed in another
    process still reports its whole cost.

    Args:
        path: the file; written aside and renamed, so a kill leaves the previous version.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def read(self):
        """{step: seconds} recorded so far (empty when the file does not exist)."""
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text())
        if "iteration" in data:  # the one-step form of quality_table.py before the Clock
            return {int(data["iteration"]): float(data["seconds"])}
        return {int(step): float(seconds) for step, seconds in data["seconds"].items()}

    def at(self, step):
        """The seconds recorded at `step` (0 at step 0), or None."""
        return 0.0 if step == 0 else self.read().get(step)

    def record(self, step, seconds):
        entries = {**self.read(), step: seconds}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        aside = self.path.with_name(self.path.name + ".tmp")
        aside.write_text(json.dumps({"seconds": {str(k): round(v, 3)
                                                 for k, v in sorted(entries.items())}}))
        os.replace(aside, self.path)

    def callback(self, every, before):
        """A keras callback that records `before` plus the seconds since its fit began at every
        `every`-th step."""
        import keras

        clock = self

        class Ticking(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.started = time.time()

            def on_train_batch_end(self, batch, logs=None):
                step = int(self.model.optimizer.iterations.numpy())
                if step % every == 0:
                    clock.record(step, before + time.time() - self.started)

        return Ticking()


def threads():
    """TensorFlow's intra-op threads in this process: TF_NUM_INTRAOP_THREADS, else "default".

    Recorded with each entry beside the load: a network trained with one thread does its sums in
    another order than one with two (bench/threads.py), so its last digits may differ.
    """
    return os.environ.get("TF_NUM_INTRAOP_THREADS") or "default"


def command(script, argv, omit=()):
    """The command that runs bench/`script` with `argv` (None: this process's own arguments),
    less the flags in `omit` (e.g. one that only rewrites the docs)."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a not in omit]
    return " ".join(["scripts/m3d-env run python", f"bench/{script}", *args])


def command_line(script, argv, started):
    """'Command: `...` (commit, machine, load average at the end, minutes)' for a docs section.

    `script` and `argv` as in `command`; `started` the time.time() at which the measurement began.
    """
    return (f"Command: `{command(script, argv)}` (commit {commit()}, {machine()}, load average "
            f"{os.getloadavg()[0]:.1f} at the end, {(time.time() - started) / 60:.0f} min)")


def write_section(path, name, text):
    """Puts `text` between `<!-- name:begin -->` and `<!-- name:end -->` in the file at `path`.

    The markers and what lies between them are replaced when present; otherwise the section is
    appended at the end. The file is replaced atomically (written aside, then renamed).
    """
    path = pathlib.Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old and old.index(begin) < old.index(end):
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    aside = path.with_name(f".{path.name}.writing")
    aside.write_text(new)
    os.replace(aside, path)


def shown(path):
    """`path` as a ledger records it: relative to the repository when inside it (the sets and
    checkpoints beside the ledger are committed with it and read on other machines, in other
    clones), else absolute."""
    path = pathlib.Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def drop_recorded(directory):
    """Removes the checkpoints of work whose line is now in the ledger (`directory`), and their
    parent folder once it holds no other work's."""
    directory = pathlib.Path(directory)
    shutil.rmtree(directory)
    if not any(directory.parent.iterdir()):
        directory.parent.rmdir()


def mean_std(values):
    """(mean, population std) of a non-empty list of numbers."""
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5

"""Checkpoints of a running condensation, for exact resume.

A checkpoint holds the stored pixels, the optimiser's state (momentum buffers
and its iteration counter) and a `run.json` with the settings that made it.
Nothing else is needed: every random draw of M3DCondenser is a function of
(seed, iteration), and `balanced_batches(..., start=iteration)` continues the
real-data stream where it stopped, so a resumed run ends bit-identical to an
uninterrupted one.

    hooks = [CheckpointCallback(directory, run_settings, every=100)]
    ... later, in a new process ...
    condenser = build_condenser(...); condenser.compile(...)
    step = restore_checkpoint(condenser, directory)
"""

import json
import os
import pathlib
import re
import shutil

import keras
import numpy as np
import tensorflow as tf

from m3d_tf import distribute
from m3d_tf.checks import positive_int

RUN_FILE = "run.json"


def _checkpoint(condenser):
    if getattr(condenser, "optimizer", None) is None:
        raise ValueError("compile() the condenser before checkpointing or restoring it.")
    if not condenser.optimizer.built:
        condenser.optimizer.build([condenser.pixels])
    return tf.train.Checkpoint(
        pixels=condenser.pixels, initialized=condenser.initialized,
        optimizer=condenser.optimizer,
    )


def read_run(directory):
    """The settings stored with the checkpoints in `directory` (a dict).

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: run.json is not valid JSON.
    """
    path = pathlib.Path(directory) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint in {directory} ({RUN_FILE} is missing); run without --resume "
            "to start a new condensation."
        )
    try:
        run = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); delete {directory} to start over, or start a "
            "new --out."
        ) from None
    if not isinstance(run, dict):
        raise ValueError(
            f"{path} holds no JSON object; delete {directory} to start over, or start a new --out."
        )
    return run


def _latest(directory):
    """The latest complete checkpoint's path prefix (ckpt-N) in `directory`.

    Raises:
        FileNotFoundError: no checkpoint yet (also after a kill before the first: the directory
            must be deleted, or --resume keeps failing).
        ValueError: the state file naming the latest checkpoint is damaged.
    """
    how = f"delete {directory} to start over, or start a new --out"
    state = pathlib.Path(directory) / "checkpoint"  # the name of the latest, by CheckpointManager
    try:
        latest = tf.train.latest_checkpoint(str(directory))
    except (tf.errors.OpError, ValueError) as error:
        raise ValueError(f"{state} cannot be read ({_first_line(error)}); {how}.") from None
    if latest is None and state.exists():  # TensorFlow reads a damaged state file as none
        raise ValueError(f"{state} cannot be read (it names no checkpoint); {how}.")
    if latest is None:
        raise FileNotFoundError(
            f"no checkpoint in {directory} yet (its run stopped before the first); delete "
            f"{directory} and run without --resume to start a new condensation."
        )
    return latest


def restore_checkpoint(condenser, directory):
    """Restores the latest checkpoint of `directory` into a compiled condenser.

    Returns:
        int, the iteration the checkpoint was taken at.

    Raises:
        FileNotFoundError: `directory` holds no checkpoint.
        ValueError: the checkpoint is corrupt or truncated, belongs to another condenser, or
            holds pixels that are not finite numbers in [0, 1]; the message names it and says
            how to recover.
    """
    checkpoint = _checkpoint(condenser)
    how = f"delete {directory} to start over, or start a new --out"
    latest = _latest(directory)
    try:
        checkpoint.restore(latest).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
        raise ValueError(
            f"checkpoint {latest} is corrupt, truncated or of another condenser "
            f"({_first_line(error)}); {how}."
        ) from None
    _check_pixels(condenser.pixels.numpy(), latest, how)
    return int(condenser.optimizer.iterations.numpy())


def _first_line(error):
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", text.strip())  # TF's "{{function_node ...}}"
    return text.splitlines()[0] if text else type(error).__name__


def _check_pixels(pixels, latest, how):
    """Restored pixels must be finite and in [0, 1], as the condenser's constraint keeps them."""
    bad = int(pixels.size - np.isfinite(pixels).sum())
    if bad:
        raise ValueError(f"checkpoint {latest} holds {bad} NaN or infinite pixels; {how}.")
    if pixels.min() < 0.0 or pixels.max() > 1.0:
        raise ValueError(
            f"checkpoint {latest} holds pixels in [{pixels.min():g}, {pixels.max():g}], not "
            f"[0, 1]; {how}."
        )


def latest_step(directory):
    """The iteration of the latest checkpoint in `directory`, without restoring it.

    CheckpointCallback numbers every checkpoint by its iteration (ckpt-<iteration>), so a caller
    can say where a resume starts (and start its TensorBoard steps there) before building.

    Raises:
        FileNotFoundError: `directory` holds no checkpoint.
    """
    return int(_latest(directory).rsplit("-", 1)[1])


class CheckpointCallback(keras.callbacks.Callback):
    """Saves pixels + optimiser state every `every` iterations and at the end.

    Under MultiWorkerMirroredStrategy only the chief writes: every worker holds the same
    mirrored values, and a resume restores them on every worker from the chief's directory.

    Args:
        directory: checkpoint directory (created if missing).
        run: JSON-serialisable settings of the run, written to run.json so a
            resume can check it continues the same run.
        every: iterations between checkpoints.
        max_to_keep: checkpoints kept (older ones are deleted).

    Raises (from fit):
        OSError: a checkpoint could not be written (a full disk, a file size limit); the message
            names the iteration and the directory, and the earlier checkpoints are left whole.
    """

    def __init__(self, directory, run, *, every=100, max_to_keep=2):
        super().__init__()
        positive_int("every", every)
        self.directory = pathlib.Path(directory)
        self.run = run
        self.every = every
        self.max_to_keep = max_to_keep
        self._manager = None

    def on_train_begin(self, logs=None):
        if not distribute.is_writer(self.model.distribute_strategy):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / f".{RUN_FILE}.tmp"
        temporary.write_text(json.dumps(self.run, indent=2, sort_keys=True))
        os.replace(temporary, self.directory / RUN_FILE)
        self._manager = tf.train.CheckpointManager(
            _checkpoint(self.model), str(self.directory), max_to_keep=self.max_to_keep
        )

    def _save(self):
        if self._manager is None:  # a non-chief worker
            return
        step = int(self.model.optimizer.iterations.numpy())
        if self._manager.latest_checkpoint == os.path.join(str(self.directory), f"ckpt-{step}"):
            return
        kept = self._manager.latest_checkpoint
        try:
            self._manager.save(checkpoint_number=step)
        except (tf.errors.OpError, OSError) as error:
            # The manager writes into ckpt-N_temp and records a checkpoint only once it is
            # whole, so the earlier ones are intact; only the partial directory is ours to remove.
            shutil.rmtree(self.directory / f"ckpt-{step}_temp", ignore_errors=True)
            intact = ("no earlier checkpoint" if kept is None else
                      f"the latest complete checkpoint, {os.path.basename(kept)}, is intact")
            raise OSError(
                f"could not write the checkpoint of iteration {step} to {self.directory} "
                f"({_first_line(error)}); {intact}. Free space there (or checkpoint elsewhere), "
                "then resume from it: `m3d condense ... --resume`, or recipes.condense(..., "
                "resume_from=the directory)."
            ) from error

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) % self.every == 0:
            self._save()

    def on_train_end(self, logs=None):
        self._save()

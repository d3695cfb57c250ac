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

import keras
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
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete {directory} to start over.")


def _latest(directory):
    """The latest complete checkpoint's path prefix (ckpt-N) in `directory`."""
    latest = tf.train.latest_checkpoint(str(directory))
    if latest is None:  # also after a kill before the first checkpoint: delete, or --resume fails
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
        ValueError: the latest checkpoint is corrupt, truncated or of another condenser.
    """
    checkpoint = _checkpoint(condenser)
    latest = _latest(directory)
    try:
        checkpoint.restore(latest).assert_existing_objects_matched()
    # TensorFlow's reader raises OpError subclasses, IndexError ("Read less bytes than
    # requested") or AssertionError (objects missing), each with a multi-line message.
    except (tf.errors.OpError, IndexError, ValueError, AssertionError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ValueError(
            f"checkpoint {latest} is corrupt or truncated ({reason}); delete {directory} and "
            "run without --resume to start over."
        ) from None
    return int(condenser.optimizer.iterations.numpy())


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
        if self._manager.latest_checkpoint != os.path.join(str(self.directory), f"ckpt-{step}"):
            self._manager.save(checkpoint_number=step)

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) % self.every == 0:
            self._save()

    def on_train_end(self, logs=None):
        self._save()

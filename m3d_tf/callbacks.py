"""TensorBoard logging of a condensation run: MMD terms, learning rate, image grids, accuracy.

`TensorBoardCallback` writes, with tf.summary, under one log directory:

    mmd/total, mmd/<term>   the logged "mmd" and "mmd_<term>" values (one term per kernel
                            width, e.g. mmd/gauss_x0.25), every `scalar_every` steps
    learning_rate           the pixel learning rate used by that step
    synthetic/grid          the stored images, one row per class (m3d_tf.io.image_grid), at the
                            start, every `image_every` steps and at the end
    synthetic/decoded       the same for the decoded images, when decoded=True
    eval/accuracy_mean, eval/accuracy_std, eval/summary
                            final test accuracies of fresh networks (`log_evaluation`)

Under MultiWorkerMirroredStrategy only the chief writes; the other workers log nothing.
Steps count train batches (condensation iterations) from `initial_step`, so a resumed run
continues the curves of the interrupted one.

Example:
    board = TensorBoardCallback("runs/fmnist", class_names=info.class_names, image_every=100)
    condenser.fit(ds, steps_per_epoch=1000, epochs=1, callbacks=[board])
    board.log_evaluation(accuracies)
"""

import keras
import numpy as np
import tensorflow as tf

from m3d_tf import distribute, io
from m3d_tf.checks import positive_int


def log_evaluation(log_dir, accuracies, *, step, name=None):
    """Writes final evaluation accuracies: mean and std scalars and a Markdown table.

    Args:
        log_dir: TensorBoard log directory.
        accuracies: sequence of the final test accuracies of N runs, fractions in [0, 1].
        step: step to log at (usually the last condensation iteration).
        name: None for tags "eval/accuracy_mean", "eval/accuracy_std", "eval/summary"; a name
            (e.g. an architecture) gives "eval/<name>/accuracy_mean", ...

    Returns:
        (mean, std) as floats; std is NumPy's population std (ddof=0), as DM reports it.

    Raises:
        ValueError: no accuracies, or one outside [0, 1].
    """
    values = np.asarray(accuracies, np.float64).reshape(-1)
    if values.size == 0 or not np.all((values >= 0) & (values <= 1)):
        raise ValueError(
            "log_evaluation needs one or more accuracies in [0, 1] (fractions, not percent). "
            f"Received {[round(v, 4) for v in values.tolist()]}."
        )
    mean, std = float(values.mean()), float(values.std())
    prefix = "eval" if name is None else f"eval/{name}"
    rows = [f"| {i + 1} | {100 * v:.2f} |" for i, v in enumerate(values)]
    rows.append(f"| mean ± std | {100 * mean:.2f} ± {100 * std:.2f} |")
    table = "\n".join(["| run | accuracy (%) |", "|---|---|", *rows])
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.scalar(f"{prefix}/accuracy_mean", mean, step=step)
        tf.summary.scalar(f"{prefix}/accuracy_std", std, step=step)
        tf.summary.text(f"{prefix}/summary", table, step=step)
    writer.close()
    return mean, std


class TensorBoardCallback(keras.callbacks.Callback):
    """Logs a condensation run to TensorBoard (see the module docstring for the tags).

    The model must provide synthetic_images() -> float32 (N, H, W, ch) in [0, 1] and
    synthetic_labels() -> int (N,) (and decoded_images()/decoded_labels() for decoded=True),
    as M3DCondenser does.

    Args:
        log_dir: directory for the event files (created if missing).
        class_names: None or one name per class, written left of each grid row. Without names
            the number of rows is the largest label + 1.
        scalar_every: write the scalars every this many steps.
        image_every: write the grids every this many steps (and at the start and the end).
        decoded: also write "synthetic/decoded".
        initial_step: the step the run starts from (a resumed run's iteration).

    Raises:
        ValueError: a non-positive interval, a negative initial_step, or (at the start of
            training) fewer class names than classes.
    """

    def __init__(self, log_dir, *, class_names=None, scalar_every=1, image_every=100,
                 decoded=False, initial_step=0):
        super().__init__()
        self.log_dir = str(log_dir)
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.scalar_every = positive_int("scalar_every", scalar_every)
        self.image_every = positive_int("image_every", image_every)
        self.decoded = bool(decoded)
        if isinstance(initial_step, bool) or not isinstance(initial_step, (int, np.integer)) \
                or initial_step < 0:
            raise ValueError(
                f"initial_step must be an integer >= 0. Received initial_step={initial_step!r}."
            )
        self.step = int(initial_step)
        self._writer = None
        self._learning_rate = None
        self._last_grid_step = None
        self._writes = True

    def _num_classes(self, labels):
        num_classes = int(np.max(labels)) + 1
        if self.class_names is None:
            return num_classes
        if len(self.class_names) < num_classes:
            raise ValueError(
                f"TensorBoardCallback got {len(self.class_names)} class names but the synthetic "
                f"labels reach class {num_classes - 1}; pass one name per class."
            )
        return len(self.class_names)

    def _write_grids(self):
        images, labels = self.model.synthetic_images(), np.asarray(self.model.synthetic_labels())
        num_classes = self._num_classes(labels)
        grids = {"synthetic/grid": (images, labels)}
        if self.decoded:
            grids["synthetic/decoded"] = (self.model.decoded_images(), self.model.decoded_labels())
        with self._writer.as_default():
            for tag, (images, labels) in grids.items():
                grid = io.image_grid(images, labels, num_classes, class_names=self.class_names)
                tf.summary.image(tag, grid[None], step=self.step)
        self._last_grid_step = self.step

    def on_train_begin(self, logs=None):
        self._writes = distribute.is_writer(self.model.distribute_strategy)
        if not self._writes:
            return
        self._writer = tf.summary.create_file_writer(self.log_dir)
        self._write_grids()

    def on_train_batch_begin(self, batch, logs=None):
        if not self._writes:
            return
        # Read before the step: after it, a schedule already gives the next step's rate.
        if (self.step + 1) % self.scalar_every == 0:
            # Under MirroredStrategy the rate is a MirroredVariable, which has no __float__ and
            # which keras.ops.convert_to_tensor returns unchanged; tf reads its value.
            rate = self.model.optimizer.learning_rate
            self._learning_rate = float(tf.convert_to_tensor(rate))

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if not self._writes:
            return
        if self.step % self.scalar_every == 0:
            with self._writer.as_default():
                for key, value in (logs or {}).items():
                    if key == "mmd":
                        tf.summary.scalar("mmd/total", float(value), step=self.step)
                    elif key.startswith("mmd_"):
                        tf.summary.scalar(f"mmd/{key[4:]}", float(value), step=self.step)
                tf.summary.scalar("learning_rate", self._learning_rate, step=self.step)
        if self.step % self.image_every == 0:
            self._write_grids()

    def on_train_end(self, logs=None):
        if not self._writes:
            return
        if self._last_grid_step != self.step:
            self._write_grids()
        self._writer.close()

    def log_evaluation(self, accuracies, *, name=None):
        """`log_evaluation` into this run's log directory at its last step; returns (mean, std)."""
        return log_evaluation(self.log_dir, accuracies, step=self.step, name=name)

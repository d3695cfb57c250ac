"""Judging a synthetic set: train fresh networks on it, test them on the real test split.

A condensed set is worth what a network trained from scratch on it scores on real test data.
`evaluate` trains `runs` freshly initialised networks (one seed each) on the decoded synthetic
images under one of two published protocols (docs m3d_reference.md section 6; never compare
numbers across them) and reports the test accuracy of the network as it is after its LAST epoch,
mean and std over runs. The released M3D and IDC code keep the best epoch on the test split; we
never look at the test split before the end. With `validation=(images, labels)` (carved from the
real training data by the caller) the epoch is chosen on that split instead, and the chosen
model's test accuracy is reported.

Protocols (PROTOCOLS; both SGD lr 0.01, momentum 0.9, PyTorch-style coupled weight decay 5e-4,
cross-entropy, the set reshuffled every epoch and cut into batches, the last one smaller):
- "dm": DM's `evaluate_synset` (VICO-UoE/DatasetCondensation utils.py): batch 256, lr x0.1 from
  epoch epochs // 2, DSA 'color_crop_cutout_flip_scale_rotate' drawn per image on every batch.
  Differences, on purpose: DM runs epochs + 1 epochs, drops the lr after epoch epochs // 2 + 1 and
  re-creates the optimiser there (momentum restarts from zero); we run exactly `epochs`, drop at
  epochs // 2 and keep the momentum, so both protocols share one schedule rule.
- "idc": IDC's `train` (snu-mllab/Efficient-Dataset-Condensation train.py, argument.py), which
  M3D reuses: batch 64, MultiStepLR x0.2 at 2 * epochs // 3 and 5 * epochs // 6, DSA
  'color_crop_flip_scale_rotate' per image (the DM strategy without cutout), then CutMix with
  probability 0.5 (IDC's value for Fashion-MNIST, MNIST, SVHN and CIFAR; 1.0 for ImageNet):
  lambda ~ Beta(1, 1), a box of side int(size * sqrt(1 - lambda)) // 2 * 2 pasted from a shuffled
  copy of the batch, loss = r CE(y) + (1 - r) CE(y_partner) with r the unpasted area fraction.

Inputs are normalised with the dataset's per-channel mean and std (the same normalisation the
condenser used) before the augmentation, as in DM and IDC. Randomness is a function of
(seed, run, epoch, batch): stateless TF ops draw the shuffles, augmentations and CutMix boxes, and
the network of run r is built from an int derived from (seed, r), so a seed repeats its accuracy
exactly on CPU, and an evaluation given a `checkpoint_dir` goes on after a stop from its last
checkpoint to the accuracies an uninterrupted one reaches.

Speed: one epoch is one tf.function call looping over the batches in-graph, traced once per
evaluation (a few seconds) and reused by every run. ConvNet-3 on Fashion-MNIST, measured on the
2-core machines as CPU seconds per epoch (about twice the wall time on an idle machine), TF 2.21:
100 images (IPC 10, factor 1) 0.42 for both protocols; 400 images (IPC 10, factor 2) 1.6 in
float32 and 1.1 with compute_dtype="bfloat16"; testing on 10,000 images 13.5 (9.0 in bfloat16).
So 1,000 epochs on 400 images take about 14 minutes per run.

Example:
    synthetic = m3d_tf.io.load_set("out/fmnist_ipc10")
    x_test, y_test, _ = m3d_tf.data.load_arrays("fashion_mnist", "test")
    result = evaluate_set(synthetic, x_test, y_test, protocol="idc", epochs=300, runs=3)
    print(result)  # "convnet, idc, 300 epochs, 3 runs: <mean> +- <std> %"
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from m3d_tf import augment, networks
from m3d_tf.checks import choice, nonnegative_int, per_channel, positive_int


# === Protocols ===


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a fresh network is trained on a synthetic set.

    Attributes:
        name: registry key.
        batch_size: images per SGD step.
        milestones: ((numerator, denominator), ...): the learning rate is multiplied by `gamma` at
            every epoch numerator * epochs // denominator (integer division, as IDC's MultiStepLR
            milestones).
        gamma: the factor applied at each milestone.
        augmentation: an m3d_tf.augment strategy applied per image on every batch.
        cutmix_prob: probability that a batch is CutMixed (0: never).
        learning_rate, momentum, weight_decay: SGD (weight decay coupled, PyTorch-style).
    """

    name: str
    batch_size: int
    milestones: tuple
    gamma: float
    augmentation: str
    cutmix_prob: float
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def milestone_epochs(self, epochs):
        """Epochs (0-based) from which each drop applies, e.g. (666, 833) for idc and 1000."""
        return tuple(n * epochs // d for n, d in self.milestones)

    def learning_rate_at(self, epoch, epochs):
        """Learning rate of 0-based `epoch` out of `epochs`: lr * gamma ** (milestones passed)."""
        drops = sum(epoch >= m for m in self.milestone_epochs(epochs))
        return self.learning_rate * self.gamma**drops


PROTOCOLS = {
    "dm": Protocol(
        "dm", batch_size=256, milestones=((1, 2),), gamma=0.1,
        augmentation="color_crop_cutout_flip_scale_rotate", cutmix_prob=0.0,
    ),
    "idc": Protocol(
        "idc", batch_size=64, milestones=((2, 3), (5, 6)), gamma=0.2,
        augmentation="color_crop_flip_scale_rotate", cutmix_prob=0.5,
    ),
}
ARCHITECTURES = tuple(networks.NETWORKS)
_DTYPE_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


# === PyTorch-style SGD ===


class CoupledSGD(keras.optimizers.Optimizer):
    """SGD with momentum and weight decay added to the gradient, as torch.optim.SGD does it.

    For every variable w with gradient g (PyTorch, dampening 0, no Nesterov):
        g' = g + weight_decay * w
        b  = momentum * b + g'          (b starts at 0, so the first step has b = g')
        w  = w - learning_rate * b
    Keras' own `weight_decay` is decoupled (w -= lr * wd * w beside the update) and Keras' SGD
    folds the learning rate into the velocity, which differs from PyTorch once the rate changes.
    Applied to every trainable variable (biases and norm parameters too), as DM and IDC pass
    `net.parameters()`.

    Args:
        learning_rate: float or schedule.
        momentum: float in [0, 1).
        weight_decay: float >= 0, the coupled L2 coefficient.
        **kwargs: other keras.optimizers.Optimizer arguments (name, clipnorm, ...).

    Example:
        >>> optimizer = CoupledSGD(0.01, momentum=0.9, weight_decay=5e-4)
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, weight_decay=5e-4, name="coupled_sgd",
                 **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1). Received momentum={momentum!r}.")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0. Received weight_decay={weight_decay!r}.")
        self.momentum = float(momentum)
        self.coupled_weight_decay = float(weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = keras.ops.cast(learning_rate, variable.dtype)
        gradient = keras.ops.cast(gradient, variable.dtype)
        gradient = gradient + self.coupled_weight_decay * variable
        buffer = self.momentums[self._get_variable_index(variable)]
        self.assign(buffer, self.momentum * buffer + gradient)
        self.assign_sub(variable, learning_rate * buffer)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay=self.coupled_weight_decay)
        return config


# === CutMix (Yun et al. 2019, as IDC applies it) ===


def cutmix_box(lam, center, height, width):
    """IDC's `rand_bbox`: the box pasted for a mixing coefficient `lam` at `center`.

    cut = int(side * sqrt(1 - lam)) per axis; the box spans [c - cut // 2, c + cut // 2) clipped
    to the image, so its side is 2 * (cut // 2) before clipping.

    Args:
        lam: float32 scalar in [0, 1].
        center: int32 (2,) as (cy, cx), cy in [0, height), cx in [0, width).
        height, width: Python ints.

    Returns:
        int32 (4,) as (y0, y1, x0, x1), rows y0 <= y < y1 and columns x0 <= x < x1.
    """
    cut = tf.sqrt(1.0 - tf.cast(lam, tf.float32))
    cut_h = tf.cast(tf.floor(height * cut), tf.int32) // 2
    cut_w = tf.cast(tf.floor(width * cut), tf.int32) // 2
    cy, cx = center[0], center[1]
    return tf.stack([
        tf.clip_by_value(cy - cut_h, 0, height), tf.clip_by_value(cy + cut_h, 0, height),
        tf.clip_by_value(cx - cut_w, 0, width), tf.clip_by_value(cx + cut_w, 0, width),
    ])


def cutmix(images, partner, box):
    """Pastes the box of image partner[i] into image i.

    Args:
        images: float (N, H, W, C).
        partner: int32 (N,), a permutation of the batch.
        box: int32 (4,) as (y0, y1, x0, x1), from `cutmix_box`; an empty box changes nothing.

    Returns:
        (mixed float (N, H, W, C), ratio float32 scalar): ratio = 1 - box area / (H * W), the
        weight of each image's own label in the loss (the partner's label gets 1 - ratio).
    """
    _, height, width, _ = images.shape
    rows = tf.range(height)
    cols = tf.range(width)
    inside = ((rows >= box[0]) & (rows < box[1]))[:, None] & ((cols >= box[2]) & (cols < box[3]))
    mixed = tf.where(inside[None, :, :, None], tf.gather(images, partner), images)
    area = tf.cast((box[1] - box[0]) * (box[3] - box[2]), tf.float32)
    return mixed, 1.0 - area / (height * width)


def draw_cutmix(seed, batch_size, height, width, prob):
    """Draws one batch's CutMix: (partner permutation int32 (N,), box int32 (4,)).

    With probability 1 - prob the box is empty (no mixing). lam ~ Beta(1, 1) = U(0, 1), the
    centre is uniform over pixels, the partner order a uniform permutation (IDC's randperm).

    Args:
        seed: int32/int64 (2,). batch_size: int or scalar int32 tensor.
        height, width: Python ints. prob: Python float in [0, 1].
    """
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    use = tf.random.stateless_uniform([], seeds[0]) < prob
    lam = tf.random.stateless_uniform([], seeds[1])
    center = tf.stack([
        tf.random.stateless_uniform([], seeds[2], 0, height, dtype=tf.int32),
        tf.random.stateless_uniform([], seeds[3], 0, width, dtype=tf.int32),
    ])
    partner = tf.argsort(tf.random.stateless_uniform(tf.reshape(batch_size, (1,)), seeds[4]))
    box = tf.where(use, cutmix_box(lam, center, height, width), tf.zeros(4, tf.int32))
    return tf.cast(partner, tf.int32), box


# === Results and progress ===


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Test accuracies of `runs` networks trained on one set.

    Attributes:
        mean, std: over runs of `accuracies`, fractions in [0, 1]; std is the population std
            (ddof=0), as DM and IDC report it.
        accuracies: per run, the reported model's test accuracy: the final model, or with a
            validation split the model of the selected epoch.
        arch, protocol, epochs, seed: what was run.
        final_accuracies: per run, the test accuracy after the last epoch (== accuracies without
            validation).
        selected_epochs: per run, the 1-based epoch chosen on the validation split, or None.
        seconds_per_epoch: median wall time of a training epoch (mean over runs).
        compute_dtype: the network's compute dtype, "float32" or "bfloat16".
    """

    mean: float
    std: float
    accuracies: tuple
    arch: str
    protocol: str
    epochs: int
    seed: int
    final_accuracies: tuple
    selected_epochs: tuple = None
    seconds_per_epoch: float = 0.0
    compute_dtype: str = "float32"

    def __str__(self):
        runs = len(self.accuracies)
        chosen = "" if self.selected_epochs is None else ", epoch chosen on validation"
        return (f"{self.arch}, {self.protocol}, {self.epochs} epochs, {runs} runs{chosen}: "
                f"{100 * self.mean:.2f} +- {100 * self.std:.2f} %")


@dataclasses.dataclass(frozen=True)
class Progress:
    """Where an evaluation is, passed to the `progress` hook after every epoch.

    Attributes:
        run, runs: 1-based current run and number of runs.
        epoch, epochs: 1-based epochs finished in this run, and per run.
        seconds: wall time since the evaluation started.
        loss: mean training loss of the epoch just finished.
    """

    run: int
    runs: int
    epoch: int
    epochs: int
    seconds: float
    loss: float

    @property
    def fraction(self):
        """Share of all epochs of all runs finished, in [0, 1]."""
        return ((self.run - 1) * self.epochs + self.epoch) / (self.runs * self.epochs)

    @property
    def eta(self):
        """Seconds left, extrapolated from the time so far."""
        return self.seconds * (1.0 - self.fraction) / max(self.fraction, 1e-12)


class ProgressPrinter:
    """A one-line progress bar with ETA, redrawn in place: a ready `progress` hook.

    Args:
        stream: where to write (default sys.stderr).
        width: characters of the bar.
        every: redraw every this many epochs (the last epoch of a run always redraws).

    Example:
        >>> evaluate(..., progress=ProgressPrinter())
        run 2/3 epoch  120/300 [##########----------]  47% loss 0.812  ETA 1m05s
    """

    def __init__(self, stream=None, width=20, every=1):
        self.stream = stream
        self.width = width
        self.every = every

    def __call__(self, p):
        if p.epoch % self.every and p.epoch != p.epochs:
            return
        stream = self.stream or sys.stderr
        filled = int(round(self.width * p.fraction))
        eta = int(round(p.eta))
        stream.write(
            f"\rrun {p.run}/{p.runs} epoch {p.epoch:>4}/{p.epochs} "
            f"[{'#' * filled}{'-' * (self.width - filled)}] {100 * p.fraction:3.0f}% "
            f"loss {p.loss:.3f}  ETA {eta // 60}m{eta % 60:02d}s"
        )
        if p.run == p.runs and p.epoch == p.epochs:
            stream.write("\n")
        stream.flush()


# === Boundary checks ===


def as_float_images(images, where):
    """float32 (N, H, W, C) in [0, 1] from uint8 (divided by 255) or float images."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"{where} must be (N, H, W, C) with N >= 1. Received shape {images.shape}."
        )
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"{where} must be uint8 or float in [0, 1]. Received dtype {images.dtype}."
        )
    bad = int(images.size - np.isfinite(images).sum())
    if bad:
        raise ValueError(
            f"{where} hold {bad} NaN or infinite values; give finite pixels in [0, 1] (re-create "
            "or clean the images)."
        )
    low, high = float(images.min()), float(images.max())
    if not (0.0 <= low and high <= 1.0):
        raise ValueError(
            f"{where} must be unnormalised pixels in [0, 1]; received values in "
            f"[{low:g}, {high:g}]. evaluate normalises with mean/std itself."
        )
    return images.astype(np.float32, copy=False)


def _label_array(labels, count, where):
    labels = np.asarray(labels)
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{where} must be integers of shape ({count},). Received {labels.dtype} {labels.shape}."
        )
    return labels


def _int_labels(labels, count, num_classes, where):
    labels = _label_array(labels, count, where)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"{where} lie in [{labels.min()}, {labels.max()}] but num_classes={num_classes}; "
            "evaluate against data with the same classes."
        )
    return labels.astype(np.int32)


def check_choice(name, value, registry):
    """Returns registry[value] or raises ValueError listing the valid names (checks.choice)."""
    return registry[choice(name, value, registry)]


# === A network's checkpoint while it trains ===


def _digest(*arrays):
    """sha256 of arrays' dtypes, shapes and bytes: names the data a network trains on."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def run_checkpoint_path(directory, run):
    """The file in which run `run` of an evaluation with checkpoint_dir=`directory` is kept."""
    return pathlib.Path(directory) / f"run-{run}.npz"


def checkpointed(directory, run):
    """(epochs finished, seconds of training so far) of run `run` saved in `directory`, or None.

    For callers that report what a resumed evaluation cost or where it goes on from; the
    checkpoint is checked against the evaluation only when `evaluate` resumes it.
    """
    path = run_checkpoint_path(directory, run)
    if not path.exists():
        return None
    meta = _RunCheckpoint.read(path, run)[0]
    return meta["epoch"], meta["seconds"]


class _RunCheckpoint:
    """One run's training state, saved every `every` epochs and after the last one.

    Saved in one .npz (written under a temporary name and renamed, so a stop mid-write leaves
    the previous checkpoint whole): the epochs finished, the network's weights, the optimiser's
    momentum buffers and step count, the seconds of every epoch so far, with validation the best
    checked epoch (accuracy, epoch, weights), and a fingerprint of everything the training
    depends on, compared on resume. Shuffles, augmentations and CutMix boxes are functions of
    (seed, run, epoch, batch), so a resumed run ends with the weights of an uninterrupted one.
    """

    def __init__(self, directory, run, fingerprint, every):
        self.path = run_checkpoint_path(directory, run)
        self.run, self.fingerprint, self.every = run, fingerprint, every

    @staticmethod
    def read(path, run):
        """(metadata dict, {name: array}) of a checkpoint file; ValueError if unreadable."""
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
            meta = json.loads(str(arrays.pop("meta")))
            missing = {"epoch", "seconds", "epoch_seconds", "weights"} - set(meta)
            if missing:
                raise KeyError(f"no {', '.join(sorted(missing))}")
        except Exception as error:  # a torn or foreign file: say which and what to do
            raise ValueError(
                f"{path} is not a readable evaluation checkpoint ({type(error).__name__}: "
                f"{error}); delete it to train run {run} afresh."
            ) from None
        return meta, arrays

    def load(self):
        """The saved state of this run, or None; ValueError if it is another network's."""
        if not self.path.exists():
            return None
        meta, arrays = self.read(self.path, self.run)
        saved = meta.get("fingerprint", {})
        differ = sorted(k for k in set(saved) | set(self.fingerprint)
                        if saved.get(k) != self.fingerprint.get(k))
        if differ:
            raise ValueError(
                f"{self.path} holds the training of another network (it differs in "
                f"{', '.join(differ)}); give this evaluation its own checkpoint_dir, or delete "
                f"{self.path} to train run {self.run} afresh."
            )
        return meta, arrays

    def due(self, epoch, epochs):
        """Whether the state after `epoch` (1-based) is saved."""
        return epoch % self.every == 0 or epoch == epochs

    def save(self, trainer, epoch, seconds, best):
        weights = trainer.model.get_weights()
        arrays = {f"weight_{i}": w for i, w in enumerate(weights)}
        arrays.update({f"momentum_{i}": b.numpy()
                       for i, b in enumerate(trainer.optimizer.momentums)})
        if best[2] is not None:
            arrays.update({f"best_{i}": w for i, w in enumerate(best[2])})
        meta = {"fingerprint": self.fingerprint, "epoch": epoch, "seconds": float(sum(seconds)),
                "epoch_seconds": [float(s) for s in seconds],
                "iterations": int(trainer.optimizer.iterations.numpy()),
                "best_accuracy": best[0], "best_epoch": best[1], "weights": len(weights)}
        arrays["meta"] = np.array(json.dumps(meta))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.npz")
        with open(temporary, "wb") as f:
            np.savez(f, **arrays)
        os.replace(temporary, self.path)

    def restore(self, trainer, state):
        """Loads a saved state into `trainer` (reset to this run); (epoch, seconds, best)."""
        meta, arrays = state
        count = meta["weights"]
        trainer.model.set_weights([arrays[f"weight_{i}"] for i in range(count)])
        for i, buffer in enumerate(trainer.optimizer.momentums):
            buffer.assign(arrays[f"momentum_{i}"])
        trainer.optimizer.iterations.assign(meta["iterations"])
        best_weights = ([arrays[f"best_{i}"] for i in range(count)]
                        if meta["best_epoch"] is not None else None)
        best = (meta["best_accuracy"], meta["best_epoch"], best_weights)
        return meta["epoch"], list(meta["epoch_seconds"]), best


# === Training and testing one network ===


def run_seed(seed, run):
    """int seed of the network built for `run` of an evaluation seeded with `seed`."""
    return int(np.random.SeedSequence([seed, run]).generate_state(1)[0] >> 1)


class Trainer:
    """One network, its optimiser and the traced epoch and predict functions, reused over runs.

    Tracing the epoch (augmentation, CutMix, forward, backward) costs seconds, so it happens once
    per evaluation: `reset(run)` loads the initial weights that build_network gives for run r
    and zeroes the optimiser state, which is the same as building everything afresh.

    Args:
        arch, image_shape, num_classes: the network (networks.build_network).
        protocol: a Protocol. flip: allow flips in the augmentation.
        batch_size: images per step (the protocol's, at most the set size).
        seed: the evaluation seed; run r's network, shuffles, augmentations and CutMix boxes are
            functions of (seed, r, epoch, batch).
        compute_dtype: None (Keras' global dtype policy), "float32", or "bfloat16" (Keras'
            "mixed_bfloat16" policy for the network: float32 weights, bfloat16 matmuls and convs;
            the augmentation, loss and update stay float32).
    """

    def __init__(self, arch, image_shape, num_classes, protocol, *, flip, batch_size, seed,
                 compute_dtype=None):
        self.arch, self.image_shape, self.num_classes = arch, tuple(image_shape), num_classes
        self.protocol, self.flip, self.batch_size, self.seed = protocol, flip, batch_size, seed
        self.compute_dtype = compute_dtype
        self.model = self._build(0)
        self.optimizer = CoupledSGD(protocol.learning_rate, protocol.momentum,
                                    protocol.weight_decay)
        self.optimizer.build(self.model.trainable_variables)
        self.run = None
        spec = tf.TensorSpec([None, *self.image_shape], tf.float32)
        self.train_epoch = tf.function(
            self._train_epoch,
            input_signature=[spec, tf.TensorSpec([None], tf.int32), tf.TensorSpec([2], tf.int64)],
        )
        self.predict = tf.function(self._predict, input_signature=[spec])

    def reset(self, run):
        """Fresh initial weights of `run` (build_network seeded by run_seed) and optimiser."""
        self.model.set_weights(self._build(run_seed(self.seed, run)).get_weights())
        for buffer in self.optimizer.momentums:
            buffer.assign(tf.zeros_like(buffer))
        self.optimizer.iterations.assign(0)
        self.run = run

    def fit_epoch(self, images, labels, epoch, epochs):
        """Trains one epoch (0-based `epoch` of `epochs`) at the protocol's rate; mean loss."""
        self.optimizer.learning_rate = self.protocol.learning_rate_at(epoch, epochs)
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant([self.seed, self.run], tf.int64), tf.constant(epoch, tf.int64))
        return float(self.train_epoch(images, labels, seed))

    def accuracy(self, images, labels, batch_size):
        """Fraction of `images` (normalised) whose argmax logit is the label."""
        correct = 0
        for start in range(0, len(images), batch_size):
            predicted = self.predict(images[start:start + batch_size]).numpy()
            correct += int(np.sum(predicted == labels[start:start + batch_size]))
        return correct / len(images)

    def _build(self, seed):
        if self.compute_dtype is None:
            return networks.build_network(self.arch, self.image_shape, self.num_classes, seed=seed)
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(_DTYPE_POLICIES[self.compute_dtype])
        try:
            return networks.build_network(self.arch, self.image_shape, self.num_classes, seed=seed)
        finally:
            keras.config.set_dtype_policy(previous)

    def _predict(self, images):
        return tf.argmax(self.model(images, training=False), axis=-1, output_type=tf.int32)

    def _step(self, x, y, seed):
        protocol = self.protocol
        aug_seed, mix_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
        x = augment.augment_per_sample(x, aug_seed, protocol.augmentation, flip=self.flip)
        partner, ratio = None, 1.0
        if protocol.cutmix_prob > 0:
            partner, box = draw_cutmix(mix_seed, tf.shape(x)[0], x.shape[1], x.shape[2],
                                       protocol.cutmix_prob)
            x, ratio = cutmix(x, partner, box)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(x, training=True), tf.float32)
            loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True))
            if partner is not None:
                partner_loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
                    tf.gather(y, partner), logits, from_logits=True))
                loss = ratio * loss + (1.0 - ratio) * partner_loss
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    def _train_epoch(self, images, labels, seed):
        """A seeded shuffle cut into batches (the last one smaller), looped in-graph."""
        n = tf.shape(images)[0]
        batch = self.batch_size
        shuffle_seed = tf.random.experimental.stateless_fold_in(seed, tf.constant(0, tf.int64))
        order = tf.argsort(tf.random.stateless_uniform([n], shuffle_seed))
        total = tf.constant(0.0)
        for b in tf.range((n + batch - 1) // batch):
            index = order[b * batch:tf.minimum((b + 1) * batch, n)]
            step_seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(b, tf.int64) + 1)
            loss = self._step(tf.gather(images, index), tf.gather(labels, index), step_seed)
            total += loss * tf.cast(tf.shape(index)[0], tf.float32)
        return total / tf.cast(n, tf.float32)


def train_and_test(trainer, run, train, test, *, epochs, validation=None, validate_every=1,
                   eval_batch_size=500, progress=None, checkpoint=None):
    """Trains run `run` from its fresh initial weights and tests it.

    Args:
        trainer: a Trainer.
        run: 0-based run index.
        train, test, validation: (normalised float32 images, int32 labels); validation may be
            None, and so may test (then no accuracy is measured: the TFX Trainer module tests
            on its own split).
        epochs: int.
        validate_every: validation accuracy is measured after every this many epochs and after
            the last; the weights of the best (latest among ties) are kept.
        eval_batch_size: images per forward pass when testing.
        progress: None or callable(epoch (1-based), loss) after every epoch.
        checkpoint: None, or a _RunCheckpoint of this run: training goes on from its saved
            state when there is one, and the state is saved when it is due.

    Returns:
        (final test accuracy, reported test accuracy, selected epoch or None, seconds per epoch);
        without validation the reported accuracy is the final one.
    """
    trainer.reset(run)
    images, labels = tf.constant(train[0]), tf.constant(train[1])
    best = (-1.0, None, None)  # (validation accuracy, epoch, weights)
    seconds, first = [], 0
    state = None if checkpoint is None else checkpoint.load()
    if state is not None:
        first, seconds, best = checkpoint.restore(trainer, state)
    for epoch in range(first, epochs):
        start = time.perf_counter()
        loss = trainer.fit_epoch(images, labels, epoch, epochs)
        seconds.append(time.perf_counter() - start)
        if validation is not None and ((epoch + 1) % validate_every == 0 or epoch + 1 == epochs):
            accuracy = trainer.accuracy(*validation, eval_batch_size)
            if accuracy >= best[0]:
                best = (accuracy, epoch + 1, trainer.model.get_weights())
        if checkpoint is not None and checkpoint.due(epoch + 1, epochs):
            checkpoint.save(trainer, epoch + 1, seconds, best)
        if progress is not None:
            progress(epoch + 1, loss)
    final = None if test is None else trainer.accuracy(*test, eval_batch_size)
    per_epoch = float(np.median(seconds))  # the median ignores the epoch that traced
    if validation is None:
        return final, final, None, per_epoch
    trainer.model.set_weights(best[2])
    return final, trainer.accuracy(*test, eval_batch_size), best[1], per_epoch


# === Entry points ===


def evaluate(train_images, train_labels, test_images, test_labels, *, mean, std, protocol="idc",
             arch="convnet", runs=3, epochs=1000, seed=0, flip=True, num_classes=None,
             validation=None, validate_every=None, eval_batch_size=500, compute_dtype=None,
             progress=None, first_run=0, checkpoint_dir=None, checkpoint_every=None):
    """Trains `runs` fresh networks on a (decoded) synthetic set; their real test accuracy.

    Args:
        train_images: the decoded synthetic images, float (N, H, W, C) in [0, 1] (uint8 0..255 is
            divided by 255), e.g. `SyntheticSet.decoded()[0]` or a real subset.
        train_labels: int (N,).
        test_images, test_labels: the real test split, same (H, W, C), uint8 or float in [0, 1].
        mean, std: per-channel normalisation of the dataset (C floats each), the one the
            condenser used; applied to train, validation and test images.
        protocol: a key of PROTOCOLS, "idc" (M3D/IDC) or "dm".
        arch: a key of ARCHITECTURES: "convnet", "mlp", "alexnet", "vgg11", "resnet18".
        runs: number of networks (seeds); epochs: training epochs of each (published: 1000).
        seed: int; run r uses the seeds derived from (seed, r).
        flip: allow horizontal flips in the augmentation (False for digits).
        num_classes: default: the largest label in the train and test labels + 1.
        validation: None, or (images, labels) of a validation split carved from the real TRAINING
            data: the epoch with the best validation accuracy (checked every `validate_every`
            epochs and at the end; latest among ties) is selected and its test accuracy
            reported. The test split never influences what is reported.
        validate_every: default max(1, epochs // 20).
        eval_batch_size: images per forward pass when testing.
        compute_dtype: None (Keras' global dtype policy, float32 by default), "float32", or
            "bfloat16": the network's convs and matmuls in bfloat16 with float32 weights (Keras
            "mixed_bfloat16"), 1.5-2x faster on CPUs with AVX-512 BF16; not the published setting.
        progress: None or callable(Progress) called after every epoch (e.g. ProgressPrinter()).
        first_run: index of the first run: runs first_run .. first_run + runs - 1 are trained,
            so a long evaluation can be split into single runs (runs=1, first_run=r) that give
            the same accuracies as one call.
        checkpoint_dir: None, or a directory where each run's training state is saved (file
            run-<r>.npz) every `checkpoint_every` epochs and after its last: the same call after
            a stop goes on from there, to the accuracies an uninterrupted call gives, and a
            finished run is only tested again. The files stay when the call returns (delete the
            directory when its results are kept); a run's file from another evaluation
            (network, protocol, epochs, seed, dtype or data) is refused, never overwritten.
        checkpoint_every: epochs between checkpoints; default max(1, epochs // 20).

    Returns:
        EvalResult (accuracies are fractions in [0, 1]).

    Raises:
        ValueError: unknown protocol or arch, bad shapes, dtypes, pixel ranges or labels, a test
            split of another image shape or with classes the set lacks, bad mean/std or counts,
            or a checkpoint in checkpoint_dir that is unreadable or another evaluation's.

    Example:
        >>> images, labels = synthetic.decoded()
        >>> evaluate(images, labels, x_test, y_test, mean=info.mean, std=info.std, epochs=300)
    """
    chosen = check_choice("protocol", protocol, PROTOCOLS)
    check_choice("arch", arch, networks.NETWORKS)
    if compute_dtype is not None:
        check_choice("compute_dtype", compute_dtype, _DTYPE_POLICIES)
    runs = positive_int("runs", runs)
    nonnegative_int("first_run", first_run)
    nonnegative_int("seed", seed)
    epochs = positive_int("epochs", epochs)
    eval_batch_size = positive_int("eval_batch_size", eval_batch_size)
    every = max(1, epochs // 20)  # both defaults: 20 checks and checkpoints a run
    validate_every = positive_int("validate_every", every if validate_every is None
                                  else validate_every)
    checkpoint_every = positive_int("checkpoint_every", every if checkpoint_every is None
                                    else checkpoint_every)
    x_train = as_float_images(train_images, "train_images")
    x_test = as_float_images(test_images, "test_images")
    if x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"test_images have shape {x_test.shape[1:]} per image but the training set has "
            f"{x_train.shape[1:]}; evaluate a set against the dataset it was condensed from."
        )
    if num_classes is None:  # the labels' shape and dtype are checked before they are read
        num_classes = 1 + int(max(_label_array(train_labels, len(x_train), "train_labels").max(),
                                  _label_array(test_labels, len(x_test), "test_labels").max()))
    num_classes = positive_int("num_classes", num_classes)
    y_train = _int_labels(train_labels, len(x_train), num_classes, "train_labels")
    y_test = _int_labels(test_labels, len(x_test), num_classes, "test_labels")
    channels = x_train.shape[-1]
    mean = np.asarray(per_channel("mean", mean, channels), np.float32)
    std = np.asarray(per_channel("std", std, channels, positive=True), np.float32)
    missing = np.setdiff1d(np.arange(num_classes), y_train)
    if missing.size:
        raise ValueError(
            f"the training set has no image of class(es) {missing.tolist()} of {num_classes}; "
            "give at least one image per class."
        )
    if validation is not None:
        if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
            raise ValueError(
                "validation must be an (images, labels) pair of held-out real training data. "
                f"Received {type(validation).__name__}."
            )
        x_val = as_float_images(validation[0], "validation images")
        if x_val.shape[1:] != x_train.shape[1:]:
            raise ValueError(
                f"validation images have shape {x_val.shape[1:]} per image; expected "
                f"{x_train.shape[1:]} like the training set."
            )
        y_val = _int_labels(validation[1], len(x_val), num_classes, "validation labels")
        validation = ((x_val - mean) / std, y_val)

    train = ((x_train - mean) / std, y_train)
    test = ((x_test - mean) / std, y_test)
    trainer = Trainer(arch, x_train.shape[1:], num_classes, chosen, flip=flip,
                      batch_size=min(chosen.batch_size, len(x_train)), seed=seed,
                      compute_dtype=compute_dtype)
    fingerprint = None
    if checkpoint_dir is not None:
        fingerprint = {
            "arch": arch, "protocol": chosen.name, "epochs": epochs, "seed": seed,
            "batch_size": trainer.batch_size, "flip": bool(flip),
            "compute_dtype": trainer.model.compute_dtype, "num_classes": num_classes,
            "validate_every": None if validation is None else validate_every,
            "train": _digest(*train),
            "validation": None if validation is None else _digest(*validation),
        }
    started = time.perf_counter()
    finals, accuracies, selected, speeds = [], [], [], []
    for run in range(first_run, first_run + runs):
        def hook(epoch, loss, run=run):
            progress(Progress(run - first_run + 1, runs, epoch, epochs,
                              time.perf_counter() - started, loss))

        final, accuracy, epoch, speed = train_and_test(
            trainer, run, train, test, epochs=epochs, validation=validation,
            validate_every=validate_every, eval_batch_size=eval_batch_size,
            progress=None if progress is None else hook,
            checkpoint=None if checkpoint_dir is None else _RunCheckpoint(
                checkpoint_dir, run, {**fingerprint, "run": run}, checkpoint_every),
        )
        finals.append(final)
        accuracies.append(accuracy)
        selected.append(epoch)
        speeds.append(speed)
    return EvalResult(
        mean=float(np.mean(accuracies)), std=float(np.std(accuracies)),
        accuracies=tuple(accuracies), arch=arch, protocol=protocol, epochs=epochs, seed=seed,
        final_accuracies=tuple(finals),
        selected_epochs=None if validation is None else tuple(selected),
        seconds_per_epoch=float(np.mean(speeds)),
        compute_dtype=trainer.model.compute_dtype,
    )


def evaluate_set(synthetic_set, test_images, test_labels, **kwargs):
    """`evaluate` on a m3d_tf.io.SyntheticSet: decoded by its factor, normalised by its metadata.

    Args:
        synthetic_set: m3d_tf.io.SyntheticSet (e.g. from io.load_set).
        test_images, test_labels: the real test split of the set's dataset.
        **kwargs: `evaluate` keywords except mean, std and num_classes, which the set carries;
            flip defaults to the set's recorded choice (m3d_tf.io.set_flip).

    Raises:
        ValueError: as `evaluate`, or test data whose image shape or classes do not match the
            set's metadata.
    """
    meta = synthetic_set.metadata
    for key in ("mean", "std", "num_classes"):
        if key in kwargs:
            raise ValueError(f"evaluate_set takes {key} from the set's metadata; drop {key}=.")
    expected = tuple(meta["image_shape"])
    x_test = as_float_images(test_images, "test_images")
    if x_test.shape[1:] != expected:
        raise ValueError(
            f"test_images have shape {x_test.shape[1:]} per image but the set was condensed from "
            f"{meta['dataset']!r} images of shape {expected}; evaluate it against that dataset."
        )
    from m3d_tf import io  # at call time: io sits above evaluate's own imports

    kwargs.setdefault("flip", io.set_flip(meta))
    images, labels = synthetic_set.decoded()
    return evaluate(images, labels, x_test, test_labels, mean=meta["mean"], std=meta["std"],
                    num_classes=meta["num_classes"], **kwargs)

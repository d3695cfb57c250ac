"""M3DCondenser: a keras.Model whose weights are a synthetic image set.

The model owns nothing but the stored synthetic pixels. Its `train_step` draws a
random ConvNet (a new one every `ipm` iterations), embeds a batch of real images
(no gradient) and the decoded synthetic images of every class under the same
Siamese augmentation, and minimises the sum over classes of the multi-kernel
MMD^2 between the two feature sets (M3D, Zhang et al., AAAI 2024). With
`kernel="linear", ipm=1` the loss is exactly DM's squared mean difference
(Zhao & Bilen, WACV 2023).

`fit` takes any labelled tf.data stream (uint8 or float images, any batch size,
classes in any proportion; see m3d_tf.real_batches, which checks every batch).
A batch holding exactly `real_per_class` images of every class, as
`m3d_tf.data.balanced_batches` yields, takes the fast path: the batch is cut
into per-class blocks and all classes are matched with batched matmuls
(`mmd.grouped_mmd2`). Any other batch takes the label-masked path
(`mmd.class_mmd2_terms`): each class present in the batch is matched with its
own real images, and a class absent from the batch contributes nothing. The
route is decided per batch from its label counts, so an unbalanced batch of
the balanced size is never cut into the wrong classes.

Randomness is a pure function of (seed, iteration, purpose): the random net, the
augmentation draw and the subset of decoded images all come from stateless ops
folded from the seed and `optimizer.iterations`. A resumed run therefore repeats
an uninterrupted one exactly, and every replica of a MirroredStrategy draws the
same net.

The model is Keras-serializable: `condenser.save("c.keras")` and
`keras.saving.load_model("c.keras")` (or `load_condenser`) round-trip the pixels,
the optimiser's state and its iteration, so fitting continues exactly.

Example:
    ds = tfds.load("fashion_mnist", split="train", as_supervised=True)
    ds = ds.shuffle(10_000).batch(256)
    condenser = M3DCondenser(10, (28, 28, 1), ipc=10, mean=0.286, std=0.353)
    condenser.initialize(ds.take(20))
    condenser.compile()
    condenser.fit(ds.repeat(), steps_per_epoch=1000, epochs=1)
    condenser.save("c.keras")
    pixels = condenser.synthetic_images()
"""

import json
import os
import zipfile

import keras
import numpy as np
import tensorflow as tf

from m3d_tf import augment, mmd, networks, parameterization, real_batches
from m3d_tf.checks import choice, nonnegative_int, per_channel, positive_int
from m3d_tf.data.balanced import balanced_layout

# The registries live with what they name; re-exported here for callers of the condenser.
KERNELS = mmd.KERNELS
INITS = parameterization.INITS
STRATEGIES = augment.STRATEGIES
NET_NORMS = networks.NETWORK_NORMS["convnet"]  # the random ConvNet's normalisations
COMPUTE_DTYPES = ("float32", "bfloat16")

# Stream ids folded into the seed so that each use of randomness is independent.
_NET_STREAM, _AUG_STREAM, _SUBSET_STREAM = 1, 2, 3
# Philox everywhere: "auto_select" may pick another algorithm under XLA or on
# another device, which would change every random draw.
_ALG = "philox"
# Routes of a real batch to the MMD (see M3DCondenser._class_terms).
_BALANCED, _PER_BATCH = "balanced", "per_batch"


class UnitInterval(keras.constraints.Constraint):
    """Clamps stored pixels to [0, 1] after every optimiser update (M3D/IDC)."""

    def __call__(self, w):
        return keras.ops.clip(w, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="m3d_tf")
class M3DCondenser(keras.Model):
    """Learns `ipc` stored images per class by minimising multi-kernel MMD.

    Args:
        num_classes: int >= 2, number of classes C.
        image_shape: (H, W, channels) of the real images.
        ipc: stored images per class (the storage budget).
        factor: multi-formation factor f; each stored image decodes into f*f
            images of full size. f=1 stores plain images. f must divide H and W.
        kernel: "gaussian_mix" (M3D), "linear" (DM), "polynomial", "rbf_fixed".
        multipliers: bandwidth multipliers of "gaussian_mix" (default
            (0.25, 0.5, 1, 2, 4) times the mean pooled squared distance).
        widths: fixed absolute Gaussian widths instead of multipliers.
        gammas: gammas of "rbf_fixed" (default (0.1, 1, 5)).
        degree, coef0: "polynomial" kernel (Z Z^T + coef0) ** degree.
        estimator: "biased" (M3D's V-statistic) or "unbiased".
        ipm: iterations per random model (M3D: 5, DM: 1).
        augmentation: Siamese augmentation strategy while matching.
        flip: allow horizontal flips in augmentation (False for digits).
        real_per_class: real images per class of a balanced batch (as
            `balanced_batches(data, real_per_class)` yields): such batches
            take the fast path. Other batches are matched by label masks.
        init: "mix" (mosaic of f*f real images), "real" or "noise".
        max_decoded_per_class: at most this many decoded synthetic images of a
            class enter one step (a fresh random subset each step).
        net_width, net_depth, net_norm: the random ConvNet.
        mean, std: per-channel normalisation applied inside the forward path;
            default 0 and 1 (no normalisation).
        compute_dtype: "float32" or "bfloat16" for the random net; the stored
            pixels and the MMD are always float32. Default: the dtype policy's
            compute dtype (so `keras.mixed_precision.set_global_policy(
            "mixed_bfloat16")` also works).
        seed: int seed of every random draw.
    """

    def __init__(
        self,
        num_classes,
        image_shape,
        ipc=10,
        *,
        factor=2,
        kernel="gaussian_mix",
        multipliers=None,
        widths=None,
        gammas=None,
        degree=2,
        coef0=1.0,
        estimator="biased",
        ipm=5,
        augmentation="color_crop_cutout",
        flip=True,
        real_per_class=128,
        init="mix",
        max_decoded_per_class=200,
        net_width=128,
        net_depth=3,
        net_norm="instancenorm",
        mean=None,
        std=None,
        compute_dtype=None,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # === Validation (once, here: train_step trusts these) ===
        self.num_classes = positive_int("num_classes", num_classes)
        if self.num_classes < 2:
            raise ValueError(
                f"num_classes must be at least 2. Received num_classes={num_classes}."
            )
        if not isinstance(image_shape, (tuple, list, np.ndarray)) or len(image_shape) != 3:
            raise ValueError(
                "image_shape must be (height, width, channels). "
                f"Received image_shape={image_shape!r}."
            )
        self.image_shape = tuple(positive_int("image_shape", d) for d in image_shape)
        self.ipc = positive_int("ipc", ipc)
        self.factor = positive_int("factor", factor)
        parameterization.validate_factor(self.image_shape, self.factor)
        self.kernel = choice("kernel", kernel, KERNELS)
        self.multipliers = tuple(mmd.DEFAULT_MULTIPLIERS if multipliers is None else multipliers)
        self.widths = None if widths is None else tuple(widths)
        self.gammas = tuple(mmd.DEFAULT_GAMMAS if gammas is None else gammas)
        self.degree = degree
        if isinstance(coef0, bool) or not isinstance(coef0, (int, float, np.number)):
            raise ValueError(f"coef0 must be a number. Received coef0={coef0!r}.")
        self.coef0 = float(coef0)
        self.estimator = estimator
        mmd.validate_kernel_options(**self._kernel_options())
        self.ipm = positive_int("ipm", ipm)
        self.augmentation = choice("augmentation", augmentation, STRATEGIES)
        if not isinstance(flip, (bool, np.bool_)):  # bool("no") is True
            raise ValueError(f"flip must be True or False. Received flip={flip!r}.")
        self.flip = bool(flip)
        self.real_per_class = positive_int("real_per_class", real_per_class)
        self.init = choice("init", init, INITS)
        self.max_decoded_per_class = positive_int(
            "max_decoded_per_class", max_decoded_per_class
        )
        self.net_width = positive_int("net_width", net_width)
        self.net_depth = positive_int("net_depth", net_depth)
        self.net_norm = choice("net_norm", net_norm, NET_NORMS)
        channels = self.image_shape[-1]
        self.mean = per_channel("mean", 0.0 if mean is None else mean, channels)
        self.std = per_channel("std", 1.0 if std is None else std, channels, positive=True)
        if compute_dtype is None:
            compute_dtype = self.dtype_policy.compute_dtype
            if compute_dtype not in COMPUTE_DTYPES:  # e.g. mixed_float16
                compute_dtype = "float32"
        self.compute_dtype_name = choice("compute_dtype", compute_dtype, COMPUTE_DTYPES)
        seed = nonnegative_int("seed", seed)  # NumPy's seeded draws (initialize) need >= 0
        self.seed = int(seed)

        # === Derived sizes ===
        self.decoded_per_class = self.ipc * self.factor**2
        self.subset_per_class = min(self.decoded_per_class, self.max_decoded_per_class)
        self.term_names = tuple(mmd.kernel_term_names(**self._kernel_options()))

        # === State ===
        # Stored pixels in [0, 1], class-major: rows [c*ipc, (c+1)*ipc) are class c.
        # "only_first_replica": every replica computes the same clamp, so the
        # constraint's assign is legal inside a MirroredStrategy replica context.
        self.pixels = self.add_weight(
            shape=(self.num_classes * self.ipc,) + self.image_shape,
            initializer="zeros",
            dtype="float32",
            constraint=UnitInterval(),
            aggregation="only_first_replica",
            name="synthetic_pixels",
        )
        self.initialized = self.add_weight(
            shape=(), initializer="zeros", dtype="float32", trainable=False,
            aggregation="only_first_replica", name="initialized",
        )
        self.mmd_tracker = keras.metrics.Mean(name="mmd")
        self.term_trackers = [keras.metrics.Mean(name=f"mmd_{t}") for t in self.term_names]
        # Every weight exists now. Marking the model built lets Keras create the
        # optimiser's variables when a saved model is compiled from its config,
        # so that loading restores the momentum buffers too.
        self.built = True
        # How train_step matches its batches; fit() sets it from its dataset (_class_terms).
        self._route = _PER_BATCH

    # === Config ===
    def get_config(self):
        config = super().get_config()  # name, trainable, dtype policy
        config.update({
            "num_classes": self.num_classes,
            "image_shape": list(self.image_shape),
            "ipc": self.ipc,
            "factor": self.factor,
            "kernel": self.kernel,
            "multipliers": list(self.multipliers),
            "widths": None if self.widths is None else list(self.widths),
            "gammas": list(self.gammas),
            "degree": self.degree,
            "coef0": self.coef0,
            "estimator": self.estimator,
            "ipm": self.ipm,
            "augmentation": self.augmentation,
            "flip": self.flip,
            "real_per_class": self.real_per_class,
            "init": self.init,
            "max_decoded_per_class": self.max_decoded_per_class,
            "net_width": self.net_width,
            "net_depth": self.net_depth,
            "net_norm": self.net_norm,
            "mean": list(self.mean),
            "std": list(self.std),
            "compute_dtype": self.compute_dtype_name,
            "seed": self.seed,
        })
        return config

    @classmethod
    def from_config(cls, config):
        """An M3DCondenser from `get_config()`'s dict; another model's config is refused."""
        missing = [k for k in ("num_classes", "image_shape") if k not in config]
        if missing:
            what = "layers" if "layers" in config else ", ".join(sorted(config)) or "nothing"
            raise ValueError(
                f"M3DCondenser.from_config() got the config of another model (it holds {what}; "
                f"{' and '.join(missing)} missing); give a config or .keras file written by an "
                "M3DCondenser, or load other models with keras.saving.load_model."
            )
        return cls(**config)

    def _kernel_options(self):
        return {
            "kernel": self.kernel,
            "estimator": self.estimator,
            "multipliers": self.multipliers,
            "widths": self.widths,
            "gammas": self.gammas,
            "degree": self.degree,
            "coef0": self.coef0,
        }

    # === Initialisation ===
    def initialize(self, real_data):
        """Sets the stored pixels from real data (init "mix", "real" or "noise").

        Args:
            real_data: (images, labels) arrays, images float32 (N, H, W, C) in
                [0, 1] (uint8 in [0, 255] is accepted), labels int (N,); or a
                tf.data.Dataset of unbatched (image, label) pairs.

        Raises:
            ValueError: wrong image shape, labels outside [0, num_classes), NaN or
                Inf pixels, or a class with too few images for the initialisation.
        """
        images, labels = self._real_arrays(real_data)
        by_class = [images[labels == c] for c in range(self.num_classes)]
        pixels = parameterization.initial_images(
            by_class, self.ipc, self.factor, init=self.init, seed=self.seed
        )
        self.pixels.assign(np.asarray(pixels, np.float32))
        self.initialized.assign(1.0)
        return self

    def _real_arrays(self, real_data):
        if isinstance(real_data, tf.data.Dataset):
            spec = real_data.element_spec
            if not (isinstance(spec, tuple) and len(spec) == 2):
                raise ValueError(
                    "initialize() needs a dataset of (image, label) pairs. "
                    f"Received element_spec={spec}."
                )
            if spec[0].shape.rank == 4:
                real_data = real_data.unbatch()
            images, labels = [], []
            for image, label in real_data.as_numpy_iterator():
                images.append(image)
                labels.append(label)
            if not images:
                raise ValueError("initialize() received an empty dataset: it holds no images.")
            images, labels = np.stack(images), np.asarray(labels)
        else:
            try:
                images, labels = real_data
            except (TypeError, ValueError):
                raise ValueError(
                    "initialize() needs (images, labels) arrays or a tf.data.Dataset of "
                    f"(image, label) pairs. Received {type(real_data).__name__}."
                ) from None
            images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 255.0
        if not np.issubdtype(labels.dtype, np.integer):  # never truncate 2.7 to class 2
            raise ValueError(
                "initialize(): labels must be integer class indices. Received dtype "
                f"{labels.dtype}; pass class indices (np.argmax for one-hot labels)."
            )
        if labels.ndim > 1 and labels.shape[1:] != (1,) * (labels.ndim - 1):
            raise ValueError(
                f"initialize(): labels must have shape (N,) or (N, 1). Received {labels.shape}."
            )
        labels = labels.reshape(-1)
        self._check_real(images, labels, where="initialize()")
        return images.astype(np.float32), labels.astype(np.int64)

    def _check_real(self, images, labels, where):
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"{where}: real images must have shape (N, {', '.join(map(str, self.image_shape))})"
                f" to match image_shape. Received shape {images.shape}."
            )
        if not np.issubdtype(images.dtype, np.floating):
            raise ValueError(
                f"{where}: real images must be float in [0, 1] (or uint8). "
                f"Received dtype {images.dtype}."
            )
        if len(labels) != len(images):
            raise ValueError(
                f"{where}: {len(images)} images but {len(labels)} labels; they must match."
            )
        if len(images) == 0:
            raise ValueError(f"{where}: the real data is empty; give real images of every class.")
        if not np.all(np.isfinite(images)):
            raise ValueError(
                f"{where}: real images contain NaN or Inf. Clean the data before condensing."
            )
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{where}: float images must lie in [0, 1]. Received values in "
                f"[{low:g}, {high:g}]; divide 0..255 pixels by 255 (or pass uint8)."
            )
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"{where}: labels must lie in [0, {self.num_classes}). "
                f"Received labels in [{labels.min()}, {labels.max()}]."
            )

    # === Training ===
    def compile(self, optimizer=None, learning_rate=None, **kwargs):
        """Compiles with SGD (momentum 0.5, M3D/DM default) unless told otherwise.

        Args:
            optimizer: a keras optimizer; default SGD(learning_rate, momentum=0.5).
            learning_rate: pixel learning rate of the default optimizer
                (default 1.0; m3d_tf.recipes holds tuned values per setting).
            **kwargs: passed to keras.Model.compile (e.g. jit_compile=True).
        """
        if learning_rate is not None and (
                isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.number))
                or not 0 <= learning_rate < float("inf")):  # 0 holds the pixels still
            raise ValueError(
                "learning_rate must be a finite number >= 0. "
                f"Received learning_rate={learning_rate!r}."
            )
        if optimizer is None:
            optimizer = keras.optimizers.SGD(
                learning_rate=1.0 if learning_rate is None else learning_rate, momentum=0.5
            )
        elif learning_rate is not None:
            raise ValueError(
                "Pass either optimizer= or learning_rate=, not both: learning_rate only "
                "configures the default SGD optimizer."
            )
        super().compile(optimizer=optimizer, **kwargs)
        # Its momentum buffers exist from now on, so that a condenser saved before
        # any fit() holds the same optimiser variables as one saved after.
        self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config):
        """Compiles a loaded condenser as the saved one was (its optimiser included).

        Keras leaves a model with a custom compile() uncompiled on load unless
        the model says how. The optimiser's variables are created here, so
        that loading fills its momentum buffers and iteration count.
        """
        super().compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, *args, **kwargs):
        """keras.Model.fit on any tf.data.Dataset of labelled real batches.

        `x` yields (images, labels) batches: images uint8 (0..255) or float in
        [0, 1], (B, H, W, C) (or (B, H, W) for one channel); labels of any
        integer dtype, (B,) or (B, 1). Any batch size, classes in any
        proportion: a class absent from a batch contributes nothing to that
        step. What the dataset yields is checked here, before any work; every
        batch is checked as it is read (m3d_tf.real_batches), and a failed
        check stops fit with a one-line `real_batches.BatchError` (a
        ValueError and a tf.errors.InvalidArgumentError).

        Example:
            ds = tfds.load("fashion_mnist", split="train", as_supervised=True)
            condenser.fit(ds.shuffle(10_000).batch(256).repeat(), steps_per_epoch=1000)

        Raises:
            ValueError: not a dataset, not initialised, or unusable elements.
            real_batches.BatchError: a batch failed its checks.
        """
        if not isinstance(x, tf.data.Dataset):
            raise ValueError(
                "M3DCondenser.fit() needs a tf.data.Dataset of (images, labels) batches, e.g. "
                "tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(10_000).batch(256)"
                f" or m3d_tf.data.balanced_batches((images, labels), real_per_class). "
                f"Received {type(x).__name__}."
            )
        if float(self.initialized.numpy()) != 1.0:
            raise ValueError(
                "The synthetic set is not initialised: call condenser.initialize(real_data) "
                "before fit()."
            )
        if x.cardinality() == 0:
            raise ValueError("fit() received an empty dataset: it yields no batch.")
        route = self._route_for(x)
        if route != self._route:  # the step is traced once per route
            self._route, self.train_function = route, None
        batches = real_batches.checked_batches(
            x, self.num_classes, self.image_shape,
            per_class=self.real_per_class if route == _BALANCED else None,
        )
        kwargs.setdefault("shuffle", False)  # batches come shuffled by their pipeline
        try:
            return super().fit(batches, *args, **kwargs)
        except tf.errors.InvalidArgumentError as error:
            real_batches.raise_batch_error(error)
            raise

    def _route_for(self, dataset):
        """_BALANCED for a balanced_batches stream of every class with real_per_class each."""
        layout = balanced_layout(dataset)
        balanced = layout == (tuple(range(self.num_classes)), self.real_per_class)
        return _BALANCED if balanced else _PER_BATCH

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras learns the input shapes by all-reducing the first batch across replicas, which
        # MultiWorkerMirroredStrategy rejects for (images, labels) pairs. Nothing needs them:
        # the pixels and trackers exist from __init__; only the optimizer is left to build.
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build([self.pixels])

    def _seed(self, stream, *data):
        seed = tf.constant([self.seed, stream], dtype=tf.int64)
        for d in data:
            seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(d, tf.int64), alg=_ALG)
        return seed

    def _normalize(self, images):
        mean = tf.constant(self.mean, tf.float32)
        std = tf.constant(self.std, tf.float32)
        return (images - mean) / std

    def _features(self, images, weights):
        features = networks.convnet_features(
            images,
            weights,
            depth=self.net_depth,
            norm=self.net_norm,
            compute_dtype=self.compute_dtype_name,
        )
        return tf.cast(features, tf.float32)

    def _synthetic_subset(self, step):
        """Indices (C, m) of the decoded images that enter this step."""
        C, n, m = self.num_classes, self.decoded_per_class, self.subset_per_class
        if m == n:
            return tf.reshape(tf.range(C * n), (C, n))
        noise = tf.random.stateless_uniform((C, n), self._seed(_SUBSET_STREAM, step), alg=_ALG)
        picked = tf.argsort(noise, axis=1)[:, :m]
        return picked + n * tf.range(C)[:, None]

    def matching_terms(self, images, labels, step):
        """Per-class, per-kernel MMD^2 between a real batch and the synthetic set.

        The loss of iteration `step` (its random net, augmentation draw and
        subset of decoded images), differentiable with respect to the pixels.

        Under tf.distribute every replica embeds its own shard of the batch
        (shards may differ in size and in class counts) and then gathers the
        features and labels of all shards, so every replica computes the MMD
        of the whole global batch: class by class, over the real images of
        that class in the whole batch, with the Gaussian bandwidth of that
        class's whole pooled set. This is exact, not an average of per-replica
        MMDs (which would be biased: MMD^2 is not linear in the sample).

        Args:
            images: float32 (B, H, W, C) in [0, 1], the real batch (this
                replica's shard under tf.distribute); any mix of classes.
            labels: int (B,) in [0, num_classes).
            step: int scalar, the iteration.

        Returns:
            float32 (num_classes, K) terms; their sum is the loss. The row of a
            class absent from the (global) batch is 0.
        """
        return self._matching_terms(images, labels, step, _PER_BATCH)

    def _matching_terms(self, images, labels, step, route):
        """`matching_terms` by `route` (_BALANCED only for a balanced_batches stream)."""
        labels = tf.cast(tf.reshape(labels, (-1,)), tf.int32)
        step = tf.cast(step, tf.int64)
        weights = networks.convnet_weights(
            self._seed(_NET_STREAM, step // self.ipm),
            self.image_shape[-1],
            self.image_shape[:2],
            width=self.net_width,
            depth=self.net_depth,
            norm=self.net_norm,
        )
        aug_seed = self._seed(_AUG_STREAM, step)

        # Real side, no gradient. Under tf.distribute each replica embeds its
        # shard; gathering the features gives every replica the whole batch.
        real = augment.siamese_augment(
            self._normalize(images), labels, aug_seed, self.augmentation,
            num_groups=self.num_classes, flip=self.flip,
        )
        distributed = tf.distribute.get_strategy().num_replicas_in_sync > 1
        if distributed and route == _PER_BATCH:
            # The last batch of a finite stream may leave a replica an empty
            # shard, which the ConvNet cannot embed: it embeds one blank image
            # instead and keeps none of its features.
            count = tf.shape(real)[0]
            blank = tf.zeros((1,) + self.image_shape, real.dtype)
            real = tf.cond(count > 0, lambda: real, lambda: blank)
            real_features = tf.stop_gradient(self._features(real, weights))[:count]
        else:
            real_features = tf.stop_gradient(self._features(real, weights))  # (B, D)
        if distributed:
            replica = tf.distribute.get_replica_context()
            real_features = replica.all_gather(real_features, axis=0)
            labels = replica.all_gather(labels, axis=0)

        syn_features = self._synthetic_features(weights, aug_seed, step)  # (C, m, D)
        return self._class_terms(syn_features, real_features, labels, route)

    def _class_terms(self, syn_features, real_features, labels, route):
        """(C, K) MMD^2 terms, by the fast path when the batch is balanced.

        Two routes. A `balanced_batches(data, real_per_class)` stream of all
        classes (fit() recognises the dataset object it returns, and its
        pipeline asserts every batch's class counts) builds the fast path
        alone: the step's graph is today's, so training is bit-identical to
        it. Any other stream is routed per batch from its label counts
        (tf.cond), never from the batch size alone: an unbalanced batch of the
        balanced size is masked, not cut into the wrong classes. A cond costs
        float rounding (its gradient is optimised apart from the rest of the
        step), which is why the balanced stream does without one. A batch
        whose static size rules the fast path out builds the masked path only.
        """
        C, n = self.num_classes, self.real_per_class

        def masked():
            m = self.subset_per_class
            return mmd.class_mmd2_terms(
                tf.reshape(syn_features, (C * m, -1)), tf.repeat(tf.range(C), m),
                real_features, labels, C, **self._kernel_options(),
            )

        def balanced():
            # Sorting by class cuts the batch into C blocks of n; the fast path of today.
            order = tf.argsort(labels, stable=True)
            grouped = tf.reshape(tf.gather(real_features, order), (C, n, -1))  # (C, n, D)
            return mmd.grouped_mmd2(syn_features, grouped, **self._kernel_options())

        if route == _BALANCED:
            return balanced()
        size = real_features.shape[0]
        unbiased_too_few = self.estimator == "unbiased" and min(n, self.subset_per_class) < 2
        if unbiased_too_few or (size is not None and size != C * n):
            return masked()
        counts = tf.math.bincount(labels, minlength=C, maxlength=C, dtype=tf.int32)
        is_balanced = tf.reduce_all(tf.equal(counts, n)) & tf.equal(tf.size(labels), C * n)
        return tf.cond(is_balanced, balanced, masked)

    def _synthetic_features(self, weights, aug_seed, step):
        """(C, m, D) features of step `step`'s decoded subset, augmented with the real draw."""
        subset = tf.reshape(self._synthetic_subset(step), (-1,))
        syn_labels = tf.repeat(tf.range(self.num_classes), self.subset_per_class)
        decoded = parameterization.decode(self.pixels.value, self.factor)
        synthetic = augment.siamese_augment(
            self._normalize(tf.gather(decoded, subset)), syn_labels, aug_seed,
            self.augmentation, num_groups=self.num_classes, flip=self.flip,
        )
        return tf.reshape(
            self._features(synthetic, weights), (self.num_classes, self.subset_per_class, -1)
        )

    def train_step(self, data):
        images, labels = data
        num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            terms = self._matching_terms(images, labels, self.optimizer.iterations, self._route)
            loss = tf.reduce_sum(terms)
            # Every replica computes the whole loss on the same synthetic images
            # and Keras sums the replicas' gradients: each contributes 1/R.
            scaled = self.optimizer.scale_loss(loss / num_replicas)
        gradients = tape.gradient(scaled, [self.pixels])
        # The optimiser's iteration count reads no data; without this it may be
        # incremented for a step whose batch then fails its checks.
        with tf.control_dependencies(gradients):
            self.optimizer.apply_gradients(zip(gradients, [self.pixels]))

        # The logs carry this step's values (not a running mean over the
        # epoch): condensation usually runs as one long epoch.
        per_kernel = tf.reduce_sum(terms, axis=0)
        for tracker, value in zip(self.metrics, [loss, *tf.unstack(per_kernel)]):
            tracker.reset_state()
            tracker.update_state(value)
        logs = {m.name: m.result() for m in self.metrics}
        if tf.distribute.get_strategy().extended._in_multi_worker_mode():
            # Across workers Keras averages the logs along axis 0 (reduce_per_replica in its
            # TF trainer), so each needs one; every replica holds the same values.
            logs = {name: value[None] for name, value in logs.items()}
        return logs

    @property
    def metrics(self):
        return [self.mmd_tracker, *self.term_trackers]

    def call(self, inputs=None):
        """Returns the stored synthetic pixels (C*ipc, H, W, channels)."""
        return self.pixels.value

    # === Accessors ===
    def synthetic_images(self):
        """Stored pixels, float32 (C*ipc, H, W, channels) in [0, 1], class-major."""
        return np.array(self.pixels.numpy(), dtype=np.float32)

    def synthetic_labels(self):
        """int64 (C*ipc,) labels of the stored images."""
        return np.repeat(np.arange(self.num_classes, dtype=np.int64), self.ipc)

    def decoded_images(self):
        """Decoded training images, float32 (C*ipc*f^2, H, W, channels) in [0, 1]."""
        return np.asarray(parameterization.decode(self.pixels.value, self.factor), np.float32)

    def decoded_labels(self):
        """int64 (C*ipc*f^2,) labels of the decoded images."""
        return np.repeat(np.arange(self.num_classes, dtype=np.int64), self.decoded_per_class)

    def as_dataset(self, decoded=True, batch_size=None):
        """The synthetic set as a tf.data.Dataset of (image, label) pairs."""
        if decoded:
            ds = tf.data.Dataset.from_tensor_slices((self.decoded_images(), self.decoded_labels()))
        else:
            ds = tf.data.Dataset.from_tensor_slices(
                (self.synthetic_images(), self.synthetic_labels())
            )
        return ds if batch_size is None else ds.batch(batch_size)


def load_condenser(path, compile=True):
    """Loads an M3DCondenser saved with `condenser.save(path)` (a .keras file).

    The same as `keras.saving.load_model(path)`, but a file holding another
    model class is refused before anything is built, with what it holds.

    Args:
        path: a .keras file written by `M3DCondenser.save`.
        compile: restore the optimiser (its momentum and iteration) too, so
            that fit() continues exactly where the saved run stopped.

    Returns:
        The M3DCondenser, its pixels, optimiser state and iteration restored.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a .keras file, or one holding another model class.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; give a file written by condenser.save().")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError):
        raise ValueError(
            f"{path} is not a .keras file (a zip with config.json); give a file written by "
            "condenser.save('NAME.keras')."
        ) from None
    ours = keras.saving.get_registered_name(M3DCondenser)
    found = config.get("registered_name") or config.get("class_name")
    if found != ours:
        what = ".".join(str(p) for p in (config.get("module"), config.get("class_name")) if p)
        raise ValueError(
            f"{path} holds a {what or 'non-Keras'} model, not an M3DCondenser; "
            "load it with keras.saving.load_model, or give a file written by "
            "M3DCondenser.save()."
        )
    return keras.saving.load_model(path, compile=compile)

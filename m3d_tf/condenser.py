"""M3DCondenser: a keras.Model whose weights are a synthetic image set.

The model owns nothing but the stored synthetic pixels. Its `train_step` draws a
random ConvNet (a new one every `ipm` iterations), embeds a class-balanced batch of
real images (no gradient) and the decoded synthetic images of every class under the
same Siamese augmentation, and minimises the sum over classes of the multi-kernel
MMD^2 between the two feature sets (M3D, Zhang et al., AAAI 2024). With
`kernel="linear", ipm=1` the loss is exactly DM's squared mean difference
(Zhao & Bilen, WACV 2023).

Randomness is a pure function of (seed, iteration, purpose): the random net, the
augmentation draw and the subset of decoded images all come from stateless ops
folded from the seed and `optimizer.iterations`. A resumed run therefore repeats
an uninterrupted one exactly, and every replica of a MirroredStrategy draws the
same net.

Example:
    images, labels, info = m3d_tf.data.load_arrays("fashion_mnist")
    condenser = M3DCondenser(info.num_classes, info.image_shape, ipc=10,
                             mean=info.mean, std=info.std)
    condenser.initialize((images, labels))
    condenser.compile()
    ds = m3d_tf.data.balanced_batches((images, labels), 128, seed=0)
    condenser.fit(ds, steps_per_epoch=1000, epochs=1)
    pixels = condenser.synthetic_images()
"""

import keras
import numpy as np
import tensorflow as tf

from m3d_tf import augment, mmd, networks, parameterization

KERNELS = ("gaussian_mix", "linear", "polynomial", "rbf_fixed")
INITS = ("mix", "real", "noise")
STRATEGIES = ("color_crop_cutout", "color_crop_cutout_flip_scale_rotate", "none")
COMPUTE_DTYPES = ("float32", "bfloat16")

# Stream ids folded into the seed so that each use of randomness is independent.
_NET_STREAM, _AUG_STREAM, _SUBSET_STREAM = 1, 2, 3
# Philox everywhere: "auto_select" may pick another algorithm under XLA or on
# another device, which would change every random draw.
_ALG = "philox"


class UnitInterval(keras.constraints.Constraint):
    """Clamps stored pixels to [0, 1] after every optimiser update (M3D/IDC)."""

    def __call__(self, w):
        return keras.ops.clip(w, 0.0, 1.0)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"{name} must be a positive integer. Received {name}={value!r}."
        )
    return int(value)


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Unknown {name}={value!r}. Valid choices: {', '.join(map(repr, choices))}."
        )
    return value


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
        real_per_class: real images per class expected in each batch.
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
        self.num_classes = _positive_int("num_classes", num_classes)
        if self.num_classes < 2:
            raise ValueError(
                f"num_classes must be at least 2. Received num_classes={num_classes}."
            )
        if len(tuple(image_shape)) != 3:
            raise ValueError(
                "image_shape must be (height, width, channels). "
                f"Received image_shape={tuple(image_shape)!r}."
            )
        self.image_shape = tuple(_positive_int("image_shape", d) for d in image_shape)
        self.ipc = _positive_int("ipc", ipc)
        self.factor = _positive_int("factor", factor)
        parameterization.validate_factor(self.image_shape, self.factor)
        self.kernel = _choice("kernel", kernel, KERNELS)
        self.multipliers = tuple(mmd.DEFAULT_MULTIPLIERS if multipliers is None else multipliers)
        self.widths = None if widths is None else tuple(widths)
        self.gammas = tuple(mmd.DEFAULT_GAMMAS if gammas is None else gammas)
        self.degree = degree
        self.coef0 = float(coef0)
        self.estimator = estimator
        mmd.validate_kernel_options(**self._kernel_options())
        self.ipm = _positive_int("ipm", ipm)
        self.augmentation = _choice("augmentation", augmentation, STRATEGIES)
        self.flip = bool(flip)
        self.real_per_class = _positive_int("real_per_class", real_per_class)
        self.init = _choice("init", init, INITS)
        self.max_decoded_per_class = _positive_int(
            "max_decoded_per_class", max_decoded_per_class
        )
        self.net_width = _positive_int("net_width", net_width)
        self.net_depth = _positive_int("net_depth", net_depth)
        self.net_norm = net_norm
        channels = self.image_shape[-1]
        self.mean = self._per_channel("mean", mean, 0.0, channels)
        self.std = self._per_channel("std", std, 1.0, channels)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive per channel. Received std={self.std}.")
        if compute_dtype is None:
            compute_dtype = self.dtype_policy.compute_dtype
            if compute_dtype not in COMPUTE_DTYPES:  # e.g. mixed_float16
                compute_dtype = "float32"
        self.compute_dtype_name = _choice("compute_dtype", compute_dtype, COMPUTE_DTYPES)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer. Received seed={seed!r}.")
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

    # === Config ===
    def get_config(self):
        return {
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
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
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

    @staticmethod
    def _per_channel(name, value, default, channels):
        if value is None:
            return (default,) * channels
        values = tuple(float(v) for v in np.ravel(value))
        if len(values) == 1:
            values *= channels
        if len(values) != channels:
            raise ValueError(
                f"{name} needs one value per channel ({channels}). Received {name}={value!r}."
            )
        return values

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
            raise ValueError(f"{where}: the real data is empty.")
        if not np.all(np.isfinite(images)):
            raise ValueError(
                f"{where}: real images contain NaN or Inf. Clean the data before condensing."
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

    def fit(self, x=None, *args, **kwargs):
        """keras.Model.fit on a dataset of class-balanced real batches.

        `x` must be a tf.data.Dataset of (images, labels) batches holding exactly
        `real_per_class` images of every class, as `m3d_tf.data.balanced_batches`
        yields. The first batch is checked here (shape, dtype, finite values,
        label range, balance) so that train_step runs unchecked.
        """
        if not isinstance(x, tf.data.Dataset):
            raise ValueError(
                "M3DCondenser.fit() needs a tf.data.Dataset of class-balanced (images, labels) "
                "batches, e.g. m3d_tf.data.balanced_batches((images, labels), real_per_class). "
                f"Received {type(x).__name__}."
            )
        if float(self.initialized.numpy()) != 1.0:
            raise ValueError(
                "The synthetic set is not initialised: call condenser.initialize(real_data) "
                "before fit()."
            )
        self._check_batch(x)
        kwargs.setdefault("shuffle", False)  # batches come shuffled by their pipeline
        return super().fit(x, *args, **kwargs)

    def _check_batch(self, dataset):
        first = next(iter(dataset.take(1)), None)
        if first is None:
            raise ValueError("fit() received an empty dataset: it yielded no batch.")
        if not (isinstance(first, tuple) and len(first) == 2):
            raise ValueError(
                "fit() needs a dataset of (images, labels) batches. "
                f"Received elements of {dataset.element_spec}."
            )
        images, labels = first
        if images.dtype != tf.float32:
            raise ValueError(
                f"fit(): real images must be float32 in [0, 1]. Received dtype {images.dtype.name}."
            )
        images, labels = images.numpy(), labels.numpy().reshape(-1)
        self._check_real(images, labels, where="fit()")
        counts = np.bincount(labels, minlength=self.num_classes)
        if np.any(counts != self.real_per_class):
            raise ValueError(
                f"fit(): every batch must hold exactly real_per_class={self.real_per_class} images "
                f"of each of the {self.num_classes} classes; the first batch has per-class counts "
                f"{counts.tolist()}. Use m3d_tf.data.balanced_batches(data, "
                f"{self.real_per_class})."
            )

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

        Args:
            images: float32 (B, H, W, C) in [0, 1], a class-balanced real batch
                (this replica's shard under tf.distribute).
            labels: int (B,).
            step: int scalar, the iteration.

        Returns:
            float32 (num_classes, K) terms; their sum is the loss.
        """
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
        # shard; gathering the features gives every replica all classes.
        real = augment.siamese_augment(
            self._normalize(images), labels, aug_seed, self.augmentation,
            num_groups=self.num_classes, flip=self.flip,
        )
        real_features = tf.stop_gradient(self._features(real, weights))  # (B, D)
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            replica = tf.distribute.get_replica_context()
            real_features = replica.all_gather(real_features, axis=0)
            labels = replica.all_gather(labels, axis=0)
        order = tf.argsort(labels, stable=True)
        real_features = tf.reshape(
            tf.gather(real_features, order), (self.num_classes, self.real_per_class, -1)
        )  # (C, n_real, D)

        syn_features = self._synthetic_features(weights, aug_seed, step)
        return mmd.grouped_mmd2(syn_features, real_features, **self._kernel_options())

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
            terms = self.matching_terms(images, labels, self.optimizer.iterations)
            loss = tf.reduce_sum(terms)
            # Every replica computes the whole loss on the same synthetic images
            # and Keras sums the replicas' gradients: each contributes 1/R.
            scaled = self.optimizer.scale_loss(loss / num_replicas)
        gradients = tape.gradient(scaled, [self.pixels])
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

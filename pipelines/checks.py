"""Settings of the M3D pipeline checked before anything runs (create_pipeline calls these).

A setting that is bound to fail on the cluster (an unknown recipe, ipc 0, a factor that does not
divide the images, more real images per batch than Split-train holds, ...) fails here, while the
pipeline is built, with a one-line SettingsError; the runners' main() print it and exit with
status 2. Names are checked against the library's own registries, never copies of them.
"""

from m3d_tf import condenser, evaluate, networks, parameterization, recipes
from m3d_tf.data import catalog


class SettingsError(ValueError):
    """A pipeline setting that cannot work, found before anything runs; its text is one line."""


def _check_int(name, value, minimum, *, optional=False):
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SettingsError(f"{name} must be an integer >= {minimum}. Received {name}={value!r}.")


def _check_choice(name, value, registry, *, optional=False):
    if value is None and optional:
        return
    if value not in registry:
        raise SettingsError(
            f"Unknown {name}={value!r}; choose one of: {', '.join(sorted(registry))}."
        )


def catalog_image_shape(source):
    """(H, W, C) of a dataset that m3d_tf.data's catalogue names, else None.

    The shape comes from the TFDS builder's feature spec, which is code: nothing is downloaded
    or read. Other sources (idx:, npz:, folder:, tfrecord:, paths) are known only once read,
    which DatasetGen and M3DCondense do on the cluster.
    """
    if source not in catalog.KNOWN_DATASETS:
        return None
    import tensorflow_datasets as tfds

    shape = tfds.builder(catalog.KNOWN_DATASETS[source]).info.features["image"].shape
    return tuple(shape) if all(isinstance(d, int) for d in shape) else None


def check_settings(*, source, eval_per_class, train_per_class, test_per_class, recipe, ipc,
                   iterations, learning_rate, factor, kernel, real_per_class, ipm, init, epochs,
                   protocol, arch, devices=None, flip=None):
    """Raises SettingsError for a setting that is bound to fail once the pipeline runs.

    Checks ranges and names against the library's registries (m3d_tf.recipes.RECIPES,
    m3d_tf.condenser.KERNELS and INITS, m3d_tf.evaluate.PROTOCOLS, m3d_tf.networks.NETWORKS),
    that every condensation batch can find real_per_class images of a class in Split-train, and,
    for a catalogued dataset, that the factor divides its image size.

    Args:
        The create_pipeline keywords of the same names; None means the recipe's value
        (condensation) or all images (train_per_class, test_per_class).
    """
    _check_int("eval_per_class", eval_per_class, 1)
    _check_int("train_per_class", train_per_class, 1, optional=True)
    _check_int("test_per_class", test_per_class, 1, optional=True)
    _check_choice("recipe", recipe, recipes.RECIPES)
    _check_int("ipc", ipc, 1)
    _check_int("iterations", iterations, 1, optional=True)
    if learning_rate is not None and not (
            isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, bool)
            and learning_rate > 0):
        raise SettingsError(
            f"learning_rate must be a number > 0. Received learning_rate={learning_rate!r}."
        )
    _check_int("factor", factor, 1, optional=True)
    _check_choice("kernel", kernel, condenser.KERNELS, optional=True)
    _check_int("real_per_class", real_per_class, 1, optional=True)
    _check_int("ipm", ipm, 1, optional=True)
    _check_choice("init", init, condenser.INITS, optional=True)
    _check_devices(devices)
    if flip is not None and not isinstance(flip, bool):
        raise SettingsError(
            f"flip must be True, False or None (the data's own). Received flip={flip!r}."
        )
    _check_int("epochs", epochs, 1)
    _check_choice("protocol", protocol, evaluate.PROTOCOLS)
    _check_choice("arch", arch, networks.NETWORKS)
    chosen = recipes.settings_for(recipe, ipc, source)  # what M3DCondense will run by default
    real = chosen["real_per_class"] if real_per_class is None else real_per_class
    if train_per_class is not None and real > train_per_class:
        whose = "" if real_per_class is not None else f" (the {recipe} recipe's)"
        raise SettingsError(
            f"real_per_class={real}{whose} is larger than train_per_class={train_per_class}: "
            "each condensation batch takes that many real images of every class from "
            "Split-train. Lower real_per_class or raise train_per_class."
        )
    shape = catalog_image_shape(source)
    if shape is not None:
        try:
            parameterization.validate_factor(shape, chosen["factor"] if factor is None else factor)
        except ValueError as error:
            raise SettingsError(f"source={source!r}: {error}") from None


def _check_devices(devices):
    """M3DCondense's devices: None/"" or comma-separated local device names, each once.

    Whether they exist is known only on the node that runs the step (M3DCondense checks it there).
    """
    if not devices:
        return
    from components.condense import local_device

    names = [name.strip() for name in str(devices).split(",")]
    canonical = [local_device(name) for name in names]
    for name, device in zip(names, canonical):
        if device is None:
            raise SettingsError(
                f"devices={devices!r}: {name!r} is not a local device name; give names such as "
                "\"/gpu:0,/gpu:1\", or leave devices empty for every visible GPU."
            )
    if len(set(canonical)) < len(canonical):
        raise SettingsError(f"devices={devices!r} names a device twice; name each device once.")

"""The M3D pipeline graph, shared by every runner (local.py, beam.py, kubeflow.py).

    node id                   reads                              writes
    dataset_gen               the source                         examples: real train/eval/test
    m3d_condense              examples                           condensed_examples, synthetic_set
    trainer                   condensed_examples                 model
    evaluator                 model, examples (Split-test)       evaluation, blessing
    pusher                    model, blessing                    pushed_model; serving_dir/<ver>/
    statistics_gen            examples (train, eval, test)       statistics
    schema_gen                statistics                         schema
    condensed_statistics_gen  condensed_examples (train, eval)   statistics
    example_validator         condensed statistics, schema       anomalies

The Evaluator (TFMA) computes accuracy on the real test split, overall and per class (slices on
the label), and blesses the model when the overall accuracy reaches `accuracy_threshold`; the
Pusher copies a blessed model into `serving_dir` (a new numbered version directory, as TensorFlow
Serving expects) and records pushed=0 for an unblessed one.

Data validation. SchemaGen infers the schema from the statistics of every real split: each
feature (image, label, height, width, channels) present once in every example, image BYTES (the
float32 raw bytes are not text, so TFDV infers no value domain for them), the rest INT (channels
of grayscale data gets a bool domain). ExampleValidator checks both condensed splits against it
(Split-eval is the real held-out data, Split-train the decoded synthetic images): correct
condensed examples raise no anomaly, a feature of another type or length, or a missing one, does.
Anomalies do not stop the run: TFX 1.21's ExampleValidator records them (and a per-split
"blessed" JSON property) but no standard component can consume them (the Pusher takes only
model and infra blessings), and the gate that matters is the Evaluator's blessing of the model on
the real test split; the summary (pipelines.results) reports both. The Trainer does not take the
schema: its module reads the m3d_tf.io encoding, which io.read_examples checks itself, so the
input would only make training wait for SchemaGen.

Every setting that can be checked without running is checked while the pipeline is built
(pipelines.checks); container resources for Kubeflow are pipelines.resources.

This module builds the graph (and its command-line form); runners choose paths and orchestrators.
"""

import argparse
import inspect
import os
import re

from tensorflow_model_analysis.proto import config_pb2
from tfx import v1 as tfx

from components.condense import M3DCondense
from components.dataset_gen import DatasetGen
from m3d_tf import condenser, evaluate, networks, recipes
from pipelines.checks import SettingsError, check_settings
from pipelines.resources import set_resources

# Kubeflow Pipelines requires this of pipeline names; the other runners accept it too.
PIPELINE_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")
RUN_FN = "components.trainer_module.run_fn"
LABEL_KEY = "label"
SERVING_DIR = "serving"  # default push destination, inside the pipeline root


def eval_config(accuracy_threshold):
    """TFMA EvalConfig: accuracy and example count, overall and per class; the blessing bar.

    The model is blessed when its overall accuracy reaches the threshold (per-class accuracies
    are reported, not gated).

    The Trainer's model is a Keras 3 SavedModel that TFMA loads as a generic model, so every
    metric is listed here (none comes from the model). Its serving_default returns
    {"probabilities": (B, C)}; the label is the examples' "label" feature.

    Args:
        accuracy_threshold: overall accuracy in [0, 1] that the model must reach to be blessed.

    Raises:
        SettingsError: a threshold outside [0, 1].
    """
    if isinstance(accuracy_threshold, bool) or not isinstance(accuracy_threshold, (int, float)) \
            or not 0.0 <= accuracy_threshold <= 1.0:
        raise SettingsError(
            "accuracy_threshold is a fraction in [0, 1]. "
            f"Received accuracy_threshold={accuracy_threshold!r}."
        )
    threshold = config_pb2.MetricThreshold(value_threshold=config_pb2.GenericValueThreshold(
        lower_bound={"value": accuracy_threshold}
    ))
    return config_pb2.EvalConfig(
        model_specs=[config_pb2.ModelSpec(
            signature_name="serving_default", label_key=LABEL_KEY,
            prediction_key="probabilities",
        )],
        slicing_specs=[config_pb2.SlicingSpec(), config_pb2.SlicingSpec(feature_keys=[LABEL_KEY])],
        metrics_specs=[config_pb2.MetricsSpec(metrics=[
            config_pb2.MetricConfig(class_name="ExampleCount"),
            # A plain `threshold` would apply to every slice: one weak class would block.
            config_pb2.MetricConfig(class_name="SparseCategoricalAccuracy", per_slice_thresholds=[
                config_pb2.PerSliceMetricThreshold(slicing_specs=[config_pb2.SlicingSpec()],
                                             threshold=threshold),
            ]),
        ])],
    )


# === The graph ===


def create_pipeline(pipeline_name, pipeline_root, *, source="fashion_mnist", eval_per_class=100,
                    train_per_class=None, test_per_class=None, data_dir=None, recipe="m3d",
                    ipc=10, iterations=None, learning_rate=None, factor=None, kernel=None,
                    real_per_class=None, ipm=None, init=None, devices=None, seed=0, epochs=300,
                    protocol="idc", arch="convnet", flip=None, accuracy_threshold=0.5,
                    serving_dir=None, cpu=None, memory=None, node_cpu=None, node_memory=None,
                    accelerators=None, metadata_connection_config=None,
                    beam_pipeline_args=None, enable_cache=False):
    """The M3D pipeline: the nodes of the module docstring.

    Args:
        pipeline_name: matches [a-z0-9][a-z0-9-]* (Kubeflow's rule).
        pipeline_root: where artifacts go (local path, gs://, ...).
        source, eval_per_class, train_per_class, test_per_class, data_dir: DatasetGen.
        recipe, ipc, iterations, learning_rate, factor, kernel, real_per_class, ipm, init:
            M3DCondense (None: the recipe's value).
        devices: M3DCondense's MirroredStrategy devices, comma-separated ("/gpu:0,/gpu:1");
            None: every GPU visible on its node, or the default strategy on a CPU-only node.
        seed: seed of the hold-out, the condensation and the network.
        flip: whether a horizontal flip keeps an image's class (M3DCondense records it in the
            set; the Trainer follows the record). None: the data's own: the catalogue's for
            named datasets, off for own data (announced in M3DCondense's log).
        epochs, protocol, arch: the Trainer module's custom_config.
        accuracy_threshold: overall test accuracy that blesses the model.
        serving_dir: where the Pusher puts a blessed model (None: {pipeline_root}/serving).
        cpu, memory, node_cpu, node_memory, accelerators: container resources (set_resources);
            Kubeflow only.
        metadata_connection_config: ML Metadata connection (None: the orchestrator's).
        beam_pipeline_args: Beam options for the Beam components (StatisticsGen, Evaluator).
        enable_cache: reuse outputs of identical earlier executions.

    Returns:
        tfx.dsl.Pipeline with the nodes of the module docstring, in that order.

    Raises:
        SettingsError: a bad pipeline name, setting or resource (one line; check_settings).
    """
    if not PIPELINE_NAME_PATTERN.fullmatch(pipeline_name):
        raise SettingsError(
            f"pipeline_name={pipeline_name!r} must match [a-z0-9][a-z0-9-]* (lowercase letters, "
            "digits and hyphens; Kubeflow rejects anything else), e.g. 'm3d-fashion-mnist'."
        )
    check_settings(
        source=source, eval_per_class=eval_per_class, train_per_class=train_per_class,
        test_per_class=test_per_class, recipe=recipe, ipc=ipc, iterations=iterations,
        learning_rate=learning_rate, factor=factor, kernel=kernel,
        real_per_class=real_per_class, ipm=ipm, init=init, epochs=epochs, protocol=protocol,
        arch=arch, devices=devices, flip=flip,
    )
    evaluation = eval_config(accuracy_threshold)
    if serving_dir is None:
        serving_dir = os.path.join(str(pipeline_root), SERVING_DIR)
    dataset = DatasetGen(
        source, eval_per_class=eval_per_class, train_per_class=train_per_class,
        test_per_class=test_per_class, seed=seed, data_dir=data_dir,
    ).with_id("dataset_gen")
    condense = M3DCondense(
        dataset.outputs["examples"], recipe=recipe, ipc=ipc, iterations=iterations, seed=seed,
        learning_rate=learning_rate, factor=factor, kernel=kernel,
        real_per_class=real_per_class, ipm=ipm, init=init, devices=devices, flip=flip,
    ).with_id("m3d_condense")
    trainer = tfx.components.Trainer(
        examples=condense.outputs["condensed_examples"],
        run_fn=RUN_FN,
        # No flip here: the Trainer module follows the choice recorded in the set's metadata.
        custom_config={"epochs": epochs, "protocol": protocol, "arch": arch, "seed": seed},
    ).with_id("trainer")
    evaluator = tfx.components.Evaluator(
        examples=dataset.outputs["examples"],
        model=trainer.outputs["model"],
        example_splits=["test"],
        eval_config=evaluation,
    ).with_id("evaluator")
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=str(serving_dir))
        ),
    ).with_id("pusher")
    statistics = tfx.components.StatisticsGen(
        examples=dataset.outputs["examples"]
    ).with_id("statistics_gen")
    schema = tfx.components.SchemaGen(
        statistics=statistics.outputs["statistics"], infer_feature_shape=True
    ).with_id("schema_gen")
    condensed_statistics = tfx.components.StatisticsGen(
        examples=condense.outputs["condensed_examples"]
    ).with_id("condensed_statistics_gen")
    validator = tfx.components.ExampleValidator(
        statistics=condensed_statistics.outputs["statistics"], schema=schema.outputs["schema"]
    ).with_id("example_validator")
    components = [dataset, condense, trainer, evaluator, pusher, statistics, schema,
                  condensed_statistics, validator]
    set_resources(components, cpu=cpu, memory=memory, node_cpu=node_cpu,
                  node_memory=node_memory, accelerators=accelerators)
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=str(pipeline_root),
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )


# === Command-line form, shared by the runners ===


DEFAULTS = {name: parameter.default
            for name, parameter in inspect.signature(create_pipeline).parameters.items()}


def _optional_int(text):
    return None if text.lower() == "all" else int(text)


def add_arguments(parser):
    """Adds create_pipeline's settings as --options (defaults: create_pipeline's)."""
    data = parser.add_argument_group("data (DatasetGen)")
    data.add_argument("--source", default=DEFAULTS["source"],
                      help="an m3d_tf.data source with train and test splits")
    data.add_argument("--eval-per-class", type=int, default=DEFAULTS["eval_per_class"],
                      help="images per class held out of train into Split-eval")
    data.add_argument("--train-per-class", type=_optional_int,
                      default=DEFAULTS["train_per_class"],
                      help="at most this many train images per class, or 'all'")
    data.add_argument("--test-per-class", type=_optional_int,
                      default=DEFAULTS["test_per_class"],
                      help="at most this many test images per class, or 'all'")
    data.add_argument("--data-dir", default=DEFAULTS["data_dir"], help="TFDS data directory")
    condense = parser.add_argument_group(
        "condensation (M3DCondense; None: the recipe's value, m3d_tf.recipes)")
    condense.add_argument("--recipe", default=DEFAULTS["recipe"],
                          help=" or ".join(sorted(recipes.RECIPES)))
    condense.add_argument("--ipc", type=int, default=DEFAULTS["ipc"], help="images per class")
    condense.add_argument("--iterations", type=int, default=DEFAULTS["iterations"],
                          help="condensation iterations")
    condense.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"],
                          help="pixel learning rate")
    condense.add_argument("--factor", type=int, default=DEFAULTS["factor"],
                          help="multi-formation factor")
    condense.add_argument("--kernel", default=DEFAULTS["kernel"],
                          help=", ".join(condenser.KERNELS))
    condense.add_argument("--real-per-class", type=int, default=DEFAULTS["real_per_class"],
                          help="real images per class in each iteration")
    condense.add_argument("--ipm", type=int, default=DEFAULTS["ipm"],
                          help="iterations per random network")
    condense.add_argument("--init", default=DEFAULTS["init"], help=", ".join(condenser.INITS))
    condense.add_argument("--devices", default=DEFAULTS["devices"],
                          help="comma-separated devices for MirroredStrategy, e.g. /gpu:0,/gpu:1 "
                               "(default: every GPU visible on the node, else one device)")
    training = parser.add_argument_group("training and evaluation (Trainer, Evaluator)")
    training.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                          help="training epochs of the network")
    training.add_argument("--protocol", default=DEFAULTS["protocol"],
                          help=", ".join(evaluate.PROTOCOLS))
    training.add_argument("--arch", default=DEFAULTS["arch"],
                          help=", ".join(networks.NETWORKS))
    condense.add_argument("--flip", action=argparse.BooleanOptionalAction,
                          default=DEFAULTS["flip"],
                          help="whether a horizontal flip keeps an image's class (condensation "
                               "and training; default: the catalogue's, off for own data)")
    training.add_argument("--accuracy-threshold", type=float,
                          default=DEFAULTS["accuracy_threshold"],
                          help="overall test accuracy that blesses the model")
    training.add_argument("--serving-dir", default=DEFAULTS["serving_dir"],
                          help="where the Pusher puts a blessed model (default: the runner's)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                        help="seed of the hold-out, the condensation and the network")
    parser.add_argument("--enable-cache", action="store_true",
                        help="reuse outputs of identical earlier executions")
    return parser


def settings(args):
    """The create_pipeline keyword arguments of parsed `add_arguments` options."""
    names = ("source", "eval_per_class", "train_per_class", "test_per_class", "data_dir",
             "recipe", "ipc", "iterations", "learning_rate", "factor", "kernel",
             "real_per_class", "ipm", "init", "devices", "seed", "epochs", "protocol", "arch", "flip",
             "accuracy_threshold", "serving_dir", "enable_cache")
    return {name: getattr(args, name) for name in names}


def argument_parser(prog, description):
    """An ArgumentParser with --name and the pipeline's settings."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--name", default="m3d-fashion-mnist",
                        help="pipeline name, [a-z0-9][a-z0-9-]*")
    return add_arguments(parser)


def exit_on_settings_error(parser, error):
    """Ends the command with the error's one line and status 2, as argparse does, no traceback."""
    parser.exit(2, f"{parser.prog}: error: {error}\n")

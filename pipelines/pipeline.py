"""The M3D pipeline graph, shared by every runner (local.py, beam.py, kubeflow.py).

    DatasetGen ──examples──> M3DCondense ──condensed_examples──> Trainer ──model──> Evaluator
        │                          └──synthetic_set                                    ▲
        └──────────────────── examples (Split-test: the real test split) ──────────────┘

The Evaluator (TFMA) computes accuracy on the real test split, overall and per class (slices on
the label), and blesses the model when the overall accuracy reaches `accuracy_threshold`.
This module builds the graph (and its command-line form); runners choose paths and orchestrators.
"""

import argparse
import inspect
import re

from tensorflow_model_analysis.proto import config_pb2
from tfx import v1 as tfx

from components.condense import M3DCondense
from components.dataset_gen import DatasetGen

# Kubeflow Pipelines requires this of pipeline names; the other runners accept it too.
PIPELINE_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")
RUN_FN = "components.trainer_module.run_fn"
LABEL_KEY = "label"


def eval_config(accuracy_threshold):
    """TFMA EvalConfig: accuracy and example count, overall and per class; the blessing bar.

    The model is blessed when its overall accuracy reaches the threshold (per-class accuracies
    are reported, not gated).

    The Trainer's model is a Keras 3 SavedModel that TFMA loads as a generic model, so every
    metric is listed here (none comes from the model). Its serving_default returns
    {"probabilities": (B, C)}; the label is the examples' "label" feature.

    Args:
        accuracy_threshold: overall accuracy in [0, 1] that the model must reach to be blessed.
    """
    if not 0.0 <= accuracy_threshold <= 1.0:
        raise ValueError(
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


def create_pipeline(pipeline_name, pipeline_root, *, source="fashion_mnist", eval_per_class=100,
                    train_per_class=None, test_per_class=None, data_dir=None, recipe="m3d",
                    ipc=10, iterations=None, learning_rate=None, factor=None, kernel=None,
                    real_per_class=None, ipm=None, init=None, seed=0, epochs=300,
                    protocol="idc", arch="convnet", flip=None, accuracy_threshold=0.5,
                    metadata_connection_config=None, beam_pipeline_args=None, enable_cache=False):
    """The DatasetGen -> M3DCondense -> Trainer -> Evaluator pipeline.

    Args:
        pipeline_name: matches [a-z0-9][a-z0-9-]* (Kubeflow's rule).
        pipeline_root: where artifacts go (local path, gs://, ...).
        source, eval_per_class, train_per_class, test_per_class, data_dir: DatasetGen.
        recipe, ipc, iterations, learning_rate, factor, kernel, real_per_class, ipm, init:
            M3DCondense (None: the recipe's value).
        seed: seed of the hold-out, the condensation and the network.
        epochs, protocol, arch, flip: the Trainer module's custom_config (flip None: no flips
            for digit datasets only).
        accuracy_threshold: overall test accuracy that blesses the model.
        metadata_connection_config: ML Metadata connection (None: the orchestrator's).
        beam_pipeline_args: Beam options for the Evaluator (and any Beam component).
        enable_cache: reuse outputs of identical earlier executions.

    Returns:
        tfx.dsl.Pipeline with components dataset_gen, m3d_condense, trainer, evaluator.

    Raises:
        ValueError: a bad pipeline name or threshold.
    """
    if not PIPELINE_NAME_PATTERN.fullmatch(pipeline_name):
        raise ValueError(
            f"pipeline_name={pipeline_name!r} must match [a-z0-9][a-z0-9-]* (lowercase letters, "
            "digits and hyphens; Kubeflow rejects anything else), e.g. 'm3d-fashion-mnist'."
        )
    dataset = DatasetGen(
        source, eval_per_class=eval_per_class, train_per_class=train_per_class,
        test_per_class=test_per_class, seed=seed, data_dir=data_dir,
    ).with_id("dataset_gen")
    condense = M3DCondense(
        dataset.outputs["examples"], recipe=recipe, ipc=ipc, iterations=iterations, seed=seed,
        learning_rate=learning_rate, factor=factor, kernel=kernel,
        real_per_class=real_per_class, ipm=ipm, init=init,
    ).with_id("m3d_condense")
    trainer = tfx.components.Trainer(
        examples=condense.outputs["condensed_examples"],
        run_fn=RUN_FN,
        custom_config={"epochs": epochs, "protocol": protocol, "arch": arch, "seed": seed,
                       "flip": flip},
    ).with_id("trainer")
    evaluator = tfx.components.Evaluator(
        examples=dataset.outputs["examples"],
        model=trainer.outputs["model"],
        example_splits=["test"],
        eval_config=eval_config(accuracy_threshold),
    ).with_id("evaluator")
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=str(pipeline_root),
        components=[dataset, condense, trainer, evaluator],
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
    condense.add_argument("--recipe", default=DEFAULTS["recipe"], help="m3d or dm")
    condense.add_argument("--ipc", type=int, default=DEFAULTS["ipc"], help="images per class")
    condense.add_argument("--iterations", type=int, default=DEFAULTS["iterations"],
                          help="condensation iterations")
    condense.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"],
                          help="pixel learning rate")
    condense.add_argument("--factor", type=int, default=DEFAULTS["factor"],
                          help="multi-formation factor")
    condense.add_argument("--kernel", default=DEFAULTS["kernel"],
                          help="gaussian_mix, linear, polynomial or rbf_fixed")
    condense.add_argument("--real-per-class", type=int, default=DEFAULTS["real_per_class"],
                          help="real images per class in each iteration")
    condense.add_argument("--ipm", type=int, default=DEFAULTS["ipm"],
                          help="iterations per random network")
    condense.add_argument("--init", default=DEFAULTS["init"], help="mix, real or noise")
    training = parser.add_argument_group("training and evaluation (Trainer, Evaluator)")
    training.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                          help="training epochs of the network")
    training.add_argument("--protocol", default=DEFAULTS["protocol"], help="idc or dm")
    training.add_argument("--arch", default=DEFAULTS["arch"],
                          help="convnet, mlp, alexnet, vgg11 or resnet18")
    training.add_argument("--no-flip", dest="flip", action="store_const", const=False,
                          default=DEFAULTS["flip"],
                          help="no horizontal flips when training (without it: flips, "
                               "except on digit datasets)")
    training.add_argument("--accuracy-threshold", type=float,
                          default=DEFAULTS["accuracy_threshold"],
                          help="overall test accuracy that blesses the model")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                        help="seed of the hold-out, the condensation and the network")
    parser.add_argument("--enable-cache", action="store_true",
                        help="reuse outputs of identical earlier executions")
    return parser


def settings(args):
    """The create_pipeline keyword arguments of parsed `add_arguments` options."""
    names = ("source", "eval_per_class", "train_per_class", "test_per_class", "data_dir",
             "recipe", "ipc", "iterations", "learning_rate", "factor", "kernel",
             "real_per_class", "ipm", "init", "seed", "epochs", "protocol", "arch", "flip",
             "accuracy_threshold", "enable_cache")
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

"""What a finished run of the M3D pipeline produced, read back from ML Metadata and TFMA.

    summary(connection_config, "m3d-fashion-mnist")
    -> {"accuracy": 0.81, "per_class": {0: 0.74, ...}, "blessed": True,
        "pushed_to": "/.../serving/1764626400", "anomalies": {"train": {}, "eval": {}},
        "synthetic_set": "/.../m3d_condense/synthetic_set/2", "final_mmd": 0.012, ...}
"""

import os

import tensorflow as tf
import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.components.example_validator.executor import DEFAULT_FILE_NAME as ANOMALIES_FILE
from tfx.types import artifact_utils

from components.artifacts import SyntheticSet

ACCURACY = "sparse_categorical_accuracy"


def latest_artifacts(connection_config, pipeline_name):
    """{artifact type name: the newest LIVE artifact of that type} of a pipeline's runs."""
    store = metadata_store.MetadataStore(connection_config)
    context = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if context is None:
        raise ValueError(
            f"ML Metadata has no pipeline named {pipeline_name!r}; run the pipeline first."
        )
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    latest = {}
    for artifact in sorted(store.get_artifacts_by_context(context.id), key=lambda a: a.id):
        if artifact.state == metadata_store_pb2.Artifact.LIVE:
            latest[type_names[artifact.type_id]] = artifact
    return latest


def slice_accuracies(evaluation_uri):
    """{slice: accuracy} of a TFMA evaluation: "overall" and the label value of every class slice.

    Args:
        evaluation_uri: the Evaluator's ModelEvaluation directory.
    """
    accuracies = {}
    for slice_key, metrics in tfma.load_eval_result(evaluation_uri).slicing_metrics:
        value = metrics[""][""][ACCURACY]["doubleValue"]
        if not slice_key:
            accuracies["overall"] = value
        elif len(slice_key) == 1 and slice_key[0][0] == "label":
            accuracies[int(slice_key[0][1])] = value
    return accuracies


def split_anomalies(anomalies_artifact):
    """{split: {feature: description}} of an ExampleAnomalies artifact ({} for a clean split).

    Reads the Anomalies proto that TFX's ExampleValidator writes into every Split-{name}/;
    a dataset-level anomaly (e.g. too few examples) appears under the key "(dataset)".

    Args:
        anomalies_artifact: the ML Metadata Artifact proto (latest_artifacts' value, or a TFX
            artifact's mlmd_artifact).
    """
    found = {}
    splits = artifact_utils.decode_split_names(
        anomalies_artifact.properties["split_names"].string_value
    )
    for split in splits:
        path = os.path.join(anomalies_artifact.uri, f"Split-{split}", ANOMALIES_FILE)
        with tf.io.gfile.GFile(path, "rb") as f:
            anomalies = anomalies_pb2.Anomalies.FromString(f.read())
        found[split] = {feature: info.description
                        for feature, info in sorted(anomalies.anomaly_info.items())}
        if anomalies.HasField("dataset_anomaly_info"):
            found[split]["(dataset)"] = anomalies.dataset_anomaly_info.description
    return found


def summary(connection_config, pipeline_name):
    """The newest evaluation, blessing, push, anomalies and synthetic set of a pipeline."""
    latest = latest_artifacts(connection_config, pipeline_name)
    needed = ("ModelEvaluation", "ModelBlessing", SyntheticSet.TYPE_NAME, "Model", "PushedModel",
              "ExampleAnomalies")
    missing = [name for name in needed if name not in latest]
    if missing:
        raise ValueError(
            f"pipeline {pipeline_name!r} has no published {', '.join(missing)}; did its last run "
            "fail? Its log says which component."
        )
    accuracies = slice_accuracies(latest["ModelEvaluation"].uri)
    synthetic = latest[SyntheticSet.TYPE_NAME]
    pushed = latest["PushedModel"].custom_properties
    return {
        "accuracy": accuracies.pop("overall"),
        "per_class": dict(sorted(accuracies.items())),
        "blessed": latest["ModelBlessing"].custom_properties["blessed"].int_value == 1,
        "model": latest["Model"].uri,
        # The Pusher's record: pushed 1 and the version directory it wrote, or pushed 0.
        "pushed_to": (pushed["pushed_destination"].string_value
                      if pushed["pushed"].int_value == 1 else None),
        "anomalies": split_anomalies(latest["ExampleAnomalies"]),
        "synthetic_set": synthetic.uri,
        "ipc": synthetic.custom_properties["ipc"].int_value,
        "factor": synthetic.custom_properties["factor"].int_value,
        "kernel": synthetic.custom_properties["kernel"].string_value,
        "iterations": synthetic.custom_properties["iterations"].int_value,
        "final_mmd": synthetic.custom_properties["final_mmd"].double_value,
    }


def format_summary(result):
    """A few lines for the terminal."""
    per_class = ", ".join(f"{c}: {100 * a:.1f}" for c, a in result["per_class"].items())
    return "\n".join([
        f"synthetic set: {result['synthetic_set']} (ipc {result['ipc']}, factor "
        f"{result['factor']}, kernel {result['kernel']}, {result['iterations']} iterations, "
        f"final MMD^2 {result['final_mmd']:.4g})",
        f"model: {result['model']} ({'blessed' if result['blessed'] else 'NOT blessed'})",
        f"test accuracy: {100 * result['accuracy']:.2f} %; per class: {per_class}",
        f"pushed to {result['pushed_to']}" if result["pushed_to"]
        else "not pushed (the model is not blessed)",
        format_anomalies(result["anomalies"]),
    ])


def format_anomalies(anomalies):
    """One line: the condensed examples' anomalies against the real schema, per split."""
    if not any(anomalies.values()):
        return f"condensed examples match the real data's schema ({', '.join(anomalies)})"
    return "ANOMALIES in the condensed examples: " + "; ".join(
        f"{split}: " + ", ".join(f"{feature} ({text})" for feature, text in found.items())
        for split, found in anomalies.items() if found
    )

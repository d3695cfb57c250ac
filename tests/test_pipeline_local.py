"""The M3D pipeline end to end with LocalDagRunner on a small Fashion-MNIST sample (~2 minutes).

Checks ML Metadata the way TFX's penguin e2e test does: every component executed once, the
Evaluator's accuracy for the overall slice and every class slice, the lineage from the
evaluated model back through the condensed examples to the source examples, the validation of
the condensed examples against the real data's schema, and the push of the blessed model. A
second run with an unreachable accuracy threshold reuses every upstream output from the cache
and pushes nothing.
"""

import filecmp
import json
import os
import shutil

import pytest
import tensorflow_model_analysis as tfma
from google.protobuf import json_format
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.types import standard_artifacts

from m3d_tf import io
from m3d_tf.data.catalog import DEBIAN_FASHION_MNIST_DIR
from pipelines import local, results

pytestmark = [pytest.mark.tfx, pytest.mark.slow]

NAME = "m3d-test"
TEST_PER_CLASS = 10
SETTINGS = {"source": f"idx:{DEBIAN_FASHION_MNIST_DIR}", "eval_per_class": 2,
            "train_per_class": 20, "test_per_class": TEST_PER_CLASS, "ipc": 1, "factor": 2,
            "iterations": 3, "real_per_class": 8, "epochs": 30, "accuracy_threshold": 0.0}
# Records per split of the source examples.
SPLIT_SIZES = {"train": 10 * 20, "eval": 10 * 2, "test": 10 * TEST_PER_CLASS}
COMPONENTS = {
    "dataset_gen": "components.dataset_gen.DatasetGen",
    "m3d_condense": "components.condense.M3DCondense",
    "trainer": "tfx.components.trainer.component.Trainer",
    "evaluator": "tfx.components.evaluator.component.Evaluator",
    "pusher": "tfx.components.pusher.component.Pusher",
    "statistics_gen": "tfx.components.statistics_gen.component.StatisticsGen",
    "schema_gen": "tfx.components.schema_gen.component.SchemaGen",
    "condensed_statistics_gen": "tfx.components.statistics_gen.component.StatisticsGen",
    "example_validator": "tfx.components.example_validator.component.ExampleValidator",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(MetadataStore, connection config, root) after one run of the pipeline."""
    root = tmp_path_factory.mktemp("pipeline")
    pipeline = local.local_pipeline(root, NAME, **SETTINGS)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    config = pipeline.metadata_connection_config
    return metadata_store.MetadataStore(config), config, root


@pytest.fixture(scope="module")
def unblessed_run(run, tmp_path_factory):
    """(MetadataStore, connection config, root) of a second run that cannot be blessed.

    It starts from a copy of the first run's ML Metadata in a fresh root (so the first run's
    store and serving dir stay as they were for the other tests) and enables the cache: every
    node whose inputs and settings are unchanged reuses the first run's outputs, only the
    Evaluator (a new threshold) and the Pusher (a new blessing) execute.
    """
    _, _, first_root = run
    root = tmp_path_factory.mktemp("pipeline-unblessed")
    shutil.copy(first_root / "metadata.sqlite", root / "metadata.sqlite")
    pipeline = local.local_pipeline(root, NAME, **{**SETTINGS, "accuracy_threshold": 1.0},
                                    enable_cache=True)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    config = pipeline.metadata_connection_config
    return metadata_store.MetadataStore(config), config, root


class Lineage:
    """Walks MLMD events: which execution produced an artifact, what an execution read."""

    def __init__(self, store):
        self.store = store
        self.execution_types = {t.id: t.name for t in store.get_execution_types()}
        self.events = store.get_events_by_execution_ids([e.id for e in store.get_executions()])

    def producer(self, artifact_id):
        (event,) = [e for e in self.events
                    if e.artifact_id == artifact_id and e.type == metadata_store_pb2.Event.OUTPUT]
        (execution,) = self.store.get_executions_by_id([event.execution_id])
        return self.execution_types[execution.type_id], execution.id

    def inputs(self, execution_id, key):
        return [e.artifact_id for e in self.events
                if e.execution_id == execution_id and e.type == metadata_store_pb2.Event.INPUT
                and e.path.steps[0].key == key]

    def outputs(self, execution_id, key):
        return [e.artifact_id for e in self.events
                if e.execution_id == execution_id and e.type == metadata_store_pb2.Event.OUTPUT
                and e.path.steps[0].key == key]


def test_every_component_ran_once(run):
    store, _, _ = run
    types = {t.id: t.name for t in store.get_execution_types()}
    executions = store.get_executions()
    assert sorted(types[e.type_id] for e in executions) == sorted(COMPONENTS.values())
    assert {e.last_known_state for e in executions} == {metadata_store_pb2.Execution.COMPLETE}
    nodes = {c.name for c in store.get_contexts_by_type("node")}
    assert nodes == {f"{NAME}.{node}" for node in COMPONENTS}


def test_evaluator_reports_accuracy_overall_and_per_class(run):
    store, config, _ = run
    latest = results.latest_artifacts(config, NAME)
    counts, accuracies = {}, {}
    for slice_key, metrics in tfma.load_eval_result(latest["ModelEvaluation"].uri).slicing_metrics:
        name = "overall" if slice_key == () else slice_key
        counts[name] = metrics[""][""]["example_count"]["doubleValue"]
        accuracies[name] = metrics[""][""]["sparse_categorical_accuracy"]["doubleValue"]
    classes = [(("label", c),) for c in range(10)]
    assert sorted(counts, key=str) == sorted(["overall", *classes], key=str)
    assert counts["overall"] == 10 * TEST_PER_CLASS
    assert all(counts[c] == TEST_PER_CLASS for c in classes)
    assert all(0.0 <= accuracies[c] <= 1.0 for c in classes)
    # Overall accuracy is the mean of equally sized class slices.
    assert accuracies["overall"] == pytest.approx(sum(accuracies[c] for c in classes) / 10,
                                                  abs=1e-6)
    # Chance is 0.1; a net trained on 40 decoded images of 10 classes clears 0.2.
    assert accuracies["overall"] >= 0.2
    assert latest["ModelBlessing"].custom_properties["blessed"].int_value == 1
    assert os.path.exists(os.path.join(latest["ModelBlessing"].uri, "BLESSED"))


def test_lineage_from_evaluated_model_to_source_examples(run):
    store, _, _ = run
    lineage = Lineage(store)
    (evaluator,) = store.get_executions_by_type(COMPONENTS["evaluator"])
    (model,) = lineage.inputs(evaluator.id, "model")
    producer, trainer = lineage.producer(model)
    assert producer == COMPONENTS["trainer"]
    (condensed,) = lineage.inputs(trainer, "examples")
    producer, condense = lineage.producer(condensed)
    assert producer == COMPONENTS["m3d_condense"]
    assert lineage.outputs(condense, "condensed_examples") == [condensed]
    (source,) = lineage.inputs(condense, "examples")
    assert lineage.producer(source)[0] == COMPONENTS["dataset_gen"]
    # The Evaluator tested on those same source examples (their real Split-test).
    assert lineage.inputs(evaluator.id, "examples") == [source]
    (synthetic_id,) = lineage.outputs(condense, "synthetic_set")
    (synthetic,) = store.get_artifacts_by_id([synthetic_id])
    (condensed_artifact,) = store.get_artifacts_by_id([condensed])
    train_dir = os.path.join(condensed_artifact.uri, "Split-train")
    assert len(io.read_examples(train_dir)[1]) == 10 * 1 * 2**2
    saved = io.load_set(synthetic.uri)
    assert (saved.metadata["ipc"], saved.metadata["iterations"]) == (1, 3)
    # MLMD's SQLite store keeps a double to about 8 significant digits.
    assert synthetic.custom_properties["final_mmd"].double_value == pytest.approx(
        saved.metadata["final_mmd"], rel=1e-6)


def _node_execution(store, node):
    """The one execution of a pipeline node, found by its node context."""
    context = store.get_context_by_type_and_name("node", f"{NAME}.{node}")
    (execution,) = store.get_executions_by_context(context.id)
    return execution


def _num_examples(statistics, split):
    """Examples counted in one split of a StatisticsGen output (an MLMD artifact)."""
    artifact = standard_artifacts.ExampleStatistics()
    artifact.set_mlmd_artifact(statistics)
    (dataset,) = stats_artifact_utils.load_statistics(artifact, split).proto().datasets
    return dataset.num_examples


def test_lineage_of_the_validation(run):
    store, _, _ = run
    lineage = Lineage(store)
    validator = _node_execution(store, "example_validator")
    (statistics,) = lineage.inputs(validator.id, "statistics")
    (condensed,) = lineage.inputs(lineage.producer(statistics)[1], "examples")
    assert lineage.producer(statistics)[1] == _node_execution(store, "condensed_statistics_gen").id
    assert lineage.producer(condensed)[0] == COMPONENTS["m3d_condense"]
    (schema,) = lineage.inputs(validator.id, "schema")
    producer, schema_gen = lineage.producer(schema)
    assert producer == COMPONENTS["schema_gen"]
    (real_statistics,) = lineage.inputs(schema_gen, "statistics")
    assert lineage.producer(real_statistics)[1] == _node_execution(store, "statistics_gen").id
    (source,) = lineage.inputs(lineage.producer(real_statistics)[1], "examples")
    assert lineage.producer(source)[0] == COMPONENTS["dataset_gen"]


def test_statistics_cover_every_split_and_the_condensed_ones_match_the_schema(run):
    store, config, _ = run
    lineage = Lineage(store)
    (real_id,) = lineage.outputs(_node_execution(store, "statistics_gen").id, "statistics")
    (real,) = store.get_artifacts_by_id([real_id])
    assert {split: _num_examples(real, split) for split in SPLIT_SIZES} == SPLIT_SIZES
    condensed_statistics_gen = _node_execution(store, "condensed_statistics_gen").id
    (statistics_id,) = lineage.outputs(condensed_statistics_gen, "statistics")
    (examples_id,) = lineage.inputs(condensed_statistics_gen, "examples")
    (statistics,) = store.get_artifacts_by_id([statistics_id])
    (examples,) = store.get_artifacts_by_id([examples_id])
    for split in ("train", "eval"):
        records = len(io.read_examples(os.path.join(examples.uri, f"Split-{split}"))[1])
        assert _num_examples(statistics, split) == records
    latest = results.latest_artifacts(config, NAME)
    assert results.split_anomalies(latest["ExampleAnomalies"]) == {"train": {}, "eval": {}}
    blessed = latest["ExampleAnomalies"].custom_properties["blessed"].struct_value
    assert json.loads(json_format.MessageToJson(blessed)) == {"train": 1, "eval": 1}


def test_blessed_model_is_pushed_to_the_serving_dir(run):
    store, config, root = run
    latest = results.latest_artifacts(config, NAME)
    pushed = latest["PushedModel"].custom_properties
    assert pushed["pushed"].int_value == 1
    (version,) = os.listdir(root / "serving")
    assert version.isdigit()  # the Pusher's UNIX-time version directory
    destination = root / "serving" / version
    assert pushed["pushed_destination"].string_value == str(destination)
    assert pushed["pushed_version"].string_value == version
    # The pushed SavedModel is the Trainer's serving model, file for file.
    model = os.path.join(latest["Model"].uri, "Format-Serving")
    comparison = filecmp.dircmp(model, destination)
    assert comparison.left_only == comparison.right_only == comparison.diff_files == []
    assert "saved_model.pb" in comparison.same_files


def test_summary_reads_the_run(run):
    _, config, root = run
    summary = results.summary(config, NAME)
    assert (summary["ipc"], summary["factor"], summary["iterations"], summary["blessed"]) == (
        1, 2, 3, True)
    assert sorted(summary["per_class"]) == list(range(10))
    assert os.path.dirname(summary["pushed_to"]) == str(root / "serving")
    assert summary["anomalies"] == {"train": {}, "eval": {}}
    text = results.format_summary(summary)
    assert f"test accuracy: {100 * summary['accuracy']:.2f} %" in text
    assert text.endswith(f"pushed to {summary['pushed_to']}\n"
                         "condensed examples match the real data's schema (train, eval)")


def test_unblessed_run_reuses_the_cache_and_pushes_nothing(unblessed_run):
    store, config, root = unblessed_run
    types = {t.id: t.name for t in store.get_execution_types()}
    (_, second) = sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)
    states = sorted((types[e.type_id], e.last_known_state)
                    for e in store.get_executions_by_context(second.id))
    executed = {COMPONENTS["evaluator"], COMPONENTS["pusher"]}
    Execution = metadata_store_pb2.Execution
    assert states == sorted(
        (name, Execution.COMPLETE if name in executed else Execution.CACHED)
        for name in COMPONENTS.values()
    )
    latest = results.latest_artifacts(config, NAME)
    assert latest["ModelBlessing"].custom_properties["blessed"].int_value == 0
    assert latest["PushedModel"].custom_properties["pushed"].int_value == 0
    assert not (root / "serving").exists()
    summary = results.summary(config, NAME)
    assert (summary["blessed"], summary["pushed_to"]) == (False, None)
    assert "\nnot pushed (the model is not blessed)\n" in results.format_summary(summary)

"""The M3D pipeline end to end with LocalDagRunner on a small Fashion-MNIST sample (~1 minute).

Checks ML Metadata the way TFX's penguin e2e test does: every component executed once, the
Evaluator's accuracy for the overall slice and every class slice, and the lineage from the
evaluated model back through the condensed examples to the source examples.
"""

import os

import pytest
import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from m3d_tf import io
from m3d_tf.data.catalog import DEBIAN_FASHION_MNIST_DIR
from pipelines import local, results

pytestmark = [pytest.mark.tfx, pytest.mark.slow]

NAME = "m3d-test"
TEST_PER_CLASS = 10
SETTINGS = {"source": f"idx:{DEBIAN_FASHION_MNIST_DIR}", "eval_per_class": 2,
            "train_per_class": 20, "test_per_class": TEST_PER_CLASS, "ipc": 1, "factor": 2,
            "iterations": 3, "real_per_class": 8, "epochs": 30, "accuracy_threshold": 0.2}
COMPONENTS = {
    "dataset_gen": "components.dataset_gen.DatasetGen",
    "m3d_condense": "components.condense.M3DCondense",
    "trainer": "tfx.components.trainer.component.Trainer",
    "evaluator": "tfx.components.evaluator.component.Evaluator",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(MetadataStore, connection config) after one run of the pipeline."""
    root = tmp_path_factory.mktemp("pipeline")
    pipeline = local.local_pipeline(root, NAME, **SETTINGS)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    config = pipeline.metadata_connection_config
    return metadata_store.MetadataStore(config), config


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
    store, _ = run
    types = {t.id: t.name for t in store.get_execution_types()}
    executions = store.get_executions()
    assert sorted(types[e.type_id] for e in executions) == sorted(COMPONENTS.values())
    assert {e.last_known_state for e in executions} == {metadata_store_pb2.Execution.COMPLETE}
    nodes = {c.name for c in store.get_contexts_by_type("node")}
    assert nodes == {f"{NAME}.{node}" for node in COMPONENTS}


def test_evaluator_reports_accuracy_overall_and_per_class(run):
    store, config = run
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
    # Chance is 0.1; a net trained on 40 decoded images of 10 classes clears the 0.2 bar.
    blessed = latest["ModelBlessing"].custom_properties["blessed"].int_value
    assert accuracies["overall"] >= SETTINGS["accuracy_threshold"] and blessed == 1
    assert os.path.exists(os.path.join(latest["ModelBlessing"].uri, "BLESSED"))


def test_lineage_from_evaluated_model_to_source_examples(run):
    store, _ = run
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


def test_summary_reads_the_run(run):
    _, config = run
    summary = results.summary(config, NAME)
    assert (summary["ipc"], summary["factor"], summary["iterations"], summary["blessed"]) == (
        1, 2, 3, True)
    assert sorted(summary["per_class"]) == list(range(10))
    text = results.format_summary(summary)
    assert f"test accuracy: {100 * summary['accuracy']:.2f} %" in text

"""Tests for bench/selection.py: the final accuracy beside the best of the test checks."""

import argparse
import pathlib

import pytest

from m3d_tf.data import DatasetInfo


def _args(tmp_path, **kw):
    values = dict(ipc=[1], methods=["random"], seeds=[0], nets=[0, 1], arch="mlp",
                  protocol="idc", epochs=4, checks=2, dtype="bfloat16", eval_dtype="float32",
                  sets=str(tmp_path / "sets"), checkpoint_every=100,
                  ledger=str(tmp_path / "selection.jsonl"),
                  quality_ledger=str(tmp_path / "quality.jsonl"), out=str(tmp_path / "b.md"))
    values.update(kw)
    return argparse.Namespace(**values)


def test_the_table_networks_trained_again_give_their_final_accuracy_and_a_best_check_above_it(
        fmnist_small, tmp_path, bench):
    quality, selection, ledgers = bench("quality_table"), bench("selection"), bench("ledger")
    info = DatasetInfo("fashion_mnist", "idx:test", 10, (28, 28, 1), tuple(map(str, range(10))),
                       (0.286,), (0.353,), {"train": len(fmnist_small.y_train)})
    data = (fmnist_small.x_train, fmnist_small.y_train, info, fmnist_small.x_test,
            fmnist_small.y_test)
    args = _args(tmp_path)
    quality_ledger = ledgers.Ledger(args.quality_ledger)
    table = quality.Filler(args, quality_ledger)
    table._data = data
    table.fill(quality.Row(1, "mlp", "idc", (0,), 2), "random")  # the table's two networks

    filler = quality.Filler(args, quality_ledger)
    filler._data = data
    ledger = ledgers.Ledger(args.ledger)
    selection.run(args, ledger, filler)
    entries = sorted(ledger.entries(table="selection"), key=lambda e: e["key"]["net"])
    assert [e["key"]["net"] for e in entries] == [0, 1]
    for entry in entries:
        value, key = entry["value"], entry["key"]
        assert value["best_epoch"] in (2, 4) and value["best"] >= value["final"]
        # the same network as the table's: same set, seed and run, so the same final accuracy
        assert value["final"] == quality_ledger.get(selection.quality_key(key))["accuracy"]
    assert len(quality_ledger.entries(table="quality")) == 1 + 2  # the set was not built again

    lines = pathlib.Path(args.ledger).read_text().splitlines()
    selection.run(args, ledgers.Ledger(args.ledger), filler)
    assert pathlib.Path(args.ledger).read_text().splitlines() == lines  # nothing missing
    assert not list((tmp_path / "sets").glob("*.selection"))  # recorded: checkpoints dropped
    text = pathlib.Path(args.out).read_text()
    assert "| 1 | mlp / idc | random | 2 (seed, net: 0.0, 0.1) |" in text


def test_the_summary_reports_the_mean_gain_of_the_best_check(tmp_path, bench):
    selection, ledgers = bench("selection"), bench("ledger")
    quality = bench("quality_table")
    skey = quality.set_key("random", 10, 0, "bfloat16")
    ledger = ledgers.Ledger(tmp_path / "s.jsonl")
    quality_ledger = ledgers.Ledger(tmp_path / "q.jsonl")
    # recorded out of order: the row lists the networks and their best epochs by (seed, net)
    for net, final, best, epoch in ((1, 0.82, 0.82, 1000), (0, 0.80, 0.81, 750)):
        key = selection.selection_key(skey, "convnet", "idc", 1000, net, "bfloat16", 4)
        ledger.add(key, {"final": final, "best": best, "best_epoch": epoch, "seconds": 1.0})
        quality_ledger.add(selection.quality_key(key), {"accuracy": final, "seconds": 1.0})
    row = next(line for line in selection.summary(ledger, quality_ledger).splitlines()
               if line.startswith("| 10 |"))
    assert row == ("| 10 | convnet / idc | random | 2 (seed, net: 0.0, 0.1) | 81.00 ± 1.00 | "
                   "81.50 ± 0.50 | +0.50 (max +1.00) | 750, 1000 | 81.00 ± 1.00 |")


def test_checks_that_do_not_divide_the_epochs_are_refused(tmp_path, bench):
    selection = bench("selection")
    with pytest.raises(SystemExit, match="not a multiple of --checks 3"):
        selection.main(["--epochs", "1000", "--checks", "3", "--table-only",
                        "--ledger", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "b.md")])

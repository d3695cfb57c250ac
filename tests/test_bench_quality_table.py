"""Tests for bench/quality_table.py: the table fills piece by piece and a rerun does only what is missing."""

import argparse

import pytest

from m3d_tf import recipes
from m3d_tf.data import DatasetInfo


def test_a_set_key_and_directory_change_with_the_budget(monkeypatch, bench):
    quality = bench("quality_table")
    m3d = quality.set_key("m3d", 10, 0, "bfloat16")
    assert m3d["iterations"] == recipes.settings_for("m3d", 10, "fashion_mnist")["iterations"]
    dm = quality.set_key("dm", 10, 0, "bfloat16")
    assert (dm["iterations"], dm["real_per_class"]) == (m3d["iterations"], m3d["real_per_class"])
    assert dm["learning_rate"] == recipes.get_recipe("dm").learning_rate
    assert quality.set_key("random", 10, 0, "bfloat16") == quality.set_key("random", 10, 0, "float32")
    before = quality.set_dir("/sets", m3d)
    monkeypatch.setitem(recipes.TUNED, "m3d", {"fashion_mnist": {10: {"iterations": 123}}})
    after = quality.set_dir("/sets", quality.set_key("m3d", 10, 0, "bfloat16"))
    assert before != after and after.name.startswith("ipc10-m3d-seed0-")


def test_settings_for_refuses_unknown_settings():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['epochs'\]"):
        recipes.settings_for("m3d", 1, epochs=5)


def test_fill_records_each_network_and_a_rerun_adds_nothing(fmnist_small, tmp_path, bench):
    quality, ledgers = bench("quality_table"), bench("ledger")
    info = DatasetInfo("fashion_mnist", "idx:test", 10, (28, 28, 1), tuple(map(str, range(10))),
                       (0.286,), (0.353,), {"train": len(fmnist_small.y_train)})
    args = argparse.Namespace(sets=str(tmp_path / "sets"), epochs=2, dtype="bfloat16",
                              eval_dtype="float32")
    path = tmp_path / "quality.jsonl"
    row = quality.Row(1, "mlp", "idc", (0, 1), 2)
    filler = quality.Filler(args, ledgers.Ledger(path))
    filler._data = (fmnist_small.x_train, fmnist_small.y_train, info, fmnist_small.x_test,
                    fmnist_small.y_test)
    filler.fill(row, "random")
    lines = path.read_text().splitlines()
    assert len(lines) == 2 + 4  # two sets built, four networks tested
    assert len(list((tmp_path / "sets").iterdir())) == 2

    again = quality.Filler(args, ledgers.Ledger(path))
    again._data = filler._data
    again.fill(row, "random")
    assert path.read_text().splitlines() == lines  # nothing missing: nothing run

    text = quality.table(ledgers.Ledger(path), [row], ["random", "m3d"], 2, "bfloat16")
    random_line = next(t for t in text.splitlines() if "| random |" in t)
    assert "| 4 from 2 of 4 from 2 |" in random_line and "±" in random_line
    assert "(not yet run)" in next(t for t in text.splitlines() if "| m3d |" in t)


def test_bfloat16_networks_are_their_own_entries_paired_with_float32_in_the_parity_table(
        fmnist_small, tmp_path, bench):
    quality, ledgers = bench("quality_table"), bench("ledger")
    skey = quality.set_key("random", 1, 0, "bfloat16")
    assert "eval_dtype" not in quality.net_key(skey, "convnet", "idc", 1000, 0)  # old entries
    assert quality.net_key(skey, "convnet", "idc", 1000, 0, "bfloat16")["eval_dtype"] == "bfloat16"

    info = DatasetInfo("fashion_mnist", "idx:test", 10, (28, 28, 1), tuple(map(str, range(10))),
                       (0.286,), (0.353,), {"train": len(fmnist_small.y_train)})
    path = tmp_path / "quality.jsonl"
    row = quality.Row(1, "mlp", "idc", (0,), 2)
    data = (fmnist_small.x_train, fmnist_small.y_train, info, fmnist_small.x_test,
            fmnist_small.y_test)
    ledger = ledgers.Ledger(path)
    assert quality.parity(ledger, 2, "bfloat16") is None
    for eval_dtype in ("float32", "bfloat16"):
        args = argparse.Namespace(sets=str(tmp_path / "sets"), epochs=2, dtype="bfloat16",
                                  eval_dtype=eval_dtype)
        filler = quality.Filler(args, ledger)
        filler._data = data
        filler.fill(row, "random")
    assert len(path.read_text().splitlines()) == 1 + 2 + 2  # one set, two networks in each dtype
    for eval_dtype in ("float32", "bfloat16"):
        text = quality.table(ledger, [row], ["random"], 2, "bfloat16", eval_dtype)
        assert "| 2 from 1 of 2 from 1 |" in text
    pairs = quality.parity(ledger, 2, "bfloat16").splitlines()
    assert len(pairs) == 3 and pairs[2].startswith("| 1 | mlp / idc | random | 2 |")


def test_a_chosen_factor_gets_sets_of_its_own_and_the_earlier_budget_keeps_its_row(
        fmnist_small, tmp_path, monkeypatch, bench):
    quality, ledgers = bench("quality_table"), bench("ledger")
    chosen = dict(iterations=2, real_per_class=8, ipm=1, learning_rate=1.0)
    monkeypatch.setitem(recipes.TUNED, "m3d", {"fashion_mnist": {1: chosen}})
    info = DatasetInfo("fashion_mnist", "idx:test", 10, (28, 28, 1), tuple(map(str, range(10))),
                       (0.286,), (0.353,), {"train": len(fmnist_small.y_train)})
    args = argparse.Namespace(sets=str(tmp_path / "sets"), epochs=1, dtype="float32",
                              eval_dtype="float32")
    ledger = ledgers.Ledger(tmp_path / "quality.jsonl")
    row = quality.Row(1, "mlp", "idc", (0,), 1)

    def fill():
        filler = quality.Filler(args, ledger)
        filler._data = (fmnist_small.x_train, fmnist_small.y_train, info, fmnist_small.x_test,
                        fmnist_small.y_test)
        filler.fill(row, "m3d")
        skey = quality.set_key("m3d", 1, 0, "float32")
        return skey, filler.synthetic(skey)

    before, recipe_factor = fill()
    assert "factor" not in before and recipe_factor.metadata["factor"] == 2  # the recipe's
    monkeypatch.setitem(recipes.TUNED, "m3d", {"fashion_mnist": {1: {**chosen, "factor": 1}}})
    after, chosen_factor = fill()
    assert after["factor"] == 1 and chosen_factor.metadata["factor"] == 1
    assert quality.set_dir(args.sets, after) != quality.set_dir(args.sets, before)
    dm = quality.set_key("dm", 1, 0, "float32")  # M3D's iterations, its own recipe's factor
    assert dm["iterations"] == 2 and "factor" not in dm

    lines = [t for t in quality.table(ledger, [row], ["m3d"], 1, "float32").splitlines()
             if "| m3d |" in t]
    assert len(lines) == 2
    assert "ipm 1, factor 1 |" in lines[0] and "| 1 from 1 of 1 from 1 |" in lines[0]
    assert "factor 2 (earlier setting) |" in lines[1] and "| 1 from 1 of 1 from 1 |" in lines[1]
    assert lines[1].endswith("| - |")  # the published target belongs to the current row only


class _Stop(Exception):
    pass


def test_a_stopped_build_resumes_from_its_checkpoint_and_gives_the_uninterrupted_set(
        fmnist_small, tmp_path, monkeypatch, bench):
    import keras
    import numpy as np

    quality, ledgers = bench("quality_table"), bench("ledger")
    monkeypatch.setitem(recipes.TUNED, "m3d", {"fashion_mnist": {1: dict(
        iterations=4, real_per_class=8, ipm=1, learning_rate=1.0)}})
    info = DatasetInfo("fashion_mnist", "idx:test", 10, (28, 28, 1), tuple(map(str, range(10))),
                       (0.286,), (0.353,), {"train": len(fmnist_small.y_train)})
    data = (fmnist_small.x_train, fmnist_small.y_train, info, fmnist_small.x_test,
            fmnist_small.y_test)
    skey = quality.set_key("m3d", 1, 0, "float32")

    def filler(where):
        args = argparse.Namespace(sets=str(tmp_path / where), epochs=1, dtype="float32",
                                  eval_dtype="float32", checkpoint_every=2)
        made = quality.Filler(args, ledgers.Ledger(tmp_path / f"{where}.jsonl"))
        made._data = data
        return made

    whole = filler("whole").synthetic(skey)

    class StopAfter3(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 3:
                raise _Stop()

    condense = recipes.condense
    monkeypatch.setattr(recipes, "condense", lambda *a, callbacks=(), **k: condense(
        *a, callbacks=[*callbacks, StopAfter3()], **k))
    stopped = filler("stopped")
    with pytest.raises(_Stop):
        stopped.synthetic(skey)
    directory = quality.set_dir(tmp_path / "stopped", skey)
    saved = quality.checkpoint_dir(directory)
    assert not directory.exists() and (saved / "ckpt-2.index").exists()
    assert ledgers.Clock(saved / "seconds.json").at(2) > 0

    monkeypatch.setattr(recipes, "condense", condense)
    resumed = filler("stopped").synthetic(skey)
    np.testing.assert_array_equal(resumed.images, whole.images)
    assert not saved.exists() and (directory / "metadata.json").exists()
    value = ledgers.Ledger(tmp_path / "stopped.jsonl").get(skey)
    assert value["resumed_at"] == 2 and value["seconds"] > 0
    assert "resumed_at" not in ledgers.Ledger(tmp_path / "whole.jsonl").get(skey)


def test_a_stopped_network_resumes_from_its_checkpoint_and_its_state_goes_once_recorded(
        fmnist_small, tmp_path, monkeypatch, bench):
    from m3d_tf import evaluate

    quality, ledgers = bench("quality_table"), bench("ledger")
    info = DatasetInfo("fashion_mnist", "idx:test", 10, (28, 28, 1), tuple(map(str, range(10))),
                       (0.286,), (0.353,), {"train": len(fmnist_small.y_train)})
    data = (fmnist_small.x_train, fmnist_small.y_train, info, fmnist_small.x_test[:500],
            fmnist_small.y_test[:500])
    row = quality.Row(1, "mlp", "idc", (0,), 1)

    def filler(where):
        args = argparse.Namespace(sets=str(tmp_path / where), epochs=4, dtype="float32",
                                  eval_dtype="float32")
        made = quality.Filler(args, ledgers.Ledger(tmp_path / f"{where}.jsonl"))
        made._data = data
        return made

    filler("whole").fill(row, "random")
    skey = quality.set_key("random", 1, 0, "float32")
    key = quality.net_key(skey, "mlp", "idc", 4, 0)
    whole = ledgers.Ledger(tmp_path / "whole.jsonl").get(key)

    def stop_at_epoch_3(progress):
        if progress.epoch == 3:
            raise _Stop()

    evaluate_set = evaluate.evaluate_set
    monkeypatch.setattr(evaluate, "evaluate_set", lambda *a, **k: evaluate_set(
        *a, progress=stop_at_epoch_3, **k))
    with pytest.raises(_Stop):
        filler("stopped").fill(row, "random")
    saved = quality.net_checkpoint_dir(quality.set_dir(tmp_path / "stopped", skey), key)
    assert evaluate.checkpointed(saved, 0)[0] == 3  # every epoch of 4 (epochs // 20 < 1)
    monkeypatch.setattr(evaluate, "evaluate_set", evaluate_set)
    filler("stopped").fill(row, "random")
    value = ledgers.Ledger(tmp_path / "stopped.jsonl").get(key)
    assert value["accuracy"] == whole["accuracy"] and value["resumed_at"] == 3
    assert "resumed_at" not in whole and value["seconds"] > 0
    assert not saved.parent.exists()  # the recorded network's state is gone, and its folder
    assert [p.name for p in (tmp_path / "stopped").iterdir()] == [quality.set_dir(
        tmp_path / "stopped", skey).name]

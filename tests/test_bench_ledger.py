"""Tests for the long benchmarks' bookkeeping: the holdout split, the ledger, successive halving."""

import json
import pathlib

import numpy as np
import pytest

from m3d_tf.data import holdout_split

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_holdout_split_is_balanced_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), 10)[np.random.default_rng(1).permutation(40)]
    train, validation = holdout_split(labels, 3, seed=7)
    assert np.bincount(labels[validation]).tolist() == [3, 3, 3, 3]
    assert np.intersect1d(train, validation).size == 0
    assert sorted(np.concatenate([train, validation]).tolist()) == list(range(40))
    again, other = holdout_split(labels, 3, seed=7), holdout_split(labels, 3, seed=8)
    assert np.array_equal(again[1], validation) and not np.array_equal(other[1], validation)


@pytest.mark.parametrize("labels, per_class, says", [
    (np.repeat(np.arange(2), 3), 3, "class 0 has 3 training images"),
    (np.zeros(5, int), 0, "per_class must be a positive integer"),
    (np.zeros((5, 1), int), 1, "one-dimensional"),
])
def test_holdout_split_refuses(labels, per_class, says):
    with pytest.raises(ValueError, match=says):
        holdout_split(labels, per_class)


def test_ledger_keeps_finished_entries_and_survives_a_torn_line(tmp_path, bench):
    ledger = bench("ledger")
    path = tmp_path / "results" / "l.jsonl"
    book = ledger.Ledger(path)
    book.add({"ipc": 1, "run": 0}, {"accuracy": 0.5})
    with open(path, "a") as handle:
        handle.write('{"key": {"ipc": 1, "run": 1}, "val')  # killed mid-write
    book = ledger.Ledger(path)
    assert book.torn == 1
    assert book.get({"run": 0, "ipc": 1}) == {"accuracy": 0.5}  # key order does not matter
    assert book.get({"ipc": 1, "run": 1}) is None
    book.add({"ipc": 1, "run": 1}, {"accuracy": 0.75})
    reread = ledger.Ledger(path)
    assert reread.get({"ipc": 1, "run": 1}) == {"accuracy": 0.75}
    assert [e["value"]["accuracy"] for e in reread.entries(ipc=1)] == [0.5, 0.75]
    assert all(json.loads(line) for line in path.read_text().splitlines()[-1:])


def test_a_clock_keeps_the_seconds_at_each_step_and_reads_the_older_one_step_form(tmp_path, bench):
    ledger = bench("ledger")
    clock = ledger.Clock(tmp_path / "run" / "seconds.json")
    assert clock.read() == {} and clock.at(0) == 0.0 and clock.at(2) is None
    clock.record(4, 9.04)
    clock.record(2, 5.0)
    clock.record(4, 10.0)  # a step recorded again: the latest wins
    assert ledger.Clock(clock.path).read() == {2: 5.0, 4: 10.0}
    assert not list(clock.path.parent.glob("*.tmp"))
    old = tmp_path / "old.json"  # what bench/quality_table.py wrote before the clock
    old.write_text(json.dumps({"iteration": 300, "seconds": 812.5}))
    assert ledger.Clock(old).at(300) == 812.5 and ledger.Clock(old).at(200) is None


def test_an_entry_records_the_tensorflow_threads_it_ran_with(tmp_path, monkeypatch, bench):
    ledger = bench("ledger")
    book = ledger.Ledger(tmp_path / "l.jsonl")
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    assert book.add({"run": 0}, {})["threads"] == "default"
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    book.add({"run": 1}, {})
    lines = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert [line["threads"] for line in lines] == ["default", "1"]


def test_a_command_line_names_the_script_its_arguments_and_the_run(monkeypatch, bench):
    ledger = bench("ledger")
    monkeypatch.setattr(ledger, "commit", lambda: "abc1234")
    monkeypatch.setattr(ledger, "machine", lambda: "AMD EPYC, 2 cores")
    monkeypatch.setattr(ledger.os, "getloadavg", lambda: (2.34, 0.0, 0.0))
    monkeypatch.setattr(ledger.time, "time", lambda: 1000.0 + 7 * 60)
    assert ledger.command_line("threads.py", ["--ipc", "40"], 1000.0) == (
        "Command: `scripts/m3d-env run python bench/threads.py --ipc 40` (commit abc1234, "
        "AMD EPYC, 2 cores, load average 2.3 at the end, 7 min)")


def test_the_sets_and_checkpoints_live_beside_the_ledger_where_a_commit_keeps_them(tmp_path, bench):
    """A machine's disk goes with it: only what is committed reaches the next run."""
    ledger, search, table = bench("ledger"), bench("search"), bench("quality_table")
    ignored = [line.strip().strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for work in (search._parser().parse_args([]).work, table._parser().parse_args([]).sets):
        relative = pathlib.Path(work).relative_to(ROOT)
        assert relative.parts[:2] == ("bench", "results")
        assert not any(part == pattern for part in relative.parts for pattern in ignored)
    inside = ROOT / "bench" / "results" / "sets" / "ipc10-m3d-seed0-12345678"
    assert ledger.shown(inside) == "bench/results/sets/ipc10-m3d-seed0-12345678"
    assert ledger.shown(tmp_path / "sets") == str((tmp_path / "sets").resolve())


def test_a_command_leaves_out_the_flags_it_is_told_to(bench):
    ledger = bench("ledger")
    assert ledger.command("search.py", ["--ipc", "50", "--table-only"], omit=("--table-only",)) == (
        "scripts/m3d-env run python bench/search.py --ipc 50")


def test_write_section_replaces_only_its_own_block(tmp_path, bench):
    ledger = bench("ledger")
    doc = tmp_path / "b.md"
    doc.write_text("# Benchmarks\n\nkept\n")
    ledger.write_section(doc, "t", "first")
    ledger.write_section(doc, "u", "other")
    ledger.write_section(doc, "t", "second")
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n")
    assert "first" not in text and text.count("second") == 1 and "other" in text
    assert text.index("second") < text.index("other")


def test_successive_halving_keeps_the_better_half_in_grid_order_on_ties(bench):
    search = bench("search")
    settings = search.grid([0.3, 1.0], [64], [1, 5])
    assert len(settings) == 4
    scores = dict(zip(settings, [0.5, 0.7, 0.7, 0.1]))
    assert search.survivors(scores, 0.5) == [settings[1], settings[2]]
    assert search.survivors(scores, 0.1) == [settings[1]]
    assert search.best_shortest({300: 0.8, 1000: 0.8}) == 300
    assert search.best_shortest({300: 0.8, 1000: 0.81}) == 1000
    assert search.best_shortest({100: 0.7, 200: 0.79, 400: 0.79, 800: 0.78}) == 200


def test_a_stopped_search_resumes_its_trial_from_the_checkpoint_bit_for_bit(
        fmnist_small, fmnist_small_info, tmp_path, monkeypatch, bench):
    # A search process that stops loses its live condensers; the next one continues a setting
    # from its latest checkpoint and must reach the set an uninterrupted run reaches.
    search = bench("search")
    data = (fmnist_small.x_train, fmnist_small.y_train, None, None, fmnist_small_info)
    setting = search.Setting(1.0, 8, 1)

    def fresh(work):
        args = search._parser().parse_args(["--rungs", "2", "4", "--work", str(work)])
        return search.Search(args, None, data)

    uninterrupted = fresh(tmp_path / "a")
    uninterrupted.condensed(1, setting, 2)
    expected = uninterrupted.condensed(1, setting, 4)[0].images

    stopped = fresh(tmp_path / "b")
    stopped.condensed(1, setting, 2)
    directory = stopped.setting_dir(1, setting)
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoints", "set-2"]
    resumed = fresh(tmp_path / "b")  # a new process: nothing live
    from m3d_tf import recipes

    calls, condense = [], recipes.condense
    monkeypatch.setattr(recipes, "condense", lambda *a, **k: calls.append(k) or condense(*a, **k))
    assert np.array_equal(resumed.condensed(1, setting, 4)[0].images, expected)
    assert calls[0]["resume_from"] == directory / "checkpoints"  # 2 iterations, not 4
    assert (directory / "set-4" / "metadata.json").exists()
    # A set saved by an earlier process is charged the condensing its clock recorded, once per
    # rung: 0 to 2 in the first process, 2 to 4 in the second.
    clock = search.ledgers.Clock(directory / "checkpoints" / "seconds.json").read()
    assert sorted(clock) == [2, 4] and 0 < clock[2] < clock[4]
    loaded, seconds = fresh(tmp_path / "b").condensed(1, setting, 2)
    assert loaded.metadata["iterations"] == 2 and seconds == pytest.approx(clock[2])
    assert fresh(tmp_path / "b").condensed(1, setting, 4)[1] == pytest.approx(clock[4] - clock[2])


def _searcher(bench, fmnist_small, fmnist_small_info, work, *rungs):
    """(bench/search.py, a function that starts a fresh search process): M3D on the small slice
    with `rungs`, its sets and checkpoints under `work`."""
    search = bench("search")
    data = (fmnist_small.x_train, fmnist_small.y_train, None, None, fmnist_small_info)
    args = search._parser().parse_args(["--rungs", *map(str, rungs), "--work", str(work)])
    return search, lambda: search.Search(args, None, data)


def test_the_final_lengths_load_the_chosen_rungs_set_and_do_not_condense_it_again(
        fmnist_small, fmnist_small_info, tmp_path, monkeypatch, bench):
    from m3d_tf import recipes

    search, fresh = _searcher(bench, fmnist_small, fmnist_small_info, tmp_path, 2, 4)
    setting, runner = search.Setting(1.0, 8, 1), fresh()
    at_2 = runner.condensed(1, setting, 2)[0].images
    runner.condensed(1, setting, 4)  # the setting's condenser is live at 4 now
    calls, condense = [], recipes.condense
    monkeypatch.setattr(recipes, "condense", lambda *a, **k: calls.append(k) or condense(*a, **k))
    assert np.array_equal(runner.condensed(1, setting, 2)[0].images, at_2) and calls == []


class _Stop(Exception):
    pass


def test_a_trial_stopped_mid_way_is_charged_the_condensing_of_both_processes(
        fmnist_small, fmnist_small_info, tmp_path, monkeypatch, bench):
    import keras

    from m3d_tf import recipes

    search, fresh = _searcher(bench, fmnist_small, fmnist_small_info, tmp_path, 2, 6)
    setting, first = search.Setting(1.0, 8, 1), fresh()
    first.condensed(1, setting, 2)

    class StopAt5(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 5:
                raise _Stop()

    condense = recipes.condense
    monkeypatch.setattr(recipes, "condense", lambda *a, callbacks=(), **k: condense(
        *a, callbacks=[*callbacks, StopAt5()], **k))
    with pytest.raises(_Stop):  # killed on the way from 2 to 6, after the checkpoint at 4
        first.condensed(1, setting, 6)
    monkeypatch.setattr(recipes, "condense", condense)
    path = first.setting_dir(1, setting) / "checkpoints" / "seconds.json"
    stopped = search.ledgers.Clock(path).read()
    assert sorted(stopped) == [2, 4]
    seconds = fresh().condensed(1, setting, 6)[1]  # resumes at 4
    clock = search.ledgers.Clock(path).read()
    assert clock[4] == stopped[4] and seconds == pytest.approx(clock[6] - clock[2])
    assert seconds > clock[6] - clock[4]  # the first process's 2 to 4 is in it


def test_a_setting_condensed_before_the_clock_is_charged_from_where_the_clock_began(
        fmnist_small, fmnist_small_info, tmp_path, bench):
    search, fresh = _searcher(bench, fmnist_small, fmnist_small_info, tmp_path, 2, 4)
    setting = search.Setting(1.0, 8, 1)
    fresh().condensed(1, setting, 2)
    path = fresh().setting_dir(1, setting) / "checkpoints" / "seconds.json"
    path.unlink()  # as the searches under way on 2026-12-02 left their settings
    seconds = fresh().condensed(1, setting, 4)[1]
    clock = search.ledgers.Clock(path).read()
    assert clock[2] == 0.0 and seconds == pytest.approx(clock[4]) and seconds > 0
    assert fresh().condensed(1, setting, 4)[1] == pytest.approx(seconds)


def test_a_factor_is_a_setting_of_its_own_and_the_recipes_factor_keeps_the_old_names(
        fmnist_small, fmnist_small_info, tmp_path, bench):
    search = bench("search")
    # The recipe's factor (m3d: 2) is the setting without a factor: the name and the trials of a
    # search run before factor was a dimension.
    assert search.factors(None, 2) == [None]
    assert search.factors([1, 2, 1], 2) == [1, None]
    with pytest.raises(SystemExit, match="--factor must be positive"):
        search.factors([0], 2)
    assert search.Setting(1.0, 128, 1).key() == {"lr_scale": 1.0, "real_per_class": 128, "ipm": 1}
    assert search.Setting(1.0, 128, 1, 1).key()["factor"] == 1
    assert search.grid([1.0], [128], [1], [1, None]) == [
        search.Setting(1.0, 128, 1, 1), search.Setting(1.0, 128, 1)]

    args = search._parser().parse_args(["--rungs", "2", "--work", str(tmp_path)])
    data = (fmnist_small.x_train, fmnist_small.y_train, None, None, fmnist_small_info)
    runner = search.Search(args, None, data)
    one, default = search.Setting(1.0, 8, 1, 1), search.Setting(1.0, 8, 1)
    assert runner.setting_dir(1, one) != runner.setting_dir(1, default)
    plain = runner.condensed(1, one, 2)[0]
    mosaic = runner.condensed(1, default, 2)[0]
    assert plain.metadata["factor"] == 1 and mosaic.metadata["factor"] == 2
    assert len(plain.decoded()[0]) == 10 and len(mosaic.decoded()[0]) == 40


def test_a_bfloat16_search_is_its_own_and_a_float32_one_keeps_its_keys(tmp_path, bench):
    search, ledgers = bench("search"), bench("ledger")
    plain = search._parser().parse_args([])
    fast = search._parser().parse_args(["--eval-dtype", "bfloat16"])
    assert "eval_dtype" not in search.search_key(plain, 10)  # earlier searches' trials
    assert search.search_key(fast, 10) == {**search.search_key(plain, 10),
                                           "eval_dtype": "bfloat16"}
    ledger = ledgers.Ledger(tmp_path / "search.jsonl")
    for args, mean in ((plain, 0.8), (fast, 0.7)):
        key = {**search.search_key(args, 10), **search.Setting(1.0, 128, 1).key(),
               "iterations": 200, "epochs": 300}
        ledger.add(key, {"accuracies": [mean], "mean": mean, "condense_seconds": 1.0,
                         "evaluate_seconds": 1.0})
    for args, cell in ((plain, "| 80.00 |"), (fast, "| 70.00 |")):
        key = search.search_key(args, 10)
        assert len(search.search_trials(ledger, key)) == 1
        assert cell in search.table(ledger, key, [200])
    # The sets and checkpoints do not depend on how they are scored: a bfloat16 search reuses them.
    setting = search.Setting(1.0, 128, 1)
    dirs = {search.Search(args, ledger, None).setting_dir(10, setting)
            for args in (plain, fast)}
    assert len(dirs) == 1


def test_a_replay_of_the_ledger_gives_a_finished_searchs_choice_and_stops_at_a_missing_trial(
        tmp_path, bench):
    search, ledgers = bench("search"), bench("ledger")
    args = search._parser().parse_args(["--ipc", "1", "--lr-scale", "1", "3", "--real-per-class",
                                        "128", "--ipm", "1", "--rungs", "100", "200"])
    ledger = ledgers.Ledger(tmp_path / "search.jsonl")
    replay = search.Search(args, ledger, None)
    slow, fast = search.Setting(1.0, 128, 1), search.Setting(3.0, 128, 1)

    def record(setting, iterations, epochs, mean):
        ledger.add(replay.trial_key(1, setting, iterations, epochs),
                   {"accuracies": [mean], "mean": mean, "condense_seconds": 1.0,
                    "evaluate_seconds": 1.0})

    record(slow, 100, 300, 0.78)
    record(fast, 100, 300, 0.79)  # the better half: fast goes on to 200
    with pytest.raises(search.Unfinished, match="lr x3, 128 real/class, ipm 1, 200 it, 300 ep"):
        replay.run(1)
    record(fast, 200, 300, 0.785)  # worse than at 100: the choice is 100 iterations
    with pytest.raises(search.Unfinished, match="100 it, 1000 ep"):  # its 1,000-epoch trial
        replay.run(1)
    record(fast, 100, 1000, 0.80)
    assert replay.run(1) == (fast, 100, 1000)
    text = search.table(ledger, search.search_key(args, 1), args.rungs, *replay.run(1))
    assert "| **lr x3, 128 real/class, ipm 1** | 79.00 | 78.50 |" in text
    assert "Chosen: lr x3, 128 real/class, ipm 1, 100 iterations" in text


def test_a_trial_stopped_mid_evaluation_goes_on_from_its_networks_checkpoints(
        fmnist_small, fmnist_small_info, tmp_path, monkeypatch, bench):
    from m3d_tf import evaluate

    search = bench("search")
    x_val, y_val = fmnist_small.x_test[:300], fmnist_small.y_test[:300]
    data = (fmnist_small.x_train, fmnist_small.y_train, x_val, y_val, fmnist_small_info)
    args = search._parser().parse_args(["--rungs", "2", "--epochs", "3", "--nets", "2",
                                        "--work", str(tmp_path / "work")])
    setting = search.Setting(1.0, 8, 1)

    def measured(where):
        ledger = search.ledgers.Ledger(tmp_path / f"{where}.jsonl")
        search.Search(args, ledger, data).measure(1, setting, 2, 3)
        return ledger.entries()[0]["value"]

    whole = measured("whole")

    def stop_in_the_second_network(progress):
        if (progress.run, progress.epoch) == (2, 2):
            raise _Stop()

    evaluate_set = evaluate.evaluate_set
    monkeypatch.setattr(evaluate, "evaluate_set", lambda *a, **k: evaluate_set(
        *a, progress=stop_in_the_second_network, **k))
    with pytest.raises(_Stop):
        measured("stopped")
    networks = search.Search(args, None, data).setting_dir(1, setting) / "networks"
    (saved,) = networks.iterdir()
    assert [evaluate.checkpointed(saved, r)[0] for r in (0, 1)] == [3, 2]
    before = sum(evaluate.checkpointed(saved, r)[1] for r in (0, 1))
    monkeypatch.setattr(evaluate, "evaluate_set", evaluate_set)
    resumed = measured("stopped")
    assert resumed["accuracies"] == whole["accuracies"]
    assert resumed["evaluate_seconds"] >= round(before, 1)  # the stopped process's training too
    assert not networks.exists()  # recorded: the networks' states are gone

"""The values chosen on a validation split (recipes.TUNED) are the defaults of every caller."""

import dataclasses

import numpy as np

from m3d_tf import cli, io, recipes

CHOSEN = {"fashion_mnist": {1: dict(iterations=3, real_per_class=9, ipm=2, learning_rate=0.25,
                                    factor=1)}}


def test_settings_for_takes_the_chosen_values_of_that_dataset_and_ipc_only(monkeypatch):
    monkeypatch.setitem(recipes.TUNED, "m3d", CHOSEN)
    m3d = recipes.get_recipe("m3d")
    defaults = dict(iterations=m3d.iterations, real_per_class=m3d.real_per_class, ipm=m3d.ipm,
                    factor=m3d.factor)
    assert recipes.settings_for("m3d", 1, "fashion_mnist") == CHOSEN["fashion_mnist"][1]
    assert recipes.settings_for("m3d", 1, "mnist") == {**defaults, "learning_rate": 1.0}
    assert recipes.settings_for("m3d", 10, "fashion_mnist") == {**defaults, "learning_rate": 10.0}
    assert recipes.settings_for("m3d", 1, "fashion_mnist", ipm=4)["ipm"] == 4


def test_build_condenser_and_condense_default_to_the_chosen_values(monkeypatch, fmnist_small,
                                                                  fmnist_small_info):
    monkeypatch.setitem(recipes.TUNED, "m3d", CHOSEN)
    info = fmnist_small_info
    built = recipes.build_condenser(info, 1)
    assert (built.ipm, built.real_per_class, built.factor) == (2, 9, 1)
    other = recipes.build_condenser(dataclasses.replace(info, name="mnist"), 1)
    assert (other.ipm, other.real_per_class, other.factor) == (5, 128, 2)  # nothing chosen there
    assert recipes.build_condenser(info, 1, ipm=3).ipm == 3  # an argument still wins
    assert recipes.build_condenser(info, 1, factor=2).factor == 2

    condenser, history = recipes.condense(fmnist_small.x_train, fmnist_small.y_train, info, 1)
    assert int(condenser.optimizer.iterations.numpy()) == 3
    assert np.isclose(float(condenser.optimizer.learning_rate.numpy()), 0.25)
    assert len(history["mmd"]) == 1


def test_m3d_condense_defaults_to_the_chosen_values_of_the_data_it_reads(monkeypatch, tmp_path,
                                                                         fmnist_small):
    # An npz file's DatasetInfo.name is its stem: this one reads as "fashion_mnist".
    monkeypatch.setitem(recipes.TUNED, "m3d", CHOSEN)
    source = tmp_path / "fashion_mnist.npz"
    np.savez(source, x_train=fmnist_small.x_train, y_train=fmnist_small.y_train)
    out = tmp_path / "set"
    assert cli.main(["condense", "--dataset", f"npz:{source}", "--ipc", "1", "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache")]) == 0
    metadata = io.load_set(out).metadata
    config = metadata["condenser_config"]
    assert (metadata["iterations"], config["ipm"], config["real_per_class"],
            metadata["factor"]) == (3, 2, 9, 1)

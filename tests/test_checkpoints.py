"""Exact resume: an interrupted and resumed condensation equals an uninterrupted one."""

import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from m3d_tf import checkpoints
from m3d_tf.data import DatasetInfo
from m3d_tf.recipes import build_condenser, condense

CLASSES = 3


@pytest.fixture(scope="module")
def real(fmnist_small):
    keep = fmnist_small.y_train < CLASSES
    info = DatasetInfo(
        name="fashion_mnist", source="test", num_classes=CLASSES, image_shape=(28, 28, 1),
        class_names=tuple(fmnist_small.class_names[:CLASSES]), mean=(0.29,), std=(0.35,),
        split_sizes={"train": int(keep.sum())},
    )
    return fmnist_small.x_train[keep], fmnist_small.y_train[keep], info


SMALL = dict(real_per_class=8, net_width=16, ipm=2)


def test_resume_ends_with_the_same_set_as_an_uninterrupted_run(real, tmp_path):
    images, labels, info = real
    whole, _ = condense(images, labels, info, 2, iterations=5, learning_rate=0.5, seed=7, **SMALL)

    # Stop after 3 iterations (a checkpoint at 2 and at the end, 3) ...
    hook = checkpoints.CheckpointCallback(tmp_path / "ckpt", {"seed": 7}, every=2)
    first, _ = condense(images, labels, info, 2, iterations=3, learning_rate=0.5, seed=7,
                        callbacks=[hook], **SMALL)
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("ckpt-*.index")) == [
        "ckpt-2.index", "ckpt-3.index"
    ]
    assert checkpoints.read_run(tmp_path / "ckpt") == {"seed": 7}
    assert checkpoints.latest_step(tmp_path / "ckpt") == 3

    # recipes.condense resumes by itself (what `m3d condense --resume` calls): built, restored
    # instead of initialised, compiled, and fitted from iteration 3 on.
    again, _ = condense(images, labels, info, 2, iterations=5, learning_rate=0.5, seed=7,
                        resume_from=tmp_path / "ckpt", **SMALL)
    assert int(again.optimizer.iterations.numpy()) == 5
    np.testing.assert_array_equal(again.synthetic_images(), whole.synthetic_images())

    # ... and continue in a fresh condenser, as a new process would.
    resumed = build_condenser(info, 2, seed=7, **SMALL)
    resumed.compile(learning_rate=0.5)
    step = checkpoints.restore_checkpoint(resumed, tmp_path / "ckpt")
    assert step == 3
    np.testing.assert_array_equal(resumed.synthetic_images(), first.synthetic_images())
    resumed, _ = condense(images, labels, info, 2, iterations=5, seed=7, initial_step=step,
                          condenser=resumed, **SMALL)
    assert int(resumed.optimizer.iterations.numpy()) == 5
    np.testing.assert_array_equal(resumed.synthetic_images(), whole.synthetic_images())
    assert not np.array_equal(first.synthetic_images(), whole.synthetic_images())


def test_restore_errors(real, tmp_path):
    images, labels, info = real
    condenser = build_condenser(info, 2, **SMALL)
    with pytest.raises(ValueError, match=r"compile\(\) the condenser before"):
        checkpoints.restore_checkpoint(condenser, tmp_path)
    condenser.compile()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*run without --resume"):
        checkpoints.restore_checkpoint(condenser, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*run without --resume"):
        checkpoints.latest_step(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"run.json is missing"):
        checkpoints.read_run(tmp_path)
    (tmp_path / "run.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"is not valid JSON"):
        checkpoints.read_run(tmp_path)


def test_a_checkpoint_that_cannot_be_written_says_so_and_keeps_the_earlier_ones(tmp_path):
    # A real failed write: after the checkpoint of iteration 2, the process may write no file
    # larger than 1,000 bytes (RLIMIT_FSIZE, as a full disk would stop it). A subprocess, so
    # that the limit binds nothing of pytest's.
    code = textwrap.dedent(
        f"""
        import resource, signal, sys
        import keras, numpy as np
        from m3d_tf import checkpoints, recipes
        from m3d_tf.data import DatasetInfo

        class Limit(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch == 1:  # after the checkpoint of iteration 2
                    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
                    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))

        images = np.random.default_rng(0).integers(0, 256, (60, 28, 28, 1), dtype=np.uint8)
        labels = np.repeat(np.arange(3), 20)
        info = DatasetInfo("own", "npz:own", 3, (28, 28, 1), ("a", "b", "c"), (0.5,), (0.3,),
                           {{"train": 60}})
        hook = checkpoints.CheckpointCallback({str(tmp_path / "ckpt")!r}, {{"seed": 0}}, every=1)
        try:
            recipes.condense(images, labels, info, 2, iterations=5, real_per_class=8,
                             net_width=16, callbacks=[hook, Limit()])
        except OSError as error:
            print("OSError:", error)
            sys.exit(0)
        sys.exit("no error")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=600, cwd=pathlib.Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (f"could not write the checkpoint of iteration 3 to {tmp_path / 'ckpt'} (" in
            result.stdout)
    assert "File too large" in result.stdout and "{{function_node" not in result.stdout
    assert "the latest complete checkpoint, ckpt-2, is intact" in result.stdout
    assert "then resume from it: `m3d condense ... --resume`" in result.stdout
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index",
        "ckpt-2.data-00000-of-00001", "ckpt-2.index", "run.json"]  # no partial ckpt-3_temp
    assert checkpoints.latest_step(tmp_path / "ckpt") == 2

"""m3d_tf.data.stream and records: per-class files from one streaming pass, batches read from disk.

Numbers come from the real Fashion-MNIST slice (tests/conftest.py fmnist_small) written as
TFRecord shards, against the in-memory computations (channel_stats, load_arrays, initialize), and
from images that carry their own index, so that a batch says which images it drew.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from m3d_tf import cli, io, recipes
from m3d_tf.data import (channel_stats, example_chunks, initialization_sample, load_arrays,
                         open_class_files, stream_source, streamed_batches, write_class_files)
from m3d_tf.data import files as data_files
from m3d_tf.data.balanced import balanced_batches, balanced_layout


def _raw_shards(directory, images, labels, shards=2, with_shape=False):
    """TFRecord shards with raw uint8 image bytes and an int64 label (m3d_tf.data.files layout);
    with_shape: also height, width and channels (m3d_tf.io's layout with uint8 pixels)."""
    directory.mkdir(parents=True, exist_ok=True)
    for shard, rows in enumerate(np.array_split(np.arange(len(labels)), shards)):
        with tf.io.TFRecordWriter(str(directory / f"part-{shard}.tfrecord")) as writer:
            for i in rows:
                feature = {
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[images[i].tobytes()])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(
                        value=[int(labels[i])])),
                }
                if with_shape:
                    for key, size in zip(("height", "width", "channels"), images.shape[1:]):
                        feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(
                            value=[size]))
                writer.write(tf.train.Example(
                    features=tf.train.Features(feature=feature)).SerializeToString())
    return f"tfrecord:{directory}/*.tfrecord"


@pytest.fixture(scope="module")
def raw_source(fmnist_small, tmp_path_factory):
    return _raw_shards(tmp_path_factory.mktemp("raw") / "shards", fmnist_small.x_train,
                       fmnist_small.y_train)


def _indexed(counts, shape=(2, 2, 1)):
    """uint8 images whose pixels spell (class, index within the class) and their labels,
    classes interleaved as in a real file."""
    labels = np.concatenate([np.full(k, c) for c, k in enumerate(counts)])
    order = np.random.default_rng(0).permutation(len(labels))
    labels = labels[order]
    index = np.concatenate([np.arange(k) for k in counts])[order]
    pixels = np.stack([labels, index // 256, index % 256, np.zeros_like(index)], axis=1)
    return pixels.astype(np.uint8).reshape(-1, *shape), labels


def _drawn(images):
    """(class, index) of each image of a batch made from `_indexed` images."""
    pixels = np.round(np.asarray(images).reshape(len(images), -1) * 255).astype(int)
    return pixels[:, 0], pixels[:, 1] * 256 + pixels[:, 2]


@pytest.fixture
def indexed_files(tmp_path):
    images, labels = _indexed([20, 17, 30])
    return write_class_files([(images[:25], labels[:25]), (images[25:], labels[25:])],
                             tmp_path / "indexed")


# === The streaming pass: per-class files, counts and statistics ===


def test_float_examples_stream_into_class_files_with_the_in_memory_statistics(
        fmnist_small, tmp_path):
    images = fmnist_small.x_train / np.float32(255)
    for part in range(2):
        rows = slice(500 * part, 500 * (part + 1))
        io.write_examples(tmp_path / f"part-{part}.tfrecord.gz", images[rows],
                          fmnist_small.y_train[rows], compression="GZIP")
    files = sorted(str(p) for p in tmp_path.glob("*.gz"))
    chunks = list(example_chunks(files, chunk_size=300))
    assert [len(y) for _, y in chunks] == [300, 300, 300, 100]
    assert chunks[0][0].dtype == np.float32
    class_files = write_class_files(iter(chunks), tmp_path / "cache", num_classes=10)

    assert class_files.counts == (100,) * 10 and class_files.dtype == "float32"
    pixels = images.astype(np.float64).reshape(-1)
    np.testing.assert_allclose(class_files.mean, [pixels.mean()], rtol=1e-12)
    np.testing.assert_allclose(class_files.std, [pixels.std()], rtol=1e-12)
    for c in (0, 7):  # class files hold each class's images in file order, exactly
        stored = np.fromfile(class_files.path(c), "<f4").reshape(-1, 28, 28, 1)
        np.testing.assert_array_equal(stored, images[fmnist_small.y_train == c])
    assert open_class_files(tmp_path / "cache") == class_files


def test_stream_source_gives_load_arrays_info_and_reuses_its_cache(raw_source, fmnist_small,
                                                                   tmp_path):
    class_files, info = stream_source(raw_source, image_shape=(28, 28, 1), cache_dir=tmp_path)
    images, labels, loaded = load_arrays(raw_source, image_shape=(28, 28, 1))
    assert info == loaded  # classes, shape, split sizes, and mean/std bit for bit
    assert (class_files.mean, class_files.std) == channel_stats(fmnist_small.x_train)
    assert class_files.counts == tuple(np.bincount(labels)) and class_files.dtype == "uint8"
    index = os.path.join(class_files.directory, "index.json")
    written = os.stat(index).st_mtime_ns
    assert stream_source(raw_source, image_shape=(28, 28, 1), cache_dir=tmp_path)[0] == class_files
    assert os.stat(index).st_mtime_ns == written  # reused, not rewritten


def test_a_changed_source_gets_new_class_files(fmnist_small, tmp_path):
    source = _raw_shards(tmp_path / "shards", fmnist_small.x_train, fmnist_small.y_train)
    first, _ = stream_source(source, image_shape=(28, 28, 1), cache_dir=tmp_path / "cache")
    keep = fmnist_small.y_train != 3
    _raw_shards(tmp_path / "shards", fmnist_small.x_train[keep], fmnist_small.y_train[keep])
    second, _ = stream_source(source, image_shape=(28, 28, 1), cache_dir=tmp_path / "cache")
    assert first.counts[3] == 100 and second.counts[3] == 0
    assert second.directory != first.directory


def test_a_writer_that_loses_the_race_leaves_the_winners_files(fmnist_small, tmp_path):
    # Two workers of one run stream the same source into the same cache at once (CI saw the
    # loser's rename fail with ENOTEMPTY): the loser must say FileExistsError, which
    # class_files_for answers by opening the winner's files, and leave nothing of its own.
    images, labels = fmnist_small.x_train[:40], fmnist_small.y_train[:40]
    target = tmp_path / "cache"
    won = []

    def chunks():
        yield images[:20], labels[:20]
        won.append(write_class_files([(images, labels)], target, num_classes=10))
        yield images[20:], labels[20:]

    with pytest.raises(FileExistsError, match=r"written by another process meanwhile"):
        write_class_files(chunks(), target, num_classes=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    assert open_class_files(target) == won[0]


@pytest.mark.slow
def test_tfds_prepared_files_stream_chunk_by_chunk(tmp_path):
    class_files, info = stream_source("fashion_mnist", cache_dir=tmp_path)
    images, labels, loaded = load_arrays("fashion_mnist", cache_dir=tmp_path)
    assert info == loaded and class_files.counts == (6000,) * 10
    stored = np.fromfile(class_files.path(9), np.uint8).reshape(-1, 28, 28, 1)
    np.testing.assert_array_equal(stored, images[labels == 9])


# === Batches ===


def test_every_batch_has_n_images_of_each_class_and_epochs_are_permutations(indexed_files):
    n = 4
    batches = list(streamed_batches(indexed_files, n, seed=5).take(8).as_numpy_iterator())
    per_epoch = (5, 4, 7)  # floor(k_c / n) for counts (20, 17, 30)
    for images, labels in batches:
        assert images.shape == (12, 2, 2, 1) and images.dtype == np.float32
        np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], n).astype(np.int32))
        classes, _ = _drawn(images)
        np.testing.assert_array_equal(classes, labels)  # each image from its own class's file
    for c, (count, steps) in enumerate(zip((20, 17, 30), per_epoch)):
        drawn = [_drawn(images)[1][c * n:(c + 1) * n] for images, _ in batches]
        first_epoch = np.concatenate(drawn[:steps])
        assert len(set(first_epoch)) == steps * n and first_epoch.max() < count  # no repeats
        if steps < len(drawn):  # the next epoch is another permutation
            second = np.concatenate(drawn[steps:2 * steps])
            assert not np.array_equal(second, first_epoch[:len(second)])


def test_batches_are_a_function_of_seed_and_step_and_resume_exactly(indexed_files):
    def steps(seed, start, count):
        stream = streamed_batches(indexed_files, 3, seed=seed, start=start)
        return [images for images, _ in stream.take(count).as_numpy_iterator()]

    uninterrupted = steps(seed=1, start=0, count=12)
    for a, b in zip(uninterrupted, steps(seed=1, start=0, count=12)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(uninterrupted[7:], steps(seed=1, start=7, count=5)):  # resumed at step 7
        np.testing.assert_array_equal(a, b)
    other = steps(seed=2, start=0, count=12)
    assert not all(np.array_equal(a, b) for a, b in zip(uninterrupted, other))


def test_chosen_classes_and_float_pixels(tmp_path):
    images = np.linspace(0, 1, 6 * 4, dtype=np.float32).reshape(6, 2, 2, 1)
    class_files = write_class_files([(images, np.array([0, 1, 2, 1, 2, 0]))], tmp_path / "f")
    batch, labels = next(streamed_batches(class_files, 2, classes=[2, 1]).as_numpy_iterator())
    np.testing.assert_array_equal(labels, [1, 1, 2, 2])
    assert sorted(batch[:2, 0, 0, 0].tolist()) == images[[1, 3], 0, 0, 0].tolist()  # exact
    assert sorted(batch[2:, 0, 0, 0].tolist()) == images[[2, 4], 0, 0, 0].tolist()


def test_the_condenser_fits_on_streamed_batches(fmnist_small, tmp_path):
    images, labels = fmnist_small.x_train, fmnist_small.y_train
    class_files = write_class_files([(images, labels)], tmp_path / "c")
    info = stream_source(_raw_shards(tmp_path / "s", images, labels), image_shape=(28, 28, 1),
                         cache_dir=tmp_path)[1]
    condenser, history = recipes.condense(
        *initialization_sample(class_files, init="mix", ipc=1, factor=2, seed=0), info, 1,
        iterations=2, seed=0, real_per_class=8,
        batches=streamed_batches(class_files, 8, seed=0))
    assert len(history["mmd"]) == 1 and np.isfinite(history["mmd"][0])
    assert condenser.synthetic_images().shape == (10, 28, 28, 1)
    # A streamed stream is class-balanced by construction: the condenser's fast path takes it.
    stream = streamed_batches(class_files, 8, seed=0)
    assert balanced_layout(stream) == (tuple(range(10)), 8)
    assert condenser._route_for(stream) == condenser._route_for(
        balanced_batches((images, labels), 8, seed=0)) != condenser._route_for(stream.take(2))


@pytest.mark.parametrize("init, factor", [("mix", 2), ("real", 1)])
def test_initialization_sample_gives_the_in_memory_initial_set(fmnist_small, tmp_path, init,
                                                               factor):
    images, labels = fmnist_small.x_train, fmnist_small.y_train
    class_files = write_class_files([(images, labels)], tmp_path / "c")
    info = stream_source(_raw_shards(tmp_path / "s", images, labels), image_shape=(28, 28, 1),
                         cache_dir=tmp_path)[1]

    def initial(data):
        condenser = recipes.build_condenser(info, 3, seed=4, init=init, factor=factor)
        return condenser.initialize(data).synthetic_images()

    sample = initialization_sample(class_files, init=init, ipc=3, factor=factor, seed=4)
    assert len(sample[1]) == 10 * 3 * factor**2
    np.testing.assert_array_equal(initial(sample), initial((images, labels)))


# === Errors at the boundary ===


def test_a_class_with_fewer_than_n_images_is_named(indexed_files):
    with pytest.raises(ValueError, match=r"^class 1 has 17 images; n_per_class=18 needs at "
                                         r"least 18\. Lower n_per_class or leave the class out"):
        streamed_batches(indexed_files, 18)
    with pytest.raises(ValueError, match=r"n_per_class must be a positive integer\. Received "
                                         r"n_per_class=0\."):
        streamed_batches(indexed_files, 0)
    with pytest.raises(ValueError, match=r"start must be a non-negative integer\. Received "
                                         r"start=-1\."):
        streamed_batches(indexed_files, 2, start=-1)
    with pytest.raises(ValueError, match=r"classes must be distinct class indices in 0\.\.2"):
        streamed_batches(indexed_files, 2, classes=[0, 3])


def test_empty_file_sets_and_empty_files_are_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^example_chunks needs at least one TFRecord file; "
                                         r"none were given\.$"):
        next(example_chunks([]))
    empty = tmp_path / "empty.tfrecord"
    with tf.io.TFRecordWriter(str(empty)):
        pass
    with pytest.raises(ValueError, match=r"empty\.tfrecord hold no records"):
        next(example_chunks([str(empty)]))
    with pytest.raises(FileNotFoundError, match=r"no TFRecord files match .*/absent/\*\.tfrecord"):
        stream_source(f"tfrecord:{tmp_path}/absent/*.tfrecord", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"^data holds no images; give at least one"):
        write_class_files([], tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_bad_chunks_are_errors_and_leave_no_directory(tmp_path):
    good = np.zeros((2, 2, 2, 1), np.uint8)
    cases = [
        ([(good * 0 + 2.0, [0, 1])], r"chunk 0: float images must be in \[0, 1\]"),
        ([(good, [0, 1]), (np.zeros((2, 3, 2, 1), np.uint8), [0, 1])],
         r"chunk 1: uint8 images of shape \(3, 2, 1\) after uint8 images of shape \(2, 2, 1\)"),
        ([(good, [0, 5])], r"label 5 is outside 0\.\.2 \(3 classes\)"),
        ([(good, [0, -1])], r"labels must be class indices >= 0"),
        ([(good, [0])], r"labels must be 2 integers"),
    ]
    for chunks, message in cases:
        with pytest.raises(ValueError, match=message):
            write_class_files(chunks, tmp_path / "bad", num_classes=3)
        assert list(tmp_path.iterdir()) == []


def test_raw_bytes_of_another_size_are_named(tmp_path):
    source = _raw_shards(tmp_path, np.zeros((4, 5, 5, 1), np.uint8), np.arange(4), shards=1)
    with pytest.raises(ValueError, match=r"25 image bytes fit neither uint8 \(784\) nor float32 "
                                         r"\(3136\) pixels of shape \(28, 28, 1\); fix "
                                         r"image_shape\."):
        stream_source(source, image_shape=(28, 28, 1), cache_dir=tmp_path / "cache")


# === The CLI and the TFX component read through the stream ===


def test_cli_condense_streams_from_tfrecord_shards(fmnist_small, tmp_path, capsys,
                                                   monkeypatch):
    source = _raw_shards(tmp_path / "shards", fmnist_small.x_train, fmnist_small.y_train,
                         with_shape=True)

    def refuse(*args, **kwargs):
        raise AssertionError("the whole split was read into memory")

    monkeypatch.setattr(data_files, "_read_examples", refuse)  # load_arrays' TFRecord reader
    with pytest.raises(AssertionError, match="read into memory"):
        load_arrays(source)
    out = tmp_path / "set"
    status = cli.main(["condense", "--dataset", source, "--ipc", "1", "--real-per-class", "8",
                       "--iterations", "2", "--out", str(out), "--cache-dir",
                       str(tmp_path / "cache")])
    assert status == 0, capsys.readouterr().err
    assert io.load_set(out).images.shape == (10, 28, 28, 1)
    streams = list((tmp_path / "cache" / "streams").iterdir())
    assert len(streams) == 1
    assert open_class_files(streams[0]).counts == (100,) * 10


@pytest.mark.tfx
def test_m3d_condense_streams_split_train(fmnist_small, tmp_path, monkeypatch):
    from tfx.types import standard_artifacts

    from components import condense, dataset_gen
    from components.artifacts import SyntheticSet

    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    for split, (images, labels) in (("train", (fmnist_small.x_train, fmnist_small.y_train)),
                                    ("eval", (fmnist_small.x_test, fmnist_small.y_test))):
        dataset_gen.write_split(os.path.join(examples.uri, f"Split-{split}"), images, labels)
    examples.split_names = '["train", "eval"]'
    outputs = {"condensed_examples": [standard_artifacts.Examples()],
               "synthetic_set": [SyntheticSet()]}
    outputs["condensed_examples"][0].uri = str(tmp_path / "condensed")
    outputs["synthetic_set"][0].uri = str(tmp_path / "synthetic")
    read = []
    whole = io.read_examples
    monkeypatch.setattr(io, "read_examples",
                        lambda path, **options: read.append(str(path)) or whole(path, **options))

    condense.Executor().Do({"examples": [examples]}, outputs, {
        "recipe": "m3d", "ipc": 1, "iterations": 2, "seed": 0, "real_per_class": 8})
    assert read == [os.path.join(examples.uri, "Split-eval")]  # Split-train was streamed
    saved = io.load_set(str(tmp_path / "synthetic"))
    assert saved.images.shape == (10, 28, 28, 1)
    pixels = (fmnist_small.x_train / np.float32(255)).astype(np.float64)
    assert saved.metadata["mean"] == pytest.approx([pixels.mean()], rel=1e-12)
    assert saved.metadata["std"] == pytest.approx([pixels.std()], rel=1e-12)

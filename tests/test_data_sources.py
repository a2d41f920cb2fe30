"""Your own data: image folders, .npz, CIFAR-100 batches, tfds names; built on the fly, never downloaded."""

import os
import pickle
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf import data, runs
from darts_tf.cnn.search import run_search
from darts_tf.cnn.train import evaluate_run, run_training
from darts_tf.config import SearchConfig, TrainConfig

CLASSES = ["circle", "square", "triangle"]


def _image_folder(root, size=28, channels=1, fmt="png", train=8, test=3, seed=0):
    """train/<class>/*.png|jpg and test/<class>/*: a class-dependent brightness, so it is learnable."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for label, name in enumerate(CLASSES):
            os.makedirs(root / split / name, exist_ok=True)
            for i in range(count):
                image = np.clip(rng.normal(60 + 60 * label, 30, size=(size, size, channels)), 0, 255).astype(np.uint8)
                encoded = tf.io.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image)
                tf.io.write_file(str(root / split / name / f"{i}.{fmt}"), encoded)
    return root


def test_image_folder_reads_classes_shapes_and_statistics(tmp_path):
    root = _image_folder(tmp_path / "grey")
    (root / "train" / "circle" / "notes.txt").write_text("not an image: ignored")
    source = data.load_data(data_dir=str(root))
    assert data.detect_data_dir(str(root)) == "folder"
    assert source.class_names == tuple(CLASSES) and source.num_classes == 3
    assert source.train_images.shape == (24, 28, 28, 1) and source.test_images.shape == (9, 28, 28, 1)
    assert source.train_images.dtype == np.uint8 and sorted(source.train_labels) == [0] * 8 + [1] * 8 + [2] * 8
    # A fixed mixed order, not class by class: both halves of the search split hold every class.
    (_, first), (_, second) = data.split_for_search(source)
    assert set(first) == set(second) == {0, 1, 2}
    np.testing.assert_array_equal(source.train_labels, data.load_data(data_dir=str(root)).train_labels)
    expected = source.train_images.astype(np.float64) / 255.0
    np.testing.assert_allclose(source.mean, [expected.mean()], rtol=1e-9)
    np.testing.assert_allclose(source.std, [expected.std()], rtol=1e-6)
    assert "image folder" in source.description and "3 classes, 24 train / 9 test images" in source.description
    # Conversions: colour and size on request.
    rgb = data.load_data(data_dir=str(root), channels=3, image_size=16)
    assert rgb.train_images.shape == (24, 16, 16, 3) and rgb.class_names == tuple(CLASSES)


def test_image_folder_bad_input_is_one_line(tmp_path):
    root = _image_folder(tmp_path / "d", train=2, test=1)

    def error(**kwargs):
        with pytest.raises(data.DataError) as info:
            data.load_data(data_dir=str(root), **kwargs)
        assert "\n" not in str(info.value)
        return str(info.value)

    (root / "train" / "circle" / "broken.png").write_bytes(b"not a png")
    assert "broken.png' is not a readable image (`skip_bad_images`" in error()
    source = data.load_data(data_dir=str(root), skip_bad_images=True)
    assert "1 unreadable files skipped" in source.description and len(source.train_images) == 6
    os.remove(root / "train" / "circle" / "broken.png")
    tf.io.write_file(str(root / "train" / "circle" / "big.png"), tf.io.encode_png(np.zeros((30, 30, 1), np.uint8)))
    assert "images of different sizes" in error() and "`image_size`" in error()
    assert data.load_data(data_dir=str(root), image_size=28).train_images.shape[1:] == (28, 28, 1)
    os.remove(root / "train" / "circle" / "big.png")
    os.makedirs(root / "train" / "hexagon")
    assert "only in train: ['hexagon']" in error()
    os.makedirs(root / "test" / "hexagon")
    assert "holds no images" in error()
    for split in ("train", "test"):
        for name in ("square", "triangle", "hexagon"):
            for file in os.listdir(root / split / name):
                os.remove(root / split / name / file)
            os.rmdir(root / split / name)
    assert "at least 2 class folders" in error()
    with pytest.raises(data.DataError, match="`channels` must be 1 or 3. Received: 2"):
        data.load_data(data_dir=str(root), channels=2)
    with pytest.raises(data.DataError, match="is not a dataset darts_tf reads"):
        data.load_data(data_dir=str(tmp_path))


def test_npz_source_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 255, (20, 12, 12, 3), dtype=np.uint8),
        "y_train": np.arange(20) % 4,
        "x_test": rng.integers(0, 255, (8, 12, 12, 3), dtype=np.uint8),
        "y_test": np.arange(8) % 4,
        "class_names": np.array(["a", "b", "c", "d"]),
    }
    np.savez(tmp_path / "mine.npz", **arrays)
    source = data.load_data(data_dir=str(tmp_path / "mine.npz"))
    assert source.class_names == ("a", "b", "c", "d") and source.input_shape == (12, 12, 3)
    np.testing.assert_array_equal(source.test_images, arrays["x_test"])
    np.savez(tmp_path / "bad.npz", **{**arrays, "y_test": np.arange(8) % 4 + 2})
    with pytest.raises(data.DataError, match=r"y_test: labels must be in 0..3. Received: 2..5"):
        data.load_data(data_dir=str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "float.npz", **{**arrays, "x_train": arrays["x_train"].astype(np.float32)})
    with pytest.raises(data.DataError, match="x_train must be uint8 images"):
        data.load_data(data_dir=str(tmp_path / "float.npz"))
    np.savez(tmp_path / "object.npz", **{**arrays, "class_names": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(data.DataError, match="not a readable .npz of plain arrays"):  # never unpickled
        data.load_data(data_dir=str(tmp_path / "object.npz"))


def test_cifar100_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()

    def batch(n):
        return {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"fine_labels": list(range(n))}

    for name, content in (("train", batch(100)), ("test", batch(100))):
        with open(folder / name, "wb") as handle:
            pickle.dump(content, handle, protocol=2)  # as the official files
    with open(folder / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": [f"class{i}".encode() for i in range(100)]}, handle, protocol=2)
    assert data.detect_data_dir(str(folder)) == "cifar100"
    source = data.load_data(data_dir=str(folder))
    assert source.num_classes == 100 and source.class_names[7] == "class7" and source.input_shape == (32, 32, 3)


def test_unknown_or_unsuitable_tfds_names_fail_in_one_line():
    with pytest.raises(data.DataError, match="tfds:no_such_dataset_xyz: not a tensorflow-datasets dataset"):
        data.load_data("tfds:no_such_dataset_xyz")
    with pytest.raises(data.DataError, match="tfds:Name|expected one of"):
        data.load_data("imagenet")


def _tiny_search(run_dir, root, **overrides):
    values = dict(epochs=1, batch_size=8, C=4, layers=3, steps=2, multiplier=2, eval_batch_size=16)
    return SearchConfig(data_dir=str(root), run_dir=str(run_dir), **{**values, **overrides})


@pytest.mark.slow
@pytest.mark.parametrize("size, channels, fmt", [(28, 1, "png"), (48, 3, "jpg")], ids=["28px-grey", "48px-rgb"])
def test_search_train_export_and_serve_on_an_image_folder(tmp_path, size, channels, fmt):
    root = _image_folder(tmp_path / "images", size=size, channels=channels, fmt=fmt)
    searched = run_search(_tiny_search(tmp_path / "search", root), verbose=0)
    assert searched["genotype"].steps == 2
    genotype = str(tmp_path / "search" / "genotype.json")
    config = TrainConfig(
        arch=genotype, data_dir=str(root), epochs=1, batch_size=8, C=8, layers=4, eval_batch_size=16,
        run_dir=str(tmp_path / "train"), export_dir=str(tmp_path / "sm"), export_name="mine",
    )  # fmt: skip
    trained = run_training(config, verbose=0)
    assert evaluate_run(str(tmp_path / "train"))["images"] == 9
    info = runs.read_json(str(tmp_path / "train" / "data.json"))
    assert info["class_names"] == CLASSES and info["input_shape"] == [size, size, channels]
    # A fresh process without darts_tf serves it: class names come out of the SavedModel.
    code = (
        "import sys, numpy as np, tensorflow as tf; "
        f"serve = tf.saved_model.load({trained['export_path']!r}).signatures['serving_default']; "
        f"out = serve(images=tf.zeros([2, {size}, {size}, {channels}], tf.uint8)); "
        "assert 'darts_tf' not in sys.modules; "
        "print(out['probabilities'].shape[-1], [c.decode() for c in out['classes'].numpy()])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    count, names = result.stdout.strip().split(" ", 1)
    assert count == "3" and all(name in CLASSES for name in eval(names))
    assert (tmp_path / "sm" / "mine" / "1" / "assets.extra" / "class_names.txt").read_text().split() == CLASSES


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_on_an_image_folder_gives_the_same_search(tmp_path):
    root = _image_folder(tmp_path / "images", size=16, channels=3)
    straight = run_search(_tiny_search(tmp_path / "a", root, epochs=2), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        run_search(_tiny_search(tmp_path / "b", root, epochs=2), verbose=0, callbacks=[_Interrupt()])
    resumed = run_search(_tiny_search(tmp_path / "b", root, epochs=2), resume=True, verbose=0)
    assert resumed["genotype"] == straight["genotype"]
    with np.load(tmp_path / "a" / "alphas_epoch_002.npz") as a, np.load(tmp_path / "b" / "alphas_epoch_002.npz") as b:
        np.testing.assert_allclose(a["alphas_normal"], b["alphas_normal"], rtol=1e-5, atol=1e-7)


# --- Streaming from disk, the cache, per-class subsets -------------------------------------------------------------


def _mixed_folder(root):
    """PNG and JPEG files of different sizes, grey and colour: what a real folder holds."""
    rng = np.random.default_rng(1)
    for split, count in (("train", 6), ("test", 2)):
        for label, name in enumerate(CLASSES):
            os.makedirs(root / split / name, exist_ok=True)
            for i in range(count):
                channels = 1 if (i + label) % 3 == 0 else 3
                image = rng.integers(0, 256, size=(20 + 3 * i, 24 + label, channels), dtype=np.uint8)
                encoded = tf.io.encode_png(image) if i % 2 else tf.io.encode_jpeg(image)
                tf.io.write_file(str(root / split / name / f"{i}.{'png' if i % 2 else 'jpg'}"), encoded)
    return root


def _batches(images, labels, **kwargs):
    ds = data.epoch_dataset(images, labels, 6, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), seed=3, epoch=2, **kwargs)
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_streamed_and_cached_folders_give_the_in_memory_batches_bit_for_bit(tmp_path):
    root = _mixed_folder(tmp_path / "mixed")
    memory = data.load_data(data_dir=str(root), image_size=16)
    streamed = data.load_data(data_dir=str(root), image_size=16, stream=True)
    assert isinstance(streamed.train_images, data.ImageFiles) and streamed.train_images.shape == (18, 16, 16, 3)
    assert "streamed from disk at 16x16x3" in streamed.description
    np.testing.assert_array_equal(streamed.train_labels, memory.train_labels)
    np.testing.assert_allclose(streamed.mean, memory.mean, rtol=1e-12)  # all 18 images are the sample here
    expected = _batches(memory.train_images, memory.train_labels, cutout_length=4)
    assert len(expected) == 3
    for got in (
        _batches(streamed.train_images, streamed.train_labels, cutout_length=4),
        _batches(*_cached(tmp_path, root)[:2], cutout_length=4),
    ):
        for (x, y), (x_ref, y_ref) in zip(got, expected, strict=True):
            np.testing.assert_array_equal(x, x_ref)
            np.testing.assert_array_equal(y, y_ref)
    test = [x for x, _ in data.test_dataset(streamed.test_images, streamed.test_labels).as_numpy_iterator()]
    np.testing.assert_array_equal(np.stack(test), memory.test_images)


def _cached(tmp_path, root):
    cache = tmp_path / "cache"
    first = data.load_data(data_dir=str(root), image_size=16, cache=str(cache))
    assert isinstance(first.train_images, np.memmap) and "cache in" in first.description
    written = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(written) == 4 and not [name for name in written if ".tmp-" in name]
    again = data.load_data(data_dir=str(root), image_size=16, cache=str(cache))  # reused, not rewritten
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == written
    np.testing.assert_array_equal(again.train_images, first.train_images)
    return first.train_images, first.train_labels


def test_large_folders_stream_by_themselves_and_need_an_image_size(tmp_path, monkeypatch):
    root = _mixed_folder(tmp_path / "mixed")
    monkeypatch.setattr(data.folders, "STREAM_ABOVE_BYTES", 1000)
    assert data.is_streamed(data.load_data(data_dir=str(root), image_size=16).train_images)
    with pytest.raises(data.DataError, match="more than is held in memory .* needs `image_size` N"):
        data.load_data(data_dir=str(root))
    with pytest.raises(data.DataError, match="streaming .* needs `image_size` N"):
        data.load_data(data_dir=str(root), stream=True)
    with pytest.raises(data.DataError, match="`stream` and `cache` apply to image folders"):
        data.load_data(dataset="synthetic", stream=True)


def test_streamed_bad_files_are_named_or_skipped(tmp_path, monkeypatch):
    root = _mixed_folder(tmp_path / "mixed")
    (root / "train" / "square" / "zz_broken.png").write_bytes(b"not an image at all")
    with pytest.raises(data.DataError, match=r"zz_broken.png' is not a readable image \(`skip_bad_images`"):
        data.load_data(data_dir=str(root), image_size=16, stream=True)
    source = data.load_data(data_dir=str(root), image_size=16, stream=True, skip_bad_images=True)
    assert len(source.train_labels) == 18 and "1 unreadable files skipped" in source.description
    # A file that first fails in an epoch (not among the start-up sample) stops the run with one line naming it.
    monkeypatch.setattr(data.folders, "STATISTICS_SAMPLE", 4)
    os.remove(root / "train" / "square" / "zz_broken.png")
    victim = str(source.train_images.paths[-1])
    with open(victim, "wb") as handle:
        handle.write(b"garbage")
    config = TrainConfig(
        data_dir=str(root), image_size=16, stream=True, epochs=1, batch_size=6, C=4, layers=3, auxiliary=False,
        run_dir=str(tmp_path / "run"), export=False,
    )  # fmt: skip
    with pytest.raises(data.DataError) as info:
        run_training(config, verbose=0)
    assert str(info.value).startswith(f"{victim!r} is not a readable image") and "\n" not in str(info.value)


def test_subset_keeps_as_many_images_of_every_class():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 0, 1, 2, 2])
    keep = runs.subset_indices(labels, 7, 3)
    assert list(keep) == [0, 1, 2, 6, 7, 8, 11]  # class 1 has only 2 images: class 0 takes the extra one
    np.testing.assert_array_equal(np.bincount(labels[keep]), [3, 2, 2])
    assert list(runs.subset_indices(labels, 3, 3)) == [0, 6, 7]
    assert len(runs.subset_indices(labels, 100, 3)) == len(labels)


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["in-memory", "streamed"])
def test_resume_on_an_image_folder_gives_the_same_training(tmp_path, stream):
    root = _image_folder(tmp_path / "images", size=20, channels=3, fmt="jpg", train=6, test=2)

    def config(run_dir):
        return TrainConfig(
            data_dir=str(root), image_size=16, stream=stream, epochs=2, batch_size=6, C=4, layers=3,
            auxiliary=False, run_dir=str(run_dir), export=False, cutout=4,
        )  # fmt: skip

    straight = run_training(config(tmp_path / "a"), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        run_training(config(tmp_path / "b"), verbose=0, callbacks=[_Interrupt()])
    resumed = run_training(config(tmp_path / "b"), resume=True, verbose=0)
    for a, b in zip(straight["network"].weights, resumed["network"].weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)

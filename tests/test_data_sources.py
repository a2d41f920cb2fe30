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
from darts_tf.config import SearchConfig, TrainConfig
from darts_tf.searcher import run_search
from darts_tf.trainer import evaluate_run, run_training

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
    assert "broken.png' is not a readable image (--skip-bad-images" in error()
    source = data.load_data(data_dir=str(root), skip_bad_images=True)
    assert "1 unreadable files skipped" in source.description and len(source.train_images) == 6
    os.remove(root / "train" / "circle" / "broken.png")
    tf.io.write_file(str(root / "train" / "circle" / "big.png"), tf.io.encode_png(np.zeros((30, 30, 1), np.uint8)))
    assert "images of different sizes" in error() and "--image-size" in error()
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
    with pytest.raises(data.DataError, match="--channels must be 1 or 3. Received: 2"):
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


def test_resume_on_an_image_folder_gives_the_same_search(tmp_path):
    root = _image_folder(tmp_path / "images", size=16, channels=3)
    straight = run_search(_tiny_search(tmp_path / "a", root, epochs=2), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        run_search(_tiny_search(tmp_path / "b", root, epochs=2), verbose=0, callbacks=[_Interrupt()])
    resumed = run_search(_tiny_search(tmp_path / "b", root, epochs=2), resume=True, verbose=0)
    assert resumed["genotype"] == straight["genotype"]
    with np.load(tmp_path / "a" / "alphas_epoch_002.npz") as a, np.load(tmp_path / "b" / "alphas_epoch_002.npz") as b:
        np.testing.assert_allclose(a["alphas_normal"], b["alphas_normal"], rtol=1e-5, atol=1e-7)

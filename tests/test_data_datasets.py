"""darts_tf.data.datasets: a user's own tf.data.Datasets as a run's data."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from darts_tf import data
from darts_tf.config import SearchConfig, TrainConfig
from darts_tf.errors import DataError


def _arrays(n, size=8, channels=3, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, channels), dtype=np.uint8), np.arange(n) % classes


def test_pairs_dicts_batched_and_float_images_read_as_the_arrays():
    (x, y), (tx, ty) = _arrays(20), _arrays(8, seed=1)
    expected = data.from_datasets(
        tf.data.Dataset.from_tensor_slices((x, y)), tf.data.Dataset.from_tensor_slices((tx, ty))
    )
    np.testing.assert_array_equal(expected.train_images, x)
    np.testing.assert_array_equal(expected.test_labels, ty)
    assert expected.num_classes == 4 and expected.class_names == ("0", "1", "2", "3")
    assert expected.mean == data.channel_statistics(x)[0] and expected.input_shape == (8, 8, 3)
    as_dicts = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(6)  # tfds style, batched
    floats = tf.data.Dataset.from_tensor_slices((tx.astype(np.float32) / 255.0, ty.astype(np.int64))).batch(3)
    again = data.from_datasets(as_dicts, floats, class_names=("a", "b", "c", "d"), name="mine")
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(again, field), getattr(expected, field))
    assert again.class_names == ("a", "b", "c", "d") and again.description.startswith("mine: 4 classes, 20 train")
    assert data.as_image_data(again) is again


def _error(train=None, test=None, **kwargs):
    (x, y), (tx, ty) = _arrays(6), _arrays(4, seed=1)
    train = train if train is not None else tf.data.Dataset.from_tensor_slices((x, y))
    test = test if test is not None else tf.data.Dataset.from_tensor_slices((tx, ty))
    with pytest.raises(DataError) as info:
        data.from_datasets(train, test, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_datasets_are_one_line_naming_the_split():
    x, y = _arrays(6)
    slices = tf.data.Dataset.from_tensor_slices
    assert _error(train=(x, y)).startswith("train: expected a tf.data.Dataset of (image, label). Received: tuple")
    assert "train: images must be [height, width, 1 or 3]" in _error(train=slices((x[..., :2], y)))
    assert "test: images must be uint8, or floating point" in _error(test=slices((x.astype(np.int32), y)))
    assert "train: labels must be integer class indices" in _error(train=slices((x, y.astype(np.float32))))
    assert "floating-point images must be in [0, 1]" in _error(train=slices((x.astype(np.float32), y)))
    assert "train: dataset dicts need 'image' and 'label'" in _error(train=slices({"x": x, "y": y}))
    assert "elements must be (image, label) pairs" in _error(train=slices(x))
    assert "test: the dataset is empty" in _error(test=slices((x[:0], y[:0])))
    assert "train: more than 0 MiB of images" in _error(max_bytes=1000)
    assert "train images (8, 8, 3) and test images (6, 6, 3) differ" in _error(test=slices(_arrays(2, size=6)))
    assert "labels must be in 0..2. Received: 0..3" in _error(num_classes=3)
    mixed = tf.data.Dataset.from_generator(
        lambda: iter([(x[0], 0), (x[0, :4, :4], 1)]),
        output_signature=(tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int64)),
    )
    assert "train: images of different shapes; resize them" in _error(train=mixed)
    with pytest.raises(DataError, match="`source` must be an ImageData or a .train, test. pair"):
        data.as_image_data("my_folder")


@pytest.mark.slow
def test_a_search_and_a_training_on_datasets_compute_what_the_same_npz_gives(tmp_path):
    from darts_tf.cnn.search import run_search
    from darts_tf.cnn.train import run_training

    (x, y), (tx, ty) = _arrays(64, size=16, classes=4), _arrays(16, size=16, classes=4, seed=1)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=tx, y_test=ty)
    datasets = (tf.data.Dataset.from_tensor_slices((x, y)), tf.data.Dataset.from_tensor_slices((tx, ty)))
    search = SearchConfig(epochs=1, batch_size=8, C=4, layers=3, steps=2, multiplier=2, eval_batch_size=16)
    from_file = run_search(dataclasses.replace(search, data_dir=str(tmp_path / "d.npz"), run_dir=str(tmp_path / "a")),
                           verbose=0)  # fmt: skip
    from_datasets = run_search(dataclasses.replace(search, run_dir=str(tmp_path / "b")), verbose=0, source=datasets)
    assert from_datasets["genotype"] == from_file["genotype"]
    np.testing.assert_array_equal(
        np.load(tmp_path / "a" / "alphas_epoch_001.npz")["alphas_normal"],
        np.load(tmp_path / "b" / "alphas_epoch_001.npz")["alphas_normal"],
    )
    train = TrainConfig(epochs=1, batch_size=16, C=4, layers=3, auxiliary=False, cutout=0, export=False,
                        arch=str(tmp_path / "b" / "genotype.json"))  # fmt: skip
    trained = run_training(dataclasses.replace(train, run_dir=str(tmp_path / "t")), verbose=0, source=datasets)
    again = run_training(dataclasses.replace(train, data_dir=str(tmp_path / "d.npz"), run_dir=str(tmp_path / "u")),
                         verbose=0)  # fmt: skip
    assert json.dumps(trained["history"]) == json.dumps(again["history"])

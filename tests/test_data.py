import time

import numpy as np
import pytest
import tensorflow as tf

from darts_tf import data


def test_reads_the_real_sample(cifar_sample):
    d = data.load_cifar10_python(cifar_sample)
    assert d.train_images.shape == (3805, 32, 32, 3) and d.train_images.dtype == np.uint8
    assert d.test_images.shape == (761, 32, 32, 3)
    assert list(d.test_labels[:16]) == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8]
    assert d.num_classes == 10 and d.input_shape == (32, 32, 3)
    (tx, _), (vx, _) = data.split_for_search(d, 0.5)
    assert len(tx) == 1902 and len(vx) == 1903
    np.testing.assert_array_equal(tx[0], d.train_images[0])


def test_missing_or_wrong_data_dir(tmp_path):
    with pytest.raises(data.DataError, match="`data_dir` .*nope.* does not exist"):
        data.load_cifar10_python(str(tmp_path / "nope"))
    with pytest.raises(data.DataError, match="missing data_batch_1"):
        data.load_cifar10_python(str(tmp_path))


def test_tfds_offline_fails_fast_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(data.tfds, "_online", lambda *a, **k: False)
    start = time.time()
    with pytest.raises(data.DataError) as info:
        data.load_cifar10_tfds(tfds_data_dir=str(tmp_path))
    assert time.time() - start < 30
    assert "`data_dir`" in str(info.value) and "`dataset` synthetic" in str(info.value)


def test_pipeline_is_a_function_of_seed_and_epoch(cifar_sample):
    d = data.load_cifar10_python(cifar_sample)
    x, y = d.train_images[:64], d.train_labels[:64]

    def first(seed, epoch):
        batch = next(iter(data.epoch_dataset(x, y, 16, d.mean, d.std, seed, epoch)))
        return batch[0].numpy(), batch[1].numpy()

    a, b, c = first(0, 0), first(0, 0), first(0, 1)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])
    # Normalized with CIFAR statistics: roughly zero mean, unit variance.
    plain = next(iter(data.epoch_dataset(x, y, 64, d.mean, d.std, 0, 0, shuffle=False, augment=False)))[0].numpy()
    assert abs(plain.mean()) < 0.3 and 0.7 < plain.std() < 1.3


def test_cutout_zeroes_a_16x16_square():
    import tensorflow as tf

    image = tf.ones([32, 32, 3])
    out = data.cutout(image, 16, tf.constant([1, 2], tf.int64)).numpy()
    zero_rows = np.where((out == 0).all(axis=(1, 2)) | (out == 0).any(axis=(1, 2)))[0]
    zeros = (out[..., 0] == 0).sum()
    assert 0 < zeros <= 256 and len(zero_rows) <= 16
    assert ((out == 0) | (out == 1)).all()


def test_synthetic_and_unknown_dataset():
    d = data.load_data("synthetic")
    assert d.train_images.shape[1:] == (32, 32, 3) and d.num_classes == 10
    with pytest.raises(data.DataError, match="`dataset` 'imagenet' is not supported"):
        data.load_data("imagenet")


def test_reads_the_tar_gz_archive(cifar_sample, tmp_path):
    import tarfile

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(cifar_sample, arcname="cifar-10-batches-py")
    d = data.load_cifar10_python(str(archive))
    assert d.train_images.shape == (3805, 32, 32, 3) and d.test_images.shape == (761, 32, 32, 3)


class _WritesAFile:
    """Unpickling this runs `open(path, "w")`: what a crafted batch could do with plain pickle."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _crafted_sample(folder, cifar_sample, payload):
    import pickle
    import shutil

    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(2, 6)] + ["test_batch"]:
        shutil.copy(f"{cifar_sample}/{name}", folder / name)
    with open(folder / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": payload, b"labels": [0]}, handle, protocol=2)


def test_a_crafted_batch_runs_no_code(cifar_sample, tmp_path):
    target = tmp_path / "pwned"
    _crafted_sample(tmp_path / "data", cifar_sample, _WritesAFile(str(target)))
    with pytest.raises(data.DataError) as info:
        data.load_cifar10_python(str(tmp_path / "data"))
    message = str(info.value)
    assert "\n" not in message and "data_batch_1" in message and "global io.open" in message
    assert not target.exists()


def test_search_command_refuses_a_crafted_batch(cifar_sample, tmp_path):
    import os
    import subprocess
    import sys

    target = tmp_path / "pwned"
    _crafted_sample(tmp_path / "data", cifar_sample, _WritesAFile(str(target)))
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "search.py")
    run_dir = tmp_path / "run"
    argv = [sys.executable, script, "--preset", "quick", "--data-dir", str(tmp_path / "data")]
    argv += ["--run-dir", str(run_dir)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "refused" in errors[0] and "io.open" in errors[0], result.stderr
    assert not target.exists() and not run_dir.exists()  # no code ran, no run folder left behind


def test_batches_written_by_numpy_1_and_2_load(cifar_sample, tmp_path):
    import pickle
    import shutil

    with open(f"{cifar_sample}/test_batch", "rb") as handle:
        raw = handle.read()
    # The sample is written by NumPy 2 (numpy._core); the official files by NumPy 1 (numpy.core).
    assert b"numpy._core.multiarray" in raw
    folder = tmp_path / "numpy1"
    shutil.copytree(cifar_sample, folder)
    (folder / "test_batch").write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    d = data.load_cifar10_python(str(folder))
    assert d.test_images.shape == (761, 32, 32, 3)
    np.testing.assert_array_equal(d.test_images, data.load_cifar10_python(cifar_sample).test_images)
    # Truncated or non-dict files are refused with one line naming the file.
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(data.DataError, match="refused to read .*test_batch"):
        data.load_cifar10_python(str(folder))
    (folder / "test_batch").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(data.DataError, match="test_batch.* expected a dict, found list"):
        data.load_cifar10_python(str(folder))


def test_imagenet_augmentation_is_deterministic_and_crops_like_the_original():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 40, 40, 3), dtype=np.uint8)
    labels = np.arange(8, dtype=np.int32)

    def epoch(e):
        ds = data.epoch_dataset(images, labels, 4, (0.5,) * 3, (0.25,) * 3, seed=1, epoch=e, augmentation="imagenet")
        return np.concatenate([x.numpy() for x, _ in ds])

    first = epoch(0)
    assert first.shape == (8, 40, 40, 3)
    np.testing.assert_array_equal(first, epoch(0))
    assert np.abs(first - epoch(1)).max() > 0.5
    # Random-resized crops hold 8%..100% of the area at aspect 3/4..4/3: crop a ramp and read the crop's extent.
    ramp = np.tile(np.arange(200, dtype=np.float32)[None, :, None], (200, 1, 3)).astype(np.uint8)
    for i in range(20):
        crop = data.random_resized_crop(tf.constant(ramp), 50, tf.constant([i, 7], tf.int64)).numpy() * 255.0
        width = crop[0, -1, 0] - crop[0, 0, 0]
        assert np.sqrt(0.08) * 200 * np.sqrt(3 / 4) - 2 <= width <= 200
    with pytest.raises(ValueError, match="`augmentation` must be one of"):
        data.epoch_dataset(images, labels, 4, (0.5,) * 3, (0.25,) * 3, seed=1, epoch=0, augmentation="autoaugment")


def test_colour_jitter_follows_torchvision_formulas():
    x = tf.constant(np.random.default_rng(1).uniform(0.1, 0.9, size=(6, 5, 3)), tf.float32)
    seed = tf.constant([3, 4], tf.int64)
    np.testing.assert_allclose(data.colour_jitter(x, seed, 0.0, 0.0, 0.0, 0.0), x, atol=1e-6)
    bright = data.colour_jitter(x, seed, 0.4, 0.0, 0.0, 0.0).numpy()
    factor = bright / x.numpy()
    assert np.ptp(factor) < 1e-5 and 0.6 <= factor.mean() <= 1.4
    grey_mean = float(np.mean(x.numpy() @ np.array([0.299, 0.587, 0.114])))
    contrast = data.colour_jitter(x, seed, 0.0, 0.4, 0.0, 0.0).numpy()
    c = (contrast - grey_mean) / (x.numpy() - grey_mean)  # blend with the mean grey level
    assert np.ptp(c) < 1e-3 and 0.6 <= c.mean() <= 1.4


def test_centre_crop_is_resize_256_then_centre_224():
    image = np.zeros((300, 600, 3), np.uint8)
    image[:, 300:] = 200  # left half dark, right half bright
    crop = data.centre_crop(tf.constant(image), 224).numpy()
    assert crop.shape == (224, 224, 3)
    # Shorter side 300 -> 256 (width 512), centre 224 columns are 144..368: the half boundary (256) at column 112.
    assert crop[:, :111].max() == 0 and crop[:, 113:].min() == 200

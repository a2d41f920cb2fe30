import time

import numpy as np
import pytest

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
    with pytest.raises(data.DataError, match="--data-dir .*nope.* does not exist"):
        data.load_cifar10_python(str(tmp_path / "nope"))
    with pytest.raises(data.DataError, match="missing data_batch_1"):
        data.load_cifar10_python(str(tmp_path))


def test_tfds_offline_fails_fast_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(data.sources, "_online", lambda *a, **k: False)
    start = time.time()
    with pytest.raises(data.DataError) as info:
        data.load_cifar10_tfds(tfds_data_dir=str(tmp_path))
    assert time.time() - start < 30
    assert "--data-dir" in str(info.value) and "--dataset synthetic" in str(info.value)


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
    with pytest.raises(data.DataError, match="--dataset 'imagenet' is not supported"):
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

"""Datasets and input pipelines for search and evaluation.

Sources: CIFAR-10 from tensorflow-datasets (the default), a local copy of
CIFAR-10 in the official python-batch format (`cifar-10-batches-py` folder or
`cifar-10-python.tar.gz`), and `synthetic` images (for smoke tests only).
Images stay uint8 in memory; pipelines normalize with per-channel mean/std,
augment like the original (pad-4 random crop, horizontal flip, optional
cutout) and are deterministic functions of (seed, epoch): the same epoch
yields the same batches whether or not the run was interrupted.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import socket
import tarfile
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from darts_tf.config import DATASETS

CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)


class DataError(ValueError):
    """A dataset could not be loaded; the message is one line naming the cause and the fix."""


@dataclass
class ImageData:
    """An in-memory image classification dataset (uint8 NHWC images, int labels)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    mean: tuple
    std: tuple
    name: str

    @property
    def input_shape(self) -> tuple:
        return tuple(self.train_images.shape[1:])


# What the official CIFAR python batches (and CIFAR-100's) are made of: dicts, lists, bytes,
# str and ints, plus NumPy's array reconstruction (written by NumPy 1.x or 2.x, Python 2 or 3).
_RECONSTRUCT, _ = np.zeros(1).__reduce__()[:2]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # protocol-2 bytes written by Python 3
    ("builtins", "bytes"): bytes,
    ("__builtin__", "bytes"): bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only the types a CIFAR batch holds; any other global is refused before it is looked up."""

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            message = f"it asks for the global {module}.{name}, which a CIFAR batch never holds"
            raise pickle.UnpicklingError(message) from None


def _unpickle(handle, source: str) -> dict:
    """Reads one CIFAR python batch without running code from it (DataError naming `source` otherwise)."""
    try:
        batch = _RestrictedUnpickler(handle, encoding="bytes").load()
    except Exception as error:  # a corrupt pickle can fail in many ways; none may escape as a traceback
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"refused to read {source!r} as a CIFAR batch: {reason}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{source!r} is not a CIFAR batch: expected a dict, found {type(batch).__name__}")
    return batch


def _batch_arrays(batch: dict) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(batch[b"labels"], dtype=np.int32)
    if labels.shape != (len(images),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= 10:
        raise ValueError(f"{len(images)} images need as many labels in 0..9, found shape {labels.shape}")
    return images, labels


def load_cifar10_python(path: str) -> ImageData:
    """Reads CIFAR-10 in the official python-batch format (folder or .tar.gz archive).

    The image count is read from the files (partial copies are fine).
    """
    path = os.path.expanduser(path)
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    batches = {}
    if os.path.isfile(path) and tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():  # read in memory: nothing is extracted to disk
                base = os.path.basename(member.name)
                if member.isfile() and (base in train_names or base == "test_batch"):
                    source = f"{path}:{member.name}"
                    batches[base] = _unpickle(io.BytesIO(archive.extractfile(member).read()), source)
    elif os.path.isdir(path):
        folder = path
        nested = os.path.join(path, "cifar-10-batches-py")
        if not os.path.exists(os.path.join(path, "data_batch_1")) and os.path.isdir(nested):
            folder = nested
        for base in train_names + ["test_batch"]:
            file = os.path.join(folder, base)
            if os.path.exists(file):
                with open(file, "rb") as handle:
                    batches[base] = _unpickle(handle, file)
    else:
        raise DataError(f"--data-dir {path!r} does not exist (expected a cifar-10-batches-py folder or .tar.gz)")
    missing = [name for name in train_names + ["test_batch"] if name not in batches]
    if missing:
        raise DataError(f"--data-dir {path!r} is not CIFAR-10 python batches: missing {', '.join(missing)}")
    try:
        train = [_batch_arrays(batches[name]) for name in train_names]
        test_images, test_labels = _batch_arrays(batches["test_batch"])
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"--data-dir {path!r}: unreadable CIFAR-10 batch ({error})") from None
    return ImageData(
        train_images=np.concatenate([t[0] for t in train]),
        train_labels=np.concatenate([t[1] for t in train]),
        test_images=test_images,
        test_labels=test_labels,
        num_classes=10,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        name="cifar10",
    )


def _online(host: str = "storage.googleapis.com", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_cifar10_tfds(tfds_data_dir: str | None = None) -> ImageData:
    """CIFAR-10 through tensorflow-datasets, failing in seconds (not minutes) when offline."""
    hint = "pass --data-dir pointing at CIFAR-10 python batches, or --dataset synthetic for a smoke test"
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError(f"tensorflow-datasets cannot be imported ({error}); {hint}") from None
    builder = tfds.builder("cifar10", data_dir=tfds_data_dir)
    if not builder.is_prepared() and not _online():
        raise DataError(f"CIFAR-10 is not in the tfds cache and the download server is unreachable; {hint}")
    try:
        builder.download_and_prepare()
        train = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1, as_supervised=True))
        test = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1, as_supervised=True))
    except Exception as error:  # network and cache failures come in many types
        raise DataError(f"tensorflow-datasets could not load CIFAR-10 ({type(error).__name__}); {hint}") from None
    return ImageData(
        train_images=np.asarray(train[0], np.uint8),
        train_labels=np.asarray(train[1], np.int32),
        test_images=np.asarray(test[0], np.uint8),
        test_labels=np.asarray(test[1], np.int32),
        num_classes=10,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        name="cifar10",
    )


def make_synthetic(
    num_train: int = 512, num_test: int = 128, num_classes: int = 10, image_size: int = 32, seed: int = 0
) -> ImageData:
    """Random images with a learnable class signal (a per-class colour pattern), for smoke tests."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 255, size=(num_classes, image_size, image_size, 3))

    def draw(n):
        labels = rng.integers(0, num_classes, size=n).astype(np.int32)
        noise = rng.normal(0, 40, size=(n, image_size, image_size, 3))
        images = np.clip(0.5 * patterns[labels] + 64 + noise, 0, 255).astype(np.uint8)
        return images, labels

    train_images, train_labels = draw(num_train)
    test_images, test_labels = draw(num_test)
    mean = tuple(float(v) for v in train_images.mean(axis=(0, 1, 2)) / 255.0)
    std = tuple(float(v) for v in train_images.std(axis=(0, 1, 2)) / 255.0)
    return ImageData(train_images, train_labels, test_images, test_labels, num_classes, mean, std, "synthetic")


def load_data(dataset: str = "cifar10", data_dir: str | None = None, seed: int = 0) -> ImageData:
    """The dataset a run asked for: `--data-dir` wins, else tfds CIFAR-10, or synthetic."""
    if dataset not in DATASETS:
        raise DataError(f"--dataset {dataset!r} is not supported; expected one of {', '.join(DATASETS)}")
    if dataset == "synthetic":
        return make_synthetic(seed=seed)
    if data_dir:
        return load_cifar10_python(data_dir)
    return load_cifar10_tfds()


def _normalize(images, mean, std):
    x = tf.cast(images, tf.float32) / 255.0
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def cutout(image, length: int, seed):
    """Zeroes one length x length square (clipped at the border) centred at a random pixel, as the original."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    center = tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
    cy, cx = center[0] % height, center[1] % width
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (
        (rows >= tf.maximum(cy - length // 2, 0))
        & (rows < tf.minimum(cy + length // 2, height))
        & (cols >= tf.maximum(cx - length // 2, 0))
        & (cols < tf.minimum(cx + length // 2, width))
    )
    return image * tf.cast(~inside, image.dtype)[:, :, None]


def _augment(image, seed, cutout_length: int):
    """pad-4 random crop, random horizontal flip (applied before normalization), cutout after."""
    shape = tf.shape(image)
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    seeds = tf.random.experimental.stateless_split(seed, 3)
    image = tf.image.stateless_random_crop(padded, shape, seeds[0])
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    return image, seeds[2]


def epoch_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    mean,
    std,
    seed: int,
    epoch,
    shuffle: bool = True,
    augment: bool = True,
    cutout_length: int = 0,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
    """One epoch of normalized (and optionally augmented) batches, a pure function of (seed, epoch)."""
    images_t = tf.constant(images)
    labels_t = tf.constant(labels)
    n = images.shape[0]
    epoch = tf.cast(epoch, tf.int64)
    order = tf.range(n, dtype=tf.int64)
    if shuffle:
        order = tf.random.experimental.stateless_shuffle(order, tf.stack([tf.cast(seed, tf.int64), epoch]))
    ds = tf.data.Dataset.from_tensor_slices(order)

    def load(index):
        image = tf.gather(images_t, index)
        label = tf.gather(labels_t, index)
        if augment:
            element_seed = tf.stack([tf.cast(seed, tf.int64) * 7919 + epoch, index])
            image, cut_seed = _augment(image, element_seed, cutout_length)
            image = _normalize(image, mean, std)
            if cutout_length:
                image = cutout(image, cutout_length, cut_seed)
        else:
            image = _normalize(image, mean, std)
        return image, label

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder)


def evaluation_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, mean, std) -> tf.data.Dataset:
    """Every image once, in order, normalised and un-augmented (the last batch may be smaller)."""
    return epoch_dataset(
        images, labels, batch_size, mean, std, seed=0, epoch=0, shuffle=False, augment=False, drop_remainder=False
    )


def epochs_dataset(make_epoch, first_epoch: int, epochs: int) -> tf.data.Dataset:
    """Concatenates `make_epoch(e)` for e in [first_epoch, epochs), prefetched."""
    ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(make_epoch)
    return ds.prefetch(tf.data.AUTOTUNE)


def split_for_search(data: ImageData, train_portion: float = 0.5):
    """The original's split: the first `train_portion` of the training set for w, the rest for alpha."""
    if not 0.0 < train_portion < 1.0:
        raise DataError(f"--train-portion must be in (0, 1). Received: {train_portion}")
    split = int(np.floor(train_portion * len(data.train_images)))
    return (
        (data.train_images[:split], data.train_labels[:split]),
        (data.train_images[split:], data.train_labels[split:]),
    )

"""tensorflow-datasets image classification datasets (CIFAR-10 by default), in memory; offline and
not cached: one line, in seconds."""

from __future__ import annotations

import socket

import numpy as np

from darts_tf.data.image_data import CIFAR10_CLASSES, CIFAR_MEAN, CIFAR_STD, ImageData, _from_arrays
from darts_tf.errors import DataError


def _online(host: str = "storage.googleapis.com", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_cifar10_tfds(tfds_data_dir: str | None = None) -> ImageData:
    """CIFAR-10 through tensorflow-datasets, failing in seconds (not minutes) when offline."""
    hint = "pass `data_dir` pointing at CIFAR-10 python batches, or `dataset` synthetic for a smoke test"
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
        class_names=CIFAR10_CLASSES,
        description="CIFAR-10 from tensorflow-datasets",
    )


def load_tfds(name: str, tfds_data_dir: str | None = None) -> ImageData:
    """Any tensorflow-datasets image classification dataset (`image` and a class `label`), in memory.

    The test images come from its `test` split, or `validation` where there is none
    (`ImageData.test_split` says which). Offline and not cached: one line, in seconds.
    """
    hint = "pass `data_dir` with a local copy, or `dataset` synthetic for a smoke test"
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError(f"tensorflow-datasets cannot be imported ({error}); {hint}") from None
    try:
        builder = tfds.builder(name, data_dir=tfds_data_dir)
    except Exception as error:  # DatasetNotFoundError and config errors
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"`dataset` tfds:{name}: not a tensorflow-datasets dataset ({first})") from None
    features = builder.info.features
    image, label = features.get("image") if "image" in features else None, features.get("label")
    if image is None or label is None or not hasattr(label, "names") or str(image.dtype) != "<dtype: 'uint8'>":
        raise DataError(f"`dataset` tfds:{name} is not image classification (needs uint8 'image' and a class 'label')")
    splits = builder.info.splits
    test_split = "test" if "test" in splits else "validation" if "validation" in splits else None
    if "train" not in splits or test_split is None:
        raise DataError(f"`dataset` tfds:{name} needs a train split and a test or validation split")
    if not builder.is_prepared() and not _online():
        raise DataError(f"tfds:{name} is not in the tfds cache and the download server is unreachable; {hint}")
    try:
        builder.download_and_prepare()
        train = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1, as_supervised=True))
        test = tfds.as_numpy(builder.as_dataset(split=test_split, batch_size=-1, as_supervised=True))
    except Exception as error:  # network and cache failures come in many types
        raise DataError(f"tensorflow-datasets could not load {name} ({type(error).__name__}); {hint}") from None
    arrays = [(np.asarray(x, np.uint8), np.asarray(y, np.int32)) for x, y in (train, test)]
    return _from_arrays(name, arrays[0], arrays[1], label.names, f"tensorflow-datasets {name}", test_split)

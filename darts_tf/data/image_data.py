"""`ImageData`, what every data source gives: uint8 images, labels, class names, mean/std."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from darts_tf.errors import DataError

CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)


CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


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
    class_names: tuple = ()  # default: "0", "1", ...
    description: str = ""  # what was read, for the start-up line
    test_split: str = "test"  # the split the test images come from

    def __post_init__(self):
        if not self.class_names:
            self.class_names = tuple(str(i) for i in range(self.num_classes))
        self.class_names = tuple(str(name) for name in self.class_names)
        if len(self.class_names) != self.num_classes:
            raise DataError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")
        self.description = self.description or self.name

    @property
    def input_shape(self) -> tuple:
        return tuple(self.train_images.shape[1:])


def channel_statistics(images: np.ndarray, chunk: int = 4096) -> tuple[tuple, tuple]:
    """Per-channel mean and std of uint8 NHWC images, scaled to [0, 1], in one streaming pass."""
    channels = images.shape[-1]
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, channels).astype(np.float64) / 255.0
        total += block.sum(axis=0)
        squares += np.square(block).sum(axis=0)
        count += len(block)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - np.square(mean), 1e-12))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _from_arrays(name, train, test, class_names, description, test_split="test") -> ImageData:
    num_classes = len(class_names)
    mean, std = channel_statistics(train[0])
    return ImageData(
        train[0], train[1], test[0], test[1], num_classes, mean, std, name, tuple(class_names), description, test_split
    )


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be a 1-D integer array. Received: shape {labels.shape}, {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: labels must be in 0..{num_classes - 1}. Received: {labels.min()}..{labels.max()}")
    return labels.astype(np.int32)

"""A user's own `tf.data.Dataset`s as the `ImageData` a search or a training runs on.

    train = tf.data.Dataset.from_tensor_slices((images, labels))   # uint8 [H, W, C], int labels
    source = from_datasets(train, test, class_names=("cat", "dog"))
    run_search(config, source=source)        # or source=(train, test)

A search draws a fresh shuffle of both halves of the training images every epoch and
a training run its own augmentation, from a seed, so the images are read once into
memory (as every other source is; up to `max_bytes`). Elements are `(image, label)`
pairs or tensorflow-datasets' `{"image": ..., "label": ...}` dicts, batched or not;
images uint8, or floating point in [0, 1] (TensorFlow's convention, stored as uint8).
"""

from __future__ import annotations

import numpy as np

from darts_tf.data.folders import STREAM_ABOVE_BYTES
from darts_tf.data.image_data import ImageData, _check_labels, channel_statistics
from darts_tf.errors import DataError


def from_datasets(
    train, test, num_classes: int | None = None, class_names=(), name: str = "tf.data",
    max_bytes: int = STREAM_ABOVE_BYTES,
) -> ImageData:  # fmt: skip
    """`ImageData` of a training and a test `tf.data.Dataset` of (image, label).

    `num_classes`: default `len(class_names)`, else the largest label + 1. Every image must
    have the same [H, W, 1 or 3] shape (resize them in the dataset first); DataError, one
    line naming the split, otherwise.
    """
    arrays = {split: _read(dataset, split, max_bytes) for split, dataset in (("train", train), ("test", test))}
    shapes = {split: images.shape[1:] for split, (images, _) in arrays.items()}
    if shapes["train"] != shapes["test"]:
        raise DataError(f"{name}: train images {shapes['train']} and test images {shapes['test']} differ")
    labels = np.concatenate([arrays["train"][1], arrays["test"][1]])
    if num_classes is None:
        num_classes = len(class_names) if class_names else int(labels.max()) + 1 if len(labels) else 0
    if num_classes < 2:
        raise DataError(f"{name}: a classification needs at least 2 classes. Received: num_classes={num_classes}")
    _check_labels(labels, num_classes, name)
    (train_x, train_y), (test_x, test_y) = arrays["train"], arrays["test"]
    mean, std = channel_statistics(train_x)
    description = f"{name}: {num_classes} classes, {len(train_y)} train / {len(test_y)} test images {shapes['train']}"
    return ImageData(train_x, train_y, test_x, test_y, num_classes, mean, std, name, tuple(class_names), description)


def as_image_data(source) -> ImageData:
    """`source` as `ImageData`: itself, or `from_datasets(*source)` for a (train, test) pair of datasets."""
    if isinstance(source, ImageData):
        return source
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return from_datasets(*source)
    raise DataError(
        f"`source` must be an ImageData or a (train, test) pair of tf.data.Datasets. Received: {type(source).__name__}"
    )


def _read(dataset, split: str, max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise DataError(f"{split}: expected a tf.data.Dataset of (image, label). Received: {type(dataset).__name__}")
    spec = dataset.element_spec
    if isinstance(spec, dict):
        if not {"image", "label"} <= set(spec):
            raise DataError(f"{split}: dataset dicts need 'image' and 'label'. Received keys: {sorted(spec)}")
        dataset, spec = dataset.map(lambda e: (e["image"], e["label"])), (spec["image"], spec["label"])
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise DataError(f"{split}: dataset elements must be (image, label) pairs. Received: {spec}")
    image, label = spec
    if image.shape.rank == 4:  # batched
        dataset = dataset.unbatch()
        image, label = dataset.element_spec
    if image.shape.rank != 3 or image.shape[-1] not in (1, 3):
        raise DataError(f"{split}: images must be [height, width, 1 or 3]. Received: {image.shape}")
    if not (image.dtype == tf.uint8 or image.dtype.is_floating):
        raise DataError(f"{split}: images must be uint8, or floating point in [0, 1]. Received: {image.dtype.name}")
    if not label.dtype.is_integer or label.shape.num_elements() not in (1, None):
        raise DataError(f"{split}: labels must be integer class indices. Received: {label.dtype.name} {label.shape}")
    images, labels, size = [], [], 0
    try:
        for x, y in dataset.batch(256).as_numpy_iterator():
            if x.dtype != np.uint8:
                if x.size and (x.min() < 0.0 or x.max() > 1.0):
                    raise DataError(
                        f"{split}: floating-point images must be in [0, 1]. Received values in {x.min()}..{x.max()}"
                    )
                x = np.round(x.astype(np.float32) * 255.0).astype(np.uint8)
            size += x.nbytes
            if size > max_bytes:
                raise DataError(
                    f"{split}: more than {max_bytes >> 20} MiB of images; write them as an image folder or an .npz "
                    "and pass its path as `data_dir` (folders stream from disk)"
                )
            images.append(x)
            labels.append(np.asarray(y).reshape(len(x)))
    except tf.errors.InvalidArgumentError as error:  # batch() of images of different sizes
        first = str(error).strip().splitlines()[0]
        raise DataError(f"{split}: images of different shapes; resize them in the dataset first ({first})") from None
    if not images:
        raise DataError(f"{split}: the dataset is empty")
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)

"""Input pipelines: normalisation, the original's augmentation, epochs as pure functions of (seed, epoch).

Images stay uint8 in memory; pipelines normalize with per-channel mean/std,
augment like the original (pad-4 random crop, horizontal flip, optional
cutout) and are deterministic functions of (seed, epoch): the same epoch
yields the same batches whether or not the run was interrupted.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from darts_tf.data.sources import DataError, ImageData


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

"""Input pipelines: normalisation, the original's augmentations, epochs as pure functions of (seed, epoch).

Images are uint8 arrays in memory (or memory-mapped), or `ImageFiles`
decoded on the fly; pipelines normalize with per-channel mean/std, augment
like the original and are deterministic functions of (seed, epoch): the same
epoch yields the same batches whether or not the run was interrupted.

Augmentations (`augmentation=`):
- "cifar" (the original's train_search.py/train.py): pad-4 random crop,
  horizontal flip, optional cutout.
- "imagenet" (the original's train_imagenet.py): random-resized crop (scale
  0.08-1, aspect 3/4-4/3), horizontal flip, colour jitter (brightness,
  contrast, saturation 0.4, hue 0.2); evaluation of files: shorter side
  resized to size * 256/224, centre crop.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from darts_tf.data.image_data import ImageData
from darts_tf.data.images import is_streamed, read_image, read_resized
from darts_tf.errors import ConfigError, DataError

AUGMENTATIONS = ("cifar", "imagenet")
# In-memory images larger than this are read through NumPy (no copy into the graph: constants stop at 2 GiB).
_CONSTANT_LIMIT = 1 << 30


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


def _grey(x):
    """Luma of float HWC images in [0, 1] (one channel kept as it is)."""
    if x.shape[-1] == 1:
        return x
    return tf.tensordot(x, tf.constant([[0.299], [0.587], [0.114]], x.dtype), axes=[[2], [0]])


def colour_jitter(x, seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2):
    """torchvision's ColorJitter on float HWC images in [0, 1], in its order (brightness, contrast, saturation, hue).

    Factors are uniform in [1 - v, 1 + v] (hue: a shift in [-hue, hue] of a turn); a
    grey image gets brightness and contrast only. torchvision draws the four in a
    random order per image; this applies them in that fixed order.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)

    def factor(s, amount):
        return tf.random.stateless_uniform([], s, 1.0 - amount, 1.0 + amount)

    x = tf.clip_by_value(x * factor(seeds[0], brightness), 0.0, 1.0)
    c = factor(seeds[1], contrast)
    x = tf.clip_by_value(c * x + (1.0 - c) * tf.reduce_mean(_grey(x)), 0.0, 1.0)
    if x.shape[-1] == 3:
        s = factor(seeds[2], saturation)
        x = tf.clip_by_value(s * x + (1.0 - s) * _grey(x), 0.0, 1.0)
        x = tf.image.adjust_hue(x, tf.random.stateless_uniform([], seeds[3], -hue, hue))
    return x


def random_resized_crop(image, size: int, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop: a crop of `scale` of the area and `ratio` aspect, resized to size x size.

    Float in [0, 1]. After 10 failed draws the whole image is used (torchvision: a centre crop).
    """
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([1, 0, 4]), seed, area_range=scale, aspect_ratio_range=ratio,
        max_attempts=10, use_image_if_no_bounding_boxes=True,
    )  # fmt: skip
    crop = tf.slice(image, begin, crop_size)
    resized = tf.image.resize(tf.cast(crop, tf.float32) / 255.0, (size, size))
    return tf.clip_by_value(resized, 0.0, 1.0)


def centre_crop(image, size: int):
    """The original's ImageNet test transform: shorter side to round(size * 256 / 224), centre size x size crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    short = float(round(size * 256 / 224))
    scale = short / tf.reduce_min(shape)
    target = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
    resized = tf.image.resize(tf.cast(image, tf.float32), target)
    top, left = (target[0] - size) // 2, (target[1] - size) // 2
    crop = resized[top : top + size, left : left + size]
    return tf.cast(tf.clip_by_value(tf.round(crop), 0, 255), tf.uint8)


def _reader(images, full_size: bool = False):
    """index -> uint8 image: a gather from memory, from a memory map, or a file decode.

    Files are decoded at the run's shape, or at their own size when `full_size`
    (the ImageNet crops start from the whole file).
    """
    if is_streamed(images):
        paths = tf.constant(images.paths)
        if full_size:
            return lambda index: read_image(tf.gather(paths, index), images.image_shape[-1])
        return lambda index: read_resized(tf.gather(paths, index), images.image_shape)
    if isinstance(images, np.memmap) or images.nbytes > _CONSTANT_LIMIT:

        def gather(index):
            return np.asarray(images[index])

        shape = images.shape[1:]
        return lambda index: tf.ensure_shape(tf.numpy_function(gather, [index], tf.uint8, stateful=False), shape)
    constant = tf.constant(images)
    return lambda index: tf.gather(constant, index)


def epoch_dataset(
    images,
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
    augmentation: str = "cifar",
    skip_bad_images: bool = False,
) -> tf.data.Dataset:
    """One epoch of normalized (and optionally augmented) batches, a pure function of (seed, epoch).

    `images`: uint8 NHWC (in memory or memory-mapped) or `ImageFiles`. `skip_bad_images`
    drops files that fail to decode (streamed images only; the same ones every epoch).
    """
    if augmentation not in AUGMENTATIONS:
        raise ConfigError(f"`augmentation` must be one of {AUGMENTATIONS}. Received: augmentation={augmentation!r}")
    size = images.shape[1]
    imagenet = augment and augmentation == "imagenet"
    read = _reader(images, full_size=imagenet)
    labels_t = tf.constant(labels)
    n = len(labels)
    epoch = tf.cast(epoch, tf.int64)
    order = tf.range(n, dtype=tf.int64)
    if shuffle:
        order = tf.random.experimental.stateless_shuffle(order, tf.stack([tf.cast(seed, tf.int64), epoch]))
    ds = tf.data.Dataset.from_tensor_slices(order)

    def load(index):
        image = read(index)
        label = tf.gather(labels_t, index)
        if not augment:
            return _normalize(image, mean, std), label
        element_seed = tf.stack([tf.cast(seed, tf.int64) * 7919 + epoch, index])
        if imagenet:
            seeds = tf.random.experimental.stateless_split(element_seed, 4)
            x = random_resized_crop(image, size, seeds[0])
            x = tf.image.stateless_random_flip_left_right(x, seeds[1])
            x = colour_jitter(x, seeds[2])
            image = (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
            cut_seed = seeds[3]
        else:
            image, cut_seed = _augment(image, element_seed, cutout_length)
            image = _normalize(image, mean, std)
        if cutout_length:
            image = cutout(image, cutout_length, cut_seed)
        return image, label

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if skip_bad_images and is_streamed(images):
        ds = ds.ignore_errors()
    return ds.batch(batch_size, drop_remainder=drop_remainder)


def test_dataset(images, labels: np.ndarray, augmentation: str = "cifar", skip_bad_images: bool = False):
    """(uint8 image, label) for every test image once, in order, at the run's shape (what serving is given).

    In-memory images as they are; files decoded and resized, or for "imagenet" the
    original's test transform (shorter side to size * 256/224, centre crop).
    `skip_bad_images` drops unreadable files (with their labels).
    """
    if is_streamed(images) and augmentation == "imagenet":
        read_full, size = _reader(images, full_size=True), images.image_shape[0]
        read = lambda index: centre_crop(read_full(index), size)  # noqa: E731
    else:
        read = _reader(images)
    labels_t = tf.constant(labels)
    ds = tf.data.Dataset.range(len(labels)).map(
        lambda index: (read(index), tf.gather(labels_t, index)), num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.ignore_errors() if skip_bad_images and is_streamed(images) else ds


def evaluation_dataset(
    images, labels: np.ndarray, batch_size: int, mean, std, augmentation: str = "cifar", skip_bad_images: bool = False
) -> tf.data.Dataset:
    """Every image once, in order, normalised and un-augmented (the last batch may be smaller).

    Files get the test transform of `augmentation` (see `test_dataset`).
    """
    ds = test_dataset(images, labels, augmentation, skip_bad_images)
    ds = ds.map(lambda image, label: (_normalize(image, mean, std), label), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def epochs_dataset(make_epoch, first_epoch: int, epochs: int) -> tf.data.Dataset:
    """Concatenates `make_epoch(e)` for e in [first_epoch, epochs), prefetched."""
    ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(make_epoch)
    return ds.prefetch(tf.data.AUTOTUNE)


def split_for_search(data: ImageData, train_portion: float = 0.5):
    """The original's split: the first `train_portion` of the training set for w, the rest for alpha."""
    if not 0.0 < train_portion < 1.0:
        raise DataError(f"`train_portion` must be in (0, 1). Received: {train_portion}")
    split = int(np.floor(train_portion * len(data.train_labels)))
    return (
        (data.train_images[:split], data.train_labels[:split]),
        (data.train_images[split:], data.train_labels[split:]),
    )

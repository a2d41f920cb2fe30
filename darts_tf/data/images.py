"""Image files and the TensorFlow image ops every source shares: decode, channel conversion, resize.

The in-memory loaders and the streaming pipeline call the same functions, so
an image streamed from disk is bit-for-bit the image an in-memory run holds.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# The first bytes of the formats `tf.io.decode_image` reads: JPEG, PNG, GIF, BMP.
MAGIC = ((b"\xff\xd8\xff", 3), (b"\x89PNG", 4), (b"GIF8", 4), (b"BM", 2))


class ImageFiles:
    """Image files decoded on the fly to one shape: an array-like of `len(paths)` images of `image_shape`.

    Indexing with a slice or an index array gives another `ImageFiles` (as a NumPy
    array would), and `shape` is `(N, H, W, C)`, so code that splits, subsets or
    reads the shape of in-memory images works unchanged on streamed ones.
    """

    def __init__(self, paths, image_shape: tuple):
        self.paths = np.asarray(paths, dtype=str)
        if self.paths.ndim != 1:
            raise ValueError(f"ImageFiles expected a 1-D list of paths. Received: shape {self.paths.shape}")
        self.image_shape = tuple(int(n) for n in image_shape)
        if len(self.image_shape) != 3 or self.image_shape[-1] not in (1, 3):
            raise ValueError(f"ImageFiles expected image_shape (H, W, 1 or 3). Received: {image_shape}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> ImageFiles:
        return ImageFiles(np.atleast_1d(self.paths[index]), self.image_shape)

    @property
    def shape(self) -> tuple:
        return (len(self.paths), *self.image_shape)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files, image_shape={self.image_shape})"


def is_streamed(images) -> bool:
    return isinstance(images, ImageFiles)


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """uint8 HWC with 1-4 channels -> `channels` (1 or 3): drops alpha, converts colour <-> grey.

    Grey is ITU-R 601-2 luma rounded to the nearest integer (tf.image.rgb_to_grayscale's weights).
    """
    image = tf.convert_to_tensor(image)
    have = tf.shape(image)[-1]
    image = tf.cond(tf.equal(have % 2, 0), lambda: image[..., :-1], lambda: image)  # 2 or 4: drop alpha
    if channels == 3:
        image = tf.cond(tf.equal(tf.shape(image)[-1], 1), lambda: tf.tile(image, [1, 1, 3]), lambda: image)
    else:

        def grey():
            weights = tf.constant([[0.2989], [0.587], [0.114]], tf.float32)
            luma = tf.tensordot(tf.cast(image, tf.float32), weights, axes=[[2], [0]])
            return tf.cast(tf.clip_by_value(tf.round(luma), 0, 255), tf.uint8)

        image = tf.cond(tf.equal(tf.shape(image)[-1], 3), grey, lambda: image)
    return tf.ensure_shape(image, [None, None, channels])


def resize_square(image: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 HWC resized (antialiased bilinear, rounded) to size x size; an image already that size is kept."""
    image = tf.convert_to_tensor(image)

    def resize():
        resized = tf.image.resize(image, (size, size), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], [size, size]))
    return tf.ensure_shape(tf.cond(same, lambda: image, resize), [size, size, image.shape[-1]])


def has_image_header(raw: tf.Tensor) -> tf.Tensor:
    """Whether the file's first bytes are those of a JPEG, PNG, GIF or BMP."""
    checks = [tf.equal(tf.strings.substr(raw, 0, length), magic) for magic, length in MAGIC]
    return tf.reduce_any(tf.stack(checks))


def decode_file(path: tf.Tensor) -> tf.Tensor:
    """One image file decoded to uint8 HWC with its own channels (1-4) and size.

    A file that is not a JPEG, PNG, GIF or BMP fails with an error naming it.
    """
    raw = tf.io.read_file(path)
    check = tf.debugging.Assert(has_image_header(raw), ["not a readable image:", path], name="check_image_file")
    with tf.control_dependencies([check]):
        return tf.io.decode_image(raw, expand_animations=False)


def read_image(path: tf.Tensor, channels: int) -> tf.Tensor:
    """One image file decoded to uint8 HWC with `channels`, at its own size (see `decode_file`)."""
    return to_channels(decode_file(path), channels)


def read_resized(path: tf.Tensor, image_shape: tuple) -> tf.Tensor:
    """One image file as uint8 `image_shape` (H, W, C; square): decoded, converted, resized."""
    height, width, channels = image_shape
    if height != width:
        raise ValueError(f"read_resized expected a square image shape. Received: {image_shape}")
    return resize_square(read_image(path, channels), height)

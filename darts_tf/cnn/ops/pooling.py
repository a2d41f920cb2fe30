"""The ops without weights: max and average pooling with PyTorch's padding rules, identity, zero;
and the channel shuffle of partial channels (PC-DARTS)."""

from __future__ import annotations

import keras
import tensorflow as tf

from darts_tf.cnn.ops.conv import conv_output_size, subsample, symmetric_pad


def max_pool(x, pool_size: int, strides: int, padding: str) -> tf.Tensor:
    """`tf.nn.max_pool2d` whose gradient pools again beside its `MaxPoolGrad`.

    Same values and gradients. oneDNN's fast max-pool gradient replaces
    TensorFlow's only where the forward pooling is in the same graph; when
    the backward pass is a function of its own (the search network's shared
    edges), the default kernel ran instead, far slower (docs/performance.md).
    Pooling again costs much less than it saves.
    """
    ksize, stride = [1, pool_size, pool_size, 1], [1, strides, strides, 1]

    @tf.custom_gradient
    def pool(x):
        def grad(dy):
            pooled = tf.nn.max_pool2d(x, ksize, stride, padding)
            return tf.raw_ops.MaxPoolGrad(
                orig_input=x, orig_output=pooled, grad=dy, ksize=ksize, strides=stride, padding=padding
            )

        return tf.nn.max_pool2d(x, ksize, stride, padding), grad

    return pool(x)


def channel_shuffle(x, groups: int) -> tf.Tensor:
    """ShuffleNet's channel shuffle on NHWC: channel `g * (C // groups) + j` moves to `j * groups + g`.

    What PC-DARTS (Xu et al., arXiv:1907.05737) applies to every partial-channel edge's
    output, so the channels the ops saw and those that bypassed them mix in the next cell.
    """
    channels = x.shape[-1]
    if channels is None or channels % groups:
        raise ValueError(f"channel_shuffle expected channels divisible by groups={groups}. Received: {channels}")
    shape = tf.shape(x)
    grouped = tf.reshape(x, tf.concat([shape[:3], [groups, channels // groups]], axis=0))
    return tf.reshape(tf.transpose(grouped, [0, 1, 2, 4, 3]), shape)


def halving_max_pool(x) -> tf.Tensor:
    """2x2 max pooling at stride 2 that rounds odd sizes up (as a stride-2 3x3 conv does).

    PC-DARTS's bypass of a reduction edge (`nn.MaxPool2d(2, 2)`, identical on even sizes;
    on odd ones the original's shapes would not match). An odd size is padded by mirroring
    the last row/column, which equals -inf padding for a max (see `Pool`).
    """
    height, width = x.shape[1], x.shape[2]
    if (height or 0) % 2 or (width or 0) % 2:
        x = tf.pad(x, [[0, 0], [0, (height or 0) % 2], [0, (width or 0) % 2], [0, 0]], mode="SYMMETRIC")
    return max_pool(x, 2, 2, "VALID")


@keras.saving.register_keras_serializable(package="darts_tf")
class Pool(keras.layers.Layer):
    """3x3 max or average pooling with PyTorch's padding (1 on every side).

    Max pooling ignores the padding (as -inf); average pooling divides by the number of
    real (non-padding) pixels in each window (`count_include_pad=False`).
    DARTS `max_pool_3x3` / `avg_pool_3x3` (arXiv:1806.09055).
    """

    def __init__(self, mode="max", pool_size=3, strides=1, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("max", "avg"):
            raise ValueError(f"Pool expected mode 'max' or 'avg'. Received: mode={mode!r}")
        self.mode = mode
        self.pool_size = pool_size
        self.strides = strides

    def call(self, x, training=None):
        k, s = self.pool_size, self.strides
        if s == 1:
            # TensorFlow's "SAME" at stride 1 is symmetric; max ignores and avg excludes padding.
            pool = max_pool if self.mode == "max" else tf.nn.avg_pool2d
            return pool(x, k, 1, "SAME")
        pad = (k - 1) // 2
        if self.mode == "max" and k % 2:
            # The stride-1 pool's windows centred on every s-th pixel are exactly these windows (-inf
            # padding, the same first maximum for the gradient). LiteRT runs pool + slice in its fast
            # kernels (XNNPACK) where the mirror padding below takes its reference kernel: 0.46 -> 0.08 ms
            # on a 72-channel 32x32 input (docs/hardware-aware.md). In training the slice is `subsample`
            # (a strided slice's gradient is slow): faster than the mirror-padded strided pool too.
            pooled = max_pool(x, k, 1, "SAME")
            return subsample(pooled, s) if training else pooled[:, ::s, ::s, :]
        if self.mode == "max":
            # Mirroring the edge pixels ("SYMMETRIC") equals padding with -inf for a max: every padded
            # value is a copy of a pixel in the same window, and the first maximum (which the gradient
            # takes) is the same pixel. Unlike an -inf constant it quantises (LiteRT int8).
            paddings = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
            return max_pool(tf.pad(x, paddings, mode="SYMMETRIC"), k, s, "VALID")
        total = tf.nn.avg_pool2d(symmetric_pad(x, pad), k, s, "VALID")
        ones = tf.ones(tf.concat([[1], tf.shape(x)[1:3], [1]], axis=0), x.dtype)
        fraction = tf.nn.avg_pool2d(symmetric_pad(ones, pad), k, s, "VALID")
        return total / fraction

    def compute_output_shape(self, input_shape):
        size = lambda n: conv_output_size(n, self.pool_size, self.strides)  # noqa: E731
        return (input_shape[0], size(input_shape[1]), size(input_shape[2]), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "pool_size": self.pool_size, "strides": self.strides})
        return config


@keras.saving.register_keras_serializable(package="darts_tf")
class Identity(keras.layers.Layer):
    """The `skip_connect` op at stride 1 (arXiv:1806.09055)."""

    def call(self, x, training=None):
        return x

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="darts_tf")
class Zero(keras.layers.Layer):
    """The `none` op: zeros of the strided input's shape (arXiv:1806.09055)."""

    def __init__(self, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.strides = strides

    def call(self, x, training=None):
        if self.strides == 1:
            return tf.zeros_like(x)
        s = self.strides
        return tf.zeros_like(x[:, ::s, ::s, :])

    def compute_output_shape(self, input_shape):
        size = lambda n: None if n is None else (n + self.strides - 1) // self.strides  # noqa: E731
        return (input_shape[0], size(input_shape[1]), size(input_shape[2]), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update({"strides": self.strides})
        return config

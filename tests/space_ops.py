"""Ops of a user's own for the search-space tests (tests/test_space.py, tests/replica_equivalence.py)."""

import keras
import tensorflow as tf

from darts_tf.cnn.ops import Conv2D, ReLUConvBN
from darts_tf.cnn.space import is_registered, register_op


class ReLUConv(keras.layers.Layer):
    """ReLU -> 3x3 conv, no BatchNorm: weighed by "multiply", and packed edges can run it."""

    def __init__(self, channels, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.strides = strides
        self.conv = Conv2D(channels, 3, strides, name="conv", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, x, training=None):
        return self.conv(tf.nn.relu(x), training=training)


class Gate(keras.layers.Layer):
    """x * sigmoid(dense(mean(x))), average-pooled at stride 2: Dense weights, so packed edges cannot run it."""

    def __init__(self, channels, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.strides = strides
        self.dense = keras.layers.Dense(channels, activation="sigmoid", name="dense", dtype=self.dtype_policy)

    def call(self, x, training=None):
        if self.strides == 2:
            x = tf.nn.avg_pool2d(x, 2, 2, "VALID")
        return x * self.dense(tf.reduce_mean(x, axis=[1, 2]))[:, None, None, :]


def register_test_ops() -> None:
    """test_conv (ReLU-conv-BN, "batchnorm"), test_relu_conv ("multiply", packs), test_gate (does not pack)."""
    if is_registered("test_conv"):
        return
    register_op("test_conv", lambda C, s, affine, **kw: ReLUConvBN(C, 3, s, affine=affine, **kw), "batchnorm")
    register_op("test_relu_conv", lambda C, s, affine, **kw: ReLUConv(C, s, **kw))
    register_op("test_gate", lambda C, s, affine, **kw: Gate(C, s, **kw))

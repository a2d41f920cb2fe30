"""Two ops of one's own for darts_tf's CNN search space (docs/extending.md).

`darts-tf search --ops-module docs/examples/extra_ops.py --primitives ... conv_3x3 squeeze_excite`
imports this file first; so does `darts-tf train --ops-module ...` for a cell that uses them.
"""

import keras
import tensorflow as tf

from darts_tf.cnn.ops import Pool, ReLUConvBN
from darts_tf.cnn.space import is_registered, register_op


@keras.saving.register_keras_serializable(package="extra_ops")
class SqueezeExcite(keras.layers.Layer):
    """Channel attention (Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018):
    x * sigmoid(W2 relu(W1 mean(x))); at stride 2 a 3x3 average pool halves the size first."""

    def __init__(self, channels, strides=1, ratio=4, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.strides = strides
        self.ratio = ratio
        sub = {"dtype": self.dtype_policy}
        self.pool = Pool("avg", 3, strides, name="pool", **sub) if strides == 2 else None
        self.squeeze = keras.layers.Dense(max(1, channels // ratio), activation="relu", name="squeeze", **sub)
        self.excite = keras.layers.Dense(channels, activation="sigmoid", name="excite", **sub)

    def call(self, x, training=None):
        if self.pool is not None:
            x = self.pool(x, training=training)
        gate = self.excite(self.squeeze(tf.reduce_mean(x, axis=[1, 2])))
        return x * gate[:, None, None, :]

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "strides": self.strides, "ratio": self.ratio})
        return config


# ReLU -> 3x3 conv -> BN, as NAS-Bench-201's nor_conv_3x3; it ends in a darts_tf BatchNorm, so the edge
# folds the op's weight into that BatchNorm ("batchnorm") and packed edges can run it.
if not is_registered("conv_3x3"):  # (docs/extending.md registers the same op itself first)
    register_op(
        "conv_3x3", lambda C, stride, affine, **kw: ReLUConvBN(C, 3, stride, affine=affine, **kw), weighting="batchnorm"
    )
# Dense weights: packed edges cannot hold them, so a network with this op uses plain edges (one warning).
register_op("squeeze_excite", lambda C, stride, affine, **kw: SqueezeExcite(C, stride, **kw), replace=True)

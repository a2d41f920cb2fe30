"""The ops made of convolutions and BatchNorms in sequence: ReLU-Conv-BN, the dilated and separable
convolutions, FactorizedReduce (the stride-2 skip) and the 1x7-7x1 convolution."""

from __future__ import annotations

import keras
import tensorflow as tf

from darts_tf.cnn.ops.batchnorm import BatchNorm, synchronized_normalize
from darts_tf.cnn.ops.conv import Conv2D, conv_output_size, pointwise_conv, subsample, torch_uniform


class _Composite(keras.layers.Layer):
    """Base for ops made of sublayers applied in sequence (ReLU between them as `call` says).

    Their last layer is a BatchNorm; `call(x, training, output_scale=s)`
    returns `s * op(x)` with `s` folded into it (see `BatchNorm`).
    `normalization_stages(training)` lists the op as [(f, bn), ...]: the op is
    bn_n(f_n(... bn_1(f_1(x)))). A network under several replicas runs the stages of
    many ops side by side and reduces all their BatchNorms' statistics of one stage in
    one collective (`darts_tf.cnn.search_model`); `call` is the same chain.
    """

    def normalization_stages(self, training=None) -> list:
        raise NotImplementedError

    def call(self, x, training=None, output_scale=None, update_statistics=True):
        stages = self.normalization_stages(training)
        for index, (transform, bn) in enumerate(stages):
            scale = output_scale if index == len(stages) - 1 else None
            x = bn(transform(x), training=training, scale=scale, update_statistics=update_statistics)
        return x

    def _sublayer_kwargs(self):
        return {"dtype": self.dtype_policy}

    def _build_chain(self, input_shape, layers):
        shape = tuple(input_shape)
        for layer in layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        return shape

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._chain():
            shape = layer.compute_output_shape(shape)
        return shape


def synchronized_apply(ops: list, inputs: list, update_statistics: bool = True) -> list:
    """`[op(x, training=True) for op, x in zip(ops, inputs)]` for ops with `normalization_stages`, advanced
    side by side stage by stage under several replicas: each stage's BatchNorms of all the ops take the
    global batch's statistics from one collective (`synchronized_normalize`), not one each."""
    stages = [op.normalization_stages(training=True) for op in ops]
    current = list(inputs)
    for stage in range(max((len(chain) for chain in stages), default=0)):
        active = [i for i, chain in enumerate(stages) if stage < len(chain)]
        tensors = [stages[i][stage][0](current[i]) for i in active]
        layers = [stages[i][stage][1] for i in active]
        for i, y in zip(active, synchronized_normalize(layers, tensors, update_statistics=update_statistics)):
            current[i] = y
    return current


@keras.saving.register_keras_serializable(package="darts_tf")
class ReLUConvBN(_Composite):
    """ReLU -> Conv -> BN, the DARTS preprocessing unit (arXiv:1806.09055)."""

    def __init__(self, filters, kernel_size=1, strides=1, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.affine = affine
        sub = self._sublayer_kwargs()
        self.conv = Conv2D(filters, kernel_size, strides, name="conv", **sub)
        self.bn = BatchNorm(affine=affine, name="bn", **sub)

    def _chain(self):
        return [self.conv, self.bn]

    def build(self, input_shape):
        self._build_chain(input_shape, self._chain())

    def normalization_stages(self, training=None) -> list:
        return [(lambda x: self.conv(tf.nn.relu(x), training=training), self.bn)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {"filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides, "affine": self.affine}
        )
        return config


@keras.saving.register_keras_serializable(package="darts_tf")
class DilConv(_Composite):
    """ReLU -> dilated depthwise conv -> 1x1 conv -> BN (DARTS `dil_conv_kxk`, arXiv:1806.09055)."""

    def __init__(self, filters, kernel_size=3, strides=1, dilation_rate=2, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.affine = affine
        sub = self._sublayer_kwargs()
        self.depthwise = Conv2D(None, kernel_size, strides, dilation_rate, depthwise=True, name="depthwise", **sub)
        self.pointwise = Conv2D(filters, 1, name="pointwise", **sub)
        self.bn = BatchNorm(affine=affine, name="bn", **sub)

    def _chain(self):
        return [self.depthwise, self.pointwise, self.bn]

    def build(self, input_shape):
        self._build_chain(input_shape, self._chain())

    def normalization_stages(self, training=None) -> list:
        def transform(x):
            return self.pointwise(self.depthwise(tf.nn.relu(x), training=training), training=training)

        return [(transform, self.bn)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "dilation_rate": self.dilation_rate,
                "affine": self.affine,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="darts_tf")
class SepConv(_Composite):
    """Two stacked ReLU -> depthwise -> 1x1 -> BN units, the first strided.

    DARTS `sep_conv_kxk` (arXiv:1806.09055, Section 3.1: "separable
    convolutions are always applied twice").
    """

    def __init__(self, filters, kernel_size=3, strides=1, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.affine = affine
        sub = self._sublayer_kwargs()
        self.depthwise1 = Conv2D(None, kernel_size, strides, depthwise=True, name="depthwise1", **sub)
        self.pointwise1 = Conv2D(filters, 1, name="pointwise1", **sub)
        self.bn1 = BatchNorm(affine=affine, name="bn1", **sub)
        self.depthwise2 = Conv2D(None, kernel_size, 1, depthwise=True, name="depthwise2", **sub)
        self.pointwise2 = Conv2D(filters, 1, name="pointwise2", **sub)
        self.bn2 = BatchNorm(affine=affine, name="bn2", **sub)

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            raise ValueError(
                f"SepConv expected {self.filters} input channels (DARTS ops keep the channel "
                f"count). Received: input_shape={tuple(input_shape)}"
            )
        self._build_chain(input_shape, self._chain())

    def _chain(self):
        return [self.depthwise1, self.pointwise1, self.bn1, self.depthwise2, self.pointwise2, self.bn2]

    def normalization_stages(self, training=None) -> list:
        def first(x):
            return self.pointwise1(self.depthwise1(tf.nn.relu(x), training=training), training=training)

        def second(x):
            return self.pointwise2(self.depthwise2(tf.nn.relu(x), training=training), training=training)

        return [(first, self.bn1), (second, self.bn2)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {"filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides, "affine": self.affine}
        )
        return config


@keras.saving.register_keras_serializable(package="darts_tf")
class FactorizedReduce(_Composite):
    """ReLU, two 1x1 stride-2 convs on offset grids, concat, BN (DARTS, arXiv:1806.09055).

    The second conv reads the input shifted by one pixel (`x[:, 1:, 1:]`). On
    an odd spatial size the original would fail to concatenate; here the
    shifted input is zero-padded at the bottom/right so both halves have
    `ceil(n / 2)` rows and columns (identical to the original on even sizes).
    """

    def __init__(self, filters, affine=True, **kwargs):
        super().__init__(**kwargs)
        if filters % 2:
            raise ValueError(f"FactorizedReduce expected an even `filters`. Received: filters={filters}")
        self.filters = filters
        self.affine = affine
        sub = self._sublayer_kwargs()
        self.conv_1 = Conv2D(filters // 2, 1, 2, name="conv_1", **sub)
        self.conv_2 = Conv2D(filters // 2, 1, 2, name="conv_2", **sub)
        self.bn = BatchNorm(affine=affine, name="bn", **sub)

    def build(self, input_shape):
        self.conv_1.build(input_shape)
        self.conv_2.build(input_shape)
        self.bn.build(tuple(input_shape[:-1]) + (self.filters,))

    def normalization_stages(self, training=None) -> list:
        return [(lambda x: self._convolve(x, training), self.bn)]

    def _convolve(self, x, training):
        x = tf.nn.relu(x)
        height, width = x.shape[1], x.shape[2]
        if height is not None and width is not None and height % 2 == 0 and width % 2 == 0:
            # Even sizes: the two grids are pixels (2i, 2j) and (2i+1, 2j+1) (see `subsample`).
            even, odd = subsample(x, 2, offsets=(0, 1))
            dtype = x.dtype
            return tf.concat(
                [
                    pointwise_conv(even, tf.cast(self.conv_1.kernel, dtype)),
                    pointwise_conv(odd, tf.cast(self.conv_2.kernel, dtype)),
                ],
                axis=-1,
            )
        shifted = x[:, 1:, 1:, :]
        if height is None or width is None:
            dynamic = tf.shape(x)
            pad_h, pad_w = dynamic[1] % 2, dynamic[2] % 2
            shifted = tf.pad(shifted, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        elif height % 2 or width % 2:
            shifted = tf.pad(shifted, [[0, 0], [0, height % 2], [0, width % 2], [0, 0]])
        return tf.concat([self.conv_1(x, training=training), self.conv_2(shifted, training=training)], axis=-1)

    def compute_output_shape(self, input_shape):
        half = lambda n: None if n is None else (n + 1) // 2  # noqa: E731
        return (input_shape[0], half(input_shape[1]), half(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "affine": self.affine})
        return config


@keras.saving.register_keras_serializable(package="darts_tf")
class FactorizedConv(keras.layers.Layer):
    """ReLU -> 1xk conv (stride 1 x s) -> kx1 conv (stride s x 1) -> BN: the `conv_7x1_1x7` op.

    Both convolutions are bias-free, C -> C, and pad `(k - 1) / 2` pixels on the
    side they slide along, as the original's `nn.Conv2d(C, C, (1, 7), stride=(1,
    s), padding=(0, 3))` then `(7, 1)`. Used by the AmoebaNet genotype that the
    DARTS code ships (Real et al., 2019; arXiv:1806.09055, genotypes.py); it is
    not in the DARTS search space.
    """

    def __init__(self, filters, kernel_size=7, strides=1, affine=True, **kwargs):
        super().__init__(**kwargs)
        if kernel_size % 2 != 1:
            raise ValueError(f"FactorizedConv expected an odd `kernel_size`. Received: kernel_size={kernel_size}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.affine = affine
        self.bn = BatchNorm(affine=affine, name="bn", dtype=self.dtype_policy)

    def build(self, input_shape):
        k, channels = self.kernel_size, input_shape[-1]
        # PyTorch's default init: fan_in = in_channels * 1 * k for both kernels.
        self.kernel_1xk = self.add_weight(
            name="kernel_1xk", shape=(1, k, channels, self.filters), initializer=torch_uniform(channels * k)
        )
        self.kernel_kx1 = self.add_weight(
            name="kernel_kx1", shape=(k, 1, self.filters, self.filters), initializer=torch_uniform(self.filters * k)
        )
        self.bn.build(self.compute_output_shape(input_shape))

    def call(self, x, training=None, output_scale=None, update_statistics=True):
        pad, s = (self.kernel_size - 1) // 2, self.strides
        x = tf.pad(tf.nn.relu(x), [[0, 0], [0, 0], [pad, pad], [0, 0]])
        x = tf.nn.conv2d(x, tf.cast(self.kernel_1xk, x.dtype), strides=[1, 1, s, 1], padding="VALID")
        x = tf.pad(x, [[0, 0], [pad, pad], [0, 0], [0, 0]])
        x = tf.nn.conv2d(x, tf.cast(self.kernel_kx1, x.dtype), strides=[1, s, 1, 1], padding="VALID")
        return self.bn(x, training=training, scale=output_scale, update_statistics=update_statistics)

    def compute_output_shape(self, input_shape):
        size = lambda n: conv_output_size(n, self.kernel_size, self.strides)  # noqa: E731
        return (input_shape[0], size(input_shape[1]), size(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides, "affine": self.affine}
        )
        return config

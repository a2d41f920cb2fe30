"""Keras layers for the eight DARTS primitives, with PyTorch's numerics.

Every spatial op pads symmetrically like PyTorch (`dilation * (k - 1) / 2`
pixels on every side), max pooling ignores its padding, average pooling excludes
the padding (`count_include_pad=False`) and batch normalization uses
epsilon 1e-5, Keras momentum 0.9 (PyTorch's 0.1) and normalizes with the
biased batch variance in training, updating its moving variance with the
unbiased one, as `torch.nn.BatchNorm2d` does. TensorFlow's `"SAME"` padding
pads stride-2 ops at the bottom/right only, which would shift the sampling
grid by one pixel; the layers here pad explicitly where that matters.

Layout is NHWC. The original code's parameter names for these layers live in
`darts_tf.cnn.convert`, which maps PyTorch state dicts.

Reference: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search",
ICLR 2019 (arXiv:1806.09055), Section 3.1 and Appendix A.1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import tensorflow as tf

from darts_tf import replicas
from darts_tf.cnn.genotypes import OPERATIONS
from darts_tf.errors import GenotypeError
from darts_tf.precision import wide_dtype

BN_MOMENTUM = 0.9  # PyTorch momentum 0.1
BN_EPSILON = 1e-5


def torch_uniform(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch's default conv/linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def conv_output_size(size, kernel_size: int, stride: int = 1, dilation: int = 1):
    """Output length of a PyTorch-padded conv/pool (padding = dilation*(k-1)//2)."""
    if size is None:
        return None
    padding = dilation * (kernel_size - 1) // 2
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def _symmetric_pad(x, padding: int, value: float = 0.0):
    if padding == 0:
        return x
    paddings = [[0, 0], [padding, padding], [padding, padding], [0, 0]]
    return tf.pad(x, paddings, constant_values=value)


def subsample(x, stride: int, offsets=None):
    """`x[:, o::stride, o::stride, :]` for each offset `o` in `offsets` (default: just 0).

    Where the size is a multiple of `stride` this is `space_to_depth` and a
    channel split, whose gradients are a permutation and a concat: a strided
    slice's gradient (`StridedSliceGrad`) ran 10-30x slower on CPU (1.7-4.5
    ms per call in the search network). Other sizes slice.
    """
    single = offsets is None
    offsets = (0,) if single else tuple(offsets)
    height, width = x.shape[1], x.shape[2]
    if stride > 1 and height is not None and width is not None and height % stride == 0 and width % stride == 0:
        blocks = tf.split(tf.nn.space_to_depth(x, stride), stride * stride, axis=-1)
        picked = [blocks[o * stride + o] for o in offsets]
    else:
        picked = [x[:, o::stride, o::stride, :] for o in offsets]
    return picked[0] if single else picked


def pointwise_conv(x, kernel):
    """A 1x1 stride-1 convolution (`kernel` [1, 1, in, out]) as one matrix product over all pixels.

    The same sums as `tf.nn.conv2d`; oneDNN's matrix product ran 10-20% faster than
    its 1x1 convolution on the DARTS shapes, forward and backward (CPU).
    """
    channels_in, channels_out = kernel.shape[-2], kernel.shape[-1]
    y = tf.matmul(tf.reshape(x, [-1, channels_in]), tf.reshape(kernel, [channels_in, channels_out]))
    if x.shape.is_fully_defined():  # static shapes: no shape arithmetic in the graph
        return tf.reshape(y, x.shape[:-1] + [channels_out])
    if None not in x.shape[1:-1]:  # only the batch unknown (serving): a constant shape with -1 keeps it static
        return tf.reshape(y, [-1, *x.shape[1:-1], channels_out])
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [channels_out]], axis=0))


def _check_stride(stride: int, where: str) -> int:
    if stride not in (1, 2):
        raise ValueError(f"{where}: stride must be 1 or 2. Received: stride={stride!r}")
    return stride


@keras.saving.register_keras_serializable(package="darts_tf")
class Conv2D(keras.layers.Layer):
    """Bias-free 2D convolution with PyTorch's symmetric zero padding.

    Pads `dilation_rate * (kernel_size - 1) // 2` pixels on every side, so
    stride-2 convolutions sample the same pixels as `torch.nn.Conv2d`.
    With `depthwise=True` it is a depthwise convolution (PyTorch `groups=C`).
    Part of the DARTS operations (Liu et al., ICLR 2019, arXiv:1806.09055).
    """

    def __init__(self, filters=None, kernel_size=1, strides=1, dilation_rate=1, depthwise=False, **kwargs):
        super().__init__(**kwargs)
        if not depthwise and (filters is None or filters <= 0):
            raise ValueError(f"Conv2D expected a positive `filters`. Received: filters={filters!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"Conv2D expected an odd `kernel_size`. Received: kernel_size={kernel_size}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.depthwise = depthwise

    def build(self, input_shape):
        channels = input_shape[-1]
        k = self.kernel_size
        if self.depthwise:
            shape = (k, k, channels, 1)
            fan_in = k * k
        else:
            shape = (k, k, channels, self.filters)
            fan_in = channels * k * k
        self.fan_in = fan_in  # in_channels / groups * kh * kw, as PyTorch's default init
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer=torch_uniform(fan_in))

    def call(self, x, training=None):
        k, s, d = self.kernel_size, self.strides, self.dilation_rate
        kernel = tf.cast(self.kernel, x.dtype)
        if k == 1 and not self.depthwise and training:
            # Training only: in inference the 1x1 convolution fuses with the BatchNorm after it.
            return pointwise_conv(subsample(x, s) if s > 1 else x, kernel)
        if k == 1:
            padding = "VALID"
        elif s == 1 and d == 1:
            padding = "SAME"  # odd kernel at stride 1: symmetric, as PyTorch
        else:
            x = _symmetric_pad(x, d * (k - 1) // 2)
            padding = "VALID"
            if s > 1 and d == s:
                # A stride-s, dilation-s kernel only reads every s-th padded pixel:
                # subsample first, then run a dense kernel (same result, no dilation).
                x = subsample(x, s)
                s = d = 1
        if self.depthwise:
            # tf.nn.depthwise_conv2d handles dilation by space-to-batch; TensorFlow's
            # native dilated depthwise kernel has a wrong gradient on CPU (TF 2.21).
            return tf.nn.depthwise_conv2d(x, kernel, strides=[1, s, s, 1], padding=padding, dilations=[d, d])
        return tf.nn.conv2d(x, kernel, strides=s, padding=padding, dilations=d)

    def compute_output_shape(self, input_shape):
        size = lambda n: conv_output_size(n, self.kernel_size, self.strides, self.dilation_rate)  # noqa: E731
        channels = input_shape[-1] if self.depthwise else self.filters
        return (input_shape[0], size(input_shape[1]), size(input_shape[2]), channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "dilation_rate": self.dilation_rate,
                "depthwise": self.depthwise,
            }
        )
        return config


def _moments(x) -> tuple:
    # Not tf.nn.moments: it stops the gradient through the mean inside the variance, which
    # is harmless for first derivatives but drops a term of the second derivatives that the
    # exact hypergradient needs.
    mean = tf.reduce_mean(x, axis=[0, 1, 2])
    return mean, tf.reduce_mean(tf.square(x - mean), axis=[0, 1, 2])


def fused_normalize(x, mean, variance, scale, offset, epsilon: float) -> tf.Tensor:
    """(x - mean) / sqrt(variance + epsilon) * scale + offset by TensorFlow's fused kernel, with the
    gradient in `mean` and `variance` too (given statistics are constants to the kernel's own).

    The backward pass is written out (dx = dy scale / sigma; d offset = sum dy; d scale =
    sum(dy (x - mean)) / sigma; d mean = -scale / sigma sum dy; d variance = -scale / (2 sigma^3)
    sum(dy (x - mean))), so it is differentiable again (exact Hessian-vector products), which the
    fused gradient kernel is not in the statistics. Statistics, scale and offset are float32 for
    half inputs.
    """

    @tf.custom_gradient
    def normalize(x, mean, variance, scale, offset):
        y = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=mean, variance=variance, epsilon=epsilon, is_training=False
        )[0]

        def grad(dy):
            inverse = tf.math.rsqrt(variance + epsilon)
            dx = dy * tf.cast(scale * inverse, dy.dtype)
            wide = tf.cast(dy, mean.dtype)
            doffset = tf.reduce_sum(wide, axis=[0, 1, 2])
            centred = tf.reduce_sum(wide * (tf.cast(x, mean.dtype) - mean), axis=[0, 1, 2])
            dscale = centred * inverse
            return dx, -scale * inverse * doffset, -0.5 * scale * inverse**3 * centred, dscale, doffset

        return y, grad

    return normalize(x, mean, variance, scale, offset)


def unbiased(variance, count) -> tf.Tensor:
    """The unbiased variance from the biased one over `count` values (PyTorch's moving-variance update)."""
    count = tf.cast(count, variance.dtype)
    return variance * count / tf.maximum(count - 1.0, 1.0)


@keras.saving.register_keras_serializable(package="darts_tf")
class BatchNorm(keras.layers.Layer):
    """Batch normalization with `torch.nn.BatchNorm2d` semantics (NHWC).

    Training normalizes with the biased batch variance and updates the moving
    variance with the unbiased one; `momentum` is Keras's (0.9 = PyTorch 0.1).
    `affine=False` drops gamma/beta, as the DARTS search network does.
    `call(x, training, scale=s)` returns `s * BN(x)` with `s` (a scalar)
    folded into the normalization's own scale and offset: the product is
    not a separate op, so its input need not be kept for the backward pass
    (the search network weights each op's output this way).
    `call(x, training=True, update_statistics=False)` normalises with the
    batch statistics and leaves the moving averages alone (the extra passes
    of the architecture gradient); every op here passes the argument on to
    its BatchNorms. With `fused=None` the single fused TensorFlow kernel is used for
    float16/bfloat16/float32 inputs, the composite formula otherwise (float64).
    Under a tf.distribute strategy with several replicas the batch statistics are
    synchronised: mean and variance over the global batch (composite formula), so k
    replicas at global batch B compute what one device does at batch B.
    (Ioffe & Szegedy 2015; used throughout DARTS, arXiv:1806.09055.)
    """

    def __init__(self, affine=True, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, fused=None, **kwargs):
        super().__init__(**kwargs)
        self.affine = affine
        self.momentum = momentum
        self.epsilon = epsilon
        self.fused = fused

    def build(self, input_shape):
        channels = input_shape[-1]
        # Read in float32 under a mixed policy, as Keras's own BatchNormalization (autocast=False).
        kept = {"shape": (channels,), "autocast": False}
        if self.affine:
            self.gamma = self.add_weight(name="gamma", initializer="ones", **kept)
            self.beta = self.add_weight(name="beta", initializer="zeros", **kept)
        else:
            self.gamma = self.beta = None
        self.moving_mean = self.add_weight(name="moving_mean", initializer="zeros", trainable=False, **kept)
        self.moving_variance = self.add_weight(name="moving_variance", initializer="ones", trainable=False, **kept)

    def _scale_offset(self, channels, dtype, factor=None):
        if self.affine:
            scale, offset = tf.cast(self.gamma, dtype), tf.cast(self.beta, dtype)
            if factor is not None:
                factor = tf.cast(factor, dtype)
                scale, offset = scale * factor, offset * factor
            return scale, offset
        if factor is not None:
            return tf.broadcast_to(tf.cast(factor, dtype), [channels]), tf.zeros([channels], dtype)
        return tf.ones([channels], dtype), tf.zeros([channels], dtype)

    def local_moments(self, x) -> tf.Tensor:
        """This replica's moments of `x` for a cross-replica mean: [2 * channels], differentiable.

        (mean - shift, variance + (mean - shift)^2), the first two moments about `shift`,
        the moving mean (the same on every replica and close to the mean, so the pooled
        variance E[d^2] - E[d]^2 loses few digits). The mean over equal-sized replica
        batches of these vectors is what `pooled_statistics` turns into the global batch's
        mean and biased variance; a network may concatenate many BatchNorms' vectors into
        one collective.
        """
        x = tf.cast(x, wide_dtype(x.dtype))
        mean, variance = _moments(x)
        offset = mean - tf.stop_gradient(tf.cast(self.moving_mean, x.dtype))
        return tf.concat([offset, variance + tf.square(offset)], axis=0)

    def pooled_statistics(self, pooled) -> tuple:
        """(mean, biased variance) of the global batch from the replicas' mean of `local_moments`."""
        offset, second = tf.split(pooled, 2)
        shift = tf.stop_gradient(tf.cast(self.moving_mean, pooled.dtype))
        return shift + offset, tf.maximum(second - tf.square(offset), 0.0)

    def normalize(self, x, mean, variance, scale=None, fused=False) -> tf.Tensor:
        """`scale * BN(x)` with the given batch statistics, differentiable in all of them.

        The composite formula; with `fused=True` one fused kernel forward and a written-out
        backward (`fused_normalize`) for float32 and half inputs (float32 statistics) unless the
        layer says `fused=False`. The search network's staged edges (shared functions) use the
        fused form; a BatchNorm at the top of a replica function keeps the composite one (there
        the fused form moved a 2-replica training step away from one device's; not understood).
        """
        param_dtype = wide_dtype(x.dtype)
        gamma, beta = self._scale_offset(x.shape[-1], param_dtype, scale)
        fused = fused and (self.fused if self.fused is not None else x.dtype != tf.float64)
        if fused:
            return fused_normalize(x, mean, variance, gamma, beta, self.epsilon)
        y = (tf.cast(x, param_dtype) - mean) * (tf.math.rsqrt(variance + self.epsilon) * gamma) + beta
        return tf.cast(y, x.dtype)

    def updated_statistics(self, mean, variance, count) -> list:
        """The moving mean and variance after a training step whose (biased) batch statistics over
        `count` values per channel are `mean`, `variance` (values, not assigned)."""
        return self._moving_averages(mean, unbiased(variance, count))

    def _moving_averages(self, mean, unbiased_variance) -> list:
        m = self.momentum
        return [
            self.moving_mean * m + tf.cast(mean, self.moving_mean.dtype) * (1.0 - m),
            self.moving_variance * m + tf.cast(unbiased_variance, self.moving_variance.dtype) * (1.0 - m),
        ]

    def call(self, x, training=None, scale=None, update_statistics=True):
        channels = x.shape[-1]
        param_dtype = wide_dtype(x.dtype)
        factor = scale
        scale, offset = self._scale_offset(channels, param_dtype, scale)
        fused = self.fused if self.fused is not None else x.dtype != tf.float64
        if not training:
            mean = tf.cast(self.moving_mean, param_dtype)
            variance = tf.cast(self.moving_variance, param_dtype)
            if fused:
                return tf.raw_ops.FusedBatchNormV3(
                    x=x,
                    scale=scale,
                    offset=offset,
                    mean=mean,
                    variance=variance,
                    epsilon=self.epsilon,
                    is_training=False,
                )[0]
            inv = tf.math.rsqrt(variance + self.epsilon) * scale
            return x * tf.cast(inv, x.dtype) + tf.cast(offset - mean * inv, x.dtype)
        synchronized = replicas.count() > 1  # cross-replica statistics: what one device computes
        if fused and not synchronized:
            empty = tf.constant([], param_dtype)
            outputs = tf.raw_ops.FusedBatchNormV3(
                x=x,
                scale=scale,
                offset=offset,
                mean=empty,
                variance=empty,
                epsilon=self.epsilon,
                is_training=True,
            )
            y, mean, unbiased_variance = outputs[0], outputs[1], outputs[2]
        else:
            # One cast for every use of x: the backward pass sums the normalisation's and the
            # statistics' gradients in float32 (in float16 each can overflow where their sum does not).
            wide = tf.cast(x, param_dtype)
            if synchronized:  # the global batch's moments, from every replica's (one collective)
                (pooled,) = replicas.mean([self.local_moments(wide)])
                mean, variance = self.pooled_statistics(pooled)
            else:
                mean, variance = _moments(wide)
            y = tf.cast(self.normalize(wide, mean, variance, factor), x.dtype)
            unbiased_variance = unbiased(variance, tf.reduce_prod(tf.shape(x)[:3]) * replicas.count())
        if not update_statistics:
            return y
        moving_mean, moving_variance = self._moving_averages(mean, unbiased_variance)
        self.moving_mean.assign(moving_mean)
        self.moving_variance.assign(moving_variance)
        return y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"affine": self.affine, "momentum": self.momentum, "epsilon": self.epsilon, "fused": self.fused})
        return config


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
        if self.mode == "max":
            # Mirroring the edge pixels ("SYMMETRIC") equals padding with -inf for a max: every padded
            # value is a copy of a pixel in the same window, and the first maximum (which the gradient
            # takes) is the same pixel. Unlike an -inf constant it quantises (LiteRT int8).
            paddings = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
            return max_pool(tf.pad(x, paddings, mode="SYMMETRIC"), k, s, "VALID")
        total = tf.nn.avg_pool2d(_symmetric_pad(x, pad), k, s, "VALID")
        ones = tf.ones(tf.concat([[1], tf.shape(x)[1:3], [1]], axis=0), x.dtype)
        fraction = tf.nn.avg_pool2d(_symmetric_pad(ones, pad), k, s, "VALID")
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


def preprocess0(channels: int, reduction_prev: bool, affine: bool = True, **kwargs) -> keras.layers.Layer:
    """A DARTS cell's first-input preprocessing: FactorizedReduce after a reduction cell, else ReLU-1x1 conv-BN."""
    if reduction_prev:
        return FactorizedReduce(channels, affine=affine, name="preprocess0", **kwargs)
    return ReLUConvBN(channels, 1, 1, affine=affine, name="preprocess0", **kwargs)


OpFactory = Callable[..., keras.layers.Layer]

OPS: dict[str, OpFactory] = {
    "none": lambda C, stride, affine, **kw: Zero(stride, **kw),
    "max_pool_3x3": lambda C, stride, affine, **kw: Pool("max", 3, stride, **kw),
    "avg_pool_3x3": lambda C, stride, affine, **kw: Pool("avg", 3, stride, **kw),
    "skip_connect": lambda C, stride, affine, **kw: (
        Identity(**kw) if stride == 1 else FactorizedReduce(C, affine=affine, **kw)
    ),
    "sep_conv_3x3": lambda C, stride, affine, **kw: SepConv(C, 3, stride, affine=affine, **kw),
    "sep_conv_5x5": lambda C, stride, affine, **kw: SepConv(C, 5, stride, affine=affine, **kw),
    "dil_conv_3x3": lambda C, stride, affine, **kw: DilConv(C, 3, stride, 2, affine=affine, **kw),
    "dil_conv_5x5": lambda C, stride, affine, **kw: DilConv(C, 5, stride, 2, affine=affine, **kw),
    # Evaluation only (the NASNet and AmoebaNet genotypes), not in the search space:
    "sep_conv_7x7": lambda C, stride, affine, **kw: SepConv(C, 7, stride, affine=affine, **kw),
    "conv_7x1_1x7": lambda C, stride, affine, **kw: FactorizedConv(C, 7, stride, affine=affine, **kw),
}


def make_op(primitive: str, channels: int, stride: int, affine: bool = True, **kwargs) -> keras.layers.Layer:
    """Builds op `primitive` for `channels` channels; ValueError on unknown op or stride."""
    if primitive not in OPS:
        raise GenotypeError(f"Unknown DARTS op {primitive!r}. Expected one of: {', '.join(OPERATIONS)}")
    _check_stride(stride, f"op {primitive!r}")
    return OPS[primitive](channels, stride, affine, **kwargs)

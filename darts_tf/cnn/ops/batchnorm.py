"""`BatchNorm`: PyTorch's BatchNorm2d numerics (biased variance to normalise, unbiased for the moving
variance), fused where TensorFlow's kernel is exact, statistics across replicas in one collective."""

from __future__ import annotations

import keras
import tensorflow as tf

from darts_tf import replicas
from darts_tf.precision import wide_dtype

BN_MOMENTUM = 0.9  # PyTorch momentum 0.1
BN_EPSILON = 1e-5


def _moments(x) -> tuple:
    # Not tf.nn.moments: it stops the gradient through the mean inside the variance, which
    # is harmless for first derivatives but drops a term of the second derivatives that the
    # exact hypergradient needs.
    mean = tf.reduce_mean(x, axis=[0, 1, 2])
    return mean, tf.reduce_mean(tf.square(x - mean), axis=[0, 1, 2])


def local_moments(x) -> tuple:
    """(mean, biased variance) of `x` per channel over batch, height and width, differentiable
    (again) in `x`.

    The moments are taken about the batch's own mean `s` (a constant to the derivatives):
    mean = s + E[x - s], variance = E[(x - s)^2] - E[x - s]^2, exact functions of `x` for any
    constant `s` whose terms lose no digits (about a distant point, E[d^2] - E[d]^2 cancels:
    a channel whose mean is 100 times its spread keeps 3 of float32's 7 digits). The backward
    pass is written out, (g1 + 2 (x - s) g2) / n, a per-channel affine map of `x`, by one fused
    kernel for float32 (`_channel_affine`), and so is the float32 forward pass (the fused
    kernel's training mode): on CPU the broadcasting element-wise ops they replace took 2-3x as
    long (they run once per BatchNorm and replica in a search step under several replicas).
    """

    @tf.custom_gradient
    def moments(x):
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), x.dtype)
        if x.dtype == tf.float32:
            channels, empty = _channels(x), tf.constant([], x.dtype)
            _, shift, variance = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=tf.ones(channels, x.dtype), offset=tf.zeros(channels, x.dtype), mean=empty,
                variance=empty, epsilon=BN_EPSILON, is_training=True,
            )[:3]  # fmt: skip
            # The kernel's variance is the unbiased one; E[x - s] is 0 to round-off about its own mean.
            first, second = tf.zeros_like(shift), variance * (count - 1.0) / tf.maximum(count, 1.0)
        else:
            shift = tf.reduce_mean(x, axis=[0, 1, 2])
            d = x - shift
            first, second = tf.reduce_mean(d, axis=[0, 1, 2]), tf.reduce_mean(tf.square(d), axis=[0, 1, 2])
        shift = tf.stop_gradient(shift)

        def grad(_, g1, g2):  # the shift is a constant: its gradient is not taken
            g1 = tf.zeros_like(first) if g1 is None else g1
            g2 = tf.zeros_like(second) if g2 is None else g2
            slope = 2.0 * g2 / count
            return _channel_affine(x, slope, g1 / count - shift * slope)

        return (shift, first, second), grad

    shift, first, second = moments(x)
    return shift + first, second - tf.square(first)


def global_statistics(gathered) -> tuple:
    """(mean, biased variance) of the global batch from every replica's `local_moments` of equal-sized
    batches, gathered as [replicas, 2 * n] (each row: n means, then their n variances): the mean of the
    means, and the mean of the variances plus the variance of the means (no term cancels)."""
    means, variances = tf.split(gathered, 2, axis=-1)
    share = 1.0 / gathered.shape[0]  # (sums times a constant: fewer graph ops than reduce_mean's gradient)
    mean = tf.reduce_sum(means, axis=0) * share
    return mean, (tf.reduce_sum(variances, axis=0) + tf.reduce_sum(tf.square(means - mean), axis=0)) * share


def gathered_statistics(moments: list) -> list:
    """The global batch's [mean, biased variance] ([2, n] each) of every part's `moments`, this replica's
    (mean, variance) of n channels (`local_moments`), all from one collective: every replica's means and
    variances gathered as [replicas, all means | all variances], `global_statistics`, split per part."""
    gathered = replicas.gather(tf.concat([m for m, _ in moments] + [v for _, v in moments], axis=0))
    return split_statistics(gathered, [int(m.shape[0]) for m, _ in moments])


def split_statistics(gathered, sizes: list) -> list:
    """The global batch's [mean, biased variance] of each part ([2, sizes[i]]) from every replica's moments
    gathered as [replicas, all means | all variances] (`global_statistics`)."""
    return tf.split(tf.stack(global_statistics(gathered)), sizes, axis=-1)


def synchronized_normalize(
    layers: list, tensors: list, scales: list | None = None, update_statistics: bool = True
) -> list:
    """`layers[i](tensors[i], training=True, scale=scales[i])` for BatchNorm `layers`, each with the global
    batch's statistics under several replicas, all of them from one collective.

    Every tensor's `local_moments` give the global batch's statistics at once (`gathered_statistics`),
    and each layer normalises its tensor with them (`BatchNorm.normalize`, fused) and updates its moving
    statistics (unless not `update_statistics`), as one device does at the global batch. Under a mixed
    policy the moments and statistics are float32 and each output has its tensor's dtype.
    """
    scales = [None] * len(layers) if scales is None else scales
    wides = [tf.cast(x, wide_dtype(x.dtype)) for x in tensors]
    statistics = gathered_statistics([local_moments(wide) for wide in wides])
    outputs = []
    for layer, x, wide, pair, scale in zip(layers, tensors, wides, statistics, scales):
        mean, variance = tf.unstack(pair)
        outputs.append(tf.cast(layer.normalize(wide, mean, variance, scale, fused=True), x.dtype))
        if update_statistics:
            count = tf.reduce_prod(tf.shape(x)[:3]) * replicas.count()
            moving_mean, moving_variance = layer.updated_statistics(mean, variance, count)
            layer.moving_mean.assign(moving_mean)
            layer.moving_variance.assign(moving_variance)
    return outputs


def _channels(x):
    # The channel count as a constant when the shape says it (no shape ops in the graph).
    return [x.shape[-1]] if x.shape[-1] is not None else tf.shape(x)[-1:]


def _channel_affine(x, slope, intercept) -> tf.Tensor:
    """x * slope + intercept with per-channel `slope`, `intercept` (as x's dtype): by the fused
    BatchNorm kernel with mean 0, variance 1 and no epsilon for float32, differentiable."""
    if x.dtype != tf.float32:  # (half inputs' statistics are float32: `synchronized_normalize`)
        return x * slope + intercept
    channels = _channels(x)
    return tf.raw_ops.FusedBatchNormV3(
        x=x, scale=slope, offset=intercept, mean=tf.zeros(channels, x.dtype), variance=tf.ones(channels, x.dtype),
        epsilon=0.0, is_training=False,
    )[0]  # fmt: skip


def fused_normalize(x, mean, variance, scale, offset, epsilon: float) -> tf.Tensor:
    """(x - mean) / sqrt(variance + epsilon) * scale + offset by TensorFlow's fused kernel, with the
    gradient in `mean` and `variance` too (given statistics are constants to the kernel's own).

    The backward pass is TensorFlow's fused gradient kernel for given statistics (dx = dy scale /
    sigma, sum dy (x - mean) / sigma, sum dy in one pass), from which d mean = -scale / sigma
    sum dy and d variance = -scale / (2 sigma^2) sum dy (x - mean) / sigma follow; its own
    derivatives (exact Hessian-vector products) are the composite formulas'
    (`_normalize_backward`), which the fused kernel's are not in the statistics. Statistics,
    scale and offset are float32 for half inputs.
    """

    @tf.custom_gradient
    def normalize(x, mean, variance, scale, offset):
        y = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=mean, variance=variance, epsilon=epsilon, is_training=False
        )[0]

        def grad(dy):
            return _normalize_backward(dy, x, mean, variance, scale, epsilon)

        return y, grad

    return normalize(x, mean, variance, scale, offset)


def _composite_normalize_backward(dy, x, mean, variance, scale, epsilon: float) -> tuple:
    # The gradients of (x - mean) / sqrt(variance + epsilon) * scale + offset in composite ops:
    # (dx, d mean, d variance, d scale, d offset).
    inverse = tf.math.rsqrt(variance + epsilon)
    dx = dy * tf.cast(scale * inverse, dy.dtype)
    wide = tf.cast(dy, mean.dtype)
    doffset = tf.reduce_sum(wide, axis=[0, 1, 2])
    centred = tf.reduce_sum(wide * (tf.cast(x, mean.dtype) - mean), axis=[0, 1, 2])
    dscale = centred * inverse
    return dx, -scale * inverse * doffset, -0.5 * scale * inverse**3 * centred, dscale, doffset


def _normalize_backward(dy, x, mean, variance, scale, epsilon: float) -> tuple:
    """`fused_normalize`'s gradients by the fused gradient kernel; their own gradients (a second
    derivative) by autodiff of the composite formulas."""

    @tf.custom_gradient
    def backward(dy, x, mean, variance, scale):
        dx, dscale, doffset = tf.raw_ops.FusedBatchNormGradV3(
            y_backprop=dy, x=x, scale=scale, reserve_space_1=mean, reserve_space_2=variance,
            reserve_space_3=tf.constant([], mean.dtype), epsilon=epsilon, is_training=False,
        )[:3]  # fmt: skip
        inverse = tf.math.rsqrt(variance + epsilon)
        outputs = (dx, -scale * inverse * doffset, -0.5 * scale * tf.square(inverse) * dscale, dscale, doffset)

        def grad(*upstream):
            inputs = [dy, x, mean, variance, scale]
            upstream = [tf.zeros_like(y) if g is None else g for g, y in zip(upstream, outputs)]
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                composite = _composite_normalize_backward(*inputs, epsilon)
            return tape.gradient(composite, inputs, output_gradients=upstream)

        return outputs, grad

    return backward(dy, x, mean, variance, scale)


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
    synchronised: every replica's mean and variance gathered in one collective give the
    global batch's, so k replicas at global batch B compute what one device does at batch B.
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

    def normalize(self, x, mean, variance, scale=None, fused=False) -> tf.Tensor:
        """`scale * BN(x)` with the given batch statistics, differentiable in all of them.

        The composite formula; with `fused=True` one fused kernel forward and a written-out
        backward (`fused_normalize`) for float32 and half inputs (float32 statistics) unless the
        layer says `fused=False`: what synchronised BatchNorms use (the search network's staged
        edges and `call` under several replicas).
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
        if training and replicas.synchronized_statistics():  # the global batch's: what one device computes
            return synchronized_normalize([self], [x], [scale], update_statistics)[0]
        param_dtype = wide_dtype(x.dtype)
        factor = scale
        scale, offset = self._scale_offset(x.shape[-1], param_dtype, scale)
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
        if fused:
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
            mean, variance = _moments(wide)
            y = tf.cast(self.normalize(wide, mean, variance, factor), x.dtype)
            unbiased_variance = unbiased(variance, tf.reduce_prod(tf.shape(x)[:3]))
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

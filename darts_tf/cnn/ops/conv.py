"""Convolutions with PyTorch's padding and initialisation: `Conv2D`, and the helpers the ops share
(symmetric padding, strided subsampling, pointwise convolution, PyTorch's uniform initializer)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf


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


def symmetric_pad(x, padding: int, value: float = 0.0):
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


# oneDNN's depthwise kernel-gradient kernel is fast up to this kernel width (CPU; see `depthwise_kernel_gradient`).
FAST_KERNEL_WIDTH = 3


def depthwise_kernel_gradient(x, dy, kernel_size: int, strides: int = 1, padding: str = "VALID") -> tf.Tensor:
    """The gradient of a depthwise convolution's [k, k, C, 1] kernel from its input `x` and its
    output's gradient `dy`; a kernel wider than 3 in column pieces 3 wide.

    Each piece is oneDNN's kernel-gradient kernel on a window of the (padded) input: the same
    sums as one k x k call, grouped by columns. oneDNN runs a k x 3 kernel's gradient 3-6x
    faster per multiply-add than a k x 5 one (CPU, DARTS shapes at batch 32: 5x5 at 32x32x16
    2.38 ms in one call, 0.73 ms in two 5x3 pieces with their windows; docs/performance.md).
    `padding` "SAME" is stride 1's symmetric padding (an odd kernel, as PyTorch's).
    """
    channels, width, columns = x.shape[-1], x.shape[2], dy.shape[2]
    stride = [1, strides, strides, 1]
    if kernel_size <= FAST_KERNEL_WIDTH or None in (width, columns) or (padding == "SAME" and strides != 1):
        return tf.nn.depthwise_conv2d_backprop_filter(x, [kernel_size, kernel_size, channels, 1], dy, stride, padding)
    pad = (kernel_size - 1) // 2 if padding == "SAME" else 0
    # 3-wide pieces from column 0; the last one ends at the kernel's edge (it may overlap the one before).
    starts = list(range(0, kernel_size - FAST_KERNEL_WIDTH + 1, FAST_KERNEL_WIDTH))
    if starts[-1] + FAST_KERNEL_WIDTH < kernel_size:
        starts.append(kernel_size - FAST_KERNEL_WIDTH)
    pieces, covered = [], 0
    for start in starts:
        low = start - pad  # the piece's first input column (negative: padding)
        high = low + (columns - 1) * strides + FAST_KERNEL_WIDTH
        window = x[:, :, max(low, 0) : min(high, width), :] if low > 0 or high < width else x
        paddings = [[0, 0], [pad, pad], [max(-low, 0), max(high - width, 0)], [0, 0]]
        if pad or low < 0 or high > width:
            window = tf.pad(window, paddings)
        shape = [kernel_size, FAST_KERNEL_WIDTH, channels, 1]
        piece = tf.nn.depthwise_conv2d_backprop_filter(window, shape, dy, stride, "VALID")
        pieces.append(piece[:, covered - start :])
        covered = start + FAST_KERNEL_WIDTH
    return tf.concat(pieces, axis=1)


def depthwise_conv(x, kernel, strides: int = 1, padding: str = "VALID", dilation: int = 1) -> tf.Tensor:
    """`tf.nn.depthwise_conv2d` (`kernel` [k, k, C, 1]) with its kernel's gradient by
    `depthwise_kernel_gradient`: the same values and gradients, faster for kernels over 3 wide.

    A dilated kernel (stride 1) runs densely on the input's pixel phases: space-to-depth with "SAME"
    padding on sizes the dilation divides, else space-to-batch as TensorFlow runs it. Differentiable
    twice: the gradient is made of TensorFlow's differentiable ops.
    """
    kernel_size = kernel.shape[0]
    stride = [1, strides, strides, 1]

    def dense(x, padding, kernel=kernel):
        @tf.custom_gradient
        def convolve(x, kernel):
            def grad(dy):
                dx = tf.nn.depthwise_conv2d_backprop_input(tf.shape(x), kernel, dy, stride, padding)
                return dx, depthwise_kernel_gradient(x, dy, kernel_size, strides, padding)

            return tf.nn.depthwise_conv2d(x, kernel, stride, padding), grad

        return convolve(x, kernel)

    if dilation == 1:
        return dense(x, padding)
    if strides != 1:
        raise ValueError(f"depthwise_conv expected stride 1 with dilation={dilation}. Received: strides={strides}")
    height, width = x.shape[1], x.shape[2]
    if padding == "SAME" and height is not None and width is not None and not (height % dilation or width % dilation):
        # Each of the dilation**2 pixel phases (space-to-depth: channel blocks) convolved densely with the same
        # kernel, SAME: exactly the dilated convolution, on dilation**2 times the channels of one image, which
        # oneDNN runs 10-30 % faster than the space-to-batch form (docs/performance.md).
        phases = tf.nn.space_to_depth(x, dilation)
        y = dense(phases, "SAME", tf.tile(kernel, [1, 1, dilation * dilation, 1]))
        return tf.nn.depth_to_space(y, dilation)
    return tf.nn.with_space_to_batch(
        x, [dilation, dilation], padding, lambda batched, _, inner: dense(batched, inner), filter_shape=kernel.shape[:2]
    )


def check_stride(stride: int, where: str) -> int:
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
        elif s == 1:
            # Odd kernel at stride 1: symmetric, as PyTorch (dilated too: the effective kernel
            # d * (k - 1) + 1 is odd). A dilated kernel's padding then goes into its space-to-batch
            # instead of a pad op of its own (and a slice in its gradient).
            padding = "SAME"
        else:
            x = symmetric_pad(x, d * (k - 1) // 2)
            padding = "VALID"
            if s > 1 and d == s:
                # A stride-s, dilation-s kernel only reads every s-th padded pixel:
                # subsample first, then run a dense kernel (same result, no dilation).
                x = subsample(x, s)
                s = d = 1
        if self.depthwise and training:
            return depthwise_conv(x, kernel, s, padding, d)
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

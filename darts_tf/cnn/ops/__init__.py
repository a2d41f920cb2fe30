"""Keras layers for the eight DARTS primitives, with PyTorch's numerics.

Every spatial op pads symmetrically like PyTorch (`dilation * (k - 1) / 2`
pixels on every side), max pooling ignores its padding, average pooling excludes
the padding (`count_include_pad=False`) and batch normalization uses
epsilon 1e-5, Keras momentum 0.9 (PyTorch's 0.1) and normalizes with the
biased batch variance in training, updating its moving variance with the
unbiased one, as `torch.nn.BatchNorm2d` does. TensorFlow's `"SAME"` padding
pads stride-2 ops at the bottom/right only, which would shift the sampling
grid by one pixel; the layers here pad explicitly where that matters.

The layers live by kind: `conv` (Conv2D and the padding, subsampling and initialisation
helpers), `batchnorm`, `composite` (ReLU-Conv-BN, DilConv, SepConv, FactorizedReduce,
FactorizedConv), `pooling` (Pool, Identity, Zero); this package builds an op by name
(`make_op`, `OPS`). Layout is NHWC. The original code's parameter names for these layers live in
`darts_tf.cnn.pytorch`, which maps PyTorch state dicts.

Reference: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search",
ICLR 2019 (arXiv:1806.09055), Section 3.1 and Appendix A.1.
"""

from __future__ import annotations

import keras

from darts_tf.cnn.ops.batchnorm import BN_EPSILON, BN_MOMENTUM, BatchNorm, fused_normalize, unbiased
from darts_tf.cnn.ops.composite import DilConv, FactorizedConv, FactorizedReduce, ReLUConvBN, SepConv
from darts_tf.cnn.ops.conv import (
    Conv2D,
    check_stride,
    conv_output_size,
    pointwise_conv,
    subsample,
    symmetric_pad,
    torch_uniform,
)
from darts_tf.cnn.ops.pooling import Identity, Pool, Zero, channel_shuffle, halving_max_pool, max_pool
from darts_tf.cnn.space import OpFactory, _register_builtin, op_spec


def preprocess0(channels: int, reduction_prev: bool, affine: bool = True, **kwargs) -> keras.layers.Layer:
    """A DARTS cell's first-input preprocessing: FactorizedReduce after a reduction cell, else ReLU-1x1 conv-BN."""
    if reduction_prev:
        return FactorizedReduce(channels, affine=affine, name="preprocess0", **kwargs)
    return ReLUConvBN(channels, 1, 1, affine=affine, name="preprocess0", **kwargs)


# The built-in ops' layers (`darts_tf.cnn.space` holds the registry and how each is weighted).
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
    # NAS-Bench-201's (its ReLUConvBN; its search gives the conv a bias, which the BN right after cancels):
    "nor_conv_1x1": lambda C, stride, affine, **kw: ReLUConvBN(C, 1, stride, affine=affine, **kw),
    "nor_conv_3x3": lambda C, stride, affine, **kw: ReLUConvBN(C, 3, stride, affine=affine, **kw),
}


for _name, _factory in OPS.items():
    _register_builtin(_name, _factory)


def make_op(primitive: str, channels: int, stride: int, affine: bool = True, **kwargs) -> keras.layers.Layer:
    """Builds registered op `primitive` (built in, or `darts_tf.cnn.space.register_op`) for `channels`
    channels; one-line error on an unknown op or stride."""
    spec = op_spec(primitive)
    check_stride(stride, f"op {primitive!r}")
    return spec.factory(channels, stride, affine, **kwargs)


def build_op(primitive: str, op: keras.layers.Layer, input_shape, stride: int) -> tuple:
    """Builds `op` (named `primitive`) for `input_shape` [N, H, W, C] and returns its output shape.

    A built-in op builds and reports its shape itself; an op of yours (`register_op`) may have
    neither `build` nor `compute_output_shape`, so it runs once on zeros of one image (under
    `tf.init_scope`, its variables created as on a first call) and has the shape every op must
    give: [N, H / stride, W / stride, C], rounded as a 3x3 convolution with padding 1.
    """
    if primitive in OPS:
        op.build(input_shape)
        return tuple(op.compute_output_shape(input_shape))
    import tensorflow as tf

    with tf.init_scope():
        op(tf.zeros((1, *input_shape[1:]), dtype=op.compute_dtype), training=False)
    size = lambda n: None if n is None else conv_output_size(n, 3, stride)  # noqa: E731
    return (input_shape[0], size(input_shape[1]), size(input_shape[2]), input_shape[3])


__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM",
    "OPS",
    "BatchNorm",
    "Conv2D",
    "DilConv",
    "FactorizedConv",
    "FactorizedReduce",
    "Identity",
    "OpFactory",
    "Pool",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "build_op",
    "channel_shuffle",
    "check_stride",
    "conv_output_size",
    "fused_normalize",
    "halving_max_pool",
    "make_op",
    "max_pool",
    "pointwise_conv",
    "preprocess0",
    "subsample",
    "symmetric_pad",
    "torch_uniform",
    "unbiased",
]

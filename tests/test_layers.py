"""Every darts_tf layer the way Keras tests its own (`run_layer_test`): shapes, config and
serialization round trips with equal outputs, training mode, and mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf.cnn import ops
from darts_tf.cnn.eval_model import AuxiliaryHead, DropPath, EvalCell
from darts_tf.cnn.genotypes import DARTS_V2, PRIMITIVES, num_edges
from darts_tf.cnn.search_model import MixedOp, SearchCell
from darts_tf.rnn.genotypes import DARTS_V2 as RNN_DARTS_V2
from darts_tf.rnn.model import RecurrentCell


def _images(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype("float32"))


def _softmax(shape, seed=1):
    return tf.nn.softmax(_images(shape, seed), axis=-1)


def _float32(outputs):
    return [np.asarray(tf.cast(o, tf.float32)) for o in tf.nest.flatten(outputs)]


def run_layer_test(make, inputs, expected_shapes, compute_in_half=True, **call_kwargs):
    """Builds `make()` on `inputs`, checks the output shapes, the config and serialization round
    trips (the same config; with the same weights, the same outputs), a training-mode call, and the
    layer under mixed_bfloat16 (float32 variables, bfloat16 compute, outputs near float32's)."""
    layer = make()
    outputs = _float32(layer(*inputs, training=False, **call_kwargs))
    assert [o.shape for o in outputs] == [tuple(s) for s in expected_shapes]
    config = layer.get_config()
    for clone in (
        type(layer).from_config(config),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer)),
    ):
        assert type(clone) is type(layer)
        clone(*inputs, training=False, **call_kwargs)
        assert clone.get_config() == config
        assert [v.path.split("/", 1)[-1] for v in clone.weights] == [v.path.split("/", 1)[-1] for v in layer.weights]
        clone.set_weights(layer.get_weights())
        for a, b in zip(_float32(clone(*inputs, training=False, **call_kwargs)), outputs):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    trained = _float32(layer(*inputs, training=True, **call_kwargs))  # BatchNorm: batch statistics
    assert all(np.all(np.isfinite(o)) for o in trained)
    mixed = type(layer).from_config({**config, "dtype": "mixed_bfloat16"})
    mixed(*inputs, training=False, **call_kwargs)
    assert all(v.dtype == "float32" for v in mixed.weights)
    mixed.set_weights(layer.get_weights())
    half = mixed(*inputs, training=True, **call_kwargs)
    if compute_in_half:
        assert all(o.dtype == tf.bfloat16 for o in tf.nest.flatten(half))
    for a, b in zip(_float32(half), trained):  # bfloat16 keeps 8 bits: a few percent of the scale
        assert np.max(np.abs(a - b)) <= 0.03 * np.max(np.abs(b)) + 0.01
    return layer


X = (_images([2, 8, 8, 4]),)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: ops.Conv2D(6, 3, strides=2), (2, 4, 4, 6)),
        (lambda: ops.Conv2D(None, 3, depthwise=True, dilation_rate=2), (2, 8, 8, 4)),
        (lambda: ops.BatchNorm(affine=True), (2, 8, 8, 4)),
        (lambda: ops.BatchNorm(affine=False), (2, 8, 8, 4)),
        (lambda: ops.ReLUConvBN(6, 1), (2, 8, 8, 6)),
        (lambda: ops.DilConv(4, 3, strides=2), (2, 4, 4, 4)),
        (lambda: ops.SepConv(4, 5), (2, 8, 8, 4)),
        (lambda: ops.FactorizedReduce(6), (2, 4, 4, 6)),
        (lambda: ops.FactorizedConv(4, 7, strides=2), (2, 4, 4, 4)),
        (lambda: ops.Pool("max", 3, strides=2), (2, 4, 4, 4)),
        (lambda: ops.Pool("avg", 3), (2, 8, 8, 4)),
        (lambda: ops.Identity(), (2, 8, 8, 4)),
        (lambda: ops.Zero(strides=2), (2, 4, 4, 4)),
        (lambda: DropPath(seed=3), (2, 8, 8, 4)),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_operation_layers(make, expected):
    run_layer_test(make, X, [expected])


def test_every_primitive_through_make_op():
    for name in PRIMITIVES:
        for stride in (1, 2):
            size = 8 // stride
            run_layer_test(lambda n=name, s=stride: ops.make_op(n, 4, s, False), X, [(2, size, size, 4)])


@pytest.mark.parametrize("strides", [1, 2])
def test_mixed_op(strides):
    weights = _softmax([len(PRIMITIVES)])
    run_layer_test(lambda: MixedOp(4, strides=strides), (X[0], weights), [(2, 8 // strides, 8 // strides, 4)])


def test_search_cell():
    s0, s1 = _images([2, 8, 8, 4]), _images([2, 8, 8, 4], 2)
    weights = _softmax([num_edges(4), len(PRIMITIVES)])
    run_layer_test(lambda: SearchCell(4, False, False), (s0, s1, weights), [(2, 8, 8, 16)])


@pytest.mark.parametrize("reduction", [False, True])
def test_eval_cell(reduction):
    s0, s1 = _images([2, 8, 8, 4]), _images([2, 8, 8, 4], 2)
    size = 4 if reduction else 8
    run_layer_test(lambda: EvalCell(DARTS_V2, 4, reduction, False), (s0, s1), [(2, size, size, 16)])


def test_auxiliary_head_keeps_its_logits_in_float32():
    # Batch 16: its BatchNorms normalise 1x1 and 2x2 maps, over the batch alone.
    run_layer_test(lambda: AuxiliaryHead(10), (_images([16, 8, 8, 16]),), [(16, 10)], compute_in_half=False)


def test_recurrent_cell():
    inputs, hidden = _images([3, 2, 8]), _images([2, 8], 2)
    run_layer_test(
        lambda: RecurrentCell(8, 8, genotype=RNN_DARTS_V2), (inputs, hidden), [(3, 2, 8), (2, 8)]
    )  # every step's output, the last state

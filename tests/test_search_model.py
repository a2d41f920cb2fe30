import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import random_batch, tiny_search_network

from darts_tf.architect import cross_entropy
from darts_tf.checkpoint import make_checkpoint, restore, write_atomic
from darts_tf.genotypes import PRIMITIVES, Genotype
from darts_tf.ops import Zero, frozen_batch_stats
from darts_tf.search_model import MixedOp, SearchNetwork


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def test_paper_network_parameter_count():
    model = SearchNetwork(16, 10, 8)
    model.build((None, 32, 32, 3))
    assert _count(model.weight_variables) == 1_930_618  # the original's figure
    assert [tuple(a.shape) for a in model.arch_variables] == [(14, 8), (14, 8)]
    assert _count(model.arch_variables) == 224
    # Weights and alphas partition the trainable variables.
    ids = [id(v) for v in model.weight_variables + model.arch_variables]
    assert len(ids) == len(set(ids)) == len(model.trainable_variables)
    assert not {id(a) for a in model.arch_variables} & {id(v) for v in model.weight_variables}
    # Alphas start at 1e-3 * N(0, 1).
    values = np.concatenate([a.numpy().ravel() for a in model.arch_variables])
    assert 0.5e-3 < values.std() < 1.5e-3 and np.abs(values).max() < 1e-2
    assert [c.reduction for c in model.cells] == [False, False, True, False, False, True, False, False]


def test_forward_and_genotype():
    model = tiny_search_network()
    images, _ = random_batch()
    logits = model(images, training=True)
    assert logits.shape == (4, 3)
    assert isinstance(model.genotype(), Genotype)
    assert model(images, training=False).shape == (4, 3)


def test_custom_input_shape_and_classes():
    model = SearchNetwork(4, 7, 3)
    model.build((None, 12, 12, 1))
    assert model(tf.zeros([2, 12, 12, 1]), training=True).shape == (2, 7)


def test_checkpoint_holds_every_variable_and_the_alphas(tmp_path):
    model = tiny_search_network(seed=0)
    path = write_atomic(make_checkpoint(model), str(tmp_path / "ckpt"))
    names = [name for name, _ in tf.train.list_variables(path)]
    assert any("alphas_normal" in n for n in names) and any("alphas_reduce" in n for n in names)
    assert len([n for n in names if n.startswith("model/")]) == len(model.variables)
    other = tiny_search_network(seed=5)
    assert not np.array_equal(other.alphas_normal.numpy(), model.alphas_normal.numpy())
    restore(make_checkpoint(other), path)
    for a, b in zip(model.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize(
    "kwargs, message", [({"C": 0}, "positive integer C"), ({"multiplier": 5}, "multiplier <= steps")]
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchNetwork(**kwargs)


def _all_eight_ops_by_hand(edge, x, op_weights, training):
    """The plain DARTS edge: sum over all 8 primitives, `none` included, from the edge's own sublayers."""
    total = 0.0
    for index, name in enumerate(PRIMITIVES):
        if name == "none":
            y = Zero(edge.strides, dtype=x.dtype)(x)
        else:
            y = edge.primitive_ops[name](x, training=training)
            if name in edge.pool_bns:
                y = edge.pool_bns[name](y, training=training)
        total = total + op_weights[index] * y
    return total


@pytest.mark.parametrize("strides", [1, 2])
def test_shared_trace_mixed_op_equals_the_sum_of_all_eight_ops(strides):
    keras.utils.set_random_seed(0)
    edge = MixedOp(4, strides, dtype="float64")
    edge.build((4, 6, 6, 4))
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 6, 6, 4)))
    op_weights = tf.constant(np.random.default_rng(1).dirichlet(np.ones(8)))
    before = [v.numpy().copy() for v in edge.non_trainable_variables]
    results = {}
    for mode, fn in [("shared", lambda: edge(x, op_weights, training=True)),
                     ("plain", lambda: _all_eight_ops_by_hand(edge, x, op_weights, True))]:  # fmt: skip
        for v, value in zip(edge.non_trainable_variables, before):
            v.assign(value)
        with tf.GradientTape() as tape:
            tape.watch([x, op_weights])
            y = fn()
            loss = tf.reduce_sum(y * tf.cos(y))
        grads = tape.gradient(loss, [x, op_weights, *edge.trainable_variables])
        results[mode] = (y, grads, [v.numpy().copy() for v in edge.non_trainable_variables])
    (y1, g1, s1), (y2, g2, s2) = results["shared"], results["plain"]
    np.testing.assert_allclose(y1.numpy(), y2.numpy(), rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
    for a, b in zip(s1, s2):  # BN moving statistics updated identically
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(s1, before))
    # Inference mode, and frozen statistics leave the moving averages alone.
    np.testing.assert_allclose(
        edge(x, op_weights, training=False).numpy(), _all_eight_ops_by_hand(edge, x, op_weights, False).numpy()
    )
    with frozen_batch_stats():
        edge(x, op_weights, training=True)
    for a, b in zip(edge.non_trainable_variables, s1):
        np.testing.assert_array_equal(a.numpy(), b)


def test_shared_trace_network_gradients_equal_the_plain_network():
    model = tiny_search_network(dtype="float64")
    images, labels = random_batch(dtype="float64")
    edges = [edge for cell in model.cells for edge in cell.edges]

    def loss_and_grads():
        with tf.GradientTape() as tape:
            loss = cross_entropy(labels, model(images, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    statistics = [v.numpy().copy() for v in model.non_trainable_variables]
    loss1, grads1 = loss_and_grads()
    for v, value in zip(model.non_trainable_variables, statistics):
        v.assign(value)
    for edge in edges:
        edge.shared_trace = False
    loss2, grads2 = loss_and_grads()
    np.testing.assert_allclose(loss1.numpy(), loss2.numpy(), rtol=1e-12)
    for a, b, v in zip(grads1, grads2, model.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12, err_msg=v.path)


def test_same_seed_same_weights_whether_or_not_edge_templates_exist():
    def build(C):
        keras.utils.set_random_seed(3)
        model = SearchNetwork(C, 3, 3, steps=2, multiplier=2)
        model.build((None, 8, 8, 3))
        return model

    first = build(6)  # C=6 edges: templates created during this build
    second = build(6)  # templates reused
    for a, b in zip(first.variables, second.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_shared_trace_is_a_network_option():
    plain = SearchNetwork(4, 3, 3, steps=2, multiplier=2, shared_trace=False)
    plain.build((None, 8, 8, 3))
    assert not any(edge.shared_trace for cell in plain.cells for edge in cell.edges)
    assert SearchNetwork.from_config(plain.get_config()).shared_trace is False

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf.architect import cross_entropy
from darts_tf.cnn.genotypes import PRIMITIVES, Genotype
from darts_tf.cnn.ops import Zero
from darts_tf.cnn.pytorch import DEPTHWISE, load_pytorch_state_dict, to_pytorch_state_dict, torch_variables
from darts_tf.cnn.search_model import EdgeFunctions, MixedOp, PackedSlice, SearchNetwork
from helpers import random_batch, tiny_search_network


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


def _copy_weights(source, target):
    """Assigns every tensor of `source` to `target` by its name in the original code."""
    load_pytorch_state_dict(target, to_pytorch_state_dict(source))


def _by_torch_name(model, gradients, variables) -> dict:
    """Gradients (aligned with `variables`) keyed by the original's tensor names; packed ones sliced."""
    by_id = {id(v): g for v, g in zip(variables, gradients)}
    named = {}
    for name, (variable, _) in torch_variables(model).items():
        if isinstance(variable, PackedSlice):
            if id(variable.variable) in by_id:
                named[name] = variable.take(by_id[id(variable.variable)].numpy())
        elif id(variable) in by_id:
            named[name] = by_id[id(variable)].numpy()
    return named


def _statistics(model) -> dict:
    return {name: v.numpy().copy() for name, (v, _) in torch_variables(model).items() if "running" in name}


@pytest.mark.parametrize("strides", [1, 2])
def test_shared_trace_mixed_op_equals_the_sum_of_all_eight_ops(strides):
    keras.utils.set_random_seed(0)
    edge = MixedOp(4, strides, dtype="float64")
    edge.build((4, 6, 6, 4))
    plain = MixedOp(4, strides, shared_trace=False, dtype="float64")
    plain.build((4, 6, 6, 4))
    assert len(edge.trainable_variables) == 1 and len(edge.non_trainable_variables) == 1
    assert _count(edge.variables) == _count(plain.variables)
    _copy_weights(edge, plain)
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 6, 6, 4)))
    op_weights = tf.constant(np.random.default_rng(1).dirichlet(np.ones(8)))
    before = _statistics(edge)
    results = {}
    for mode, layer, fn in [("shared", edge, lambda: edge(x, op_weights, training=True)),
                            ("plain", plain, lambda: _all_eight_ops_by_hand(plain, x, op_weights, True))]:  # fmt: skip
        with tf.GradientTape() as tape:
            tape.watch([x, op_weights])
            y = fn()
            loss = tf.reduce_sum(y * tf.cos(y))
        grads = tape.gradient(loss, [x, op_weights, *layer.trainable_variables])
        named = _by_torch_name(layer, grads[2:], layer.trainable_variables)
        results[mode] = (y, grads[:2], named, _statistics(layer))
    (y1, g1, n1, s1), (y2, g2, n2, s2) = results["shared"], results["plain"]
    np.testing.assert_allclose(y1.numpy(), y2.numpy(), rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
    extra = 2 if strides == 2 else 0  # skip_connect is a FactorizedReduce: two convs and a BN
    assert sorted(n1) == sorted(n2) and len(n1) == 12 + extra  # every conv kernel of the edge
    for name in n2:
        np.testing.assert_allclose(n1[name], n2[name], rtol=1e-10, atol=1e-12, err_msg=name)
    assert sorted(s1) == sorted(s2) and len(s1) == 16 + extra
    for name in s2:  # BN moving statistics updated identically
        np.testing.assert_allclose(s1[name], s2[name], rtol=1e-12, err_msg=name)
        assert np.abs(s1[name] - before[name]).max() > 0, name
    # Inference mode, and frozen statistics leave the moving averages alone.
    np.testing.assert_allclose(
        edge(x, op_weights, training=False).numpy(), _all_eight_ops_by_hand(plain, x, op_weights, False).numpy()
    )
    edge(x, op_weights, training=True, update_statistics=False)
    for name, value in _statistics(edge).items():
        np.testing.assert_array_equal(value, s1[name], err_msg=name)


def test_packed_slices_read_and_write_their_own_piece():
    edge = MixedOp(4, 1)
    edge.build((2, 6, 6, 4))
    slices = {name: v for name, (v, _) in torch_variables(edge).items()}
    target = slices["_ops.4.op.2.weight"]  # sep_conv_3x3's first pointwise kernel, Keras layout
    assert target.shape == (1, 1, 4, 4)
    before = edge.packed_weights.numpy().copy()
    target.assign(np.full(target.shape, 7.0))
    after = edge.packed_weights.numpy()
    np.testing.assert_array_equal(target.numpy(), np.full(target.shape, 7.0))
    changed = np.flatnonzero(after != before)
    assert changed.min() >= target.offset and changed.max() < target.offset + target.size
    # The pieces tile each packed variable exactly.
    for packed in (edge.packed_weights, edge.packed_statistics):
        pieces = sorted((v.offset, v.size) for v in slices.values() if v.variable is packed)
        assert pieces[0][0] == 0 and sum(size for _, size in pieces) == packed.shape[0]
        assert all(o1 + s1 == o2 for (o1, s1), (o2, _) in zip(pieces, pieces[1:]))


def test_packed_edges_start_from_their_own_pytorch_style_draws():
    keras.utils.set_random_seed(1)
    edges = [MixedOp(4, 1) for _ in range(2)]
    for edge in edges:
        edge.build((2, 6, 6, 4))
    first, second = ({name: v.numpy() for name, (v, _) in torch_variables(e).items()} for e in edges)
    for name, (variable, kind) in torch_variables(edges[0]).items():
        if "running" in name:
            np.testing.assert_array_equal(first[name], 0.0 if "mean" in name else 1.0)
            continue
        k = variable.shape[0]
        fan_in = k * k * (1 if kind == DEPTHWISE else variable.shape[2])
        assert np.abs(first[name]).max() <= 1.0 / np.sqrt(fan_in), name
        assert first[name].std() > 0.2 / np.sqrt(fan_in), name
        assert not np.array_equal(first[name], second[name]), name


def test_no_weight_gradients_drops_the_edge_weight_gradients_and_nothing_else():
    model = tiny_search_network(dtype="float64")
    images, labels = random_batch(dtype="float64")
    edge_weights = [edge.packed_weights for cell in model.cells for edge in cell.edges]
    statistics = [v.numpy() for v in model.non_trainable_variables]

    def gradients(**passes):
        with tf.GradientTape() as tape:
            loss = cross_entropy(labels, model(images, training=True, update_statistics=False, **passes))
        return tape.gradient(loss, model.arch_variables + edge_weights + [model.stem_conv.kernel])

    full = gradients()
    only = gradients(weight_gradients=False)
    for before, variable in zip(statistics, model.non_trainable_variables):  # no moving average moved
        np.testing.assert_array_equal(variable.numpy(), before)
    for a, b in zip(full[:2], only[:2]):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-12, atol=1e-15)
    assert all(g is not None for g in full)
    assert all(g is None for g in only[2:-1])  # never computed inside the edge functions
    np.testing.assert_allclose(only[-1].numpy(), full[-1].numpy(), rtol=1e-12)  # layers outside the edges: unchanged


def test_shared_trace_network_gradients_equal_the_plain_network():
    packed = tiny_search_network(dtype="float64")
    keras.utils.set_random_seed(0)
    plain = SearchNetwork(4, 3, 3, steps=4, multiplier=4, shared_trace=False, dtype="float64")
    plain.build((None, 8, 8, 3))
    _copy_weights(packed, plain)
    assert len(packed.trainable_variables) < len(plain.trainable_variables) // 4
    assert _count(packed.trainable_variables) == _count(plain.trainable_variables)
    images, labels = random_batch(dtype="float64")
    results = []
    for model in (packed, plain):
        with tf.GradientTape() as tape:
            loss = cross_entropy(labels, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        results.append((loss, _by_torch_name(model, grads, model.trainable_variables), _statistics(model)))
    (loss1, grads1, stats1), (loss2, grads2, stats2) = results
    np.testing.assert_allclose(loss1.numpy(), loss2.numpy(), rtol=1e-12)
    assert sorted(grads1) == sorted(grads2)
    for name in grads2:
        np.testing.assert_allclose(grads1[name], grads2[name], rtol=1e-9, atol=1e-12, err_msg=name)
    for name in stats2:
        np.testing.assert_allclose(stats1[name], stats2[name], rtol=1e-12, atol=1e-15, err_msg=name)


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


def test_every_random_tensor_is_drawn_independently():
    """No initializer instance serves two tensors: a Keras initializer draws its seed once."""
    keras.utils.set_random_seed(0)
    model = SearchNetwork(4, 10, 5)
    model.build((None, 32, 32, 3))
    normal, reduce = (a.numpy() for a in model.arch_variables)
    assert not np.array_equal(normal, reduce)  # the original: two `1e-3 * torch.randn` calls
    assert 1e-4 < normal.std() < 1e-2 and 1e-4 < reduce.std() < 1e-2
    # Every tensor under the original's names (packed edge weights as their per-op slices, alphas too).
    mapped = {name: variable.numpy() for name, (variable, _) in torch_variables(model).items()}
    assert "alphas_normal" in mapped
    arrays = [a for a in mapped.values() if np.unique(a).size > 1]  # not BatchNorm's constant ones/zeros
    firsts = [float(a.ravel()[0]) for a in arrays]
    assert len(arrays) > 500 and len(set(firsts)) == len(firsts)  # no two tensors start from the same draw


def test_edge_functions_belong_to_their_network():
    """No module-level cache: each network traces its own edge functions, one per edge shape."""
    first, second = SearchNetwork(4, 10, 3, steps=2, multiplier=2), SearchNetwork(4, 10, 3, steps=2, multiplier=2)
    for model in (first, second):
        model.build((None, 8, 8, 3))
    assert first.edge_functions is not second.edge_functions
    edges = [edge for cell in first.cells for edge in cell.edges]
    assert all(edge.edge_functions is first.edge_functions for edge in edges)
    # normal cell at 8x8 (stride 1); first reduction cell: stride 2 and 1 at C=8; second: at C=16
    assert len(first.edge_functions) == 5
    lone = MixedOp(4, 1)
    lone.build((1, 6, 6, 4))
    assert isinstance(lone.edge_functions, EdgeFunctions) and len(lone.edge_functions) == 1


def test_channel_shuffle_is_pytorchs_view_transpose_view():
    from darts_tf.cnn.ops import channel_shuffle

    x = np.random.default_rng(0).normal(size=(2, 3, 5, 12)).astype("float32")
    nchw = x.transpose(0, 3, 1, 2)  # PyTorch: view(b, g, c/g, h, w).transpose(1, 2).view(b, c, h, w)
    expected = nchw.reshape(2, 4, 3, 3, 5).transpose(0, 2, 1, 3, 4).reshape(2, 12, 3, 5).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(channel_shuffle(tf.constant(x), 4).numpy(), expected)
    assert channel_shuffle(tf.constant(x), 4).numpy()[0, 0, 0, 1] == x[0, 0, 0, 3]  # channel 3 (group 1) -> 1
    with pytest.raises(ValueError, match="divisible by groups=5"):
        channel_shuffle(tf.constant(x), 5)


@pytest.mark.parametrize("size", [6, 7])
def test_halving_max_pool_rounds_odd_sizes_up_as_minus_infinity_padding(size):
    from darts_tf.cnn.ops import halving_max_pool

    x = np.random.default_rng(1).normal(size=(2, size, size, 3))
    padded = np.full((2, size + size % 2, size + size % 2, 3), -np.inf)
    padded[:, :size, :size] = x
    half = padded.shape[1] // 2
    expected = padded.reshape(2, half, 2, half, 2, 3).max(axis=(2, 4))
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = halving_max_pool(xt)
        total = tf.reduce_sum(y)
    np.testing.assert_array_equal(y.numpy(), expected)
    gradient = tape.gradient(total, xt).numpy()
    assert gradient.sum() == half * half * 2 * 3 and set(np.unique(gradient)) <= {0.0, 1.0}  # one max per window


def test_partial_channel_network_variables_and_options():
    model = SearchNetwork(16, 10, 8, partial_channels=4, edge_normalization=True)
    model.build((None, 32, 32, 3))
    assert [tuple(a.shape) for a in model.arch_variables] == [(14, 8), (14, 8), (14,), (14,)]
    assert [a.name for a in model.beta_variables] == ["betas_normal", "betas_reduce"]
    ids = [id(v) for v in model.weight_variables + model.arch_variables]
    assert len(ids) == len(set(ids)) == len(model.trainable_variables)
    betas = np.concatenate([b.numpy() for b in model.beta_variables])
    assert 0.3e-3 < betas.std() < 2e-3 and not np.array_equal(*(b.numpy() for b in model.beta_variables))
    # The ops of every edge at a quarter of the width: 1,930,618 weights become 299,578 (the
    # PyTorch reference's count, tests/test_parity_torch.py).
    assert _count(model.weight_variables) == 299_578
    edge = model.cells[0].edges[0]
    assert edge.op_channels == 4 and edge._shared.template.channels == 4
    config = model.get_config()
    assert config["partial_channels"] == 4 and config["edge_normalization"] is True
    again = SearchNetwork.from_config(config)
    assert again.partial_channels == 4 and again.edge_normalization
    genotype = model.genotype()
    from darts_tf.cnn.genotypes import derive_genotype

    assert genotype == derive_genotype(**model.arch_arrays())
    with pytest.raises(ValueError, match="partial_channels, a positive integer dividing C=16"):
        SearchNetwork(16, 10, 8, partial_channels=3)
    with pytest.raises(ValueError, match="dividing channels=6"):
        MixedOp(6, 1, partial_channels=4)

"""Architecture gradients on a small float64 network.

The finite difference must converge to the exact (double-backprop) product
as r shrinks, until float64 round-off (about 1e-16 * |grad| / r) takes over:
at r = 1e-6 to 1e-8 the truncation error O(r^2) is negligible and round-off is
1e-10 to 1e-8 relative, so the best of those agrees to better than 1e-6
(measured on these networks: 2.6e-9 at r = 1e-6, 4.4e-8 at r = 1e-7). A
single r is not enough: ReLU and max-pool kinks make grad_alpha L only
piecewise smooth in w, and a perturbation that crosses a kink is off by the
jump / (2 eps) (measured 1.4e-3 relative at r = 1e-5 here, 1.6 to 5 at the
paper's r = 0.01 on a 1-cell network), which is why the paper's r is not a
test of the math.
"""

import numpy as np
import pytest
import tensorflow as tf

from darts_tf import architect
from helpers import random_batch, tiny_search_network


@pytest.fixture(scope="module")
def setup():
    model = tiny_search_network(dtype="float64", steps=2)
    train = random_batch(dtype="float64", seed=1)
    val = random_batch(dtype="float64", seed=2)
    rng = np.random.default_rng(3)
    buffers = [tf.constant(rng.normal(scale=0.1, size=w.shape)) for w in model.weight_variables]
    return model, train, val, buffers


def _flat(tensors):
    return np.concatenate([np.asarray(t).ravel() for t in tensors])


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.slow
def test_finite_difference_matches_exact_and_differs_from_first_order(setup):
    model, train, val, buffers = setup
    xi = 0.5  # large virtual step so the second-order term is large
    kwargs = dict(xi=xi, momentum_buffers=buffers, momentum=0.9, weight_decay=3e-4)
    exact, _ = architect.second_order_arch_gradients(model, train, val, hessian="exact", **kwargs)
    exact = _flat(exact)
    errors = []
    for r in (1e-6, 1e-7, 1e-8):
        fd, val_loss = architect.second_order_arch_gradients(
            model, train, val, hessian="finite_difference", r=r, **kwargs
        )
        errors.append(_rel(_flat(fd), exact))
    assert min(errors) < 1e-6, errors
    first, first_loss = architect.first_order_arch_gradients(model, val)
    first = _flat(first)
    assert _rel(first, exact) > 1e-2  # the second-order term is really there
    assert np.isfinite(val_loss.numpy()) and np.isfinite(first_loss.numpy())


@pytest.mark.slow
def test_second_order_equals_manual_unrolling(setup):
    """Assemble the unrolled gradient by hand (independent code) and compare."""
    model, train, val, buffers = setup
    xi, mu, wd = 0.1, 0.9, 3e-4
    weights, alphas = model.weight_variables, model.arch_variables
    w0 = [w.numpy() for w in weights]
    with tf.GradientTape() as tape:
        loss = architect.cross_entropy(train[1], model(train[0], training=True))
    g = tape.gradient(loss, weights)
    for w, w_init, gi, b in zip(weights, w0, g, buffers):
        w.assign(w_init - xi * (mu * b.numpy() + gi.numpy() + wd * w_init))
    with tf.GradientTape() as tape:
        loss = architect.cross_entropy(val[1], model(val[0], training=True))
    d_alpha_and_v = tape.gradient(loss, alphas + weights)
    d_alpha, v = d_alpha_and_v[:2], d_alpha_and_v[2:]
    for w, w_init in zip(weights, w0):
        w.assign(w_init)
    # Mixed second derivative at w by differentiating <grad_w L_train, v> in alpha.
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = architect.cross_entropy(train[1], model(train[0], training=True))
        gw = inner.gradient(loss, weights)
        dot = sum(tf.reduce_sum(a * b) for a, b in zip(gw, v))
    hvp = outer.gradient(dot, alphas)
    manual = _flat([a - xi * h for a, h in zip(d_alpha, hvp)])
    got, _ = architect.second_order_arch_gradients(
        model, train, val, xi=xi, momentum_buffers=buffers, momentum=mu, weight_decay=wd, hessian="exact"
    )
    # Same math through a different sequence of float64 operations: measured 1e-7
    # (norm-relative); omitting the momentum term changes the result by > 1e-4.
    assert _rel(_flat(got), manual) < 1e-6
    # Momentum buffer enters the unrolled step: without it the answer changes.
    no_momentum, _ = architect.second_order_arch_gradients(model, train, val, xi=xi, momentum=mu, weight_decay=wd)
    assert _rel(_flat(no_momentum), manual) > 1e-4


@pytest.mark.parametrize("hessian", ["finite_difference", "exact"])
def test_weights_and_bn_statistics_restored(setup, hessian):
    model, train, val, buffers = setup
    before = [v.numpy().copy() for v in model.variables]
    architect.second_order_arch_gradients(model, train, val, xi=0.3, momentum_buffers=buffers, hessian=hessian)
    if hessian == "exact":
        architect.first_order_arch_gradients(model, val)
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)  # bit for bit


def test_in_tf_function_float32():
    model = tiny_search_network(steps=2)
    train, val = random_batch(seed=1), random_batch(seed=2)
    before = [v.numpy().copy() for v in model.variables]

    @tf.function
    def step():
        return architect.second_order_arch_gradients(model, train, val, xi=tf.constant(0.025))

    grads, loss = step()
    assert [tuple(g.shape) for g in grads] == [(5, 8), (5, 8)]
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_bad_hessian_mode(setup):
    model, train, val, _ = setup
    with pytest.raises(ValueError, match="`hessian` must be one of"):
        architect.second_order_arch_gradients(model, train, val, xi=0.1, hessian="gauss_newton")


def _ancestors(op):
    seen, stack = set(), [op]
    while stack:
        current = stack.pop()
        for parent in [t.op for t in current.inputs] + list(current.control_inputs):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def test_each_pass_finishes_before_the_weights_move():
    # In a graph the weights could be moved as soon as a pass's forward has read
    # them, running its backward beside the next pass (peak memory of both).
    # Every move after the first must wait for the previous pass's gradients.
    model = tiny_search_network(steps=2)
    train, val = random_batch(seed=1), random_batch(seed=2)
    step = tf.function(lambda: architect.second_order_arch_gradients(model, train, val, xi=tf.constant(0.025)))
    graph = step.get_concrete_function().graph
    assigns = {}
    for op in graph.get_operations():
        if op.type == "AssignVariableOp":
            assigns.setdefault(op.inputs[0].name, []).append(op)
    moves = [ops for ops in assigns.values() if len(ops) == 5]
    assert len(moves) == len(model.weight_variables)
    for unrolled, restored, plus, minus, restored_again in moves[:3]:
        # A pass runs between each of these pairs of moves.
        for previous, current in ((unrolled, restored), (plus, minus), (minus, restored_again)):
            new = _ancestors(current) - _ancestors(previous)
            assert any("gradient_tape" in op.name for op in new), current.name


def test_beta_decay_regulariser_and_its_gradient_are_the_formula():
    rng = np.random.default_rng(3)
    normal, reduce = rng.normal(size=(14, 8)), rng.normal(size=(14, 8))
    alphas = [tf.Variable(normal, dtype=tf.float64), tf.Variable(reduce, dtype=tf.float64)]
    gradients, value = architect.beta_decay_gradients(alphas)
    both = np.concatenate([normal, reduce])
    logsumexp = np.log(np.exp(both).sum(axis=1))
    np.testing.assert_allclose(float(value), logsumexp.mean(), rtol=1e-12)
    softmax = np.exp(both) / np.exp(both).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.concatenate([g.numpy() for g in gradients]), softmax / 28, rtol=1e-12)

"""Architecture gradients of the DARTS bilevel problem, as pure functions.

    min_alpha L_val(w*(alpha), alpha)  s.t.  w*(alpha) = argmin_w L_train(w, alpha)

First order uses grad_alpha L_val(w, alpha) at the current weights. Second
order (Liu et al., arXiv:1806.09055, Eq. 6-8) differentiates through one
unrolled weight step, w' = w - xi * (momentum * buf + grad_w L_train + wd * w)
(the weight optimizer's own update with its momentum buffer `buf`):

    grad_alpha L_val(w', alpha) - xi * H v,   v = grad_w' L_val(w', alpha),
    H v = grad_alpha [grad_w L_train(w, alpha) . v]

approximated by the central difference
(grad_alpha L_train(w + eps v) - grad_alpha L_train(w - eps v)) / (2 eps),
eps = 0.01 / ||v||, or computed exactly by double backpropagation
(`hessian="exact"`). The model's weights are restored bit for bit and its
BatchNorm moving statistics are not updated by these extra passes.

Mixed precision (`darts_tf.precision`): the second-order gradient runs in float32 whatever the
network's policy (`full_precision`). The Hessian-vector product moves the weights by eps * v,
far below half precision's resolution (its finite difference is then rounding noise), and the
errors of the virtual step's training gradient and of v in bfloat16 still take the result's
cosine with float32's to 0.98. The first-order gradient runs in the policy's compute type; with
a `loss_scale` (float16) it differentiates the scaled loss and unscales its gradients.

Under a tf.distribute strategy (called inside `strategy.run`) every gradient
here is the mean over the replicas' batches (`darts_tf.replicas.mean`): the
unrolled step w', v, eps = 0.01 / ||v|| and the w +- eps v passes are the
same on every replica, and equal to one device's at the global batch.
"""

from __future__ import annotations

import tensorflow as tf

from darts_tf import replicas
from darts_tf.errors import ConfigError
from darts_tf.precision import full_precision, scaled_loss

HESSIAN_MODES = ("finite_difference", "exact")


def cross_entropy(labels, logits) -> tf.Tensor:
    """Mean softmax cross-entropy of integer labels (computed in float32 or wider)."""
    if logits.dtype in (tf.float16, tf.bfloat16):
        logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def model_loss(model, batch, **passes) -> tf.Tensor:
    """Training-mode cross-entropy of `model` on `batch = (images, labels)`; `passes` go to the model's call."""
    images, labels = batch
    return cross_entropy(labels, model(images, training=True, **passes))


# The architecture gradient's extra passes: batch statistics, moving averages left alone ...
FROZEN = {"update_statistics": False}
# ... and, where only the alphas' gradient is taken, no weight gradients traced in the edges.
ALPHAS_ONLY = {"update_statistics": False, "weight_gradients": False}


def dense_gradients(gradients, variables) -> list:
    """`gradients` with zeros for the None ones (variables the loss does not reach)."""
    return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(gradients, variables)]


def gradients_of(tape, loss, variables, loss_scale=None) -> list:
    """The (replica-local) gradients of `loss` recorded on `tape`, None ones as zeros.

    With a `loss_scale` (`darts_tf.precision.DynamicLossScale`), `loss` must be its scaled
    value (`loss_scale.scale(...)` inside the tape) and the gradients come back unscaled.
    """
    gradients = dense_gradients(tape.gradient(loss, variables), variables)
    return gradients if loss_scale is None else loss_scale.unscale(gradients)


def _assign_after(done, variables, values) -> None:
    """Assigns `values` to `variables` only once every tensor of `done` is computed.

    In a graph the weights are otherwise moved as soon as the previous forward
    pass has read them, so its backward pass and the next pass run side by
    side and the peak memory holds the activations of both.
    """
    with tf.control_dependencies(done):
        # One barrier, not len(done) control edges into each of the assignments.
        barrier = tf.no_op()
    with tf.control_dependencies([barrier]):
        for variable, value in zip(variables, values):
            variable.assign(value)


def first_order_arch_gradients(model, val_batch, loss_scale=None) -> tuple[list, tf.Tensor]:
    """grad_alpha L_val(w, alpha) at the current weights; returns (gradients, val_loss)."""
    with tf.GradientTape() as tape:
        loss = model_loss(model, val_batch, **ALPHAS_ONLY)
        scaled = scaled_loss(loss, loss_scale)
    return replicas.mean(gradients_of(tape, scaled, model.arch_variables, loss_scale)), loss


def exact_hessian_vector_product(model, batch, vector) -> list:
    """grad_alpha [grad_w L(w, alpha) . vector] by nested GradientTapes (double backprop), in float32."""
    weights, alphas = model.weight_variables, model.arch_variables
    with full_precision(model), tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = model_loss(model, batch, **FROZEN)
        grads = dense_gradients(inner.gradient(loss, weights), weights)
        dot = tf.add_n([tf.reduce_sum(g * tf.cast(v, g.dtype)) for g, v in zip(grads, vector)])
    return replicas.mean(dense_gradients(outer.gradient(dot, alphas), alphas))


def finite_difference_hessian_vector_product(model, batch, vector, r: float = 0.01) -> list:
    """Central-difference estimate of the mixed Hessian-vector product (DARTS Eq. 8).

    Evaluates grad_alpha L at w +- eps * vector, eps = r / ||vector||, then
    puts the weights back exactly as they were. The two passes run in float32 whatever
    the network's policy (`darts_tf.precision.full_precision`).
    """
    weights, alphas = model.weight_variables, model.arch_variables
    saved = [tf.identity(w) for w in weights]
    norm = tf.linalg.global_norm(vector)
    eps = r / tf.maximum(tf.cast(norm, saved[0].dtype), tf.cast(1e-12, saved[0].dtype))
    results, done = [], [eps]
    for sign in (1.0, -1.0):
        moved = [w0 + (sign * eps) * tf.cast(v, w0.dtype) for w0, v in zip(saved, vector)]
        _assign_after(done, weights, moved)
        with full_precision(model), tf.GradientTape() as tape:
            loss = model_loss(model, batch, **ALPHAS_ONLY)
        done = dense_gradients(tape.gradient(loss, alphas), alphas)
        results.append(done)
    _assign_after(done, weights, saved)
    return replicas.mean([(gp - gn) / tf.cast(2.0 * eps, gp.dtype) for gp, gn in zip(*results)])


def second_order_arch_gradients(
    model,
    train_batch,
    val_batch,
    xi,
    momentum_buffers=None,
    momentum: float = 0.9,
    weight_decay: float = 3e-4,
    hessian: str = "finite_difference",
    r: float = 0.01,
) -> tuple[list, tf.Tensor]:
    """The unrolled (second-order) DARTS architecture gradient; returns (gradients, val_loss).

    Args:
        model: a `SearchNetwork` (anything with `weight_variables`, `arch_variables`, and a call
            taking `training`, `update_statistics` and `weight_gradients`).
        train_batch, val_batch: `(images, labels)`.
        xi: the virtual step size (the original uses the current weight lr).
        momentum_buffers: the weight optimizer's PyTorch-style momentum buffers,
            aligned with `model.weight_variables`; None means zeros (no step yet).
        momentum, weight_decay: the weight optimizer's momentum and coupled L2.
        hessian: "finite_difference" (the paper) or "exact" (double backprop).
        r: the finite-difference scale, eps = r / ||grad_w' L_val||.
    """
    if hessian not in HESSIAN_MODES:
        raise ConfigError(f"`hessian` must be one of {HESSIAN_MODES}. Received: hessian={hessian!r}")
    with full_precision(model):
        return _second_order(model, train_batch, val_batch, xi, momentum_buffers, momentum, weight_decay, hessian, r)


def _second_order(model, train_batch, val_batch, xi, momentum_buffers, momentum, weight_decay, hessian, r):
    weights, alphas = model.weight_variables, model.arch_variables
    saved = [tf.identity(w) for w in weights]
    if momentum_buffers is None:
        momentum_buffers = [tf.zeros_like(w) for w in saved]
    with tf.GradientTape() as tape:
        train_loss = model_loss(model, train_batch, **FROZEN)
    train_grads = replicas.mean(gradients_of(tape, train_loss, weights))
    for w, w0, g, buf in zip(weights, saved, train_grads, momentum_buffers):
        step = momentum * tf.cast(buf, w0.dtype) + g + weight_decay * w0
        w.assign(w0 - tf.cast(xi, w0.dtype) * step)
    with tf.GradientTape() as tape:
        val_loss = model_loss(model, val_batch, **FROZEN)
    grads = replicas.mean(gradients_of(tape, val_loss, alphas + weights))
    alpha_grads, vector = grads[: len(alphas)], grads[len(alphas) :]
    _assign_after(grads, weights, saved)
    if hessian == "exact":
        implicit = exact_hessian_vector_product(model, train_batch, vector)
    else:
        implicit = finite_difference_hessian_vector_product(model, train_batch, vector, r=r)
    gradients = [g - tf.cast(xi, g.dtype) * h for g, h in zip(alpha_grads, implicit)]
    return gradients, val_loss


def beta_decay_gradients(alphas: list) -> tuple[list, tf.Tensor]:
    """beta-DARTS's beta-decay regulariser (Ye et al., arXiv:2203.01665) and its gradient.

    R(alpha) = mean over every edge of every cell of logsumexp(alpha_edge); its
    gradient is softmax(alpha_edge) / (number of edges). Added, weighted, to the
    architecture gradient, it pulls the alphas of each edge together (their
    "decay" of the softmax's normalised betas) and counters one op running away.
    """
    tensors = [tf.convert_to_tensor(a) for a in alphas]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        rows = tf.concat([tf.reduce_logsumexp(a, axis=-1) for a in tensors], axis=0)
        value = tf.reduce_mean(rows)
    return tape.gradient(value, tensors), value

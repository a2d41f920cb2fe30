"""Architecture gradients of the recurrent search, as pure functions (model and batches in, gradients out).

As the original's rnn/architect.py: the losses are the plain negative log-likelihood (no
AR/TAR), the hidden state is carried in and out of each batch, and the second-order
step differs from the CNN one (`darts_tf.architect`): the virtual step is plain SGD
(no momentum) on the training gradient clipped to `clip`, w' = w - eta * (clip(g) + wd * w);
the validation gradient v with respect to w' is clipped too; and the implicit term is
scaled by eta * clip_coef, where clip_coef = clip / (||g|| + 1e-6) as the original's
`_clip` returns it (also when it is above 1 and nothing was clipped). Moving BatchNorm
statistics are left alone by these passes (as on the CNN side; docs/fidelity.md).

The tied embedding: the original builds w' by `load_state_dict` of a state dict that
holds the embedding twice (`encoder.weight`, `decoder.weight`) while only the first
copy was updated, so the stale `decoder.weight` is written last and w' keeps the
embedding of w. Its gradient still enters the clip norm, v and the finite-difference
passes. `virtual_step="original"` (the default, what produced the published cells)
computes that; `virtual_step="paper"` moves every weight, as the paper's equation
w' = w - xi * grad_w L_train reads.

Mixed precision (`darts_tf.precision`): the first-order gradient runs in the network's compute
type (with a `loss_scale`, float16, on the scaled loss); the second-order one in float32
whatever the policy (`full_precision`), since its finite difference moves the weights by
eps * v, far below half precision's resolution.

A batch is (inputs [T, B] int, targets [T, B] int, hidden [B, nhid]).
"""

from __future__ import annotations

import tensorflow as tf

from darts_tf.architect import _assign_after, dense_gradients, gradients_of
from darts_tf.errors import ConfigError
from darts_tf.precision import full_precision, scaled_loss
from darts_tf.rnn.model import nll_of_logits


def _seed(seed, k):
    return None if seed is None else tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int32), k)


def lm_loss(model, batch, seed=None, training=True, update_statistics=False):
    """(negative log-likelihood, the hidden state after the batch) of `model` on `batch`."""
    inputs, targets, hidden = batch
    out = model(inputs, hidden, training=training, seed=seed, update_statistics=update_statistics)
    return nll_of_logits(out["logits"], targets), out["hidden"]


def first_order_arch_gradients(model, val_batch, seed=None, loss_scale=None) -> tuple[list, tf.Tensor, tf.Tensor]:
    """grad_alpha L_val(w, alpha); returns (gradients, val_loss, the validation hidden state after the batch).

    With a `loss_scale` (`darts_tf.precision.DynamicLossScale`) the scaled loss is differentiated
    and the gradients come back unscaled.
    """
    alphas = model.arch_variables
    with tf.GradientTape() as tape:
        loss, hidden = lm_loss(model, val_batch, seed)
        scaled = scaled_loss(loss, loss_scale)
    return gradients_of(tape, scaled, alphas, loss_scale), loss, tf.stop_gradient(hidden)


def _clip_coefficient(gradients, clip):
    return clip / (tf.linalg.global_norm(gradients) + 1e-6)


def _clipped(gradients, coefficient):
    scale = tf.minimum(coefficient, 1.0)
    return [g * tf.cast(scale, g.dtype) for g in gradients]


VIRTUAL_STEPS = ("original", "paper")


def second_order_arch_gradients(
    model,
    train_batch,
    val_batch,
    eta,
    weight_decay: float = 5e-7,
    clip: float = 0.25,
    r: float = 0.01,
    seed=None,
    virtual_step: str = "original",
) -> tuple[list, tf.Tensor, tf.Tensor]:
    """The unrolled recurrent architecture gradient; returns (gradients, val_loss, validation hidden state).

    `eta` is the weight optimizer's current learning rate (the original's, already scaled
    by the batch's sequence length). `virtual_step`: "original" keeps the tied embedding
    at w in w' (as the original's code computes), "paper" moves it with the other weights.
    The weights are restored bit for bit. Computed in float32 under a mixed policy; the validation
    hidden state comes back in the type `val_batch`'s came in.
    """
    if virtual_step not in VIRTUAL_STEPS:
        raise ConfigError(
            f"`virtual_step` must be one of {', '.join(VIRTUAL_STEPS)}. Received: virtual_step={virtual_step!r}"
        )
    with full_precision(model):
        grads, val_loss, hidden = _second_order(
            model, train_batch, val_batch, eta, weight_decay, clip, r, seed, virtual_step
        )
    return grads, val_loss, tf.cast(hidden, tf.convert_to_tensor(val_batch[2]).dtype)


def _second_order(model, train_batch, val_batch, eta, weight_decay, clip, r, seed, virtual_step):
    weights, alphas = model.weight_variables, model.arch_variables
    saved = [tf.identity(w) for w in weights]
    with tf.GradientTape() as tape:
        train_loss, _ = lm_loss(model, train_batch, _seed(seed, 0))
    train_grads = dense_gradients(tape.gradient(train_loss, weights), weights)
    clip_coef = _clip_coefficient(train_grads, clip)
    eta = tf.cast(eta, saved[0].dtype)
    held = model.embedding if virtual_step == "original" else None
    for w, w0, g in zip(weights, saved, _clipped(train_grads, clip_coef)):
        if w is not held:
            w.assign(w0 - eta * (g + weight_decay * w0))
    with tf.GradientTape() as tape:
        val_loss, hidden = lm_loss(model, val_batch, _seed(seed, 1))
    grads = dense_gradients(tape.gradient(val_loss, alphas + weights), alphas + weights)
    alpha_grads, vector = grads[: len(alphas)], grads[len(alphas) :]
    vector = _clipped(vector, _clip_coefficient(vector, clip))
    _assign_after(grads + vector, weights, saved)
    eps = r / tf.linalg.global_norm(vector)
    results, done = [], [eps]
    for k, sign in enumerate((1.0, -1.0)):
        _assign_after(done, weights, [w0 + (sign * eps) * v for w0, v in zip(saved, vector)])
        with tf.GradientTape() as tape:
            loss, _ = lm_loss(model, train_batch, _seed(seed, 2 + k))
        done = dense_gradients(tape.gradient(loss, alphas), alphas)
        results.append(done)
    _assign_after(done, weights, saved)
    scale = eta * tf.cast(clip_coef, eta.dtype)
    implicit = [(gp - gn) / (2.0 * eps) for gp, gn in zip(*results)]
    return [g - scale * h for g, h in zip(alpha_grads, implicit)], val_loss, tf.stop_gradient(hidden)

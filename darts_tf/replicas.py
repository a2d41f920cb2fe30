"""What a step computes across tf.distribute replicas: means of gradients and statistics, this replica's index.

Every function here is the identity (or 0 / 1) outside a replica context with
more than one replica, so the one-device path is unchanged. Called from the
top level of the function a strategy runs (`strategy.run`): a MirroredStrategy
reduces by `merge_call`, which a nested `tf.function` cannot make.
"""

from __future__ import annotations

import tensorflow as tf


def _context():
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def count() -> int:
    """The number of replicas in sync (1 outside a strategy's run, or on one device)."""
    context = _context()
    return 1 if context is None else context.num_replicas_in_sync


def index():
    """This replica's index among all (every worker's) replicas: 0 on one device."""
    context = _context()
    return 0 if context is None else context.replica_id_in_sync_group


def mean(values: list) -> list:
    """The mean over the replicas of each tensor of `values` (differentiable; `values` itself on one replica)."""
    context = _context()
    values = list(values)
    if context is None or not values:
        return values
    return list(context.all_reduce(tf.distribute.ReduceOp.MEAN, values))


def pooled_moments(mean, variance, shift):
    """The mean and (biased) variance over every replica's batch, from each replica's own (equal batch sizes).

    One all-reduce of (mean_k - shift, var_k + (mean_k - shift)^2), the moments about
    `shift` (the same on every replica, e.g. the moving mean: close to the mean, so the
    subtraction var = E[d^2] - E[d]^2 loses few digits). Differentiable.
    """
    context = _context()
    if context is None:
        return mean, variance
    shift = tf.stop_gradient(tf.cast(shift, mean.dtype))
    offset = mean - shift
    pooled_offset, second = context.all_reduce(tf.distribute.ReduceOp.MEAN, [offset, variance + tf.square(offset)])
    return shift + pooled_offset, tf.maximum(second - tf.square(pooled_offset), 0.0)

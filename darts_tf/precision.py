"""Mixed precision for the search and the evaluation training: dtype policies, dynamic loss scaling,
and full-precision passes for what half precision cannot resolve.

A run's `precision` is one of `PRECISIONS`. "float32" is the default and changes nothing.
"mixed_bfloat16" and "mixed_float16" are Keras's mixed policies given to the networks'
layers (never set process-wide): variables (weights, alphas, betas, BatchNorm statistics)
stay float32, the convolutions run in the half type, logits, losses and metrics are float32.

- float16 needs loss scaling (its gradients underflow below 6e-8): `DynamicLossScale`, Keras's
  rule (start at 2^15, halve and skip the step on a non-finite gradient, double after 2,000
  finite steps). The search and training steps scale their half-precision backward passes
  themselves because they clip by the unscaled global norm, which
  `keras.optimizers.LossScaleOptimizer` (it unscales inside `apply`) cannot express.
- The second-order architecture gradient's Hessian-vector product moves the weights by
  eps * v with eps = 0.01 / ||v||: relative moves far below bfloat16's or float16's resolution,
  which in half precision leave only rounding noise in the difference (cosine 0.88 with
  float32's under bfloat16). `full_precision(model)` runs the whole second-order gradient in float32.
"""

from __future__ import annotations

import contextlib
import threading

import keras
import tensorflow as tf

from darts_tf import internals, replicas
from darts_tf.config import PRECISIONS
from darts_tf.errors import ConfigError

HALF_TYPES = (tf.float16, tf.bfloat16)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"`precision` must be one of {', '.join(PRECISIONS)}. Received: precision={precision!r}")
    return precision


def dtype_policy(precision: str) -> keras.DTypePolicy:
    """The Keras dtype policy of `precision` (for a network's `dtype=`)."""
    return keras.DTypePolicy(check_precision(precision))


def wide_dtype(dtype) -> tf.DType:
    """float32 for float16/bfloat16, else `dtype` itself (float32, float64)."""
    return tf.float32 if dtype in HALF_TYPES else dtype


def to_float32(x) -> tf.Tensor:
    """`x` in float32 when it is float16/bfloat16 (logits for losses and metrics), else unchanged."""
    return tf.cast(x, wide_dtype(x.dtype))


def scaled_loss(loss, loss_scale=None) -> tf.Tensor:
    """`loss` times `loss_scale` (a `DynamicLossScale`; None: `loss` itself), inside a tape."""
    return loss if loss_scale is None else loss_scale.scale(loss)


class DynamicLossScale:
    """Dynamic loss scaling for float16 gradients (Micikevicius et al., arXiv:1710.03740).

    `scale(loss)` multiplies a loss before its tape's gradient; `unscale(gradients)` divides;
    `update(finite)` halves the scale after a step with a non-finite gradient (the step is then
    skipped by the caller, see `apply_if`) and doubles it after `growth_interval` finite steps
    in a row. The same rule and defaults as `keras.optimizers.LossScaleOptimizer`. Its two
    variables are created under the strategy scope of the caller (one copy, the same on every
    replica: every replica sees the same reduced gradients).
    """

    def __init__(self, initial_scale: float = 2.0**15, growth_interval: int = 2000):
        if initial_scale <= 0 or growth_interval < 1:
            raise ValueError(
                "DynamicLossScale expected a positive initial_scale and growth_interval. "
                f"Received: initial_scale={initial_scale}, growth_interval={growth_interval}"
            )
        self.initial_scale = initial_scale
        self.growth_interval = growth_interval
        self.value = keras.Variable(
            initial_scale, dtype="float32", trainable=False, aggregation="only_first_replica", name="loss_scale"
        )
        self.finite_steps = keras.Variable(
            0, dtype="int64", trainable=False, aggregation="only_first_replica", name="loss_scale_finite_steps"
        )

    def scale(self, loss) -> tf.Tensor:
        """`loss` times the scale, divided by the replica count: a replica's loss is the mean over its
        share of the global batch, so its backward pass would otherwise carry k times one device's
        values (and overflow float16 where one device does not)."""
        factor = tf.convert_to_tensor(self.value) / float(replicas.count())
        return loss * tf.cast(factor, loss.dtype)

    def unscale(self, gradients: list) -> list:
        """Gradients of a `scale`d loss back to the loss's own (before the replicas' mean)."""
        inverse = float(replicas.count()) / tf.convert_to_tensor(self.value)
        return [g * tf.cast(inverse, g.dtype) for g in gradients]

    def state(self) -> dict:
        """The scale and its count of finite steps, for a run's checkpoint state (JSON)."""
        return {"value": float(self.value.numpy()), "finite_steps": int(self.finite_steps.numpy())}

    def restore(self, state: dict | None) -> None:
        """Sets what `state()` returned (None: keeps the initial scale, e.g. a checkpoint from before)."""
        if state:
            self.value.assign(float(state["value"]))
            self.finite_steps.assign(int(state["finite_steps"]))

    def update(self, finite) -> None:
        """The scale after a step whose gradients were all finite (`finite` True) or not."""
        grown = tf.equal(self.finite_steps, self.growth_interval - 1)
        value = tf.convert_to_tensor(self.value)
        self.value.assign(tf.where(finite, tf.where(grown, value * 2.0, value), value * 0.5))
        steps = tf.convert_to_tensor(self.finite_steps)
        self.finite_steps.assign(tf.where(finite & ~grown, steps + 1, tf.zeros_like(steps)))


def all_finite(gradients: list) -> tf.Tensor:
    """True when every value of every gradient is finite."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])


def apply_if(finite, apply) -> None:
    """Runs `apply()` (an optimizer update) only when `finite`; the same decision on every replica.

    One device, or a strategy whose updates need no `merge_call`: a `tf.cond`. Under a
    MirroredStrategy the optimizers' `apply` makes a `merge_call`, which a `tf.cond` in a
    replica context cannot hold: the condition is taken in the cross-replica context and runs
    `apply` on every replica inside it (what Keras's LossScaleOptimizer does).
    """
    context = tf.distribute.get_replica_context()
    needs_merge = (
        context is not None and context.num_replicas_in_sync > 1 and not internals.strategy_supports_no_merge_call()
    )
    if not needs_merge:
        tf.cond(finite, lambda: _run(apply), tf.no_op)
        return

    def cross_replica(strategy, finite):
        first = strategy.experimental_local_results(finite)[0]  # reduced gradients: the same everywhere
        tf.cond(first, lambda: _run(lambda: strategy.extended.call_for_each_replica(apply)), tf.no_op)

    context.merge_call(cross_replica, args=(finite,))


def apply_gradients(optimizer, gradients: list, variables: list, loss_scale=None):
    """`optimizer.apply(gradients, variables)`; with a `loss_scale`, only when every gradient is finite.

    Returns whether they were (a boolean tensor), or None without a loss scale.
    """
    if loss_scale is None:
        optimizer.apply(gradients, variables)
        return None
    finite = all_finite(gradients)
    apply_if(finite, lambda: optimizer.apply(gradients, variables))
    return finite


def _run(function):
    function()
    return tf.no_op()


# full_precision: every layer's policy is swapped for the block, counted across the threads a
# MirroredStrategy traces its replicas in (they run one at a time, and every replica enters and
# leaves the block at the same point of the step).
_SWAP = threading.Lock()
_ACTIVE: dict = {}  # id(model) -> [depth, saved policies]


@contextlib.contextmanager
def full_precision(model):
    """Within the block, `model` and its layers compute in float32 (their variables are float32).

    For the passes whose result half precision cannot resolve (see the module docstring).
    A no-op for a float32 (or float64) model. Meant around code that is traced (a step's
    `tf.function`): the policies are what the traced ops were built with.
    """
    if model.dtype_policy.compute_dtype == model.dtype_policy.variable_dtype:
        yield
        return
    key = id(model)
    with _SWAP:
        entry = _ACTIVE.setdefault(key, [0, None])
        if entry[0] == 0:
            layers = internals.flatten_layers(model)
            entry[1] = [(layer, layer.dtype_policy) for layer in layers]
            for layer, policy in entry[1]:
                layer.dtype_policy = policy.variable_dtype
        entry[0] += 1
    try:
        yield
    finally:
        with _SWAP:
            entry[0] -= 1
            if entry[0] == 0:
                for layer, policy in entry[1]:
                    layer.dtype_policy = policy
                del _ACTIVE[key]

"""Every private Keras and TensorFlow API darts_tf relies on, in one place.

Checked against the versions in `CHECKED_WITH`; `tests/test_internals.py` exercises each one
so that a Keras or TensorFlow release that changes it fails there, by name, instead of
somewhere deep in a search step.

- `flatten_layers`: `Layer._flatten_layers`, the recursive walk Keras itself uses for
  `Layer.layers`, sublayers of sublayers included (Keras 3 has no public equivalent).
- `variable_index`: `Optimizer._get_variable_index`, where an optimizer keeps the slot
  variables (momentum, Adam's moments) of a variable.
- `ReplicaReducedGradients`: overrides `Optimizer._all_reduce_sum_gradients`, which Keras's
  TensorFlow optimizer calls from `apply` in a replica context to sum the gradients over the
  replicas; darts_tf's steps reduce (mean) them themselves before clipping, so it must not.
- `strategy_supports_no_merge_call`: `tf.__internal__.distribute`'s test of whether a
  strategy's updates need a `merge_call` (MirroredStrategy's do).
- `set_rewriter_options`: grappler settings `tf.config.optimizer.set_experimental_options`
  does not take (`disable_tfg_optimizer`, `memory_optimization`), set on the eager context's base `ConfigProto`
  (`Context._config`, which `tf.compat.v1.enable_eager_execution(config=...)` fills), from which
  TensorFlow computes the configuration every function call carries.

`Model.make_train_function(force)` and `Model.train_function`, which the search and training
models override to trace one function per step, are public names of Keras's TensorFlow
trainer, though undocumented; the same test checks them.
"""

from __future__ import annotations

import tensorflow as tf

CHECKED_WITH = {"keras": "3.15.1", "tensorflow": "2.21.0"}


def flatten_layers(layer, include_self: bool = True) -> list:
    """`layer` (if `include_self`, first) and every layer nested in it, each once."""
    return list(layer._flatten_layers(include_self=include_self, recursive=True))


def variable_index(optimizer, variable) -> int:
    """The index of `variable` in `optimizer`'s slot lists (e.g. `optimizer.momentums[i]`)."""
    return optimizer._get_variable_index(variable)


class ReplicaReducedGradients:
    """Mixin for a `keras.optimizers.Optimizer` whose `apply` receives gradients already reduced
    across tf.distribute replicas (`darts_tf.replicas.mean`, before clipping): Keras's own
    summation over the replicas inside `apply` is skipped (it would multiply them by k)."""

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


def strategy_supports_no_merge_call() -> bool:
    """Whether the current strategy's optimizer updates run without a `merge_call`."""
    return tf.__internal__.distribute.strategy_supports_no_merge_call()


def set_rewriter_options(**options) -> dict:
    """Sets fields of grappler's `RewriterConfig` for the functions first run (or traced) afterwards,
    as `tf.config.optimizer.set_experimental_options` does for the fields it knows; returns the
    fields' previous values (pass them back to restore)."""
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context as eager_context

    context = eager_context.context()
    base = config_pb2.ConfigProto() if context._config is None else context._config
    rewrite = base.graph_options.rewrite_options
    previous = {name: getattr(rewrite, name) for name in options}
    for name, value in options.items():
        setattr(rewrite, name, value)
    context._config = base
    # Function calls read their configuration from a per-thread copy: TensorFlow's own setter drops it.
    context.set_optimizer_experimental_options({})
    return previous

"""What a step computes across tf.distribute replicas: means of gradients and statistics, this replica's index.

Every function here is the identity (or 0 / 1) outside a replica context with
more than one replica, so the one-device path is unchanged. Called from the
top level of the function a strategy runs (`strategy.run`): a MirroredStrategy
reduces by `merge_call`, which a nested `tf.function` cannot make.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import tensorflow as tf

from darts_tf import internals


def _context():
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def count() -> int:
    """The number of replicas in sync (1 outside a strategy's run, or on one device)."""
    context = _context()
    return 1 if context is None else context.num_replicas_in_sync


_LOCAL_STATISTICS = [0]  # depth of `local_statistics` blocks (replica threads may enter one each)


@contextlib.contextmanager
def local_statistics(active: bool = True):
    """Within the block (when `active`), training-mode BatchNorms normalise with each replica's own
    batch statistics (`synchronized_statistics()` is False), as PyTorch's DataParallel: no collective
    per BatchNorm stage, a different result from one device's. The replicas' moving statistics
    then drift apart: `darts_tf.distribute.average_statistics` puts their mean in every replica."""
    _LOCAL_STATISTICS[0] += int(active)
    try:
        yield
    finally:
        _LOCAL_STATISTICS[0] -= int(active)


def synchronized_statistics() -> bool:
    """Whether a training-mode BatchNorm here takes the global batch's statistics (a collective):
    under several replicas, outside `local_statistics`."""
    return count() > 1 and not _LOCAL_STATISTICS[0]


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
    if internals.strategy_supports_no_merge_call():  # e.g. MultiWorkerMirroredStrategy
        return list(context.all_reduce(tf.distribute.ReduceOp.MEAN, values))
    return _merged_mean(context, values)


def gather(vector) -> tf.Tensor:
    """Every replica's `vector` (1-D, one length on every replica) in replica order: [replicas,
    length], differentiable; `vector[None]` on one replica.

    One `mean` of the vector placed in this replica's row of zeros: each sum is of one value
    and zeros (exact), so the rows are the replicas' values (to one rounding of the mean's
    division for a replica count not a power of 2).
    """
    replicas = count()
    if replicas == 1:
        return vector[None]
    rows = tf.reshape(tf.one_hot(index(), replicas, dtype=vector.dtype), [replicas, 1]) * vector
    (averaged,) = mean([rows])
    return averaged * replicas


class TracedOnce:
    """`function` (a `tf.function` of tensors and Python values that reads no variable) traced
    once for all the replicas of a step, instead of once a replica.

    Under a MirroredStrategy a `tf.function` is retraced on every replica: its cache key holds the
    replica's device, for functions that read mirrored variables. A function whose state comes in
    as arguments computes the same on every device, and its trace leaves its ops unplaced (the
    call op's device places them). So the first replica's concrete function is kept by the
    arguments' signature and every replica calls it: one trace, and one gradient function.
    Outside several replicas, `function` itself is called.
    """

    def __init__(self, function):
        self.function = function
        self._concrete = {}
        self._lock = threading.Lock()

    def __call__(self, *args):
        if count() == 1 or tf.executing_eagerly():
            return self.function(*args)
        # Tensors by shape and dtype (not name: each replica names its own), Python values as they are.
        leaves = [tf.TensorSpec(v.shape, v.dtype) if isinstance(v, tf.Tensor) else v for v in tf.nest.flatten(args)]
        key = (str(tf.nest.map_structure(lambda _: 0, args)), tuple(leaves))
        with self._lock:
            concrete = self._concrete.get(key)
            if concrete is None:
                concrete = self.function.get_concrete_function(*args)
                if concrete.captured_inputs:  # another replica's tensors or variables: not shareable
                    raise ValueError(
                        f"TracedOnce: {concrete.name} reads {len(concrete.captured_inputs)} tensor(s) or "
                        "variable(s) from outside; expected all its inputs as arguments"
                    )
                self._concrete[key] = concrete
        return concrete(*args)


def _merged_mean(context, values: list) -> list:
    """`ReplicaContext.all_reduce`'s mean for a strategy that reduces by `merge_call` (a
    MirroredStrategy), without its cost at trace time.

    TensorFlow's version wraps the `merge_call` in a `tf.custom_gradient`, which in a graph walks
    back from the reduced tensors for the variables they depend on, stopping at this replica's
    inputs only. Reduced by copies, the walk crosses into every other replica's graph, all of it,
    with a list membership test per op, once per all-reduce forward and backward: a 2-replica
    training step spent 90 % of a 66 s trace there (8 s by collective ops, which take only this
    replica's tensors). Here the reduced tensors leave the `merge_call` through `tf.stop_gradient`,
    where the walk ends; the gradient is the same mean of the output gradients TensorFlow's is.
    """
    for counter in _COUNTERS:
        counter.add(values)

    def reduce(strategy, *per_replica):
        pairs = [(value, value) for value in per_replica]  # to each value's own devices
        return strategy.extended.batch_reduce_to(tf.distribute.ReduceOp.MEAN, pairs)

    @tf.custom_gradient
    def reduced(*inputs):
        outputs = [tf.stop_gradient(y) for y in context.merge_call(reduce, args=inputs)]
        return outputs, lambda *gradients: _merged_mean(context, list(gradients))

    return list(reduced(*values))


class CollectiveCount:
    """How many cross-replica all-reduces a traced step holds: `calls` and the `values` they reduce.

    Counts every `ReplicaContext.all_reduce` (and `mean` by `merge_call`) traced while the
    `counting_collectives()` block is open, forward and backward (the gradient of an all-reduce
    is one), over all replicas;
    `per_replica(n)` divides by the replica count. A measuring aid for tests and the benchmark.
    """

    def __init__(self):
        self.calls = 0
        self.values = 0
        self._lock = threading.Lock()

    def add(self, value) -> None:
        flat = tf.nest.flatten(value)
        size = sum(int(np.prod(v.shape)) if v.shape.is_fully_defined() else 0 for v in flat)
        with self._lock:
            self.calls += 1
            self.values += size

    def per_replica(self, replicas: int) -> dict:
        return {"calls": self.calls // replicas, "values": self.values // replicas}


@contextlib.contextmanager
def counting_collectives():
    """Within the block, every traced `ReplicaContext.all_reduce` is counted (a `CollectiveCount`).

    It wraps the method of TensorFlow's class for the block's duration and restores it after:
    use it around the first call (the trace) of a step, not around a run.
    """
    count = CollectiveCount()
    original = tf.distribute.ReplicaContext.all_reduce

    def all_reduce(self, reduce_op, value, options=None):
        count.add(value)
        return original(self, reduce_op, value, options)

    tf.distribute.ReplicaContext.all_reduce = all_reduce
    _COUNTERS.append(count)  # `_merged_mean`'s
    try:
        yield count
    finally:
        tf.distribute.ReplicaContext.all_reduce = original
        _COUNTERS.remove(count)


_COUNTERS: list = []  # the open `counting_collectives` blocks' counts

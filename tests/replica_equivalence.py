"""Run by tests/test_distribute.py in a fresh process: 2 logical CPU replicas vs one device, 3 steps each.

python tests/replica_equivalence.py MODE -> one line of JSON: the largest difference of any variable
(every replica's copy) relative to the variable's largest value and absolute, and whether the
replicas' copies are bit-identical. MODE: first, second, exact, train, partial, space (ops of one's own), nb201
(NAS-Bench-201's network), budget (a mult-adds budget), or float16 / train_float16 (second-order search /
training under mixed_float16 with dynamic loss scaling).
"exact" runs in float64: in float32 the exact
second derivative through BatchNorm loses ~1% to round-off on one device already (a 3-channel
BatchNorm's mixed HVP: float64 -1.0569e-4; float32 one device -1.0718e-4, two replicas -1.0698e-4).
"train" runs in float64 too: in float32 this tiny network (3 cells, 8 images, the auxiliary head's
BatchNorms over 8 values a channel, drop path, lr 0.1) differs from itself after 3 steps by 1.4e-5 to
4.3e-5 of a variable's scale between oneDNN on and off (seeds 1-6; 1.4e-4 at seed 0, which also sits
near a switch that two replicas' round-off crosses: 5e-2), the tolerance's size; its float32 kernels
are checked against the plain formulas in tests/test_ops.py and by the float32 search modes here.
"budget" runs in float64 too: in float32 its third step's finite-difference point w - eps*v lies within
5e-5 * eps of a switch of the gradient (a max-pool or ReLU kink; moving the point by that much changes
the alphas' gradient there by 0.56 %), and float32 round-off decides the side differently on one device
and on two replicas, or between two equivalent forms of an op.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

from darts_tf import distribute  # noqa: E402
from darts_tf.runtime import set_graph_optimization  # noqa: E402

set_graph_optimization("reduced")  # as darts-tf search: less graph optimisation of the first step
distribute.split_cpu(2)  # as --logical-cpus 2 (TensorFlow's BFC CPU allocator)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402

from darts_tf.cnn.cost import Budget, CostModel  # noqa: E402
from darts_tf.cnn.eval_model import NetworkCIFAR  # noqa: E402
from darts_tf.cnn.genotypes import DARTS_V2  # noqa: E402
from darts_tf.cnn.search import ArchitectureSearch, arch_by_kind  # noqa: E402
from darts_tf.cnn.space import PRIMITIVES, SearchSpace  # noqa: E402
from darts_tf.cnn.train import EvalTrainer, drop_path_variables  # noqa: E402
from darts_tf.nb201.model import Nb201SearchNetwork  # noqa: E402
from darts_tf.optimizers import SGD, Adam  # noqa: E402
from darts_tf.precision import DynamicLossScale  # noqa: E402
from helpers import tiny_search_network  # noqa: E402
from space_ops import register_test_ops  # noqa: E402

BATCH, SIZE, CLASSES = 8, 8, 3
TRAIN_SIZE = 24  # the auxiliary head needs 24-pixel images or larger
DTYPE = {"first": "float32", "second": "float32", "exact": "float64", "train": "float64", "partial": "float32",
         "float16": "float32", "train_float16": "float32", "space": "float32", "nb201": "float32",
         "budget": "float64"}  # fmt: skip
# Modes under mixed_float16 with dynamic loss scaling (the skip decision under replicas: precision.apply_if).
POLICY = {"float16": "mixed_float16", "train_float16": "mixed_float16"}


def build(mode):
    policy = POLICY.get(mode)
    loss_scale = DynamicLossScale() if policy == "mixed_float16" else None
    if mode.startswith("train"):
        keras.utils.set_random_seed(0)
        network = NetworkCIFAR(
            4, CLASSES, 3, True, DARTS_V2, input_shape=(TRAIN_SIZE, TRAIN_SIZE, 3), dtype=policy or DTYPE[mode]
        )
        for rate in drop_path_variables(network):
            rate.assign(0.3)  # masks drawn: the replicas must draw one device's
        model = EvalTrainer(network, auxiliary_weight=0.4, loss_scale=loss_scale)
        model.compile(SGD(0.1, momentum=0.9, coupled_weight_decay=3e-4), grad_clip=5.0)
        return model
    if mode == "partial":  # PC-DARTS: 2 of 4 channels through the ops, edge normalisation (14 edges)
        network = tiny_search_network(C=4, layers=2, steps=2, partial_channels=2, edge_normalization=True)
    elif mode == "space":  # ops of one's own: ReLU-conv-BN (staged), ReLU-conv (whole, after the stages)
        register_test_ops()
        space = SearchSpace((*PRIMITIVES, "test_conv", "test_relu_conv"), steps=1, multiplier=1)
        network = tiny_search_network(C=4, layers=2, steps=1, space=space)
    elif mode == "nb201":  # NAS-Bench-201's search network: batch-statistics cells, residual reduction blocks
        keras.utils.set_random_seed(0)
        network = Nb201SearchNetwork(4, CLASSES, 1)
        network.build((None, SIZE, SIZE, 3))
        network.alphas.assign(np.random.default_rng(0).normal(scale=0.5, size=(6, 5)).astype("float32"))
    elif mode == "budget":  # second order, edge normalisation and a mult-adds budget (darts_tf.cnn.cost)
        network = tiny_search_network(C=4, layers=2, steps=2, edge_normalization=True, dtype=DTYPE[mode])
    else:
        network = tiny_search_network(dtype=policy or DTYPE[mode], C=4, layers=2, steps=1)  # 4 edges
    hessian = "exact" if mode == "exact" else "finite_difference"
    budget = {}
    if mode == "budget":
        costs = CostModel(network.space, C=4, layers=3, image_shape=(SIZE, SIZE, 3), num_classes=CLASSES)
        target = 0.5 * float(costs.expected(*arch_by_kind(network))["flops"])
        budget = {"cost_model": costs, "budgets": [Budget("flops", target, weight=2.0)]}
    model = ArchitectureSearch(
        network, unrolled=mode not in ("first", "partial", "nb201"), hessian=hessian, loss_scale=loss_scale, **budget
    )
    model.compile(SGD(0.1, momentum=0.9, coupled_weight_decay=3e-4), Adam(3e-2, coupled_weight_decay=1e-3))
    return model


def main(mode):
    rng = np.random.default_rng(0)

    def batch():
        size = TRAIN_SIZE if mode.startswith("train") else SIZE
        images = rng.normal(size=(BATCH, size, size, 3)).astype(DTYPE[mode])
        return images, rng.integers(0, CLASSES, size=BATCH).astype("int32")

    steps = [batch() if mode.startswith("train") else (batch(), batch()) for _ in range(3)]

    def stacked(pairs):
        return tuple(np.concatenate(parts) for parts in zip(*pairs))

    if mode.startswith("train"):
        dataset = tf.data.Dataset.from_tensor_slices(stacked(steps))
    else:
        dataset = tf.data.Dataset.from_tensor_slices(tuple(stacked([s[half] for s in steps]) for half in (0, 1)))
    dataset = dataset.batch(BATCH)
    one = build(mode)
    strategy = distribute.make_strategy("mirrored")
    with strategy.scope():
        two = build(mode)
    step_one = tf.function(one.train_step)
    for batches in dataset:
        step_one(batches)
    step_two = tf.function(lambda batches: strategy.run(two.train_step, args=(batches,)))
    for batches in distribute.distribute_dataset(strategy, dataset):
        step_two(batches)
    worst, worst_abs, identical = 0.0, 0.0, True
    for a, b in zip(one.variables, two.variables):
        expected = np.asarray(a.numpy(), np.float64)
        copies = [np.asarray(c.numpy(), np.float64) for c in strategy.experimental_local_results(b.value)]
        identical &= all(np.array_equal(copies[0], c) for c in copies[1:])
        scale = max(float(np.max(np.abs(expected))), 1e-6) if expected.size else 1.0
        for copy in copies:
            if expected.size:
                worst_abs = max(worst_abs, float(np.max(np.abs(copy - expected))))
                worst = max(worst, float(np.max(np.abs(copy - expected))) / scale)
    # The reported means (loss, accuracy, ...): per-replica sums read across the replicas.
    metrics = {m.name: (float(m.result()), float(n.result())) for m, n in zip(one.metrics, two.metrics)}
    scales = [None, None]  # float16: the loss scale after the steps (the same skips on both)
    if one.loss_scale is not None:
        scales = [float(one.loss_scale.value.numpy()), float(two.loss_scale.value.numpy())]
    print(json.dumps({"mode": mode, "replicas": strategy.num_replicas_in_sync, "worst": worst,
                      "worst_abs": worst_abs, "identical": bool(identical), "variables": len(one.variables),
                      "metrics": metrics, "loss_scales": scales}))  # fmt: skip


def collectives(what):
    """The all-reduces per replica traced in one 2-replica step: `what` "first" / "second" (a search step of a
    3-cell, 4-node network) or "train" (a training step of the "train" mode's DARTS_V2 network)."""
    from darts_tf import replicas

    strategy = distribute.make_strategy("mirrored")
    rng = np.random.default_rng(0)
    with strategy.scope():
        if what == "train":
            model = build("train")
            network = model.network
        else:
            network = tiny_search_network(C=4, layers=3, steps=4)
            model = ArchitectureSearch(network, unrolled=what != "first", hessian="finite_difference")
            model.compile(SGD(0.1, momentum=0.9, coupled_weight_decay=3e-4), Adam(3e-2, coupled_weight_decay=1e-3))
    if what == "train":
        images = rng.normal(size=(BATCH, TRAIN_SIZE, TRAIN_SIZE, 3)).astype(DTYPE["train"])
        dataset = tf.data.Dataset.from_tensor_slices((images, rng.integers(0, CLASSES, BATCH).astype("int32")))
    else:
        halves = [
            (rng.normal(size=(BATCH, SIZE, SIZE, 3)).astype("float32"), rng.integers(0, CLASSES, BATCH).astype("int32"))
            for _ in range(2)
        ]
        dataset = tf.data.Dataset.from_tensor_slices(tuple(halves))
    step = tf.function(lambda batches: strategy.run(model.train_step, args=(batches,)))
    with replicas.counting_collectives() as count:
        for batches in distribute.distribute_dataset(strategy, dataset.batch(BATCH)):
            step(batches)
    cells = [layer for layer in network.layers if layer.name.startswith("cell_")] if what == "train" else network.cells
    # The packed edges' shared functions: traces made, and argument signatures they were called with.
    shared = {id(edge._shared): edge._shared for cell in cells for edge in getattr(cell, "edges", [])}
    functions = [f for edge in shared.values() for f in (edge.function, edge.stage, edge.finish)]
    traces = sum(f.function.experimental_get_tracing_count() for f in functions)
    signatures = sum(len(f._concrete) for f in functions)
    print(json.dumps({"what": what, "cells": len(cells), **count.per_replica(2), "traces": traces,
                      "signatures": signatures}))  # fmt: skip


def local(what):
    """`sync_batchnorm=False` (per-replica BatchNorm statistics) on 2 replicas, `what` "search" (first
    order) or "train": the collectives a step traces, the replicas' moving statistics after 3 steps
    (apart), after `distribute.average_statistics` and after an epoch of `distribute.fit` (equal), and
    the largest difference of the statistics from one device's (the result changes)."""
    from darts_tf import replicas

    mode = "train" if what == "train" else "first"
    strategy = distribute.make_strategy("mirrored")
    one = build(mode)
    with strategy.scope():
        two = build(mode)
    two.sync_batchnorm = False
    rng = np.random.default_rng(0)
    size = TRAIN_SIZE if what == "train" else SIZE

    def batch():
        return rng.normal(size=(BATCH, size, size, 3)).astype("float32"), rng.integers(0, CLASSES, BATCH).astype(
            "int32"
        )

    steps = [batch() if what == "train" else (batch(), batch()) for _ in range(3)]
    stacked = lambda pairs: tuple(np.concatenate(parts) for parts in zip(*pairs))  # noqa: E731
    if what == "train":
        dataset = tf.data.Dataset.from_tensor_slices(stacked(steps)).batch(BATCH)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(tuple(stacked([s[h] for s in steps]) for h in (0, 1))).batch(BATCH)
    step_one = tf.function(one.train_step)
    for batches in dataset:
        step_one(batches)
    step_two = tf.function(lambda batches: strategy.run(two.train_step, args=(batches,)))
    with replicas.counting_collectives() as count:
        for batches in distribute.distribute_dataset(strategy, dataset):
            step_two(batches)

    def copies():
        return [[np.asarray(c.numpy()) for c in strategy.experimental_local_results(v.value)]
                for v in two.network.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]  # fmt: skip

    def all_equal(groups):
        return all(np.array_equal(g[0], c) for g in groups for c in g[1:])

    apart = not all_equal(copies())
    averaged = distribute.average_statistics(two)
    equal_after_average = all_equal(copies())
    weights_equal = all(
        np.array_equal(*[c.numpy() for c in strategy.experimental_local_results(v.value)])
        for v in two.network.trainable_variables
    )
    stats_one = [np.asarray(v.numpy()) for v in one.network.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]
    from_one_device = max(float(np.max(np.abs(a - g[0]))) for a, g in zip(stats_one, copies()) if a.size)
    distribute.fit(two, dataset.repeat(), epochs=1, initial_epoch=0, steps_per_epoch=3, verbose=0)
    equal_after_fit = all_equal(copies())
    print(json.dumps({"what": what, **count.per_replica(2), "apart": apart, "averaged": averaged,
                      "equal_after_average": equal_after_average, "equal_after_fit": equal_after_fit,
                      "weights_equal": weights_equal, "from_one_device": from_one_device}))  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "collectives":
        collectives(sys.argv[2])
    elif sys.argv[1] == "local":
        local(sys.argv[2])
    else:
        main(sys.argv[1])

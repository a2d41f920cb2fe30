"""The private Keras / TensorFlow APIs of darts_tf.internals still behave as relied on."""

import inspect
import threading

import keras
import numpy as np
import tensorflow as tf

from darts_tf import internals
from darts_tf.optimizers import SGD


def test_flatten_layers_walks_nested_layers_once():
    class Block(keras.layers.Layer):
        def __init__(self, children, **kwargs):
            super().__init__(**kwargs)
            self.children = children

    inner = Block([keras.layers.Dense(2, name="a"), keras.layers.Dense(2, name="b")], name="inner")
    outer = Block([inner, keras.layers.Dense(1, name="c")], name="outer")
    names = [layer.name for layer in internals.flatten_layers(outer)]
    assert names[0] == "outer" and sorted(names) == ["a", "b", "c", "inner", "outer"]  # each once, any order
    nested = internals.flatten_layers(outer, include_self=False)
    assert sorted(layer.name for layer in nested) == ["a", "b", "c", "inner"]


def test_variable_index_finds_the_slot_of_each_variable():
    variables = [keras.Variable(np.full((2,), float(i)), name=f"v{i}") for i in range(3)]
    optimizer = SGD(learning_rate=0.1, momentum=0.9)
    optimizer.build(variables)
    assert [internals.variable_index(optimizer, v) for v in variables] == [0, 1, 2]
    optimizer.apply([tf.ones(2) * (i + 1) for i in range(3)], variables)
    np.testing.assert_allclose(optimizer.momentums[internals.variable_index(optimizer, variables[2])], [3.0, 3.0])


def test_keras_apply_sums_gradients_through_the_overridden_hook():
    calls = []

    class Recording(keras.optimizers.SGD):
        def _all_reduce_sum_gradients(self, grads_and_vars):
            calls.append(len(list(grads_and_vars)))
            return super()._all_reduce_sum_gradients(grads_and_vars)

    variable = keras.Variable(np.ones(2))
    Recording(learning_rate=0.1).apply([tf.ones(2)], [variable])
    assert calls == [1], "Keras's apply no longer calls Optimizer._all_reduce_sum_gradients"
    assert issubclass(SGD, internals.ReplicaReducedGradients)
    pairs = [(tf.ones(2), variable)]
    assert SGD()._all_reduce_sum_gradients(pairs) == pairs


def test_strategy_supports_no_merge_call_tells_mirrored_apart():
    assert internals.strategy_supports_no_merge_call() is True  # the default strategy
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    results = strategy.run(lambda: tf.constant(internals.strategy_supports_no_merge_call()))
    assert bool(strategy.experimental_local_results(results)[0]) is False


def test_train_function_hooks_are_where_the_models_override_them():
    parameters = inspect.signature(keras.Model.make_train_function).parameters
    assert "force" in parameters
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    assert model.train_function is None
    model.make_train_function()
    assert callable(model.train_function)


def _call_config(function) -> tf.compat.v1.ConfigProto:
    """The configuration a call traced in `function`'s graph carries to grappler."""
    graph = function.get_concrete_function().graph
    (call,) = [op for op in graph.get_operations() if op.type in ("PartitionedCall", "StatefulPartitionedCall")]
    return tf.compat.v1.ConfigProto.FromString(call.get_attr("config_proto"))


def test_set_rewriter_options_reaches_the_calls_traced_afterwards():
    inner = tf.function(lambda: tf.constant(1.0))
    before = _call_config(tf.function(lambda: inner()))
    previous = internals.set_rewriter_options(disable_tfg_optimizer=True)
    try:
        after = _call_config(tf.function(lambda: inner()))
        in_thread = []  # a replica's thread computes its call configuration anew
        thread = threading.Thread(target=lambda: in_thread.append(_call_config(tf.function(lambda: inner()))))
        thread.start()
        thread.join()
    finally:
        assert internals.set_rewriter_options(**previous) == {"disable_tfg_optimizer": True}
    assert not before.graph_options.rewrite_options.disable_tfg_optimizer
    assert after.graph_options.rewrite_options.disable_tfg_optimizer
    assert in_thread[0].graph_options.rewrite_options.disable_tfg_optimizer
    restored = _call_config(tf.function(lambda: inner()))
    assert not restored.graph_options.rewrite_options.disable_tfg_optimizer

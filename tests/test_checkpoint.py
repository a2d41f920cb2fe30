"""darts_tf.checkpoint: every variable held, restores verified, written whole or not at all."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from darts_tf.checkpoint import make_checkpoint, restore, write_atomic
from darts_tf.cnn.search_model import SearchNetwork
from darts_tf.errors import RunDirError
from darts_tf.optimizers import SGD, Adam
from helpers import tiny_search_network


def test_checkpoint_holds_every_variable_and_the_alphas(tmp_path):
    model = tiny_search_network(seed=0)
    path = write_atomic(make_checkpoint(model), str(tmp_path / "ckpt"))
    names = [name for name, _ in tf.train.list_variables(path)]
    assert any("alphas_normal" in n for n in names) and any("alphas_reduce" in n for n in names)
    assert len([n for n in names if n.startswith("model/")]) == len(model.variables)
    other = tiny_search_network(seed=5)
    assert not np.array_equal(other.alphas_normal.numpy(), model.alphas_normal.numpy())
    restore(make_checkpoint(other), path)
    for a, b in zip(model.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_checkpoint_of_other_variables_is_refused_in_one_line(tmp_path):
    plain = SearchNetwork(4, 3, 3, shared_trace=False)  # one variable per tensor, as before packing
    plain.build((None, 8, 8, 3))
    path = write_atomic(make_checkpoint(plain), str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match=r"Checkpoint .*ckpt.* does not match the model's variables") as error:
        restore(make_checkpoint(tiny_search_network()), path)
    assert "\n" not in str(error.value)


def test_plain_tf_checkpoint_misses_keras_sublayer_variables_ours_does_not(tmp_path):
    """Why darts_tf.checkpoint exists: Keras 3 keeps list-held sublayers where tf.train.Checkpoint does not look."""
    model = tiny_search_network(C=4, layers=3, steps=2)
    plain = tf.train.Checkpoint(model=model).write(str(tmp_path / "plain" / "ckpt"))
    saved = [name for name, _ in tf.train.list_variables(plain) if name.endswith("VARIABLE_VALUE")]
    assert len(saved) < len(model.variables) // 2  # most of the network is silently left out
    ours = make_checkpoint(model).write(str(tmp_path / "ours" / "ckpt"))
    saved = [name for name, _ in tf.train.list_variables(ours) if name.endswith("VARIABLE_VALUE")]
    assert len(saved) == len(model.variables)


def test_optimizer_slots_round_trip_and_a_model_only_read_is_partial(tmp_path):
    model = tiny_search_network(seed=0)
    w_opt, a_opt = SGD(learning_rate=0.1, momentum=0.9), Adam(learning_rate=0.01)
    w_opt.build(model.weight_variables)
    a_opt.build(model.arch_variables)
    w_opt.apply([tf.ones_like(v) for v in model.weight_variables], model.weight_variables)
    a_opt.apply([tf.ones_like(v) for v in model.arch_variables], model.arch_variables)
    path = write_atomic(make_checkpoint(model, w=w_opt, a=a_opt), str(tmp_path / "ckpt"), json_files={"x.json": [1]})
    assert json.load(open(tmp_path / "ckpt" / "x.json")) == [1]
    other = tiny_search_network(seed=3)
    w2, a2 = SGD(learning_rate=0.1, momentum=0.9), Adam(learning_rate=0.01)
    w2.build(other.weight_variables)
    a2.build(other.arch_variables)
    restore(make_checkpoint(other, w=w2, a=a2), path)
    assert int(w2.iterations.numpy()) == 1 and int(a2.iterations.numpy()) == 1
    for x, y in zip(w_opt.variables + a_opt.variables, w2.variables + a2.variables):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    with pytest.raises(RunDirError, match="does not match"):
        restore(make_checkpoint(tiny_search_network(seed=4)), path)  # the optimizers' part is left over
    restore(make_checkpoint(tiny_search_network(seed=4)), path, partial=True)


def test_a_rewrite_keeps_the_previous_checkpoint_and_a_failed_write_leaves_nothing(tmp_path):
    model = tiny_search_network(seed=0)
    directory, previous = str(tmp_path / "checkpoint"), str(tmp_path / "checkpoint.previous")
    write_atomic(make_checkpoint(model), directory, json_files={"state.json": {"epoch": 1}})
    model.alphas_normal.assign_add(tf.ones_like(model.alphas_normal))
    write_atomic(make_checkpoint(model), directory, json_files={"state.json": {"epoch": 2}}, previous=previous)
    assert json.load(open(os.path.join(previous, "state.json"))) == {"epoch": 1}
    assert json.load(open(os.path.join(directory, "state.json"))) == {"epoch": 2}

    class Broken(dict):
        def items(self):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(make_checkpoint(model), str(tmp_path / "other"), json_files=Broken({"a.json": 1}))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "checkpoint.previous"]  # no half-written folder

import numpy as np
import pytest
import tensorflow as tf
from helpers import random_batch, tiny_search_network

from darts_tf.checkpoint import make_checkpoint, restore, write_atomic
from darts_tf.genotypes import Genotype
from darts_tf.search_model import SearchNetwork


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def test_paper_network_parameter_count():
    model = SearchNetwork(16, 10, 8)
    model.build((None, 32, 32, 3))
    assert _count(model.weight_variables) == 1_930_618  # the original's figure
    assert [tuple(a.shape) for a in model.arch_variables] == [(14, 8), (14, 8)]
    assert _count(model.arch_variables) == 224
    # Weights and alphas partition the trainable variables.
    ids = [id(v) for v in model.weight_variables + model.arch_variables]
    assert len(ids) == len(set(ids)) == len(model.trainable_variables)
    assert not {id(a) for a in model.arch_variables} & {id(v) for v in model.weight_variables}
    # Alphas start at 1e-3 * N(0, 1).
    values = np.concatenate([a.numpy().ravel() for a in model.arch_variables])
    assert 0.5e-3 < values.std() < 1.5e-3 and np.abs(values).max() < 1e-2
    assert [c.reduction for c in model.cells] == [False, False, True, False, False, True, False, False]


def test_forward_and_genotype():
    model = tiny_search_network()
    images, _ = random_batch()
    logits = model(images, training=True)
    assert logits.shape == (4, 3)
    assert isinstance(model.genotype(), Genotype)
    assert model(images, training=False).shape == (4, 3)


def test_custom_input_shape_and_classes():
    model = SearchNetwork(4, 7, 3)
    model.build((None, 12, 12, 1))
    assert model(tf.zeros([2, 12, 12, 1]), training=True).shape == (2, 7)


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


@pytest.mark.parametrize(
    "kwargs, message", [({"C": 0}, "positive integer C"), ({"multiplier": 5}, "multiplier <= steps")]
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchNetwork(**kwargs)

"""darts_tf.seeding: the builders seed their weights and leave the process's random state alone."""

import random

import numpy as np
import pytest
import tensorflow as tf

from darts_tf.cnn.genotypes import DARTS_V2
from darts_tf.cnn.train import build_network
from darts_tf.config import TrainConfig
from darts_tf.seeding import initializer_seed


def _build(seed):
    config = TrainConfig(C=4, layers=3, auxiliary=False, seed=seed)
    return [v.numpy() for v in build_network(config, DARTS_V2, 3, (8, 8, 3)).weights]


def test_builders_seed_the_weights_and_leave_global_random_state_alone():
    random.seed(11)
    np.random.seed(12)
    tf.random.set_seed(13)
    expected_tf = tf.random.uniform([4]).numpy()
    tf.random.set_seed(13)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    first = _build(seed=0)
    assert random.getstate() == python_state
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    np.testing.assert_array_equal(tf.random.uniform([4]).numpy(), expected_tf)  # TF's global seed not reset
    again, other = _build(seed=0), _build(seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_initializer_seed_restores_python_state_on_error_and_checks_its_seed():
    random.seed(3)
    state = random.getstate()
    with pytest.raises(RuntimeError), initializer_seed(5):
        raise RuntimeError("inside")
    assert random.getstate() == state
    with pytest.raises(ValueError, match="integer seed. Received: seed='5'"):
        with initializer_seed("5"):
            pass

"""darts_tf.rnn.model: the recurrent cell and language model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf.rnn.genotypes import (
    DARTS_V1,
    DARTS_V2,
)
from darts_tf.rnn.model import RNNModel, nll, nll_of_logits, temporal_activation_regularization


def test_search_model_variables_and_counts():
    keras.utils.set_random_seed(0)
    model = RNNModel(10_000, 300, 300, genotype=None)
    model.build()
    assert [tuple(a.shape) for a in model.arch_variables] == [(36, 5)]
    assert sum(int(np.prod(v.shape)) for v in model.weight_variables) == 4_810_000  # tied embedding counted once
    ids = [id(v) for v in model.weight_variables + model.arch_variables]
    assert len(ids) == len(set(ids)) == len(model.trainable_variables)
    assert 0.5e-3 < model.alphas.numpy().std() < 1.5e-3
    assert np.abs(model.embedding.numpy()).max() <= 0.04
    with pytest.raises(ValueError, match="ninp == nhid"):
        RNNModel(10, 8, 16)


def test_dropout_masks_are_a_function_of_the_seed_and_tar_its_formula():
    model = RNNModel(30, 8, 8, genotype=DARTS_V2)
    model.build()
    tokens = np.random.default_rng(0).integers(0, 30, size=(6, 4)).astype("int32")
    hidden = model.init_hidden(4)
    run = lambda s: model(tokens, hidden, training=True, seed=tf.constant(s, tf.int32))["log_probs"].numpy()  # noqa: E731
    np.testing.assert_array_equal(run([1, 2]), run([1, 2]))
    assert np.abs(run([1, 2]) - run([1, 3])).max() > 1e-4
    out = model(tokens, hidden, training=False)
    raw = out["raw_outputs"].numpy()
    expected = 1e-3 * np.mean((raw[1:] - raw[:-1]) ** 2)
    assert float(temporal_activation_regularization(out["raw_outputs"], 1e-3)) == pytest.approx(expected, rel=1e-5)
    picked = np.take_along_axis(out["log_probs"].numpy(), tokens[..., None], axis=-1)
    assert float(nll(out["log_probs"], tokens)) == pytest.approx(-picked.mean(), rel=1e-6)


def test_nll_of_logits_is_the_nll_of_the_log_softmax_with_its_gradient():
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(5, 3, 11)) * 3.0)  # float64
    targets = tf.constant(rng.integers(0, 11, size=(5, 3)).astype("int32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        fused = nll_of_logits(logits, targets)
        plain = nll(tf.nn.log_softmax(logits, axis=-1), targets)
    assert float(fused) == pytest.approx(float(plain), rel=1e-13)
    np.testing.assert_allclose(tape.gradient(fused, logits).numpy(), tape.gradient(plain, logits).numpy(), atol=1e-15)
    # The model's logits are the log-probabilities' (half precision is computed in float32).
    model = RNNModel(30, 8, 8, genotype=None)
    model.build()
    out = model(targets.numpy() % 30, model.init_hidden(3), training=False)
    fused, plain = nll_of_logits(out["logits"], targets), nll(out["log_probs"], targets)
    assert float(fused) == pytest.approx(float(plain), rel=1e-6)
    assert nll_of_logits(tf.cast(logits, tf.bfloat16), targets).dtype == tf.float32


def test_model_config_round_trip():
    model = RNNModel(30, 8, 8, 0.5, 0.1, 0.2, 0.3, 0.05, genotype=DARTS_V1)
    model.build()
    again = RNNModel.from_config(model.get_config())
    again.build()
    assert again.genotype == DARTS_V1 and (again.dropout, again.dropoute, again.ntoken) == (0.5, 0.05, 30)
    again.set_weights(model.get_weights())
    tokens = np.arange(12, dtype="int32").reshape(4, 3) % 30
    hidden = model.init_hidden(3)
    np.testing.assert_array_equal(
        model(tokens, hidden)["log_probs"].numpy(), again(tokens, hidden)["log_probs"].numpy()
    )
    search = RNNModel.from_config(RNNModel(30, 8, 8, genotype=None).get_config())
    assert search.searching and search.steps == 8

"""darts_tf.rnn.lm: an epoch's batches (the original's truncated BPTT), the step's learning rate, perplexity."""

import math

import numpy as np
import tensorflow as tf

from darts_tf.config import RNNSearchConfig, RNNTrainConfig
from darts_tf.data import corpus as text
from darts_tf.rnn import lm


def _rows(n=60, batch=3, seed=0):
    return np.random.default_rng(seed).integers(0, 50, size=(n, batch)).astype(np.int32)


def test_an_epochs_batches_are_the_originals_consecutive_slices_with_their_step_seeds():
    config = RNNTrainConfig(bptt=7, seed=11, max_steps=0)
    rows = _rows()
    for epoch in (0, 3):
        lengths = lm.epoch_lengths(config, epoch, len(rows), vary=True)
        batches = list(lm.epoch_batches(config, epoch, rows, vary=True))
        assert len(batches) == len(lengths) == int(lm.epoch_batches(config, epoch, rows, True).cardinality())
        i = 0
        for step, ((inputs, targets, seed), seq_len) in enumerate(zip(batches, lengths)):
            want_inputs, want_targets = text.get_batch(rows, i, seq_len)
            np.testing.assert_array_equal(inputs.numpy(), want_inputs)
            np.testing.assert_array_equal(targets.numpy(), want_targets)
            assert seed.numpy().tolist() == [11, epoch * 2**20 + step] and seed.dtype == tf.int32
            i += seq_len
        assert i >= len(rows) - 2 and len(batches[-1][0]) <= lengths[-1]  # the last one cut at the text's end
    assert lm.epoch_lengths(config, 0, len(rows), True) != lm.epoch_lengths(config, 1, len(rows), True)


def test_search_batches_pair_each_step_with_bptt_rows_of_the_architecture_text():
    config = RNNSearchConfig(bptt=5, seed=2, max_steps=4)
    rows, search_rows = _rows(40), _rows(13, seed=1)
    batches = list(lm.epoch_batches(config, 1, rows, vary=False, search_data=search_rows))
    assert len(batches) == 4  # max_steps
    i = 0
    for (inputs, _, _), (val_inputs, val_targets) in batches:
        want = text.get_batch(search_rows, i % (len(search_rows) - 1), config.bptt)
        np.testing.assert_array_equal(val_inputs.numpy(), want[0])
        np.testing.assert_array_equal(val_targets.numpy(), want[1])
        i += len(inputs)
    assert i == sum(lm.epoch_lengths(config, 1, len(rows), vary=False)) > len(search_rows)  # wraps around


def test_step_seeds_wrap_to_int32_beyond_epoch_2047():
    config = RNNTrainConfig(bptt=7, seed=5)
    (_, _, seed), *_ = lm.epoch_batches(config, 3000, _rows(), vary=True)
    assert seed.numpy().tolist() == [5, int(np.int64(3000 * 2**20).astype(np.uint32).view(np.int32))]


def test_a_steps_learning_rate_is_the_originals_lr_times_its_length_over_bptt():
    for lr, length, bptt in ((20.0, 37, 35), (3.0, 11, 35), (0.1, 35, 35)):
        value = lm.scaled_learning_rate(lr, tf.zeros([length, 2], tf.int32), bptt)
        assert value.dtype == tf.float32 and value.numpy() == np.float32(lr * length / bptt)


def test_perplexity_is_infinite_beyond_float32():
    assert lm.perplexity(2.0) == math.exp(2.0)
    assert lm.perplexity(88.0) == math.exp(88.0) < float(np.finfo(np.float32).max)
    assert lm.perplexity(89.0) == math.inf and lm.perplexity(1e4) == math.inf

"""What the recurrent search and training runs share: the corpus, an epoch's batches, losses, perplexity.

Randomness is a pure function of (seed, epoch, step): the truncated-BPTT lengths of an
epoch come from NumPy's generator seeded by (seed, epoch), the dropout masks of a step
from the stateless seed (seed, epoch * 2**20 + step); so `--resume` continues exactly.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import tensorflow as tf

from darts_tf import precision, runs
from darts_tf.architect import gradients_of
from darts_tf.data import corpus as text
from darts_tf.errors import ConfigError
from darts_tf.optimizers import clip_by_global_norm
from darts_tf.rnn.model import RNNModel, activation_regularization, nll_of_logits, temporal_activation_regularization

_STEP_STRIDE = 2**20


def load_corpus(config) -> text.Corpus:
    return text.load_corpus(config.data_dir, config.train_portion)


def epoch_lengths(config, epoch: int, rows: int, vary: bool) -> list[int]:
    """The epoch's sequence lengths (the original's draws; `max_steps` caps their number)."""
    rng = np.random.default_rng([config.seed, epoch])
    lengths = text.sequence_lengths(rng, rows, config.bptt, vary, getattr(config, "max_seq_len_delta", 20))
    return lengths[: config.max_steps] if config.max_steps else lengths


def epoch_batches(config, epoch: int, train_data: np.ndarray, vary: bool, search_data=None) -> tf.data.Dataset:
    """The weight steps of `epoch` as a dataset of known length: (inputs [T, B], targets [T, B], seed [2]).

    One element per sequence length of `epoch_lengths`, from consecutive rows of
    `train_data` (the original's truncated BPTT: the last one cut at the text's end);
    `seed` is the step's (seed, epoch * 2**20 + step), wrapped to int32. With
    `search_data` (the search's architecture text) each element is paired with
    (inputs, targets) of `bptt` rows from row i % (rows - 1), where i is the weight step's first row.
    """
    lengths = np.asarray(epoch_lengths(config, epoch, len(train_data), vary), np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    steps = np.arange(len(lengths), dtype=np.int64)
    seeds = np.stack([np.full_like(steps, config.seed), epoch * _STEP_STRIDE + steps], axis=1)
    seeds = seeds.astype(np.uint32).view(np.int32)  # int32 two's complement beyond epoch 2047
    train = _slices(train_data, starts, lengths)
    batches = tf.data.Dataset.zip(train, tf.data.Dataset.from_tensor_slices(seeds)).map(
        lambda pair, seed: (*pair, seed)
    )
    if search_data is None:
        return batches
    val_starts = starts % (len(search_data) - 1)
    search = _slices(search_data, val_starts, np.full_like(val_starts, config.bptt))
    return tf.data.Dataset.zip(batches, search)


def _slices(rows: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tf.data.Dataset:
    """(rows[i : i + n], rows[i + 1 : i + 1 + n]) for each start i and length n, cut at the end (`text.get_batch`)."""
    ends = np.minimum(starts + lengths, len(rows) - 1)
    text_rows = tf.constant(np.asarray(rows), tf.int32)
    return tf.data.Dataset.from_tensor_slices((starts, ends)).map(
        lambda i, j: (text_rows[i:j], text_rows[i + 1 : j + 1])
    )


def scaled_learning_rate(learning_rate: float, inputs, bptt: int) -> tf.Tensor:
    """The original's learning rate of a step: lr * seq_len / bptt (float64 arithmetic, then float32)."""
    length = tf.cast(tf.shape(inputs)[0], tf.float64)
    return tf.cast(tf.constant(learning_rate, tf.float64) * length / bptt, tf.float32)


def lm_training_loss(model: RNNModel, inputs, targets, hidden, seed, ar_alpha: float, tar_beta: float):
    """(raw NLL, loss with AR/TAR, next hidden state): the weight step's objective, as the original's train()."""
    out = model(inputs, hidden, training=True, seed=seed)
    raw = nll_of_logits(out["logits"], targets)
    loss = raw + temporal_activation_regularization(out["raw_outputs"], tar_beta)
    if ar_alpha:
        loss = loss + activation_regularization(out["outputs"], ar_alpha)
    return raw, loss, out["hidden"]


def make_eval_step(model: RNNModel):
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec, tf.TensorSpec([None, model.nhid], model.compute_dtype)])
    def step(inputs, targets, hidden):
        out = model(inputs, hidden, training=False)
        return nll_of_logits(out["logits"], targets), out["hidden"]

    return step


def evaluate(model: RNNModel, ids: np.ndarray, batch_size: int, bptt: int, eval_step=None) -> float:
    """Mean NLL over a text as the original's evaluate(): batches of `bptt`, hidden state carried,
    the sum of loss * length divided by the number of rows."""
    step = eval_step or make_eval_step(model)
    return text_loss(step, text.batchify(ids, batch_size), bptt, model.init_hidden(batch_size))


def text_loss(step, source: np.ndarray, bptt: int, hidden) -> float:
    """`evaluate`'s loop over the batched text `source` [rows, batch]: `step(inputs, targets, hidden)` gives
    (mean NLL, next hidden) of each `bptt` rows; the sum of loss * length over the number of rows."""
    total = 0.0
    for i in range(0, len(source) - 1, bptt):
        inputs, targets = text.get_batch(source, i, bptt)
        loss, hidden = step(tf.constant(inputs), tf.constant(targets), hidden)
        total += float(loss) * len(inputs)
    return total / len(source)


_FLOAT32_MAX_LOG = math.log(float(np.finfo(np.float32).max))


def perplexity(loss: float) -> float:
    """exp(loss); infinite beyond float32's range (where TensorBoard's summaries end)."""
    return math.exp(loss) if loss < _FLOAT32_MAX_LOG else math.inf


class LanguageModelSteps(keras.Model):
    """What the recurrent runs' Keras models share: the `network` (an `RNNModel`) and the run's
    `config`, the hidden state carried from batch to batch in `hidden` (zeroed by `reset_hidden` at
    each epoch's start), the running mean of the training NLL (`train_loss`), and for a float16
    network (`config.precision` mixed_float16) the dynamic `loss_scale` its steps apply (else None).
    Subclasses write the `train_step`."""

    def __init__(self, network: RNNModel, config, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.config = config
        self.loss_scale = precision.DynamicLossScale() if config.precision == "mixed_float16" else None
        self.hidden = tf.Variable(network.init_hidden(config.batch_size), trainable=False, name="hidden")
        self.loss_tracker = keras.metrics.Mean(name="train_loss")
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker]

    def reset_hidden(self) -> None:
        """Zero hidden states, as at the start of each of the original's epochs."""
        self.hidden.assign(tf.zeros_like(self.hidden))

    def call(self, tokens, hidden, training=False):
        return self.network(tokens, hidden, training=training)


def weight_step(model: LanguageModelSteps, optimizer, inputs, targets, hidden, seed):
    """One step of `optimizer` on the network's weights (NLL + AR/TAR, gradients clipped to `config.clip`), the
    loss scaled under float16 (a step with a non-finite gradient is skipped); returns (raw NLL, next hidden state,
    whether the gradients were finite: None without a loss scale)."""
    network, config = model.network, model.config
    weights = network.weight_variables
    with tf.GradientTape() as tape:
        raw, loss, hidden = lm_training_loss(network, inputs, targets, hidden, seed, config.ar_alpha, config.tar_beta)
        scaled = precision.scaled_loss(loss, model.loss_scale)
    gradients, _ = clip_by_global_norm(gradients_of(tape, scaled, weights, model.loss_scale), config.clip)
    finite = precision.apply_gradients(optimizer, gradients, weights, model.loss_scale)
    return raw, tf.stop_gradient(hidden), finite


class LanguageModelEpochs(keras.callbacks.Callback):
    """The epochs of a recurrent run's model (`RecurrentSearch`, `LanguageModelTrainer`): zero hidden
    states and the clock of the epoch's `seconds` at its start; at its end the learning rate back
    at the config's (each step sets lr * seq_len / bptt)."""

    def __init__(self):
        super().__init__()
        self.started = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.model.reset_hidden()
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.model.learning_rate.assign(self.model.config.learning_rate)

    def seconds(self) -> float:
        return time.time() - self.started


class CorpusRunPlan(runs.RunPlan):
    """What the recurrent runs add to the lifecycle alike: one device, the corpus of `data_dir`,
    epochs of varying length, no schedule (each step sets its learning rate), the epoch clock,
    and the validation loss of the network with a traced evaluation step."""

    loss_flags = {"train_loss": "`learning_rate`"}

    def strategy(self):
        return tf.distribute.get_strategy()  # one device (the recurrent runs have no `strategy`)

    def load_data(self, source):
        if source is not None:
            raise ConfigError(f"a recurrent {self.what} reads its corpus from `data_dir`; it takes no `source`")
        self.corpus = load_corpus(self.config)
        return self.corpus

    def describe(self, corpus):
        return f"{corpus.description or self.config.data_dir}; vocabulary {len(corpus)} words"

    def steps_per_epoch(self, corpus):
        return None  # epochs differ in length

    def schedule(self, steps_per_epoch):
        return None

    def compiled(self, model: keras.Model) -> keras.Model:
        self.eval_step = None
        model.compile(optimizer=None, jit_compile=False)  # its optimizers are its own
        return model

    def callbacks(self, model, written, verbose):
        self.clock = LanguageModelEpochs()
        return [self.clock]

    def loss_of(self, network: RNNModel, ids: np.ndarray, batch_size: int) -> float:
        """`evaluate` of `network` on a text, with one traced evaluation step for the run."""
        self.eval_step = self.eval_step or make_eval_step(network)
        return evaluate(network, ids, batch_size, self.config.bptt, self.eval_step)

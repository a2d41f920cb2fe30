"""What the recurrent search and training runs share: data, steps over a text, perplexity, records.

Randomness is a pure function of (seed, epoch, step): the truncated-BPTT lengths of an
epoch come from NumPy's generator seeded by (seed, epoch), the dropout masks of a step
from the stateless seed (seed, epoch * 2**20 + step); so `--resume` continues exactly.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import tensorflow as tf

from darts_tf.rnn import data as text
from darts_tf.rnn.model import RNNModel, activation_regularization, nll, temporal_activation_regularization
from darts_tf.runs import DivergedError, MetricsCSV

_STEP_STRIDE = 2**20


def load_corpus(config) -> text.Corpus:
    return text.load_corpus(config.data_dir, config.train_portion)


def step_seed(seed: int, epoch: int, step: int) -> tf.Tensor:
    return tf.constant([seed, epoch * _STEP_STRIDE + step], tf.int32)


def epoch_lengths(config, epoch: int, rows: int, vary: bool) -> list[int]:
    """The epoch's sequence lengths (the original's draws; `max_steps` caps their number)."""
    rng = np.random.default_rng([config.seed, epoch])
    lengths = text.sequence_lengths(rng, rows, config.bptt, vary, getattr(config, "max_seq_len_delta", 20))
    return lengths[: config.max_steps] if config.max_steps else lengths


def train_epoch(
    config, epoch: int, train_data: np.ndarray, learning_rate, step, vary: bool, verbose: int = 0
) -> tuple[float, int]:
    """One epoch of truncated BPTT over `train_data`; returns (mean raw NLL, steps).

    For each of the epoch's sequence lengths the learning rate variable is set to
    lr * seq_len / bptt (the original's rescaling) and `step(i, inputs, targets, seed)`
    runs a step from row `i` and returns its raw NLL (a NaN/inf one stops the run).
    `verbose` as Keras's: 1 a progress bar, 2 a line at every tenth of the epoch.
    """
    lengths = epoch_lengths(config, epoch, len(train_data), vary)
    progress = StepProgress(epoch, len(lengths), verbose)
    total, count, i = 0.0, 0, 0
    for index, seq_len in enumerate(lengths):
        inputs, targets = text.get_batch(train_data, i, seq_len)
        learning_rate.assign(config.learning_rate * len(inputs) / config.bptt)
        raw = float(step(i, inputs, targets, step_seed(config.seed, epoch, index)))
        check_finite(raw, f"training loss at epoch {epoch + 1}, step {index + 1}", "`learning_rate`")
        total, count, i = total + raw, count + 1, i + seq_len
        progress.update(count, total / count)
    learning_rate.assign(config.learning_rate)
    return total / max(count, 1), count


class StepProgress:
    """Progress within an epoch: Keras's bar on a terminal (`verbose=1`), or plain lines at every tenth (2)."""

    def __init__(self, epoch: int, steps: int, verbose: int):
        self.epoch = epoch
        self.steps = steps
        self.verbose = verbose
        self.started = time.time()
        self.bar = None
        if verbose == 1:
            import keras

            self.bar = keras.utils.Progbar(steps, stateful_metrics=["train_ppl"], unit_name="step")

    def update(self, done: int, mean_loss: float) -> None:
        if self.bar is not None:
            self.bar.update(done, [("train_ppl", perplexity(mean_loss))])
        elif self.verbose == 2 and (done == self.steps or done * 10 // self.steps > (done - 1) * 10 // self.steps):
            print(
                f"epoch {self.epoch + 1}: step {done}/{self.steps}, train ppl {perplexity(mean_loss):.2f} "
                f"({time.time() - self.started:.0f} s)",
                flush=True,
            )


def lm_training_loss(model: RNNModel, inputs, targets, hidden, seed, ar_alpha: float, tar_beta: float):
    """(raw NLL, loss with AR/TAR, next hidden state): the weight step's objective, as the original's train()."""
    out = model(inputs, hidden, training=True, seed=seed)
    raw = nll(out["log_probs"], targets)
    loss = raw + temporal_activation_regularization(out["raw_outputs"], tar_beta)
    if ar_alpha:
        loss = loss + activation_regularization(out["outputs"], ar_alpha)
    return raw, loss, out["hidden"]


def make_eval_step(model: RNNModel):
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec, tf.TensorSpec([None, model.nhid], model.compute_dtype)])
    def step(inputs, targets, hidden):
        out = model(inputs, hidden, training=False)
        return nll(out["log_probs"], targets), out["hidden"]

    return step


def evaluate(model: RNNModel, ids: np.ndarray, batch_size: int, bptt: int, eval_step=None) -> float:
    """Mean NLL over a text as the original's evaluate(): batches of `bptt`, hidden state carried,
    the sum of loss * length divided by the number of rows."""
    source = text.batchify(ids, batch_size)
    step = eval_step or make_eval_step(model)
    hidden = model.init_hidden(batch_size)
    total = 0.0
    for i in range(0, len(source) - 1, bptt):
        inputs, targets = text.get_batch(source, i, bptt)
        loss, hidden = step(tf.constant(inputs), tf.constant(targets), hidden)
        total += float(loss) * len(inputs)
    return total / len(source)


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700.0 else math.inf


def check_finite(loss: float, what: str, flag: str) -> None:
    """`DivergedError` (one line) when a loss is NaN or infinite."""
    if not math.isfinite(loss):
        raise DivergedError(
            f"the {what} became {loss}; lower {flag} (the run folder keeps the last epoch's checkpoint)"
        )


def record_epoch_metrics(run_dir: str, epoch: int, row: dict, writer) -> None:
    """A metrics.csv row and TensorBoard scalars of `epoch` (1-based)."""
    MetricsCSV(os.path.join(run_dir, "metrics.csv")).on_epoch_end(epoch - 1, row)
    with writer.as_default():
        for name, value in row.items():
            tf.summary.scalar(name, min(value, 3e38), step=epoch)  # float32 summaries
    writer.flush()


class Timer:
    def __init__(self):
        self.started = time.time()

    def seconds(self) -> float:
        return time.time() - self.started

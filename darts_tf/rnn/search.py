"""The recurrent DARTS search run (the original's rnn/train_search.py), on a word corpus.

Per step, as the original: the architecture step on a batch of the search split (the
validation text; first or second order, `darts_tf.rnn.architect`) with its own carried
hidden state, then the weight step on the training batch (NLL + TAR, gradients clipped
to 0.25, SGD with coupled weight decay at lr * seq_len / bptt): `RecurrentSearch`'s
`train_step`. The run is `darts_tf.runs.execute` with `RecurrentSearchPlan`: after each
epoch the validation perplexity (batch 10), the derived genotype and alphas, metrics.csv,
TensorBoard and an atomic checkpoint.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from darts_tf import precision, runs, visualize
from darts_tf.config import RNNSearchConfig, check_rnn_config
from darts_tf.data import corpus as text
from darts_tf.optimizers import SGD, Adam
from darts_tf.rnn import architect, lm
from darts_tf.rnn.genotypes import RecurrentGenotype, format_alphas
from darts_tf.rnn.model import RNNModel
from darts_tf.seeding import initializer_seed


def build_search_model(config: RNNSearchConfig, ntoken: int) -> RNNModel:
    with initializer_seed(config.seed):
        model = RNNModel(
            ntoken, config.emsize, config.nhid, config.dropout, config.dropouth, config.dropoutx, config.dropouti,
            config.dropoute, genotype=None, dtype=precision.dtype_policy(config.precision),
        )  # fmt: skip
        model.build()
    return model


class RecurrentSearch(lm.LanguageModelSteps):
    """Bilevel search of a recurrent cell (arXiv:1806.09055, Sec. 3.1.2; the original's rnn/train_search.py).

    A step, on ((inputs, targets, seed), (val_inputs, val_targets)) of `lm.epoch_batches`:
    the architecture step on the validation batch (first or second order,
    `darts_tf.rnn.architect`), then the weight step on the training batch (NLL + TAR,
    gradients clipped to `config.clip`, SGD with coupled weight decay at lr * seq_len / bptt).
    The two hidden states are carried from step to step in the model (`reset_hidden` at each
    epoch's start); `step` is the same on explicit states. Under `mixed_float16` both
    gradients are of the scaled loss (the second-order one runs in float32) and a step with a
    non-finite gradient moves nothing (`darts_tf.precision`).
    """

    def __init__(self, network: RNNModel, config: RNNSearchConfig, **kwargs):
        super().__init__(network, config, **kwargs)
        self.w_optimizer = SGD(config.learning_rate, momentum=0.0, coupled_weight_decay=config.weight_decay)
        # The original's architect: torch.optim.Adam(lr=arch_lr, weight_decay=arch_wdecay), default betas.
        self.alpha_optimizer = Adam(
            config.arch_learning_rate, beta_1=0.9, beta_2=0.999, coupled_weight_decay=config.arch_weight_decay
        )
        self.w_optimizer.build(network.weight_variables)
        self.alpha_optimizer.build(network.arch_variables)
        self.val_hidden = tf.Variable(network.init_hidden(config.batch_size), trainable=False, name="val_hidden")

    @property
    def learning_rate(self) -> tf.Variable:
        """The weight optimizer's learning rate (a step sets it to lr * seq_len / bptt)."""
        return self.w_optimizer.learning_rate

    def reset_hidden(self) -> None:
        super().reset_hidden()
        self.val_hidden.assign(tf.zeros_like(self.val_hidden))

    def step(self, inputs, targets, hidden, val_inputs, val_targets, val_hidden, seed):
        """One search step from explicit hidden states; returns (raw NLL, next hidden, next validation hidden)."""
        network, config = self.network, self.config
        fold = lambda k: tf.random.experimental.stateless_fold_in(seed, k)  # noqa: E731
        eta = self.w_optimizer.learning_rate
        if config.unrolled:
            grads, _, val_hidden = architect.second_order_arch_gradients(
                network, (inputs, targets, hidden), (val_inputs, val_targets, val_hidden), eta=eta,
                weight_decay=config.weight_decay, clip=config.clip, seed=fold(0), virtual_step=config.virtual_step,
            )  # fmt: skip
        else:
            grads, _, val_hidden = architect.first_order_arch_gradients(
                network, (val_inputs, val_targets, val_hidden), seed=fold(0), loss_scale=self.loss_scale
            )
        alphas_finite = precision.apply_gradients(self.alpha_optimizer, grads, network.arch_variables, self.loss_scale)
        raw, hidden, weights_finite = lm.weight_step(self, self.w_optimizer, inputs, targets, hidden, fold(1))
        if self.loss_scale is not None:
            self.loss_scale.update(alphas_finite & weights_finite)
        return raw, hidden, val_hidden

    def train_step(self, batch):
        (inputs, targets, seed), (val_inputs, val_targets) = batch
        self.w_optimizer.learning_rate.assign(
            lm.scaled_learning_rate(self.config.learning_rate, inputs, self.config.bptt)
        )
        raw, hidden, val_hidden = self.step(
            inputs, targets, self.hidden.value(), val_inputs, val_targets, self.val_hidden.value(), seed
        )
        self.hidden.assign(hidden)
        self.val_hidden.assign(val_hidden)
        self.loss_tracker.update_state(raw)
        return {"train_loss": self.loss_tracker.result()}


class RecurrentSearchPlan(lm.CorpusRunPlan):
    """A recurrent search's part of the run lifecycle (`darts_tf.runs.execute`): the corpus, epochs of
    the original's sequence lengths, the validation perplexity and the genotype after each epoch."""

    what = "search"

    def build(self, corpus, schedule):
        return self.compiled(RecurrentSearch(build_search_model(self.config, len(corpus)), self.config))

    def optimizers(self, model):
        return {"w_optimizer": model.w_optimizer, "alpha_optimizer": model.alpha_optimizer}

    def first_files(self, run_dir, corpus, model):
        _record_arch(model.network, dataclasses.replace(self.config, run_dir=run_dir), 0)

    def batches(self, corpus, first_epoch, steps_per_epoch):
        config = self.config
        train_data = text.batchify(corpus.train, config.batch_size)
        search_data = text.batchify(corpus.valid, config.batch_size)  # the architecture's batches
        return lambda epoch: lm.epoch_batches(config, epoch, train_data, False, search_data)

    def end_epoch(self, model, written, epoch, logs, verbose):
        """The validation perplexity, the epoch's genotype and alphas (`logs` gains the perplexities and seconds)."""
        config = self.config
        val_loss = self.loss_of(model.network, self.corpus.valid, config.eval_batch_size)
        logs.update(train_ppl=lm.perplexity(logs["train_loss"]), val_loss=val_loss, val_ppl=lm.perplexity(val_loss),
                    seconds=self.clock.seconds())  # fmt: skip
        genotype = _record_arch(model.network, written, epoch)
        genotype.save(os.path.join(written.run_dir, "genotype.json"))
        if verbose:
            print(f"epoch {epoch}: train ppl {logs['train_ppl']:.2f}, valid ppl {logs['val_ppl']:.2f} "
                  f"({logs['seconds']:.0f} s)", flush=True)  # fmt: skip
            print(f"genotype = {genotype.to_json()}", flush=True)
            if verbose > 1:
                print(format_alphas(model.network.alphas.numpy(), model.network.steps))
        return {"genotype": genotype.to_dict()}

    def finish(self, model, corpus, written, chief):
        return {"genotype": RecurrentGenotype.load(os.path.join(written.run_dir, "genotype.json"))}


def run_rnn_search(
    config: RNNSearchConfig, resume: bool = False, overwrite: bool = False, verbose: int = 1, callbacks=()
) -> dict:
    """Runs (or resumes) a recurrent search; returns {"genotype", "history", "seconds", "config", "first_epoch"}.

    Writes the run folder; `callbacks` (Keras callbacks) run after the run's own, once an epoch
    is recorded. The lifecycle is `darts_tf.runs.execute`'s.
    """
    check_rnn_config(config)
    return runs.execute(RecurrentSearchPlan(config), resume, overwrite, verbose, callbacks)


def _record_arch(model: RNNModel, config: RNNSearchConfig, epoch: int) -> RecurrentGenotype:
    """The alphas after `epoch` (0: the initial ones) and their genotype, in the run folder and TensorBoard."""
    genotype = model.genotype_of_alphas()
    alphas = np.asarray(model.alphas)
    genotype.save(os.path.join(config.run_dir, f"genotype_epoch_{epoch:03d}.json"))
    runs.save_npz_atomic(os.path.join(config.run_dir, f"alphas_epoch_{epoch:03d}.npz"), alphas=alphas)
    visualize.write_recurrent_search_summaries(os.path.join(config.run_dir, "tensorboard", "search"), epoch, alphas,
                                               genotype)  # fmt: skip
    return genotype

"""The recurrent DARTS search run (the original's rnn/train_search.py), on a word corpus.

Per step, as the original: the architecture step on a batch of the search split (the
validation text; first or second order, `darts_tf.rnn.architect`) with its own carried
hidden state, then the weight step on the training batch (NLL + TAR, gradients clipped
to 0.25, SGD with coupled weight decay at lr * seq_len / bptt). After each epoch: the
validation perplexity (batch 10), the derived genotype and alphas, metrics.csv,
TensorBoard and an atomic checkpoint.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from darts_tf import runs, visualize
from darts_tf.architect import dense_gradients
from darts_tf.config import RNNSearchConfig, check_rnn_config
from darts_tf.optimizers import SGD, Adam, clip_by_global_norm
from darts_tf.rnn import architect, lm
from darts_tf.rnn import data as text
from darts_tf.rnn.genotypes import RecurrentGenotype, format_alphas
from darts_tf.rnn.model import RNNModel
from darts_tf.seeding import initializer_seed


def build_search_model(config: RNNSearchConfig, ntoken: int) -> RNNModel:
    with initializer_seed(config.seed):
        model = RNNModel(
            ntoken, config.emsize, config.nhid, config.dropout, config.dropouth, config.dropoutx, config.dropouti,
            config.dropoute, genotype=None,
        )  # fmt: skip
        model.build()
    return model


class RecurrentSearch:
    """The compiled search step of a recurrent search model: architecture step, then weight step."""

    def __init__(self, model: RNNModel, config: RNNSearchConfig):
        self.model = model
        self.config = config
        self.w_optimizer = SGD(config.learning_rate, momentum=0.0, coupled_weight_decay=config.weight_decay)
        # The original's architect: torch.optim.Adam(lr=arch_lr, weight_decay=arch_wdecay), default betas.
        self.alpha_optimizer = Adam(
            config.arch_learning_rate, beta_1=0.9, beta_2=0.999, coupled_weight_decay=config.arch_weight_decay
        )
        self.w_optimizer.build(model.weight_variables)
        self.alpha_optimizer.build(model.arch_variables)
        tokens = tf.TensorSpec([None, None], tf.int32)
        hidden = tf.TensorSpec([None, model.nhid], model.compute_dtype)
        self.step = tf.function(
            self._step, input_signature=[tokens, tokens, hidden, tokens, tokens, hidden, tf.TensorSpec([2], tf.int32)]
        )

    def _step(self, inputs, targets, hidden, val_inputs, val_targets, val_hidden, seed):
        model, config = self.model, self.config
        fold = lambda k: tf.random.experimental.stateless_fold_in(seed, k)  # noqa: E731
        eta = self.w_optimizer.learning_rate
        if config.unrolled:
            grads, _, val_hidden = architect.second_order_arch_gradients(
                model, (inputs, targets, hidden), (val_inputs, val_targets, val_hidden), eta=eta,
                weight_decay=config.weight_decay, clip=config.clip, seed=fold(0), virtual_step=config.virtual_step,
            )  # fmt: skip
        else:
            grads, _, val_hidden = architect.first_order_arch_gradients(
                model, (val_inputs, val_targets, val_hidden), seed=fold(0)
            )
        self.alpha_optimizer.apply(grads, model.arch_variables)
        weights = model.weight_variables
        with tf.GradientTape() as tape:
            raw, loss, hidden = lm.lm_training_loss(
                model, inputs, targets, hidden, fold(1), config.ar_alpha, config.tar_beta
            )
        gradients, _ = clip_by_global_norm(dense_gradients(tape.gradient(loss, weights), weights), config.clip)
        self.w_optimizer.apply(gradients, weights)
        return raw, tf.stop_gradient(hidden), val_hidden


def run_rnn_search(
    config: RNNSearchConfig, resume: bool = False, overwrite: bool = False, verbose: int = 1, on_epoch_end=()
) -> dict:
    """Runs (or resumes) a recurrent search; returns {"genotype", "history", "seconds", "config", "first_epoch"}.

    `on_epoch_end`: callables (epoch) run after an epoch is fully recorded.
    """
    timer = lm.Timer()
    check_rnn_config(config)
    config = runs.begin_run(config, resume, overwrite)
    corpus = lm.load_corpus(config)
    if verbose:
        print(f"data: {corpus.description or config.data_dir}; vocabulary {len(corpus)} words", flush=True)
    train_data = text.batchify(corpus.train, config.batch_size)
    search_data = text.batchify(corpus.valid, config.batch_size)  # the architecture's batches
    model = build_search_model(config, len(corpus))
    search = RecurrentSearch(model, config)
    first_epoch = 0
    if resume:
        first_epoch = runs.resume_epoch(
            config.run_dir, "search", model, w_optimizer=search.w_optimizer, alpha_optimizer=search.alpha_optimizer
        )
    else:
        runs.write_json_atomic(os.path.join(config.run_dir, "config.json"), dataclasses.asdict(config))
        _record_arch(model, config, 0)
    writer = tf.summary.create_file_writer(os.path.join(config.run_dir, "tensorboard"))
    eval_step = lm.make_eval_step(model)
    history = {"train_loss": [], "val_loss": [], "val_ppl": []}
    for epoch in range(first_epoch, config.epochs):
        epoch_timer = lm.Timer()
        carried = {"train": model.init_hidden(config.batch_size), "val": model.init_hidden(config.batch_size)}

        def step(i, inputs, targets, seed, carried=carried):
            val_inputs, val_targets = text.get_batch(search_data, i % (len(search_data) - 1), config.bptt)
            raw, carried["train"], carried["val"] = search.step(
                inputs, targets, carried["train"], val_inputs, val_targets, carried["val"], seed
            )
            return raw

        train_loss, count = lm.train_epoch(
            config, epoch, train_data, search.w_optimizer.learning_rate, step, False, verbose=verbose
        )
        val_loss = lm.evaluate(model, corpus.valid, config.eval_batch_size, config.bptt, eval_step)
        genotype = _record_arch(model, config, epoch + 1)
        genotype.save(os.path.join(config.run_dir, "genotype.json"))
        state = {"epoch": epoch + 1, "finished": epoch + 1 >= config.epochs, "genotype": genotype.to_dict()}
        runs.save_checkpoint(
            config.run_dir, model, state, w_optimizer=search.w_optimizer, alpha_optimizer=search.alpha_optimizer
        )
        row = {"train_loss": train_loss, "train_ppl": lm.perplexity(train_loss),
               "val_loss": val_loss, "val_ppl": lm.perplexity(val_loss), "seconds": epoch_timer.seconds()}  # fmt: skip
        lm.record_epoch_metrics(config.run_dir, epoch + 1, row, writer)
        for key in history:
            history[key].append(row[key])
        if verbose:
            print(f"epoch {epoch + 1}: {count} steps, train ppl {row['train_ppl']:.2f}, valid ppl "
                  f"{row['val_ppl']:.2f} ({row['seconds']:.0f} s)", flush=True)  # fmt: skip
            print(f"genotype = {genotype.to_json()}", flush=True)
            if verbose > 1:
                print(format_alphas(model.alphas.numpy(), model.steps))
        for callback in on_epoch_end:
            callback(epoch + 1)
    genotype = RecurrentGenotype.load(os.path.join(config.run_dir, "genotype.json"))
    return {"genotype": genotype, "history": history, "seconds": timer.seconds(), "config": config,
            "first_epoch": first_epoch}  # fmt: skip


def _record_arch(model: RNNModel, config: RNNSearchConfig, epoch: int) -> RecurrentGenotype:
    """The alphas after `epoch` (0: the initial ones) and their genotype, in the run folder and TensorBoard."""
    genotype = model.genotype_of_alphas()
    alphas = np.asarray(model.alphas)
    genotype.save(os.path.join(config.run_dir, f"genotype_epoch_{epoch:03d}.json"))
    runs.save_npz_atomic(os.path.join(config.run_dir, f"alphas_epoch_{epoch:03d}.npz"), alphas=alphas)
    visualize.write_recurrent_search_summaries(os.path.join(config.run_dir, "tensorboard", "search"), epoch, alphas,
                                               genotype)  # fmt: skip
    return genotype

"""Training a recurrent cell's language model (the original's rnn/train.py) and its test perplexity.

SGD (lr 20, coupled weight decay, gradients clipped to 0.25, lr scaled by seq_len / bptt
with the original's random sequence lengths) switches to averaged SGD once the validation
loss is worse than the best of all but the last `nonmono` epochs; from then on the
validation loss, the best model and the export use the averaged weights. The best model
(by validation loss) is kept in `best/`; at the end its test perplexity is computed at
batch size 1, as the original's final number, and it is exported as a SavedModel.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from darts_tf import runs
from darts_tf.architect import dense_gradients
from darts_tf.checkpoint import make_checkpoint, restore, write_atomic
from darts_tf.config import RNNTrainConfig, check_rnn_config
from darts_tf.optimizers import SGD, AveragedSGD, clip_by_global_norm
from darts_tf.rnn import data as text
from darts_tf.rnn import lm
from darts_tf.rnn.genotypes import get_genotype
from darts_tf.rnn.model import RNNModel
from darts_tf.seeding import initializer_seed

BEST_DIR = "best"


def build_model(config: RNNTrainConfig, ntoken: int) -> RNNModel:
    with initializer_seed(config.seed):
        model = RNNModel(
            ntoken, config.emsize, config.nhid, config.dropout, config.dropouth, config.dropoutx, config.dropouti,
            config.dropoute, genotype=get_genotype(config.arch),
        )  # fmt: skip
        model.build()
    return model


class LanguageModelTrainer:
    """The weight step under SGD or, after the switch, averaged SGD (one traced step each)."""

    def __init__(self, model: RNNModel, config: RNNTrainConfig):
        self.model, self.config = model, config
        self.sgd = SGD(config.learning_rate, momentum=0.0, coupled_weight_decay=config.weight_decay)
        self.sgd.build(model.trainable_variables)
        self.asgd = AveragedSGD(config.learning_rate, coupled_weight_decay=config.weight_decay)
        self.asgd.build(model.trainable_variables)
        self.averaging = False
        tokens = tf.TensorSpec([None, None], tf.int32)
        signature = [
            tokens,
            tokens,
            tf.TensorSpec([None, model.nhid], model.compute_dtype),
            tf.TensorSpec([2], tf.int32),
        ]
        self._steps = {flag: tf.function(lambda *a, f=flag: self._step(*a, f), input_signature=signature)
                       for flag in (False, True)}  # fmt: skip

    @property
    def learning_rate(self):
        return self.asgd.learning_rate if self.averaging else self.sgd.learning_rate

    def _step(self, inputs, targets, hidden, seed, averaging):
        weights = self.model.trainable_variables
        with tf.GradientTape() as tape:
            raw, loss, hidden = lm.lm_training_loss(
                self.model, inputs, targets, hidden, seed, self.config.ar_alpha, self.config.tar_beta
            )
        gradients, _ = clip_by_global_norm(dense_gradients(tape.gradient(loss, weights), weights), self.config.clip)
        (self.asgd if averaging else self.sgd).apply(gradients, weights)
        return raw, tf.stop_gradient(hidden)

    def step(self, *args):
        return self._steps[self.averaging](*args)

    def swap_in_averages(self) -> list:
        """Puts the averaged weights in the model; returns the current ones (to put back)."""
        current = [np.array(v.numpy()) for v in self.model.trainable_variables]
        for variable, average in zip(self.model.trainable_variables, self.asgd.averages):
            variable.assign(average)
        return current

    def put_back(self, current: list) -> None:
        for variable, value in zip(self.model.trainable_variables, current):
            variable.assign(value)


def should_average(history: list, val_loss: float, nonmono: int) -> bool:
    """The original's switch to averaged SGD: more than `nonmono` SGD epochs recorded and `val_loss`
    worse than the best of all but the last `nonmono` of them."""
    return len(history) > nonmono and val_loss > min(history[: len(history) - nonmono])


def _save_best(model: RNNModel, run_dir: str, state: dict) -> None:
    write_atomic(make_checkpoint(model), os.path.join(run_dir, BEST_DIR), json_files={"state.json": state})


def load_best(model: RNNModel, run_dir: str) -> dict:
    restore(make_checkpoint(model), os.path.join(run_dir, BEST_DIR, "ckpt"))
    return runs.read_json(os.path.join(run_dir, BEST_DIR, "state.json"))


def run_rnn_training(
    config: RNNTrainConfig, resume: bool = False, overwrite: bool = False, verbose: int = 1, on_epoch_end=()
) -> dict:
    """Trains (or resumes); returns {"valid_ppl", "test_ppl", "history", "export_path", "seconds", "config"}."""
    timer = lm.Timer()
    check_rnn_config(config)
    genotype = get_genotype(config.arch)  # a bad --arch fails before the run folder is touched
    config = runs.begin_run(config, resume, overwrite)
    corpus = lm.load_corpus(config)
    if verbose:
        print(f"data: {corpus.description or config.data_dir}; vocabulary {len(corpus)} words", flush=True)
    train_data = text.batchify(corpus.train, config.batch_size)
    model = build_model(config, len(corpus))
    trainer = LanguageModelTrainer(model, config)
    optimizers = {"sgd": trainer.sgd, "asgd": trainer.asgd}
    state = {"epoch": 0, "best_val_loss": [], "stored_loss": None, "averaging": False}
    if resume:
        state = runs.resume_state(config.run_dir, "training", model, **optimizers)
        trainer.averaging = state["averaging"]
    else:
        runs.write_json_atomic(os.path.join(config.run_dir, "config.json"), dataclasses.asdict(config))
        genotype.save(os.path.join(config.run_dir, "genotype.json"))
    writer = tf.summary.create_file_writer(os.path.join(config.run_dir, "tensorboard"))
    eval_step = lm.make_eval_step(model)
    for epoch in range(state["epoch"], config.epochs):
        epoch_timer = lm.Timer()
        carried = {"hidden": model.init_hidden(config.batch_size)}

        def step(i, inputs, targets, seed, carried=carried):
            raw, carried["hidden"] = trainer.step(inputs, targets, carried["hidden"], seed)
            return raw

        train_loss, count = lm.train_epoch(
            config, epoch, train_data, trainer.learning_rate, step, True, verbose=verbose
        )
        current = trainer.swap_in_averages() if trainer.averaging else None
        val_loss = lm.evaluate(model, corpus.valid, config.eval_batch_size, config.bptt, eval_step)
        improved = state["stored_loss"] is None or val_loss < state["stored_loss"]
        if improved:
            state["stored_loss"] = val_loss
            _save_best(model, config.run_dir, {"epoch": epoch + 1, "val_loss": val_loss, "averaged": trainer.averaging})
        if current is not None:
            trainer.put_back(current)
        history = state["best_val_loss"]
        switch = not trainer.averaging and should_average(history, val_loss, config.nonmono)
        if not trainer.averaging:
            history.append(val_loss)
        if switch:  # the original starts ASGD afresh (its averages from the next step on)
            trainer.averaging = True
        state.update(epoch=epoch + 1, averaging=trainer.averaging, finished=epoch + 1 >= config.epochs)
        runs.save_checkpoint(config.run_dir, model, dict(state), **optimizers)
        row = {"train_loss": train_loss, "train_ppl": lm.perplexity(train_loss),
               "val_loss": val_loss, "val_ppl": lm.perplexity(val_loss), "averaged": float(bool(current)),
               "lr": config.learning_rate, "seconds": epoch_timer.seconds()}  # fmt: skip
        lm.record_epoch_metrics(config.run_dir, epoch + 1, row, writer)
        if verbose:
            note = " (averaged weights)" if current is not None else ""
            mark = " *" if improved else ""
            print(f"epoch {epoch + 1}: {count} steps, train ppl {row['train_ppl']:.2f}, valid ppl "
                  f"{row['val_ppl']:.2f}{note}{mark} ({row['seconds']:.0f} s)", flush=True)  # fmt: skip
            if switch:
                print(f"switching to averaged SGD (no improvement on the best of {config.nonmono} epochs ago)")
        for callback in on_epoch_end:
            callback(epoch + 1)
    best = load_best(model, config.run_dir)
    test_loss = lm.evaluate(model, corpus.test, config.test_batch_size, config.bptt, eval_step)
    valid_loss = best["val_loss"]
    runs.write_json_atomic(
        os.path.join(config.run_dir, "results.json"),
        {"best_epoch": best["epoch"], "valid_ppl": lm.perplexity(valid_loss), "test_ppl": lm.perplexity(test_loss),
         "test_batch_size": config.test_batch_size, "vocabulary": len(corpus)},
    )  # fmt: skip
    export_path = None
    if config.export:
        from darts_tf.rnn.export import export_language_model

        name = config.export_name or (config.arch.lower() if config.arch in ("DARTS_V1", "DARTS_V2") else "darts_rnn")
        export_path = export_language_model(model, corpus.words, os.path.join(config.export_dir, name))
    if verbose:
        print(f"best epoch {best['epoch']}: valid ppl {lm.perplexity(valid_loss):.2f}; "
              f"test ppl {lm.perplexity(test_loss):.2f} (batch {config.test_batch_size})", flush=True)  # fmt: skip
    return {"valid_ppl": lm.perplexity(valid_loss), "test_ppl": lm.perplexity(test_loss), "export_path": export_path,
            "seconds": timer.seconds(), "config": config, "best_epoch": best["epoch"]}  # fmt: skip

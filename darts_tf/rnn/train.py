"""Training a recurrent cell's language model (the original's rnn/train.py) and its test perplexity.

SGD (lr 20, coupled weight decay, gradients clipped to 0.25, lr scaled by seq_len / bptt
with the original's random sequence lengths) switches to averaged SGD once the validation
loss is worse than the best of all but the last `nonmono` epochs; from then on the
validation loss, the best model and the export use the averaged weights. The best model
(by validation loss) is kept in `best/`; at the end its test perplexity is computed at
batch size 1, as the original's final number, and it is exported as a SavedModel.
The run is `darts_tf.runs.execute` with `LanguageModelPlan`; the step is
`LanguageModelTrainer`'s `train_step`.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from darts_tf import precision, runs
from darts_tf.checkpoint import make_checkpoint, restore, write_atomic
from darts_tf.config import RNNTrainConfig, check_rnn_config, config_from_dict
from darts_tf.data import corpus as text
from darts_tf.errors import ConfigError, RunDirError
from darts_tf.optimizers import SGD, AveragedSGD
from darts_tf.rnn import lm
from darts_tf.rnn.genotypes import get_genotype
from darts_tf.rnn.model import RNNModel
from darts_tf.seeding import initializer_seed

BEST_DIR = "best"


def build_model(config: RNNTrainConfig, ntoken: int) -> RNNModel:
    with initializer_seed(config.seed):
        model = RNNModel(
            ntoken, config.emsize, config.nhid, config.dropout, config.dropouth, config.dropoutx, config.dropouti,
            config.dropoute, genotype=get_genotype(config.arch), dtype=precision.dtype_policy(config.precision),
        )  # fmt: skip
        model.build()
    return model


class LanguageModelTrainer(lm.LanguageModelSteps):
    """The weight step of a recurrent cell's language model (the original's rnn/train.py), under SGD
    or, once `averaging` is set, averaged SGD (each its own traced step: `step_variant`).

    A step, on (inputs, targets, seed) of `lm.epoch_batches`: NLL + AR/TAR, gradients clipped to
    `config.clip`, the optimizer's learning rate at lr * seq_len / bptt; the hidden state is
    carried in the model from step to step (`reset_hidden` at each epoch's start). Under
    `mixed_float16` the loss is scaled and a step with a non-finite gradient moves nothing.
    """

    def __init__(self, network: RNNModel, config: RNNTrainConfig, **kwargs):
        super().__init__(network, config, **kwargs)
        self.sgd = SGD(config.learning_rate, momentum=0.0, coupled_weight_decay=config.weight_decay)
        self.sgd.build(network.trainable_variables)
        self.asgd = AveragedSGD(config.learning_rate, coupled_weight_decay=config.weight_decay)
        self.asgd.build(network.trainable_variables)
        self.averaging = False  # a Python switch: each value has its own traced step

    @property
    def step_variant(self) -> bool:
        return bool(self.averaging)

    @property
    def learning_rate(self) -> tf.Variable:
        """The active optimizer's learning rate (a step sets it to lr * seq_len / bptt)."""
        return self.asgd.learning_rate if self.averaging else self.sgd.learning_rate

    def step(self, inputs, targets, hidden, seed):
        """One weight step from an explicit hidden state; returns (raw NLL, next hidden)."""
        raw, hidden, finite = lm.weight_step(self, self.asgd if self.averaging else self.sgd, inputs, targets,
                                             hidden, seed)  # fmt: skip
        if self.loss_scale is not None:
            self.loss_scale.update(finite)
        return raw, hidden

    def train_step(self, batch):
        inputs, targets, seed = batch
        self.learning_rate.assign(lm.scaled_learning_rate(self.config.learning_rate, inputs, self.config.bptt))
        raw, hidden = self.step(inputs, targets, self.hidden.value(), seed)
        self.hidden.assign(hidden)
        self.loss_tracker.update_state(raw)
        return {"train_loss": self.loss_tracker.result()}

    def swap_in_averages(self) -> list:
        """Puts the averaged weights in the network; returns the current ones (to put back)."""
        current = [np.array(v.numpy()) for v in self.network.trainable_variables]
        for variable, average in zip(self.network.trainable_variables, self.asgd.averages):
            variable.assign(average)
        return current

    def put_back(self, current: list) -> None:
        for variable, value in zip(self.network.trainable_variables, current):
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


def is_language_run(run_dir: str) -> bool:
    """True for a folder holding a recurrent run's config.json (`darts-tf train-rnn` or `search-rnn`)."""
    try:
        config = runs.read_json(os.path.join(run_dir, "config.json"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "emsize" in config and "bptt" in config


def evaluate_language_run(run_dir: str, data_dir: str | None = None, batch_size: int | None = None) -> dict:
    """The test perplexity of a recurrent training run's best model (`best/`), as its results.json reports it
    (its corpus, at its `test_batch_size`); `data_dir`: the test text of another corpus folder, read in the run's
    vocabulary (unknown words as `<unk>`); `batch_size`: another batch.

    Returns {"words", "loss", "perplexity", "batch_size", "test_file", "best_epoch"}.
    """
    config, corpus, model, best = _best_of_run(run_dir)
    ids, test_file = corpus.test, text.find_split(config.data_dir, "test")
    if data_dir is not None:
        ids, test_file = text.split_ids(data_dir, "test", {word: i for i, word in enumerate(corpus.words)})
    batch = batch_size or config.test_batch_size
    if batch <= 0:
        raise ConfigError(f"`batch_size` must be positive. Received: {batch}")
    loss = lm.evaluate(model, ids, batch, config.bptt)
    return {"words": len(ids) // batch * batch, "loss": loss, "perplexity": lm.perplexity(loss), "batch_size": batch,
            "test_file": test_file, "best_epoch": best["epoch"]}  # fmt: skip


def export_language_run(
    run_dir: str, export_dir: str | None = None, name: str | None = None, version: int | None = None,
    overwrite: bool = False,
) -> str:  # fmt: skip
    """Exports a recurrent training run's best model, as `darts-tf train-rnn` does at its end (for a run trained
    with `--no-export`, or another version): `export_dir/name/version` (the run's export folder and name, the next
    free version by default). Returns the path."""
    from darts_tf.rnn.export import export_language_model

    config, corpus, model, _ = _best_of_run(run_dir)
    base = os.path.join(export_dir or config.export_dir, name or export_name(config))
    return export_language_model(model, corpus.words, base, version=version, overwrite=overwrite)


def export_name(config: RNNTrainConfig) -> str:
    """The SavedModel's name: `export_name`, else the published cell's (darts_v1, darts_v2), else darts_rnn."""
    default = config.arch.lower() if config.arch in ("DARTS_V1", "DARTS_V2") else "darts_rnn"
    return config.export_name or default


def _best_of_run(run_dir: str):
    """(config, corpus, network with the best weights, the best model's state) of a recurrent training run."""
    try:
        values = runs.read_json(os.path.join(run_dir, "config.json"))
    except (OSError, ValueError) as error:
        raise RunDirError(f"{run_dir!r} holds no readable config.json ({error})") from None
    if "nonmono" not in values:
        raise RunDirError(
            f"{run_dir!r} is a recurrent search: train its cell (darts-tf train-rnn --arch "
            f"{os.path.join(run_dir, 'genotype.json')}) and use that run"
        )
    config = config_from_dict(RNNTrainConfig, values, run_dir=run_dir)
    if not os.path.isdir(os.path.join(run_dir, BEST_DIR)):
        raise RunDirError(f"{run_dir!r} has no best model yet ({BEST_DIR}/ is written after the first epoch)")
    corpus = lm.load_corpus(config)  # the run's vocabulary
    model = build_model(config, len(corpus))
    best = load_best(model, run_dir)
    return config, corpus, model, best


class LanguageModelPlan(lm.CorpusRunPlan):
    """A recurrent training's part of the run lifecycle (`darts_tf.runs.execute`): after each epoch
    the validation loss (of the averaged weights once averaging), the best model kept in `best/`,
    the switch to averaged SGD; at the end the best model's test perplexity and its export."""

    what = "training"

    def prepare(self, resume):
        self.genotype = get_genotype(self.config.arch)
        self.state = {"best_val_loss": [], "stored_loss": None, "averaging": False}

    def build(self, corpus, schedule):
        return self.compiled(LanguageModelTrainer(build_model(self.config, len(corpus)), self.config))

    def optimizers(self, model):
        return {"sgd": model.sgd, "asgd": model.asgd}

    def first_files(self, run_dir, corpus, model):
        self.genotype.save(os.path.join(run_dir, "genotype.json"))

    def resumed(self, model, state):
        self.state = {key: state[key] for key in ("best_val_loss", "stored_loss", "averaging")}
        model.averaging = state["averaging"]

    def batches(self, corpus, first_epoch, steps_per_epoch):
        config = self.config
        train_data = text.batchify(corpus.train, config.batch_size)
        return lambda epoch: lm.epoch_batches(config, epoch, train_data, True)

    def end_epoch(self, model, written, epoch, logs, verbose):
        """The validation loss, the best model, the switch to averaged SGD (`logs` gains the row's entries)."""
        config, state = self.config, self.state
        current = model.swap_in_averages() if model.averaging else None
        val_loss = self.loss_of(model.network, self.corpus.valid, config.eval_batch_size)
        improved = state["stored_loss"] is None or val_loss < state["stored_loss"]
        if improved:
            state["stored_loss"] = val_loss
            best = {"epoch": epoch, "val_loss": val_loss, "averaged": model.averaging}
            _save_best(model.network, written.run_dir, best)
        if current is not None:
            model.put_back(current)
        history = state["best_val_loss"]
        switch = not model.averaging and should_average(history, val_loss, config.nonmono)
        if not model.averaging:
            history.append(val_loss)
        if switch:  # the original starts ASGD afresh (its averages from the next step on)
            model.averaging = True
        state["averaging"] = model.averaging
        logs.update(
            train_ppl=lm.perplexity(logs["train_loss"]), val_loss=val_loss, val_ppl=lm.perplexity(val_loss),
            averaged=float(current is not None), lr=config.learning_rate, seconds=self.clock.seconds(),
        )  # fmt: skip
        if verbose:
            note = " (averaged weights)" if current is not None else ""
            mark = " *" if improved else ""
            print(f"epoch {epoch}: train ppl {logs['train_ppl']:.2f}, valid ppl {logs['val_ppl']:.2f}{note}{mark} "
                  f"({logs['seconds']:.0f} s)", flush=True)  # fmt: skip
            if switch:
                print(f"switching to averaged SGD (no improvement on the best of {config.nonmono} epochs ago)")
        return dict(state)

    def finish(self, model, corpus, written, chief):
        config = self.config
        best = load_best(model.network, written.run_dir)
        test_loss = self.loss_of(model.network, corpus.test, config.test_batch_size)
        valid_loss = best["val_loss"]
        runs.write_json_atomic(
            os.path.join(written.run_dir, "results.json"),
            {"best_epoch": best["epoch"], "valid_ppl": lm.perplexity(valid_loss), "test_ppl": lm.perplexity(test_loss),
             "test_batch_size": config.test_batch_size, "vocabulary": len(corpus)},
        )  # fmt: skip
        export_path = None
        if config.export:
            from darts_tf.rnn.export import export_language_model

            base = os.path.join(config.export_dir, export_name(config))
            export_path = export_language_model(model.network, corpus.words, base)
        if self.verbose:
            print(f"best epoch {best['epoch']}: valid ppl {lm.perplexity(valid_loss):.2f}; "
                  f"test ppl {lm.perplexity(test_loss):.2f} (batch {config.test_batch_size})", flush=True)  # fmt: skip
        return {"valid_ppl": lm.perplexity(valid_loss), "test_ppl": lm.perplexity(test_loss),
                "export_path": export_path, "best_epoch": best["epoch"]}  # fmt: skip


def run_rnn_training(
    config: RNNTrainConfig, resume: bool = False, overwrite: bool = False, verbose: int = 1, callbacks=()
) -> dict:
    """Trains (or resumes); returns {"valid_ppl", "test_ppl", "best_epoch", "export_path", "history", "seconds",
    "config", "first_epoch"}.

    Writes the run folder; `callbacks` (Keras callbacks) run after the run's own, once an epoch
    is recorded. The lifecycle is `darts_tf.runs.execute`'s.
    """
    check_rnn_config(config)
    get_genotype(config.arch)  # a bad `arch` fails before the run folder is touched
    return runs.execute(LanguageModelPlan(config), resume, overwrite, verbose, callbacks)

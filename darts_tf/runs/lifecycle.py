"""One run lifecycle for every kind of run (`execute` with a `RunPlan`), its data and its fit loop."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from darts_tf import data, distribute
from darts_tf.config import check_choices, import_ops_module
from darts_tf.optimizers import learning_rate_schedule
from darts_tf.runs.callbacks import MetricsCSV, ProgressLines, StopOnNonFinite
from darts_tf.runs.folders import begin_run, resume_state, save_checkpoint, worker_run_dir, write_json_atomic


def load_run_data(config, source=None) -> data.ImageData:
    """The dataset a run's config names, or `source` (an `ImageData` or a (train, test) pair of
    tf.data.Datasets, `darts_tf.data.from_datasets`) when given; cut to `config.subset` training
    images (as many per class) when set."""
    if source is not None:
        source = data.as_image_data(source)
    else:
        source = data.load_data(
            config.dataset, config.data_dir, seed=config.seed, image_size=config.image_size,
            channels=config.channels, tfds_data_dir=config.tfds_data_dir, skip_bad_images=config.skip_bad_images,
            stream=config.stream, cache=config.cache,
        )  # fmt: skip
    if config.subset:
        keep = subset_indices(source.train_labels, config.subset, source.num_classes)
        source = dataclasses.replace(
            source, train_images=source.train_images[keep], train_labels=source.train_labels[keep],
            description=f"{source.description}, subset of {len(keep)} training images",
        )  # fmt: skip
    return source


def subset_indices(labels: np.ndarray, size: int, num_classes: int) -> np.ndarray:
    """Indices of `size` images, the first of each class in the data's order, in that order.

    Every class gets size // num_classes (the first size % num_classes classes one
    more); a class with fewer images gives all it has and the rest go to the others.
    """
    labels = np.asarray(labels)
    if size >= len(labels):
        return np.arange(len(labels))
    counts = np.bincount(labels, minlength=num_classes)
    quota = np.zeros(num_classes, np.int64)
    left = size
    while left > 0:  # share what is left among the classes that still have images
        open_classes = np.flatnonzero(counts > quota)
        share, extra = divmod(left, len(open_classes))
        grant = np.minimum(counts[open_classes] - quota[open_classes], share + (np.arange(len(open_classes)) < extra))
        quota[open_classes] += grant
        left -= int(grant.sum())
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[: quota[c]] for c in range(num_classes)]))


def require_one_replica(model) -> None:
    """ValueError when `model` was built under a tf.distribute strategy with more than one replica.

    Keras's `fit` of the search and training models is their one-device loop; under several
    replicas (or several workers, which Keras 3's `fit` does not support) the run goes
    through `darts_tf.distribute.fit`, as `run_search` / `run_training` do.
    """
    strategy = model.distribute_strategy
    replicas = strategy.num_replicas_in_sync
    if distribute.needs_own_loop(strategy):
        raise ValueError(
            f"{type(model).__name__}.fit runs on one device: under {type(strategy).__name__} with {replicas} "
            "replicas use darts_tf.distribute.fit (what run_search and run_training do)"
        )


def fit_run(model, batches, run_dir: str, epochs: int, first_epoch: int, steps_per_epoch: int, validation_data,
            callbacks: list, csv_extra, verbose: int, user_callbacks=(), loss_flags=None,
            checkpoint=None):  # fmt: skip
    """`model.fit` over a run's epochs: the run's own callbacks, metrics.csv, the `checkpoint` callback,
    TensorBoard, then the user's.

    The metrics row is written before the checkpoint: a run killed between the two resumes from
    the checkpoint before, which drops the row and writes it again (the other order loses the
    row for good). The user's callbacks come last, so an epoch is fully recorded before one of
    them can stop or interrupt the run. `batches` is a dataset of `steps_per_epoch` batches an
    epoch, or (with `steps_per_epoch=None`) a function of the epoch giving its dataset
    (`darts_tf.distribute.fit` runs those, and several replicas).
    """
    callbacks = [
        StopOnNonFinite(loss_flags or {"loss": "`learning_rate`"}),
        *([ProgressLines()] if verbose == 2 else []),
        *callbacks,
        MetricsCSV(os.path.join(run_dir, "metrics.csv"), extra=csv_extra),
        *([checkpoint] if checkpoint is not None else []),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
        *user_callbacks,
    ]
    try:
        if steps_per_epoch is None or distribute.needs_own_loop(model.distribute_strategy):
            return distribute.fit(
                model, batches, epochs, first_epoch, steps_per_epoch, validation_data, callbacks, verbose=verbose
            )
        return model.fit(
            batches,
            epochs=epochs,
            initial_epoch=first_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation_data,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the epoch datasets are shuffled (reproducibly) already
        )
    except tf.errors.InvalidArgumentError as error:  # a streamed file that does not decode: name it
        if "not a readable image" not in str(error):
            raise
        raise data.DataError(
            f"{data.unreadable_file(error)}; the run stopped (`resume` continues from its last checkpoint)"
        ) from None


class RunPlan:
    """What one kind of run adds to the shared lifecycle of `execute` (a search, a training).

    `what` names it in messages and the checkpoint state. Each method is one step of the
    lifecycle that differs between kinds; the model `build` returns is a Keras model with a
    `network` (what the checkpoint restores) and a `loss_scale` (None unless float16).
    """

    what = "run"

    def __init__(self, config):
        self.config = config
        self.verbose = 0  # `execute`'s (0 on a worker that is not the chief)

    def strategy(self) -> tf.distribute.Strategy:
        """The strategy the config asks for (when `execute` is given none)."""
        return distribute.make_strategy(self.config.strategy)

    def prepare(self, resume: bool) -> None:
        """Before the data is read (e.g. read the genotype to train)."""

    def load_data(self, source):
        """The run's data: the config's dataset, or `source` (`load_run_data`)."""
        return load_run_data(self.config, source)

    def describe(self, source) -> str:
        return source.description

    def steps_per_epoch(self, source: data.ImageData) -> int | None:
        """Steps an epoch, or None when epochs differ in length (`batches` is then a function of the epoch)."""
        raise NotImplementedError

    def schedule(self, steps_per_epoch: int | None):
        """The weight optimizer's learning rate schedule `build` gets."""
        return learning_rate_schedule(self.config, steps_per_epoch)

    def build(self, source: data.ImageData, schedule) -> keras.Model:
        """The compiled model (called under the strategy's scope)."""
        raise NotImplementedError

    def optimizers(self, model) -> dict:
        """The optimizers a checkpoint holds, by name."""
        raise NotImplementedError

    def first_files(self, run_dir: str, source: data.ImageData, model) -> None:
        """What a new run writes beside config.json before its first epoch."""

    def resumed(self, model, state: dict) -> None:
        """After a resumed run's checkpoint was restored into `model`: what its `state` sets."""

    def batches(self, source: data.ImageData, first_epoch: int, steps_per_epoch: int | None):
        """The training batches from `first_epoch` on (a function of the epoch without `steps_per_epoch`)."""
        raise NotImplementedError

    def validation(self, source: data.ImageData):
        """What Keras validates on after each epoch (None: nothing)."""
        return None

    def callbacks(self, model, written, verbose: int) -> list:
        """The kind's own Keras callbacks, run before the epoch's checkpoint (`end_epoch`)."""
        return []

    def end_epoch(self, model, written, epoch: int, logs: dict, verbose: int) -> dict:
        """What the kind records after `epoch` (1-based) before its checkpoint; entries for the
        checkpoint's state (e.g. "finished": True stops the run after this epoch)."""
        return {}

    def csv_extra(self, model, schedule):
        return None

    loss_flags = None

    def finish(self, model, source: data.ImageData, written, chief: bool) -> dict:
        """After the last epoch, before a non-chief worker's folder is deleted: the result's own entries."""
        return {}


class EpochRecord(keras.callbacks.Callback):
    """After each epoch: the plan's record of it (`RunPlan.end_epoch`, which may add entries to the
    epoch's logs for metrics.csv) and the checkpoint's state (the epoch, whether the run finished,
    the loss scale under float16, the plan's entries). A "finished" state before the last epoch
    stops `fit`."""

    def __init__(self, plan: RunPlan, written, verbose: int):
        super().__init__()
        self.plan = plan
        self.written = written
        self.verbose = verbose
        self.state = None

    def on_epoch_end(self, epoch, logs=None):
        model, epochs = self.model, self.written.epochs  # the model fit (or distribute.fit) runs
        state = {"epoch": epoch + 1, "finished": epoch + 1 >= epochs}
        state.update(self.plan.end_epoch(model, self.written, epoch + 1, logs if logs is not None else {},
                                         self.verbose))  # fmt: skip
        if model.loss_scale is not None:  # float16: a resumed run continues with this scale
            state["loss_scale"] = model.loss_scale.state()
        if state["finished"] and epoch + 1 < epochs:
            model.stop_training = True
        self.state = state


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch's metrics row: one atomic checkpoint of the network, the optimizers and
    `record`'s state (an `EpochRecord` earlier in the callbacks)."""

    def __init__(self, record: EpochRecord):
        super().__init__()
        self.record = record

    def on_epoch_end(self, epoch, logs=None):
        record, state = self.record, self.record.state
        if state is None or state["epoch"] != epoch + 1:
            raise RuntimeError(f"EpochCheckpoint expected the record of epoch {epoch + 1}. Received: state={state}")
        save_checkpoint(record.written.run_dir, self.model.network, state, **record.plan.optimizers(self.model))


def execute(plan: RunPlan, resume: bool = False, overwrite: bool = False, verbose: int = 1, callbacks=(),
            strategy=None, source=None) -> dict:  # fmt: skip
    """One run's lifecycle, the same for every kind (`plan`): check the config, make the strategy,
    claim (or resume) the run folder, read the data (or `source`), build the model under the
    strategy's scope, restore the checkpoint or write the first files, fit epoch by epoch with the
    run's callbacks (checkpoints, metrics.csv, TensorBoard) and the user's, then `plan.finish`.

    Returns `plan.finish`'s entries with "config", "history", "first_epoch" and "seconds".
    """
    started = time.time()
    import_ops_module(getattr(plan.config, "ops_module", None))  # ops of yours, before they are named
    check_choices(plan.config)
    strategy = strategy or plan.strategy()
    chief = distribute.is_chief(strategy)
    plan.config = config = begin_run(plan.config, resume, overwrite, chief=chief)
    import_ops_module(getattr(config, "ops_module", None))  # a resumed run's, from its config.json
    distribute.check_global_batch(config.batch_size, strategy)
    plan.prepare(resume)
    source = plan.load_data(source)
    if verbose:
        print(f"data: {plan.describe(source)}", flush=True)
    steps_per_epoch = plan.steps_per_epoch(source)
    schedule = plan.schedule(steps_per_epoch)
    with strategy.scope():
        model = plan.build(source, schedule)
    first_epoch = 0
    written = dataclasses.replace(config, run_dir=worker_run_dir(config, chief))  # where this process writes
    if resume:
        state = resume_state(config.run_dir, plan.what, model.network, chief=chief, **plan.optimizers(model))
        first_epoch = state["epoch"]
        if model.loss_scale is not None:
            model.loss_scale.restore(state.get("loss_scale"))
        plan.resumed(model, state)
    else:
        write_json_atomic(os.path.join(written.run_dir, "config.json"), dataclasses.asdict(config))
        plan.first_files(written.run_dir, source, model)
    plan.verbose = verbose = verbose if chief else 0
    record = EpochRecord(plan, written, verbose)
    try:
        history = fit_run(
            model, plan.batches(source, first_epoch, steps_per_epoch), written.run_dir, config.epochs, first_epoch,
            steps_per_epoch, plan.validation(source), callbacks=[*plan.callbacks(model, written, verbose), record],
            csv_extra=plan.csv_extra(model, schedule), verbose=verbose, user_callbacks=callbacks,
            loss_flags=plan.loss_flags, checkpoint=EpochCheckpoint(record),
        )  # fmt: skip
        result = plan.finish(model, source, written, chief)
    finally:
        if not chief:
            shutil.rmtree(written.run_dir, ignore_errors=True)
    result.update(config=config, history=history.history, first_epoch=first_epoch)
    result["seconds"] = time.time() - started
    return result

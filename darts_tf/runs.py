"""Run folders: config, metrics, checkpoints, written so that nothing is ever half-written."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from darts_tf import data, distribute
from darts_tf.checkpoint import make_checkpoint, restore, write_atomic
from darts_tf.config import check_choices, config_from_dict
from darts_tf.errors import DivergedError, RunDirError
from darts_tf.files import atomic_file
from darts_tf.optimizers import learning_rate_schedule

CHECKPOINT_DIR = "checkpoint"
PREVIOUS_DIR = "checkpoint.previous"  # the epoch before, kept so that a damaged checkpoint is not the end
STATE_FILE = "state.json"


def write_json_atomic(path: str, data) -> None:
    with atomic_file(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def save_npz_atomic(path: str, **arrays) -> None:
    with atomic_file(path, "wb") as handle:
        np.savez(handle, **arrays)


def prepare_run_dir(run_dir: str, resume: bool, overwrite: bool) -> None:
    """Checks `run_dir` can be used, refusing one that holds a run unless resuming or overwriting."""
    has_run = os.path.exists(os.path.join(run_dir, "config.json"))
    if resume:
        if not any(os.path.exists(os.path.join(run_dir, d, STATE_FILE)) for d in (CHECKPOINT_DIR, PREVIOUS_DIR)):
            raise RunDirError(f"`resume` {run_dir!r}: no checkpoint there to resume from")
        return
    if has_run and not overwrite:
        raise RunDirError(f"`run_dir` {run_dir!r} already holds a run; pass `resume` to continue it or `overwrite`")
    if has_run and overwrite:
        shutil.rmtree(run_dir)
    # The folder itself is created by the first file written (config.json), so a run
    # that fails before it starts (bad data, bad genotype) leaves nothing behind.


def begin_run(config, resume: bool, overwrite: bool, chief: bool = True):
    """Checks the run folder (see `prepare_run_dir`); on `resume`, the config saved there (same run_dir).

    The strategy is the one asked for now (a run may resume on another number of devices).
    A non-`chief` worker leaves the folder to the chief (it only reads the config to resume).
    """
    if chief:
        prepare_run_dir(config.run_dir, resume=resume, overwrite=overwrite)
    if not resume:
        return config
    saved = read_json(os.path.join(config.run_dir, "config.json"))
    if hasattr(config, "strategy"):  # the recurrent runs have none
        saved["strategy"] = config.strategy
    return config_from_dict(type(config), saved, run_dir=config.run_dir)


def worker_run_dir(config, chief: bool) -> str:
    """Where this process writes: the run folder for the chief, a fresh temporary folder for another worker
    (holding copies of the run's per-epoch genotypes, so that early-stop rules decide as on the chief)."""
    if chief:
        return config.run_dir
    folder = tempfile.mkdtemp(prefix="darts_tf_worker_")
    if os.path.isdir(config.run_dir):
        for name in os.listdir(config.run_dir):
            if name.startswith("genotype_epoch_"):
                shutil.copy(os.path.join(config.run_dir, name), folder)
    return folder


def read_json(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


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


def resume_epoch(run_dir: str, what: str, model, chief: bool = True, **optimizers) -> int:
    """Restores the run's checkpoint into `model` and `optimizers`; the epoch to continue from."""
    return resume_state(run_dir, what, model, chief=chief, **optimizers)["epoch"]


def resume_state(run_dir: str, what: str, model, chief: bool = True, **optimizers) -> dict:
    """Restores the run's checkpoint into `model` and `optimizers`; the state saved with what was restored.

    A run that already finished is refused (RunDirError naming it), `what` says what finished.
    Only the `chief` changes the folder (metrics rows after the restored epoch).
    """
    state = load_checkpoint(run_dir, model, **optimizers)
    if state.get("finished"):
        raise RunDirError(f"`resume` {run_dir!r}: the {what} already finished ({state['epoch']} epochs)")
    if chief:
        truncate_metrics(run_dir, state["epoch"])  # after a fallback to the previous checkpoint: its later rows go
    return state


def read_state(run_dir: str) -> dict:
    """The latest readable checkpoint state (the previous checkpoint's when the latest state.json is unreadable;
    after a fallback for damaged weights, `resume_state` is the one that matches what was restored)."""
    for directory in (CHECKPOINT_DIR, PREVIOUS_DIR):
        try:
            return read_json(os.path.join(run_dir, directory, STATE_FILE))
        except (OSError, ValueError):
            continue
    raise RunDirError(f"{run_dir!r}: no readable checkpoint state ({CHECKPOINT_DIR}/{STATE_FILE})")


def save_checkpoint(run_dir: str, model, state: dict, **optimizers) -> None:
    """Model variables, optimizer states and `state` (epoch, ...) in one atomic folder; the one it replaces
    becomes `checkpoint.previous/`."""
    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    previous = os.path.join(run_dir, PREVIOUS_DIR)
    write_atomic(make_checkpoint(model, **optimizers), directory, json_files={STATE_FILE: state}, previous=previous)


# What reading a damaged checkpoint raises: truncated or corrupted files, unparsable JSON.
_DAMAGE = (tf.errors.OpError, IndexError, OSError, ValueError)


def load_checkpoint(run_dir: str, model, **optimizers) -> dict:
    """Restores `model` (and the optimizers given) from the run's checkpoint; returns its state.

    A checkpoint that cannot be read (truncated, corrupted, missing files) is named in one
    line; when the previous epoch's checkpoint is intact the run falls back to it (and says so).
    """
    problems = []
    for directory in (CHECKPOINT_DIR, PREVIOUS_DIR):
        folder = os.path.join(run_dir, directory)
        if not os.path.isdir(folder):
            continue
        state_path = os.path.join(folder, STATE_FILE)
        try:
            state = read_json(state_path)
        except (OSError, ValueError) as error:
            problems.append(f"{state_path}: {_first_line(error)}")
            continue
        try:
            restore(make_checkpoint(model, **optimizers), os.path.join(folder, "ckpt"), partial=not optimizers)
        except _DAMAGE as error:
            problems.append(f"{_damaged_file(folder, error)}: {_first_line(error)}")
            continue
        if problems:
            print(f"warning: {problems[0]}; resuming from the previous checkpoint ({folder}, epoch {state['epoch']})",
                  file=sys.stderr, flush=True)  # fmt: skip
        return state
    raise RunDirError(f"cannot read the checkpoint of {run_dir!r}: " + "; ".join(problems or ["none there"]))


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _damaged_file(folder: str, error: Exception) -> str:
    """The file of `folder` the error names, else the folder."""
    for name in sorted(os.listdir(folder)):
        if name in str(error):
            return os.path.join(folder, name)
    if isinstance(error, IndexError | tf.errors.DataLossError | tf.errors.OutOfRangeError):  # short data file
        data_files = [n for n in sorted(os.listdir(folder)) if ".data-" in n]
        if data_files:
            return os.path.join(folder, data_files[0])
    return folder


def truncate_metrics(run_dir: str, epoch: int) -> None:
    """Drops metrics.csv rows of epochs after `epoch` (atomically)."""
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.isfile(path):
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or "epoch" not in rows[0]:
        return
    column = rows[0].index("epoch")
    kept = [rows[0]] + [row for row in rows[1:] if row and float(row[column]) <= epoch]
    if len(kept) == len(rows):
        return
    with atomic_file(path) as handle:
        csv.writer(handle, lineterminator="\r\n").writerows(kept)


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


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops a `fit` at the first step whose loss is NaN or infinite (`DivergedError`, one line).

    `flags` maps each logged loss to check to the config field to change (e.g. {"loss": "`learning_rate`"}).
    Nothing of the epoch is recorded: its checkpoint stays the last good one.
    """

    def __init__(self, flags: dict):
        super().__init__()
        self.flags = flags
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for name, flag in self.flags.items():
            if name in (logs or {}):
                value = float(np.asarray(logs[name]))
                if not np.isfinite(value):
                    raise DivergedError(
                        f"the {name.replace('_', ' ')} became {value} at epoch {self.epoch + 1}, step {batch + 1}; "
                        f"lower {flag} (the run folder keeps the last epoch's checkpoint)"
                    )


class MetricsCSV(keras.callbacks.Callback):
    """Appends one row per epoch to metrics.csv (kept across resumes).

    A row with a column the file does not have yet rewrites the file (atomically) under the
    widened header, the earlier rows with that column empty: every row has the header's fields.
    """

    def __init__(self, path: str, extra=None):
        super().__init__()
        self.path = path
        self.extra = extra

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        if self.extra:
            row.update(self.extra(epoch))
        header, rows = None, []
        if os.path.exists(self.path):
            with open(self.path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                rows, header = list(reader), reader.fieldnames
        if header and all(k in header for k in row):
            with open(self.path, "a", newline="", encoding="utf-8") as handle:
                csv.DictWriter(handle, fieldnames=header).writerow(row)
            return
        fields = (header or []) + [k for k in row if k not in (header or [])]
        with atomic_file(self.path) as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows + [row])


def fit_run(model, batches, run_dir: str, epochs: int, first_epoch: int, steps_per_epoch: int, validation_data,
            callbacks: list, csv_extra, verbose: int, user_callbacks=(), loss_flags=None):  # fmt: skip
    """`model.fit` over a run's epochs: the run's own callbacks, metrics.csv, TensorBoard, then the user's.

    The user's callbacks come last, so an epoch is fully recorded (checkpoint and
    metrics row) before one of them can stop or interrupt the run.
    """
    callbacks = [
        StopOnNonFinite(loss_flags or {"loss": "`learning_rate`"}),
        *callbacks,
        MetricsCSV(os.path.join(run_dir, "metrics.csv"), extra=csv_extra),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
        *user_callbacks,
    ]
    try:
        if distribute.needs_own_loop(model.distribute_strategy):
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

    def prepare(self, resume: bool) -> None:
        """Before the data is read (e.g. read the genotype to train)."""

    def steps_per_epoch(self, source: data.ImageData) -> int:
        raise NotImplementedError

    def build(self, source: data.ImageData, schedule) -> keras.Model:
        """The compiled model (called under the strategy's scope)."""
        raise NotImplementedError

    def optimizers(self, model) -> dict:
        """The optimizers a checkpoint holds, by name."""
        raise NotImplementedError

    def first_files(self, run_dir: str, source: data.ImageData, model) -> None:
        """What a new run writes beside config.json before its first epoch."""

    def batches(self, source: data.ImageData, first_epoch: int, steps_per_epoch: int):
        raise NotImplementedError

    def validation(self, source: data.ImageData):
        raise NotImplementedError

    def callbacks(self, model, written, verbose: int) -> list:
        return []

    def csv_extra(self, model, schedule):
        return None

    loss_flags = None

    def finish(self, model, source: data.ImageData, written, chief: bool) -> dict:
        """After the last epoch, before a non-chief worker's folder is deleted: the result's own entries."""
        return {}


def execute(plan: RunPlan, resume: bool = False, overwrite: bool = False, verbose: int = 1, callbacks=(),
            strategy=None, source=None) -> dict:  # fmt: skip
    """One run's lifecycle, the same for every kind (`plan`): check the config, make the strategy,
    claim (or resume) the run folder, read the data (or `source`), build the model under the
    strategy's scope, restore the checkpoint or write the first files, fit epoch by epoch with the
    run's callbacks (checkpoints, metrics.csv, TensorBoard) and the user's, then `plan.finish`.

    Returns `plan.finish`'s entries with "config", "history", "first_epoch" and "seconds".
    """
    started = time.time()
    check_choices(plan.config)
    strategy = strategy or distribute.make_strategy(plan.config.strategy)
    chief = distribute.is_chief(strategy)
    plan.config = config = begin_run(plan.config, resume, overwrite, chief=chief)
    distribute.check_global_batch(config.batch_size, strategy)
    plan.prepare(resume)
    source = load_run_data(config, source)
    if verbose:
        print(f"data: {source.description}", flush=True)
    steps_per_epoch = plan.steps_per_epoch(source)
    schedule = learning_rate_schedule(config, steps_per_epoch)
    with strategy.scope():
        model = plan.build(source, schedule)
    first_epoch = 0
    written = dataclasses.replace(config, run_dir=worker_run_dir(config, chief))  # where this process writes
    if resume:
        state = resume_state(config.run_dir, plan.what, model.network, chief=chief, **plan.optimizers(model))
        first_epoch = state["epoch"]
        if model.loss_scale is not None:
            model.loss_scale.restore(state.get("loss_scale"))
    else:
        write_json_atomic(os.path.join(written.run_dir, "config.json"), dataclasses.asdict(config))
        plan.first_files(written.run_dir, source, model)
    verbose = verbose if chief else 0
    try:
        history = fit_run(
            model, plan.batches(source, first_epoch, steps_per_epoch), written.run_dir, config.epochs, first_epoch,
            steps_per_epoch, plan.validation(source), callbacks=plan.callbacks(model, written, verbose),
            csv_extra=plan.csv_extra(model, schedule), verbose=verbose, user_callbacks=callbacks,
            loss_flags=plan.loss_flags,
        )  # fmt: skip
        result = plan.finish(model, source, written, chief)
    finally:
        if not chief:
            shutil.rmtree(written.run_dir, ignore_errors=True)
    result.update(config=config, history=history.history, first_epoch=first_epoch)
    result["seconds"] = time.time() - started
    return result

"""Run folders: config, metrics, checkpoints, written so that nothing is ever half-written."""

from __future__ import annotations

import csv
import json
import os
import shutil

import keras
import numpy as np

from darts_tf.checkpoint import make_checkpoint, restore, write_atomic

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"


class RunDirError(ValueError):
    """The run folder cannot be used as asked (one line, names the folder and the flag)."""


def write_json_atomic(path: str, data) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def save_npz_atomic(path: str, **arrays) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def prepare_run_dir(run_dir: str, resume: bool, overwrite: bool) -> None:
    """Checks `run_dir` can be used, refusing one that holds a run unless resuming or overwriting."""
    has_run = os.path.exists(os.path.join(run_dir, "config.json"))
    if resume:
        if not os.path.exists(os.path.join(run_dir, CHECKPOINT_DIR, STATE_FILE)):
            raise RunDirError(f"--resume {run_dir!r}: no checkpoint there to resume from")
        return
    if has_run and not overwrite:
        raise RunDirError(f"--run-dir {run_dir!r} already holds a run; pass --resume to continue it or --overwrite")
    if has_run and overwrite:
        shutil.rmtree(run_dir)
    # The folder itself is created by the first file written (config.json), so a run
    # that fails before it starts (bad data, bad genotype) leaves nothing behind.


def read_state(run_dir: str) -> dict:
    with open(os.path.join(run_dir, CHECKPOINT_DIR, STATE_FILE), encoding="utf-8") as handle:
        return json.load(handle)


def save_checkpoint(run_dir: str, model, state: dict, **optimizers) -> None:
    """Model variables, optimizer states and `state` (epoch, ...) in one atomic folder."""
    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    write_atomic(make_checkpoint(model, **optimizers), directory, json_files={STATE_FILE: state})


def load_checkpoint(run_dir: str, model, **optimizers) -> dict:
    """Restores `model` (and the optimizers given) from the run's checkpoint; returns its state."""
    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    restore(make_checkpoint(model, **optimizers), os.path.join(directory, "ckpt"), partial=not optimizers)
    return read_state(run_dir)


class MetricsCSV(keras.callbacks.Callback):
    """Appends one row per epoch to metrics.csv (kept across resumes)."""

    def __init__(self, path: str, extra=None):
        super().__init__()
        self.path = path
        self.extra = extra

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        if self.extra:
            row.update(self.extra(epoch))
        exists = os.path.exists(self.path)
        fields = list(row)
        if exists:
            with open(self.path, newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), None)
            if header:
                fields = header + [k for k in row if k not in header]
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            if not exists:
                writer.writeheader()
            writer.writerow(row)


def fit_run(model, batches, run_dir: str, epochs: int, first_epoch: int, steps_per_epoch: int, validation_data,
            callbacks: list, csv_extra, verbose: int, user_callbacks=()):  # fmt: skip
    """`model.fit` over a run's epochs: the run's own callbacks, metrics.csv, TensorBoard, then the user's.

    The user's callbacks come last, so an epoch is fully recorded (checkpoint and
    metrics row) before one of them can stop or interrupt the run.
    """
    callbacks = [
        *callbacks,
        MetricsCSV(os.path.join(run_dir, "metrics.csv"), extra=csv_extra),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
        *user_callbacks,
    ]
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

"""Run folders: claiming or resuming one, its JSON and arrays, its checkpoints and their state,
each written whole or not at all."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import tensorflow as tf

from darts_tf.checkpoint import make_checkpoint, restore, write_atomic
from darts_tf.config import config_from_dict
from darts_tf.errors import RunDirError
from darts_tf.files import atomic_file

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

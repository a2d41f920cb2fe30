"""The Keras callbacks every run has: a stop at the first non-finite loss, metrics.csv, progress lines."""

from __future__ import annotations

import csv
import math
import os
import time

import keras
import numpy as np

from darts_tf.errors import DivergedError
from darts_tf.files import atomic_file


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


class ProgressLines(keras.callbacks.Callback):
    """A plain line at every tenth of an epoch (`verbose=2`, for logs off a terminal, where Keras
    prints one line an epoch): the step, the running mean of each logged loss, the seconds so far."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.started = time.time()

    def on_train_batch_end(self, batch, logs=None):
        steps, done = self.params.get("steps"), batch + 1
        if not steps or (done < steps and done * 10 // steps == batch * 10 // steps):
            return
        losses = ", ".join(f"{name} {_plain(value)}" for name, value in (logs or {}).items() if "loss" in name)
        print(f"epoch {self.epoch + 1}: step {done}/{steps}, {losses} ({time.time() - self.started:.0f} s)", flush=True)


def _plain(value) -> str:
    value = float(np.asarray(value))
    return f"{value:.4f}" if math.isfinite(value) else str(value)

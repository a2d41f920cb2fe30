"""Runs: their folders (`folders`), the callbacks every run has (`callbacks`) and the one
lifecycle of every kind of run (`lifecycle`: `execute` with a `RunPlan`).

    from darts_tf import runs
    runs.execute(plan, resume=False)      # what run_search / run_training are
"""

from darts_tf.errors import DivergedError, RunDirError
from darts_tf.runs.callbacks import MetricsCSV, ProgressLines, StopOnNonFinite
from darts_tf.runs.folders import (
    CHECKPOINT_DIR,
    PREVIOUS_DIR,
    STATE_FILE,
    begin_run,
    load_checkpoint,
    prepare_run_dir,
    read_json,
    read_state,
    resume_epoch,
    resume_state,
    save_checkpoint,
    save_npz_atomic,
    truncate_metrics,
    worker_run_dir,
    write_json_atomic,
)
from darts_tf.runs.lifecycle import RunPlan, execute, fit_run, load_run_data, require_one_replica, subset_indices

__all__ = [
    "CHECKPOINT_DIR",
    "PREVIOUS_DIR",
    "ProgressLines",
    "STATE_FILE",
    "DivergedError",
    "MetricsCSV",
    "RunDirError",
    "RunPlan",
    "StopOnNonFinite",
    "begin_run",
    "execute",
    "fit_run",
    "load_checkpoint",
    "load_run_data",
    "prepare_run_dir",
    "read_json",
    "read_state",
    "require_one_replica",
    "resume_epoch",
    "resume_state",
    "save_checkpoint",
    "save_npz_atomic",
    "subset_indices",
    "truncate_metrics",
    "worker_run_dir",
    "write_json_atomic",
]

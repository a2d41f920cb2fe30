"""darts_tf.runs: the metrics file of a run folder, and the lifecycle every kind of run shares."""

import csv
import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from darts_tf import data, runs
from darts_tf.config import DataSettings, RunSettings
from darts_tf.errors import RunDirError
from darts_tf.runs import MetricsCSV


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_metrics_csv_widens_its_header_and_keeps_every_row_rectangular(tmp_path):
    path = tmp_path / "metrics.csv"
    MetricsCSV(str(path)).on_epoch_end(0, {"loss": 2.0})
    MetricsCSV(str(path)).on_epoch_end(1, {"loss": 1.5})
    MetricsCSV(str(path), extra=lambda epoch: {"skips": 3}).on_epoch_end(2, {"loss": 1.0, "arch_loss": 0.5})
    MetricsCSV(str(path)).on_epoch_end(3, {"loss": 0.5})
    rows = _rows(path)
    assert rows[0] == ["epoch", "loss", "arch_loss", "skips"]
    assert rows[1:] == [["1", "2.0", "", ""], ["2", "1.5", "", ""], ["3", "1.0", "0.5", "3"], ["4", "0.5", "", ""]]
    with open(path, newline="", encoding="utf-8") as handle:
        assert all(len(row) == 4 for row in csv.DictReader(handle).reader)
    assert not [p for p in tmp_path.iterdir() if p.name != "metrics.csv"]  # no temporary left beside it


@dataclasses.dataclass
class ToyConfig(DataSettings, RunSettings):
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 0.05
    learning_rate_min: float = 0.0
    seed: int = 0
    strategy: str = "one"


class ToyModel(keras.Model):
    """The least a plan's model needs: a `network` to checkpoint and a `loss_scale`."""

    def __init__(self, **kwargs):
        super().__init__(name="toy_model", **kwargs)  # fixed names: the checkpoint names its variables by path
        layers = [keras.layers.Flatten(name="flatten"), keras.layers.Dense(4, name="dense")]  # checkpoint names
        self.network = keras.Sequential(layers, name="toy")
        self.loss_scale = None

    def call(self, x, training=False):
        return self.network(x, training=training)


class ToyPlan(runs.RunPlan):
    """A new kind of run on the shared lifecycle: a linear classifier."""

    what = "toy run"

    def steps_per_epoch(self, source):
        return len(source.train_labels) // self.config.batch_size

    def build(self, source, schedule):
        keras.utils.set_random_seed(self.config.seed)
        model = ToyModel()
        model(np.zeros((1, *source.input_shape), "float32"))  # creates the network's variables
        model.compile(keras.optimizers.SGD(schedule, momentum=0.9), "sparse_categorical_crossentropy")
        model.optimizer.build(model.trainable_variables)
        return model

    def optimizers(self, model):
        return {"optimizer": model.optimizer}

    def first_files(self, run_dir, source, model):
        runs.write_json_atomic(os.path.join(run_dir, "toy.json"), {"classes": source.num_classes})

    def batches(self, source, first_epoch, steps_per_epoch):
        def epoch(e):
            return data.epoch_dataset(
                source.train_images, source.train_labels, self.config.batch_size, source.mean, source.std,
                self.config.seed, e,
            ).take(steps_per_epoch)  # fmt: skip

        return data.epochs_dataset(epoch, first_epoch, self.config.epochs)

    def validation(self, source):
        return data.evaluation_dataset(source.test_images, source.test_labels, 32, source.mean, source.std)

    def end_epoch(self, model, written, epoch, logs, verbose):
        return {"toy_epoch": epoch}

    def finish(self, model, source, written, chief):
        return {"weights": [v.numpy() for v in model.network.weights]}


class _Interrupt(Exception):
    pass


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise _Interrupt


def test_a_new_kind_of_run_is_a_plan_and_resumes_exactly(tmp_path):
    source = data.make_synthetic(num_train=64, num_test=32, num_classes=4, image_size=6)
    whole = runs.execute(ToyPlan(ToyConfig(run_dir=str(tmp_path / "whole"))), verbose=0, source=source)
    assert whole["first_epoch"] == 0 and len(whole["history"]["loss"]) == 3
    cut = ToyConfig(run_dir=str(tmp_path / "cut"))
    with pytest.raises(_Interrupt):
        runs.execute(ToyPlan(cut), verbose=0, callbacks=[_StopAfterFirstEpoch()], source=source)
    assert runs.read_state(cut.run_dir)["toy_epoch"] == 1  # the plan's entry, in the checkpoint of epoch 1
    resumed = runs.execute(ToyPlan(cut), resume=True, verbose=0, source=source)
    assert resumed["first_epoch"] == 1
    for a, b in zip(resumed["weights"], whole["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert [row[0] for row in _rows(os.path.join(cut.run_dir, "metrics.csv"))[1:]] == ["1", "2", "3"]
    assert json.load(open(os.path.join(cut.run_dir, "toy.json"))) == {"classes": 4}
    state = runs.read_state(cut.run_dir)
    assert state["finished"] and state["epoch"] == 3
    with pytest.raises(RunDirError, match="the toy run already finished"):
        runs.execute(ToyPlan(cut), resume=True, verbose=0, source=source)


def test_a_run_killed_between_an_epochs_metrics_row_and_its_checkpoint_resumes_with_every_row_once(
    tmp_path, monkeypatch
):
    """The epoch's metrics row (with the entries the plan's record adds to the logs) is on disk before its
    checkpoint is written; a run stopped in between resumes from the checkpoint before, drops that row and
    writes it again: rows 1-3 once each (checkpoint first, the row of the epoch was lost for good)."""
    from darts_tf.runs import lifecycle

    class RecordingPlan(ToyPlan):
        def end_epoch(self, model, written, epoch, logs, verbose):
            logs["recorded"] = float(epoch)  # what the recurrent plans do: entries for the metrics row
            return super().end_epoch(model, written, epoch, logs, verbose)

    source = data.make_synthetic(num_train=64, num_test=32, num_classes=4, image_size=6)
    config = ToyConfig(run_dir=str(tmp_path / "run"))
    save = lifecycle.save_checkpoint
    seen = []

    def save_then_die(run_dir, network, state, **optimizers):
        rows = _rows(os.path.join(run_dir, "metrics.csv"))
        seen.append([row[rows[0].index("recorded")] for row in rows[1:]])
        if state["epoch"] == 2:
            raise _Interrupt  # killed after the row, before the checkpoint
        return save(run_dir, network, state, **optimizers)

    monkeypatch.setattr(lifecycle, "save_checkpoint", save_then_die)
    with pytest.raises(_Interrupt):
        runs.execute(RecordingPlan(config), verbose=0, source=source)
    assert seen == [["1.0"], ["1.0", "2.0"]]  # each row written before its checkpoint
    assert runs.read_state(config.run_dir)["epoch"] == 1
    monkeypatch.setattr(lifecycle, "save_checkpoint", save)
    runs.execute(RecordingPlan(config), resume=True, verbose=0, source=source)
    rows = _rows(os.path.join(config.run_dir, "metrics.csv"))
    assert [row[0] for row in rows[1:]] == ["1", "2", "3"]
    assert [row[rows[0].index("recorded")] for row in rows[1:]] == ["1.0", "2.0", "3.0"]


def test_progress_lines_print_a_line_at_every_tenth_of_an_epoch(capsys):
    progress = runs.ProgressLines()
    progress.set_params({"steps": 23})
    progress.on_epoch_begin(0)
    for batch in range(23):
        progress.on_train_batch_end(batch, {"loss": 2.0, "accuracy": 0.5, "arch_loss": float("nan")})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("epoch 1: step 23/23, loss 2.0000, arch_loss nan (")
    assert lines[0].startswith("epoch 1: step 3/23") and all("accuracy" not in line for line in lines)
    progress.set_params({"steps": None})  # an epoch of unknown length: nothing
    progress.on_train_batch_end(0, {"loss": 1.0})
    assert capsys.readouterr().out == ""

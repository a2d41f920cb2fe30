"""darts_tf.runs: the metrics file of a run folder."""

import csv

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

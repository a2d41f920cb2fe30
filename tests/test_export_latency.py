"""darts_tf.export.latency: unit models as LiteRT, tables measured and imported, whole networks against tables,
and the commands (latency-table, evaluate --latency, search with a latency budget)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from darts_tf.cnn.cost import INVOKE, CostModel, LatencyTable, Unit
from darts_tf.cnn.genotypes import DARTS_V2
from darts_tf.cnn.space import search_space
from darts_tf.errors import ConfigError, ExportError
from darts_tf.export import latency
from darts_tf.nb201.genotypes import NB201_SPACE

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SMALL_SPACE = search_space(["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"])
TWO_OPS = search_space(["skip_connect", "sep_conv_3x3"])  # fewer units to convert


def darts_tf(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "darts_tf.commands", *args], capture_output=True, text=True, cwd=cwd)


def test_every_unit_kind_converts_and_runs():
    for space, model in ((SMALL_SPACE, CostModel(SMALL_SPACE, C=2, layers=3, image_shape=(8, 8, 3))),
                         (NB201_SPACE, CostModel(NB201_SPACE, C=2, layers=1, image_shape=(8, 8, 3)))):  # fmt: skip
        kinds = {}
        for unit in model.units():
            kinds.setdefault((unit.kind, unit.stride), unit)
        for unit in kinds.values():
            milliseconds = latency.time_tflite(latency.tflite_of(latency.unit_model(unit, space)), repeats=2)
            assert 0 < milliseconds < 50, unit.key


def test_measured_table_covers_the_network_and_predicts_measured_networks(tmp_path):
    model = CostModel(TWO_OPS, C=2, layers=3, image_shape=(8, 8, 3))
    lines = []
    table = latency.measure_table(model, threads=1, repeats=2, progress=lines.append)
    assert set(table.entries) == {u.key for u in model.units()}
    assert len(lines) == len(model.units()) and table.runtime == "litert" and table.litert
    assert all(v >= 0 for v in table.entries.values()) and table.entries[INVOKE.key] > 0
    loaded = LatencyTable.load(table.save(str(tmp_path / "t.json")))
    with_table = CostModel(TWO_OPS, C=2, layers=3, image_shape=(8, 8, 3), table=loaded)
    result = latency.check_table(with_table, count=2, repeats=2)
    assert len(result["rows"]) == 2 and -1 <= result["spearman"] <= 1
    for row in result["rows"]:
        assert row["measured_ms"] > 0 and row["predicted_ms"] > 0


def test_random_genotypes_are_distinct_valid_cells():
    model = CostModel(C=8, layers=5)
    genotypes = latency.random_genotypes(model, 20, seed=4)
    assert len({repr(g) for g in genotypes}) == 20
    for genotype in genotypes:
        assert all(op != "none" for op, _ in genotype.normal + genotype.reduce)
        model.of_genotype(genotype)
    nb201 = latency.random_genotypes(CostModel(NB201_SPACE, C=8, layers=1), 5, seed=0)
    assert len(nb201) == 5 and all(len(g.ops) == 6 for g in nb201)


def test_spearman():
    assert latency.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert latency.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties take average ranks: ranks (1.5, 1.5, 3) and (1, 2, 3)
    assert latency.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.corrcoef([1.5, 1.5, 3], [1, 2, 3])[0, 1])


def test_benchmark_model_logs_become_a_table(tmp_path):
    model = CostModel(TWO_OPS, C=2, layers=3, image_shape=(8, 8, 3))
    folder = str(tmp_path / "units")
    latency.write_unit_models(model, folder, threads=4)
    with open(os.path.join(folder, "manifest.json")) as handle:
        manifest = json.load(handle)
    assert sorted(manifest["files"].values()) == sorted(u.key for u in model.units())
    assert "--num_threads=4" in open(os.path.join(folder, "run_on_device.sh")).read()
    os.makedirs(os.path.join(folder, "logs"))
    invoke_file = next(f for f, key in manifest["files"].items() if key == INVOKE.key)
    for index, (name, _key) in enumerate(sorted(manifest["files"].items())):
        average = 20.0 if name == invoke_file else 100.0 + index
        with open(os.path.join(folder, "logs", name.removesuffix(".tflite") + ".log"), "w") as handle:
            handle.write(
                "INFO: Loaded model unit.tflite\n"
                f"Inference timings in us: Init: 3084, First inference: 960, Warmup (avg): 300.5, "
                f"Inference (avg): {average}\n"
            )
    table = latency.import_benchmark_logs(folder, device="Pixel 7")
    assert table.runtime == "benchmark_model" and table.device == "Pixel 7" and table.threads == 4
    assert table.entries[INVOKE.key] == pytest.approx(0.02)
    for index, (_name, key) in enumerate(sorted(manifest["files"].items())):
        if key != INVOKE.key:
            assert table.entries[key] == pytest.approx((100.0 + index - 20.0) / 1e3)
    CostModel(TWO_OPS, C=2, layers=3, image_shape=(8, 8, 3), table=table)
    some = sorted(manifest["files"])[3]
    os.remove(os.path.join(folder, "logs", some.removesuffix(".tflite") + ".log"))
    with pytest.raises(ConfigError, match=f"no log for '{manifest['files'][some]}'"):
        latency.import_benchmark_logs(folder)
    with open(os.path.join(folder, "logs", some.removesuffix(".tflite") + ".log"), "w") as handle:
        handle.write("ERROR: failed to load\n")
    with pytest.raises(ConfigError, match="has no 'Inference \\(avg\\): ...' line"):
        latency.import_benchmark_logs(folder)
    with pytest.raises(ConfigError, match="no manifest.json in"):
        latency.import_benchmark_logs(str(tmp_path))


def test_time_tflite_errors(tmp_path):
    with pytest.raises(ExportError, match="No LiteRT model at"):
        latency.time_tflite(str(tmp_path / "missing.tflite"))
    with pytest.raises(ConfigError, match="`threads` and `repeats` must be positive"):
        latency.time_tflite(b"", threads=0)


def test_latency_commands(tmp_path):
    model = CostModel(SMALL_SPACE, C=2, layers=3, image_shape=(8, 8, 3))
    path = str(tmp_path / "model.tflite")
    with open(path, "wb") as handle:
        handle.write(latency.network_tflite(model, DARTS_V2.__class__(
            [("sep_conv_3x3", 0), ("skip_connect", 1)] * 4, [2, 3, 4, 5],
            [("max_pool_3x3", 0), ("sep_conv_3x3", 1)] * 4, [2, 3, 4, 5])))  # fmt: skip
    out = darts_tf("evaluate", "--model", path, "--latency", "--repeats", "3", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["latency_ms"] > 0 and result["threads"] == 1 and "accuracy" not in result
    out = darts_tf("evaluate", "--run-dir", str(tmp_path), "--latency")
    assert out.returncode == 2 and "--latency measures a .tflite --model" in out.stderr
    out = darts_tf("latency-table", "--C", "4")
    assert out.returncode == 2 and "--out FILE is required" in out.stderr
    out = darts_tf("latency-table", "--check", str(tmp_path / "none.json"))
    assert out.returncode == 2 and "no file at" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = darts_tf("search", "--latency-budget", "2", "--dataset", "synthetic")
    assert out.returncode == 2 and "--latency-budget needs a --latency-table" in out.stderr


@pytest.mark.slow
def test_search_under_a_latency_budget_end_to_end(tmp_path):
    """latency-table -> search with a budget (latency.json: the found network measured) -> visualize (costs.png)
    -> the table checked against measured networks."""
    table = str(tmp_path / "table.json")
    out = darts_tf("latency-table", "--C", "4", "--layers", "3", "--image-size", "16", "--repeats", "3",
                   "--primitives", "none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "--out", table)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "-> " + table in out.stdout
    run_dir = str(tmp_path / "search")
    out = darts_tf(
        "search", "--dataset", "synthetic", "--image-size", "16", "--C", "4", "--layers", "3", "--epochs", "2",
        "--batch-size", "8", "--subset", "16", "--primitives", "none", "max_pool_3x3", "skip_connect", "sep_conv_3x3",
        "--latency-table", table, "--latency-budget", "0.05", "--flops-budget", "1", "--run-dir", run_dir,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "latency of the found network (LiteRT, 1 thread(s)): measured" in out.stdout
    assert "derived network (C=4, 3 cells):" in out.stdout and "(budget 0.05)" in out.stdout
    with open(os.path.join(run_dir, "latency.json")) as handle:
        measured = json.load(handle)
    assert measured["measured_ms"] > 0 and measured["budget_ms"] == 0.05 and measured["network"]["C"] == 4
    header = open(os.path.join(run_dir, "metrics.csv")).readline().strip().split(",")
    for column in ("latency_ms", "flops_m", "params_m", "expected_latency_ms", "expected_flops_m"):
        assert column in header
    import glob

    import tensorflow as tf

    tags = set()
    for path in glob.glob(os.path.join(run_dir, "tensorboard", "search", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    assert {"cost/latency_ms", "cost/flops_m", "cost/params_m", "cost/expected_latency_ms"} <= tags
    out = darts_tf("visualize", run_dir)
    assert out.returncode == 0, out.stderr
    assert os.path.isfile(os.path.join(run_dir, "visualize", "costs.png"))
    out = darts_tf("latency-table", "--check", table, "--networks", "3", "--repeats", "3")
    assert out.returncode == 0, out.stderr
    assert "3 random networks: Spearman" in out.stdout


def test_unit_model_shapes():
    unit = Unit("sep_conv_3x3", 4, 4, 8, 8, 2)
    model = latency.unit_model(unit, SMALL_SPACE)
    assert tuple(model.output.shape) == (1, 4, 4, 4)


def test_exported_stride_2_max_pool_runs_without_mirror_padding(capsys):
    """At inference the stride-2 max pool is a stride-1 pool and a slice, which LiteRT's fast kernels take; the
    training graph's mirror padding (MIRROR_PAD) would run on the reference kernel."""
    import tensorflow as tf

    model = latency.tflite_of(latency.unit_model(Unit("max_pool_3x3", 8, 8, 16, 16, 2), SMALL_SPACE))
    tf.lite.experimental.Analyzer.analyze(model_content=model)
    ops = capsys.readouterr().out
    assert "MAX_POOL_2D" in ops and "MIRROR_PAD" not in ops

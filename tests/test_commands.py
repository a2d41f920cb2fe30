"""The darts-tf command line: parsing without TensorFlow, quiet logs, one-line errors, the pipeline."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _darts_tf(*args, **kwargs):
    command = [sys.executable, "-m", "darts_tf.commands", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=kwargs.pop("cwd", ROOT), **kwargs)


def test_help_parses_every_command_without_tensorflow():
    code = (
        "import sys; from darts_tf.commands import COMMANDS, build_parser; parser = build_parser(); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported'; print(sorted(COMMANDS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    commands = [
        "search",
        "train",
        "evaluate",
        "export",
        "pipeline",
        "benchmark",
        "visualize",
        "score",
        "latency-table",
        "search-rnn",
        "train-rnn",
    ]
    assert out.stdout.strip() == str(sorted(commands))
    for command in commands:
        result = _darts_tf(command, "--help")
        assert result.returncode == 0 and f"darts-tf {command}" in result.stdout and "--verbose" in result.stdout


def test_tensorflow_log_lines_are_filtered_unless_verbose():
    code = (
        "import os, sys; from darts_tf.commands.common import quiet_tensorflow_logs; quiet_tensorflow_logs(); "
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n'); "
        "os.write(2, b'I0000 00:00:1795939113.218200    2913 port.cc:153] oneDNN custom operations are on.\\n'); "
        "os.write(2, b'E0000 00:00:1795940028.871767    5247 cuda_platform.cc:52] failed call to cuInit\\n'); "
        "os.write(2, b'W1129 08:03:47.123456    2913 foo.cc:1] a warning\\n'); "
        "from absl import logging; logging.warning('a tfds cache warning'); "
        "print('kept: one line', file=sys.stderr); os.write(2, b'and a partial line')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr == "kept: one line\nand a partial line"


def test_errors_are_one_line_and_exit_2(tmp_path):
    result = _darts_tf("search", "--data-dir", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    # TensorFlow's start-up logs are gone: the error is all there is.
    assert result.stderr.strip().splitlines() == [
        f"darts-tf search: error: --data-dir {str(tmp_path / 'missing')!r} does not exist "
        "(expected an image folder with train/<class>/*, an .npz, or CIFAR-10/100 python batches or their .tar.gz)"
    ]
    evaluate = _darts_tf("evaluate", "--run-dir", str(tmp_path / "nowhere"))
    assert evaluate.stderr.strip().splitlines() == [
        f"darts-tf evaluate: error: run folder {str(tmp_path / 'nowhere')!r} does not exist "
        "(expected the --run-dir of a darts-tf train)"
    ]
    assert not (tmp_path / "run").exists()
    assert _darts_tf("train", "--epochs", "0").returncode == 2
    assert _darts_tf("pipeline", "--subset", "-1").returncode == 2
    assert _darts_tf("nonsense").returncode == 2


@pytest.mark.slow
def test_the_library_leaves_process_wide_settings_alone(tmp_path):
    """run_search/run_training do not set threads or grappler; the commands do (runtime.configure)."""
    code = (
        "import tensorflow as tf; from darts_tf.config import SearchConfig, TrainConfig; "
        "from darts_tf.cnn.search import run_search; from darts_tf.cnn.train import run_training; "
        "threads = tf.config.threading; "
        "before = (tf.config.optimizer.get_experimental_options(), "
        "threads.get_inter_op_parallelism_threads(), threads.get_intra_op_parallelism_threads()); "
        f"run_search(SearchConfig(epochs=1, batch_size=8, C=4, layers=3, steps=2, multiplier=2, subset=32, "
        f"dataset='synthetic', run_dir={str(tmp_path / 's')!r}), verbose=0); "
        f"run_training(TrainConfig(epochs=1, batch_size=8, C=4, layers=3, subset=16, dataset='synthetic', "
        f"export=False, run_dir={str(tmp_path / 't')!r}), verbose=0); "
        "after = (tf.config.optimizer.get_experimental_options(), "
        "threads.get_inter_op_parallelism_threads(), threads.get_intra_op_parallelism_threads()); "
        "assert before == after, (before, after); print('unchanged', after)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("unchanged") and "}, 0, 0)" in out.stdout, out.stderr[-2000:]


def test_pipeline_runs_search_train_export_and_serves(tmp_path):
    result = _darts_tf(
        "pipeline", "--preset", "quick", "--dataset", "synthetic", "--subset", "256", "--quiet",
        "--run-dir", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "sm"),
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line[:3] for line in lines if line[:2] in ("1/", "2/", "3/", "4/")] == ["1/4", "2/4", "3/4", "4/4"]
    saved = tmp_path / "sm" / "darts_pipeline" / "1"
    assert (saved / "saved_model.pb").exists() and (tmp_path / "runs" / "search" / "genotype.json").exists()
    assert any(line.startswith("4/4 serve: 128 test images through the SavedModel: top-1 ") for line in lines)
    assert any("served prediction (first 8 test images): [" in line for line in lines)
    assert result.stderr.strip() == ""  # quiet: no TensorFlow logs


def test_every_flag_of_every_command_has_help():
    import argparse

    from darts_tf.commands import build_parser

    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = {
        name: [a.option_strings[0] for a in sub._actions if a.option_strings and not a.help]
        for name, sub in subparsers.choices.items()
    }
    assert not any(missing.values()), missing


def test_flag_errors_are_one_line():
    for argv in (["search", "--batch-size", "0"], ["train", "--strategy", "ring"], ["serch"]):
        result = subprocess.run([sys.executable, "-m", "darts_tf.commands", *argv], capture_output=True, text=True)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "error:" in result.stderr and "usage" not in result.stderr


@pytest.mark.slow
def test_output_to_a_pipe_is_plain_lines_and_quiet_drops_the_tables(tmp_path):
    flags = ["--dataset", "synthetic", "--image-size", "8", "--subset", "32", "--epochs", "2", "--C", "4"]
    flags += ["--layers", "2", "--batch-size", "8"]
    plain = _darts_tf("search", *flags, "--run-dir", str(tmp_path / "a"))
    assert plain.returncode == 0, plain.stderr
    assert "\b" not in plain.stdout and "\x1b" not in plain.stdout
    epoch_lines = [line for line in plain.stdout.splitlines() if " - loss: " in line]
    assert len(epoch_lines) == 2 and "arch_loss" in epoch_lines[0]  # Keras's one line per epoch
    assert plain.stdout.count("softmax(alphas_normal)") == 2
    quiet = _darts_tf("search", *flags, "--run-dir", str(tmp_path / "b"), "--quiet")
    assert quiet.returncode == 0 and "softmax(" not in quiet.stdout and "search finished" in quiet.stdout


def test_scaling_table_shows_trace_graph_size_and_collectives():
    from benchmarks.command import scaling_table

    name = "search, first order (C=4, 3 cells)"
    rows = [
        {"name": name, "replicas": 1, "batch": 8, "median_s": 0.33, "images_per_s": 24.0, "first_step_s": 17,
         "trace_and_first_step_s": 11, "peak_rss_gib": 0.84, "graph_ops": 18399,
         "collectives_per_replica": {"calls": 0, "values": 0}},
        {"name": name, "replicas": 2, "batch": 8, "median_s": 0.66, "images_per_s": 12.0, "first_step_s": 71,
         "trace_and_first_step_s": 65, "peak_rss_gib": 1.86, "graph_ops": 65140,
         "collectives_per_replica": {"calls": 126, "values": 99791}},
        {"name": name, "replicas": 3, "batch": 8, "error": "batch not divisible by replicas"},
    ]  # fmt: skip
    lines = scaling_table(rows).splitlines()
    assert "trace + first step s" in lines[0] and "all-reduces / replica" in lines[0]
    assert [cell.strip() for cell in lines[3].strip("|").split("|")] == [
        name, "2", "8", "0.66", "12.0", "71", "65", "1.86", "65,140", "126", "0.50x", "25%"
    ]  # fmt: skip
    assert "batch not divisible" in lines[4] and lines[4].count("|") == lines[0].count("|")


def test_the_gpu_benchmark_plan():
    from benchmarks.command import gpu_plan, mixed_policy

    assert mixed_policy([8, 0]) == "mixed_bfloat16" and mixed_policy([7, 0]) == "mixed_float16"
    assert mixed_policy(None) == "mixed_float16"
    one = gpu_plan(1, [8, 6])
    rows = [(r["kind"], r.get("order"), r.get("variant"), r["batch"], r.get("precision")) for r in one]
    for precision in ("float32", "mixed_bfloat16"):
        assert ("search", "first", None, 64, precision) in rows and ("search", "second", None, 64, precision) in rows
        assert ("search", "first", "pcdarts", 256, precision) in rows
        assert ("eval_train", None, None, 96, precision) in rows
    assert ("serve", None, None, 256, None) in rows and len(one) == 9
    assert not any(r["kind"] == "distributed" for r in one)
    two = gpu_plan(2, [7, 0])
    scaling = [(r["what"], r["replicas"], r["batch"]) for r in two if r["kind"] == "distributed"]
    assert scaling == [("search", 1, 64), ("search", 2, 64), ("train", 1, 96), ("train", 2, 96)]
    assert {r.get("precision") for r in two} == {"float32", "mixed_float16", None}
    assert len({r["name"] for r in two}) == len(two)


def test_the_gpu_benchmark_without_a_gpu_is_one_line(tmp_path):
    result = _darts_tf("benchmark", "--device", "gpu", cwd=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "darts-tf benchmark: error: RuntimeError: --device gpu: TensorFlow sees no GPU"
    ]
    assert not (tmp_path / "runs").exists()


def test_the_original_column_only_beside_the_paper_sized_search_network():
    from benchmarks.command import table
    from benchmarks.measure import ORIGINAL_BY_CPU

    row = {"name": "search, first order", "batch": 32, "median_s": 2.0, "images_per_s": 16.0}
    row["key"] = ("search", "first", 32)
    for cpu in ("avx512", "avx2"):
        paper = table([row], cpu=cpu).splitlines()[-1]
        small = table([{**row, "beside_original": False}], cpu=cpu).splitlines()[-1]
        stored = ORIGINAL_BY_CPU[cpu][("search", "first", 32)]["seconds"]
        assert f"{stored:.2f} s/step" in paper and f"{stored / 2.0:.2f}x" in paper
        assert "s/step," not in small and small.rstrip(" |").endswith("-")
    assert ORIGINAL_BY_CPU["avx2"][("search", "first", 32)] != ORIGINAL_BY_CPU["avx512"][("search", "first", 32)]
    # No stored row for an unmeasured kind of CPU, nor for a row the original was not run beside on that kind.
    assert table([row], cpu="other").splitlines()[-1].rstrip(" |").endswith("-")
    serve = {"name": "serve", "batch": 32, "median_s": 1.0, "images_per_s": 32.0, "key": ("serve", None, 32)}
    assert "img/s" in table([serve], cpu="avx512") and "img/s" not in table([serve], cpu="avx2")


def test_the_kind_of_cpu_picks_the_stored_original():
    from benchmarks.command import _original_line
    from benchmarks.measure import cpu_kind

    assert cpu_kind({"sse4_2", "avx2", "fma", "avx512f", "avx512bw"}) == "avx512"
    assert cpu_kind({"sse4_2", "avx2", "fma"}) == "avx2"
    assert cpu_kind({"asimd", "fp"}) == "other" and cpu_kind(set()) == "other"
    assert "AVX2 only" in _original_line("avx2") and "AVX-512" in _original_line("avx512")
    assert _original_line("other").startswith("original (stored): none for this kind of CPU")


def test_the_benchmark_outside_a_source_checkout_is_one_line(tmp_path, monkeypatch, capsys):
    from darts_tf.commands import benchmark, build_parser

    args = build_parser().parse_args(["benchmark", "--skip-search"])
    monkeypatch.setattr(benchmark, "_ROOT", str(tmp_path))  # no benchmarks/ there, as in a wheel install
    with pytest.raises(SystemExit) as exit_info:
        benchmark.run(args, args._parser)
    assert exit_info.value.code == 2
    assert "the benchmark runs from a source checkout of darts_tf" in capsys.readouterr().err


def test_resume_names_the_flags_it_does_not_apply(tmp_path, capsys):
    import argparse
    import dataclasses
    import json

    from darts_tf.commands.common import config_from_args
    from darts_tf.config import RNN_TRAIN_PRESETS, RNNTrainConfig

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(RNNTrainConfig(epochs=3, run_dir=str(run)))))
    parser = argparse.ArgumentParser()
    flags = dict(preset="paper", resume=str(run), run_dir=None, epochs=9, precision="mixed_bfloat16", nhid=None)
    config = config_from_args(parser, argparse.Namespace(**flags), RNNTrainConfig, RNN_TRAIN_PRESETS)
    assert config.run_dir == str(run)
    line = capsys.readouterr().err.strip()
    assert line == (f"--resume {run}: the run continues with the settings in its config.json; not applied: "
                    "--epochs 9, --precision mixed_bfloat16")  # fmt: skip
    flags.update(epochs=3, precision="float32")  # what the run has: nothing to say
    config_from_args(parser, argparse.Namespace(**flags), RNNTrainConfig, RNN_TRAIN_PRESETS)
    assert capsys.readouterr().err == ""

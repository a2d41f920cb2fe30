"""darts_tf.rnn.train: language-model training, averaged SGD, resume, export."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from darts_tf.config import RNNTrainConfig
from rnn_helpers import Interrupt, InterruptAfter, corpus_folder


def test_training_switches_to_averaged_sgd_keeps_the_best_and_serves_without_darts_tf(tmp_path):
    from darts_tf.rnn.train import run_rnn_training

    folder = corpus_folder(tmp_path / "corpus")
    config = RNNTrainConfig(
        data_dir=folder, emsize=16, nhid=16, batch_size=8, bptt=10, epochs=4, eval_batch_size=4, max_steps=6,
        nonmono=1, learning_rate=40.0, run_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "sm"),
    )  # fmt: skip
    result = run_rnn_training(config, verbose=0)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_ppl"] == pytest.approx(result["test_ppl"]) and results["test_batch_size"] == 1
    assert (tmp_path / "run" / "best" / "state.json").exists()
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 5 and "averaged" in rows[0]
    path = result["export_path"]
    assert path.endswith(os.path.join("sm", "darts_v2", "1"))
    assert open(os.path.join(path, "assets.extra", "vocab.txt"), encoding="utf-8").read().count("\n") == 42
    code = (
        "import json, sys, numpy as np, tensorflow as tf; serve = tf.saved_model.load(sys.argv[1]).signatures"
        "['serving_default']; out = serve(tokens=tf.constant([[1, 2, 3], [4, 5, 6]], tf.int32), "
        "state=tf.zeros([2, 16])); p = np.exp(out['log_probs'].numpy()).sum(-1); "
        "print(json.dumps([out['log_probs'].shape.as_list(), out['state'].shape.as_list(), "
        "float(np.abs(p - 1).max()), 'darts_tf' in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    log_probs, state, deviation, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert log_probs == [2, 3, 42] and state == [2, 16] and deviation < 1e-5 and imported is False


def test_training_resumes_exactly_across_the_switch_to_averaged_sgd(tmp_path):
    from darts_tf.rnn.train import run_rnn_training

    folder = corpus_folder(tmp_path / "corpus")
    values = dict(data_dir=folder, emsize=16, nhid=16, batch_size=8, bptt=10, epochs=3, eval_batch_size=4,
                  max_steps=5, nonmono=0, learning_rate=120.0, export=False)  # fmt: skip
    straight = run_rnn_training(RNNTrainConfig(run_dir=str(tmp_path / "a"), **values), verbose=0)

    # After epoch 2 the switch was decided: the resumed epoch runs averaged SGD from the checkpoint.
    with pytest.raises(Interrupt):
        run_rnn_training(RNNTrainConfig(run_dir=str(tmp_path / "b"), **values), verbose=0,
                         callbacks=[InterruptAfter(2)])  # fmt: skip
    resumed = run_rnn_training(RNNTrainConfig(run_dir=str(tmp_path / "b"), **values), resume=True, verbose=0)
    rows = [(tmp_path / name / "metrics.csv").read_text().strip().splitlines() for name in ("a", "b")]
    assert len(rows[0]) == len(rows[1]) == 4
    averaged = [line.split(",")[rows[0][0].split(",").index("averaged")] for line in rows[0][1:]]
    assert averaged == ["0.0", "0.0", "1.0"]  # lr 120: epoch 2 is worse than epoch 1, so epoch 3 averages
    assert resumed["test_ppl"] == pytest.approx(straight["test_ppl"], rel=1e-6)
    assert resumed["valid_ppl"] == pytest.approx(straight["valid_ppl"], rel=1e-6)


def test_the_switch_to_averaged_sgd_is_the_originals_rule():
    from darts_tf.rnn.train import should_average

    assert not should_average([5.0, 4.0], 9.0, nonmono=5)  # not more than nonmono epochs recorded yet
    history = [5.0, 4.0, 3.0, 3.1, 3.2, 3.3, 3.4]  # all but the last 5: [5.0, 4.0], best 4.0
    assert not should_average(history, 3.9, nonmono=5) and should_average(history, 4.1, nonmono=5)
    assert should_average([4.0], 4.5, nonmono=0) and not should_average([4.0], 3.5, nonmono=0)


def test_training_resumes_from_the_previous_checkpoint_with_its_own_state(tmp_path):
    """A damaged latest checkpoint: weights and state (epoch, best loss, averaging) both come from the previous."""
    from darts_tf import runs
    from darts_tf.rnn.train import run_rnn_training

    folder = corpus_folder(tmp_path / "corpus")
    values = dict(data_dir=folder, emsize=16, nhid=16, batch_size=8, bptt=10, epochs=3, eval_batch_size=4,
                  max_steps=3, export=False)  # fmt: skip
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        run_rnn_training(RNNTrainConfig(run_dir=str(run), **values), verbose=0, callbacks=[InterruptAfter(2)])
    data_file = next(p for p in (run / "checkpoint").iterdir() if ".data-" in p.name)
    data_file.write_bytes(data_file.read_bytes()[:50])
    run_rnn_training(RNNTrainConfig(run_dir=str(run), **values), resume=True, verbose=0)
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3"]  # epoch 2 rerun from epoch 1's state
    assert runs.read_state(str(run))["epoch"] == 3 and len(runs.read_state(str(run))["best_val_loss"]) == 3


def test_evaluate_gives_the_runs_test_perplexity_from_the_run_and_from_its_export(tmp_path):
    from darts_tf.errors import CorpusError, ExportError, RunDirError
    from darts_tf.rnn.export import evaluate_language_model
    from darts_tf.rnn.train import evaluate_language_run, export_language_run, run_rnn_training
    from rnn_helpers import ROOT

    folder = corpus_folder(tmp_path / "corpus")
    config = RNNTrainConfig(
        data_dir=folder, emsize=16, nhid=16, batch_size=8, bptt=10, epochs=2, eval_batch_size=4, max_steps=3,
        run_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "sm"),
    )  # fmt: skip
    result = run_rnn_training(config, verbose=0)
    expected = json.loads((tmp_path / "run" / "results.json").read_text())
    from_run = evaluate_language_run(config.run_dir)
    assert from_run["perplexity"] == pytest.approx(expected["test_ppl"], rel=1e-12)
    assert from_run["best_epoch"] == expected["best_epoch"] and from_run["batch_size"] == 1
    # The SavedModel alone (TensorFlow's loader), its own vocabulary file: the same number to float32 round-off.
    from_export = evaluate_language_model(result["export_path"], folder, batch_size=1, bptt=config.bptt)
    assert from_export["perplexity"] == pytest.approx(expected["test_ppl"], rel=1e-5)
    assert from_export["words"] == from_run["words"] > 500
    again = export_language_run(config.run_dir, version=2)  # `darts-tf export --run-dir`: the best model again
    assert again == os.path.join(config.export_dir, "darts_v2", "2")
    assert evaluate_language_model(again, folder)["perplexity"] == pytest.approx(from_export["perplexity"], rel=1e-6)
    with pytest.raises(ExportError, match="already exists"):
        export_language_run(config.run_dir, version=2)
    at_4 = evaluate_language_run(config.run_dir, batch_size=4)["perplexity"]
    assert evaluate_language_model(result["export_path"], folder, batch_size=4)["perplexity"] == pytest.approx(
        at_4, rel=1e-5
    )
    # Another corpus's test text, read in the run's vocabulary: unseen words are <unk>, or an error without it.
    other = corpus_folder(tmp_path / "other", seed=1)
    with open(os.path.join(other, "test.txt"), "a", encoding="utf-8") as handle:
        handle.write(" w1 neverseen w2 \n")
    assert np.isfinite(evaluate_language_run(config.run_dir, data_dir=other)["perplexity"])
    bare = corpus_folder(tmp_path / "bare", unk=False)
    os.remove(os.path.join(bare, "train.txt"))
    with open(os.path.join(bare, "test.txt"), "a", encoding="utf-8") as handle:
        handle.write(" neverseen \n")
    vocabulary = os.path.join(result["export_path"], "assets.extra", "vocab.txt")
    words = open(vocabulary, encoding="utf-8").read().splitlines()
    with open(vocabulary, "w", encoding="utf-8") as handle:  # a vocabulary without <unk>
        handle.write("".join(f"{'unk_' if w == '<unk>' else ''}{w}\n" for w in words))
    with pytest.raises(CorpusError, match="word 'neverseen' is not in the training vocabulary"):
        evaluate_language_model(result["export_path"], bare)
    with pytest.raises(CorpusError, match="has no test file"):
        evaluate_language_model(result["export_path"], str(tmp_path / "run"))
    with pytest.raises(ExportError, match="is not a language model exported by darts_tf"):
        evaluate_language_model(str(tmp_path / "run"), folder)
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "config.json").write_text(json.dumps({"emsize": 16, "bptt": 10, "unrolled": False}))
    with pytest.raises(RunDirError, match="is a recurrent search: train its cell"):
        evaluate_language_run(str(tmp_path / "search"))
    # The command: the run's perplexity, and a language model without --data-dir is one line.
    command = [sys.executable, "-m", "darts_tf.commands", "evaluate"]
    out = subprocess.run([*command, "--run-dir", config.run_dir, "--json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["perplexity"] == pytest.approx(expected["test_ppl"])
    out = subprocess.run([*command, "--model", result["export_path"]], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "needs --data-dir" in out.stderr.strip().splitlines()[-1]
    export = [sys.executable, "-m", "darts_tf.commands", "export", "--run-dir", config.run_dir, "--format", "onnx"]
    out = subprocess.run(export, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "exports as a SavedModel only" in out.stderr.strip().splitlines()[-1]

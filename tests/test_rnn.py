"""Recurrent DARTS: genotypes, corpora, the language model, the search and training runs, the export."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf.config import RNNSearchConfig, RNNTrainConfig, check_rnn_config
from darts_tf.rnn import data as text
from darts_tf.rnn.genotypes import (
    DARTS_V1,
    DARTS_V2,
    PRIMITIVES,
    RecurrentGenotype,
    derive_recurrent_genotype,
    get_genotype,
    num_edges,
)
from darts_tf.rnn.model import RNNModel, nll, temporal_activation_regularization

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _corpus_folder(root, with_train=True, unk=True, seed=0):
    """A tiny word corpus: sentences over a 40-word vocabulary (plus <unk>)."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(40)] + (["<unk>"] if unk else [])
    os.makedirs(root, exist_ok=True)
    for name, lines in (("train.txt", 300), ("valid.txt", 120), ("test.txt", 80)):
        if name == "train.txt" and not with_train:
            continue
        with open(os.path.join(root, name), "w", encoding="utf-8") as handle:
            for _ in range(lines):
                handle.write(" " + " ".join(rng.choice(words, size=rng.integers(3, 12))) + " \n")
    return str(root)


def test_published_genotypes_and_json_round_trip(tmp_path):
    assert DARTS_V2.recurrent[0] == ("sigmoid", 0) and DARTS_V2.concat == tuple(range(1, 9))
    assert [op for op, _ in DARTS_V1.recurrent] == ["relu", "relu", "tanh", "relu", "relu", "identity", "relu", "relu"]
    DARTS_V2.save(tmp_path / "g.json")
    assert RecurrentGenotype.load(tmp_path / "g.json") == DARTS_V2 == get_genotype(str(tmp_path / "g.json"))
    assert get_genotype("DARTS") == DARTS_V2
    for bad, message in [
        ({"recurrent": [["conv", 0]], "concat": [1]}, "Unknown recurrent op 'conv'"),
        ({"recurrent": [["relu", 1]], "concat": [1]}, "predecessor must be in \\[0, 0\\]"),
        ({"recurrent": [["relu", 0]], "concat": [2]}, "concat must name nodes"),
        ({"normal": []}, "keys 'recurrent' and 'concat'"),
    ]:
        with pytest.raises(ValueError, match=message):
            RecurrentGenotype.from_dict(bad)
    with pytest.raises(ValueError, match="not valid JSON"):
        RecurrentGenotype.from_json("{")


def test_derivation_keeps_one_strongest_predecessor_per_node():
    alphas = np.zeros((num_edges(), len(PRIMITIVES)))
    # node 1: its only edge (0) prefers relu; node 2: edge from node 1 with a strong tanh beats node 0.
    alphas[0, PRIMITIVES.index("relu")] = 2.0
    alphas[2, PRIMITIVES.index("tanh")] = 3.0
    alphas[1, PRIMITIVES.index("none")] = 9.0  # `none` never counts
    genotype = derive_recurrent_genotype(alphas)
    assert genotype.recurrent[0] == ("relu", 0) and genotype.recurrent[1] == ("tanh", 1)
    assert genotype.recurrent[2] == ("tanh", 0)  # all equal: the lower predecessor, the first op after `none`
    assert genotype.concat == tuple(range(1, 9))
    with pytest.raises(ValueError, match="shape \\(36, 5\\)"):
        derive_recurrent_genotype(np.zeros((14, 5)))


def test_corpus_vocabulary_unknown_words_and_batches(tmp_path):
    corpus = text.load_corpus(_corpus_folder(tmp_path / "c"))
    assert corpus.words[0] != "<eos>" and "<eos>" in corpus.words and len(corpus) == 42
    folder = _corpus_folder(tmp_path / "u")
    with open(os.path.join(folder, "test.txt"), "a", encoding="utf-8") as handle:
        handle.write(" zebra \n")
    unk = text.load_corpus(folder)
    assert unk.test[-2] == unk.words.index("<unk>")  # ... zebra <eos>
    bare = _corpus_folder(tmp_path / "n", unk=False)
    with open(os.path.join(bare, "valid.txt"), "a", encoding="utf-8") as handle:
        handle.write(" zebra \n")
    with pytest.raises(text.CorpusError, match="word 'zebra' is not in the training vocabulary"):
        text.load_corpus(bare)
    with pytest.raises(text.CorpusError, match="has no training file"):
        text.load_corpus(_corpus_folder(tmp_path / "v", with_train=False))
    split = text.load_corpus(_corpus_folder(tmp_path / "v2", with_train=False), train_portion=0.75)
    assert len(split.train) > 2 * len(split.valid)
    source = text.batchify(np.arange(23), 4)  # 5 rows x 4 columns of consecutive text, tail dropped
    np.testing.assert_array_equal(source[:, 1], np.arange(5, 10))
    inputs, targets = text.get_batch(source, 3, 35)
    assert inputs.shape == (1, 4) and targets[0, 0] == 4


def test_sequence_lengths_are_the_originals_draws():
    lengths = text.sequence_lengths(np.random.default_rng(0), 10_000, 35, vary=False)
    assert set(lengths) <= {35, 17} and sum(lengths) >= 10_000 - 2
    again = text.sequence_lengths(np.random.default_rng(0), 10_000, 35, vary=False)
    assert lengths == again
    varied = text.sequence_lengths(np.random.default_rng(0), 10_000, 35, vary=True)
    assert min(varied) >= 5 and max(varied) <= 55 and len(set(varied)) > 10


def test_search_model_variables_and_counts():
    keras.utils.set_random_seed(0)
    model = RNNModel(10_000, 300, 300, genotype=None)
    model.build()
    assert [tuple(a.shape) for a in model.arch_variables] == [(36, 5)]
    assert sum(int(np.prod(v.shape)) for v in model.weight_variables) == 4_810_000  # tied embedding counted once
    ids = [id(v) for v in model.weight_variables + model.arch_variables]
    assert len(ids) == len(set(ids)) == len(model.trainable_variables)
    assert 0.5e-3 < model.alphas.numpy().std() < 1.5e-3
    assert np.abs(model.embedding.numpy()).max() <= 0.04
    with pytest.raises(ValueError, match="ninp == nhid"):
        RNNModel(10, 8, 16)


def test_dropout_masks_are_a_function_of_the_seed_and_tar_its_formula():
    model = RNNModel(30, 8, 8, genotype=DARTS_V2)
    model.build()
    tokens = np.random.default_rng(0).integers(0, 30, size=(6, 4)).astype("int32")
    hidden = model.init_hidden(4)
    run = lambda s: model(tokens, hidden, training=True, seed=tf.constant(s, tf.int32))["log_probs"].numpy()  # noqa: E731
    np.testing.assert_array_equal(run([1, 2]), run([1, 2]))
    assert np.abs(run([1, 2]) - run([1, 3])).max() > 1e-4
    out = model(tokens, hidden, training=False)
    raw = out["raw_outputs"].numpy()
    expected = 1e-3 * np.mean((raw[1:] - raw[:-1]) ** 2)
    assert float(temporal_activation_regularization(out["raw_outputs"], 1e-3)) == pytest.approx(expected, rel=1e-5)
    picked = np.take_along_axis(out["log_probs"].numpy(), tokens[..., None], axis=-1)
    assert float(nll(out["log_probs"], tokens)) == pytest.approx(-picked.mean(), rel=1e-6)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="`emsize` must equal `nhid`"):
        check_rnn_config(RNNSearchConfig(emsize=32, nhid=64))
    with pytest.raises(ValueError, match="`dropoutx` must be in \\[0, 1\\)"):
        check_rnn_config(RNNTrainConfig(dropoutx=1.0))
    with pytest.raises(ValueError, match="`virtual_step` must be original or paper. Received: 'both'"):
        check_rnn_config(RNNSearchConfig(virtual_step="both"))


def test_progress_within_an_epoch_off_a_terminal_is_a_line_per_tenth(capsys):
    from darts_tf.rnn.lm import StepProgress

    progress = StepProgress(epoch=0, steps=23, verbose=2)
    for done in range(1, 24):
        progress.update(done, 2.0)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("epoch 1: step 23/23, train ppl 7.39")
    assert all("\b" not in line and "\x1b" not in line for line in lines)
    silent = StepProgress(epoch=0, steps=5, verbose=0)
    silent.update(5, 2.0)
    assert capsys.readouterr().out == ""


def _search_config(tmp_path, folder, name, **overrides):
    values = dict(data_dir=folder, emsize=16, nhid=16, batch_size=8, bptt=10, epochs=2, eval_batch_size=4, max_steps=4)
    values.update(overrides)
    return RNNSearchConfig(run_dir=str(tmp_path / name), **values)


class _Interrupt(Exception):
    pass


def _interrupt_after_first(epoch):
    if epoch == 1:
        raise _Interrupt


@pytest.mark.slow
def test_second_order_search_runs_and_moves_the_alphas(tmp_path):
    """The unrolled step in the traced search loop (its numbers: tests/test_rnn_parity_torch.py)."""
    from darts_tf.rnn.search import run_rnn_search

    folder = _corpus_folder(tmp_path / "corpus")
    config = _search_config(tmp_path, folder, "s", unrolled=True, epochs=1, max_steps=2)
    result = run_rnn_search(config, verbose=0)
    assert json.loads((tmp_path / "s" / "config.json").read_text())["virtual_step"] == "original"
    with np.load(tmp_path / "s" / "alphas_epoch_000.npz") as a0, np.load(tmp_path / "s" / "alphas_epoch_001.npz") as a1:
        assert np.abs(a1["alphas"] - a0["alphas"]).max() > 1e-4
    assert np.isfinite(result["history"]["val_ppl"][0])


@pytest.mark.slow
def test_search_records_every_epoch_and_resumes_exactly(tmp_path):
    from darts_tf import runs
    from darts_tf.rnn.search import run_rnn_search

    unrolled = False
    folder = _corpus_folder(tmp_path / "corpus")
    straight = run_rnn_search(_search_config(tmp_path, folder, "a", unrolled=unrolled), verbose=0)
    run = tmp_path / "a"
    for name in ("config.json", "genotype.json", "alphas_epoch_000.npz", "alphas_epoch_002.npz", "metrics.csv"):
        assert (run / name).exists(), name
    with np.load(run / "alphas_epoch_000.npz") as a0, np.load(run / "alphas_epoch_002.npz") as a2:
        assert np.abs(a2["alphas"] - a0["alphas"]).max() > 1e-4  # 8 Adam steps of lr 3e-3
    assert len(straight["history"]["val_ppl"]) == 2 and all(np.isfinite(straight["history"]["val_ppl"]))
    from darts_tf.visualize import visualize

    written = {os.path.basename(p) for p in visualize(str(run), formats=("png", "svg"))}
    assert {"cell_recurrent.png", "cell_recurrent.svg", "alphas_epoch_000.png", "alphas_epoch_002.svg",
            "curves.png", "report.html"} <= written  # fmt: skip
    report = (run / "visualize" / "report.html").read_text()
    assert "recurrent search run" in report and 'src="data:image/png;base64,' in report
    assert not re.search(r"(src|href)=\"(?!data:)", report)  # nothing outside the page
    tags, steps = set(), set()
    for path in (run / "tensorboard" / "search").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
            steps.update([event.step] if event.summary.value else [])
    assert {"alphas/softmax", "cells/recurrent", "alphas/recurrent", "genotype"} <= tags and steps == {0, 1, 2}
    with pytest.raises(_Interrupt):
        run_rnn_search(
            _search_config(tmp_path, folder, "b", unrolled=unrolled), verbose=0, on_epoch_end=[_interrupt_after_first]
        )
    resumed = run_rnn_search(_search_config(tmp_path, folder, "b"), resume=True, verbose=0)
    assert resumed["first_epoch"] == 1 and resumed["genotype"] == straight["genotype"]
    with np.load(run / "alphas_epoch_002.npz") as a, np.load(tmp_path / "b" / "alphas_epoch_002.npz") as b:
        np.testing.assert_allclose(a["alphas"], b["alphas"], rtol=0, atol=1e-7)
    with pytest.raises(runs.RunDirError, match="already finished"):
        run_rnn_search(_search_config(tmp_path, folder, "b"), resume=True, verbose=0)


def test_training_switches_to_averaged_sgd_keeps_the_best_and_serves_without_darts_tf(tmp_path):
    from darts_tf.rnn.train import run_rnn_training

    folder = _corpus_folder(tmp_path / "corpus")
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


def test_commands_exit_2_with_one_line(tmp_path):
    for args, message in [
        (["train-rnn", "--data-dir", str(tmp_path / "missing")], "is not a folder"),
        (["search-rnn", "--data-dir", str(tmp_path), "--emsize", "8", "--nhid", "16"], "--emsize must equal --nhid"),
        (["train-rnn", "--arch", "FOO", "--data-dir", str(tmp_path)], "Unknown recurrent genotype 'FOO'"),
    ]:
        out = subprocess.run([sys.executable, "-m", "darts_tf.commands", *args, "--run-dir", str(tmp_path / "run")],
                             capture_output=True, text=True, cwd=ROOT)  # fmt: skip
        assert out.returncode == 2 and message in out.stderr.strip().splitlines()[-1], out.stderr
        assert not (tmp_path / "run").exists()


def test_training_resumes_exactly_across_the_switch_to_averaged_sgd(tmp_path):
    from darts_tf.rnn.train import run_rnn_training

    folder = _corpus_folder(tmp_path / "corpus")
    values = dict(data_dir=folder, emsize=16, nhid=16, batch_size=8, bptt=10, epochs=3, eval_batch_size=4,
                  max_steps=5, nonmono=0, learning_rate=150.0, export=False)  # fmt: skip
    straight = run_rnn_training(RNNTrainConfig(run_dir=str(tmp_path / "a"), **values), verbose=0)

    def interrupt_after_second(epoch):
        if epoch == 2:  # after the switch was decided: the resumed epoch runs averaged SGD from the checkpoint
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_rnn_training(RNNTrainConfig(run_dir=str(tmp_path / "b"), **values), verbose=0,
                         on_epoch_end=[interrupt_after_second])  # fmt: skip
    resumed = run_rnn_training(RNNTrainConfig(run_dir=str(tmp_path / "b"), **values), resume=True, verbose=0)
    rows = [(tmp_path / name / "metrics.csv").read_text().strip().splitlines() for name in ("a", "b")]
    assert len(rows[0]) == len(rows[1]) == 4
    averaged = [line.split(",")[rows[0][0].split(",").index("averaged")] for line in rows[0][1:]]
    assert averaged == ["0.0", "0.0", "1.0"]  # lr 150: epoch 2 is worse than epoch 1, so epoch 3 averages
    assert resumed["test_ppl"] == pytest.approx(straight["test_ppl"], rel=1e-6)
    assert resumed["valid_ppl"] == pytest.approx(straight["valid_ppl"], rel=1e-6)


def test_the_switch_to_averaged_sgd_is_the_originals_rule():
    from darts_tf.rnn.train import should_average

    assert not should_average([5.0, 4.0], 9.0, nonmono=5)  # not more than nonmono epochs recorded yet
    history = [5.0, 4.0, 3.0, 3.1, 3.2, 3.3, 3.4]  # all but the last 5: [5.0, 4.0], best 4.0
    assert not should_average(history, 3.9, nonmono=5) and should_average(history, 4.1, nonmono=5)
    assert should_average([4.0], 4.5, nonmono=0) and not should_average([4.0], 3.5, nonmono=0)


def test_model_config_round_trip():
    model = RNNModel(30, 8, 8, 0.5, 0.1, 0.2, 0.3, 0.05, genotype=DARTS_V1)
    model.build()
    again = RNNModel.from_config(model.get_config())
    again.build()
    assert again.genotype == DARTS_V1 and (again.dropout, again.dropoute, again.ntoken) == (0.5, 0.05, 30)
    again.set_weights(model.get_weights())
    tokens = np.arange(12, dtype="int32").reshape(4, 3) % 30
    hidden = model.init_hidden(3)
    np.testing.assert_array_equal(
        model(tokens, hidden)["log_probs"].numpy(), again(tokens, hidden)["log_probs"].numpy()
    )
    search = RNNModel.from_config(RNNModel(30, 8, 8, genotype=None).get_config())
    assert search.searching and search.steps == 8


def test_training_resumes_from_the_previous_checkpoint_with_its_own_state(tmp_path):
    """A damaged latest checkpoint: weights and state (epoch, best loss, averaging) both come from the previous."""
    from darts_tf import runs
    from darts_tf.rnn.train import run_rnn_training

    folder = _corpus_folder(tmp_path / "corpus")
    values = dict(data_dir=folder, emsize=16, nhid=16, batch_size=8, bptt=10, epochs=3, eval_batch_size=4,
                  max_steps=3, export=False)  # fmt: skip

    def interrupt_after_second(epoch):
        if epoch == 2:
            raise _Interrupt

    run = tmp_path / "run"
    with pytest.raises(_Interrupt):
        run_rnn_training(RNNTrainConfig(run_dir=str(run), **values), verbose=0, on_epoch_end=[interrupt_after_second])
    data_file = next(p for p in (run / "checkpoint").iterdir() if ".data-" in p.name)
    data_file.write_bytes(data_file.read_bytes()[:50])
    run_rnn_training(RNNTrainConfig(run_dir=str(run), **values), resume=True, verbose=0)
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3"]  # epoch 2 rerun from epoch 1's state
    assert runs.read_state(str(run))["epoch"] == 3 and len(runs.read_state(str(run))["best_val_loss"]) == 3

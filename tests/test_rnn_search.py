"""darts_tf.rnn.search and rnn.lm: the recurrent search run, its progress and resume."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from rnn_helpers import Interrupt, InterruptAfter, corpus_folder, search_config


def test_second_order_search_runs_and_moves_the_alphas(tmp_path):
    """The unrolled step in the traced search loop (its numbers: tests/test_rnn_parity_torch.py)."""
    from darts_tf.rnn.search import run_rnn_search

    folder = corpus_folder(tmp_path / "corpus")
    config = search_config(tmp_path, folder, "s", unrolled=True, epochs=1, max_steps=2)
    result = run_rnn_search(config, verbose=0)
    assert json.loads((tmp_path / "s" / "config.json").read_text())["virtual_step"] == "original"
    with np.load(tmp_path / "s" / "alphas_epoch_000.npz") as a0, np.load(tmp_path / "s" / "alphas_epoch_001.npz") as a1:
        assert np.abs(a1["alphas"] - a0["alphas"]).max() > 1e-4
    assert np.isfinite(result["history"]["val_ppl"][0])


def test_a_second_order_step_traces_the_search_cell_once():
    """The five passes of a second-order step (and its weight step) call one traced forward and one traced
    backward of the search cell (`darts_tf.rnn.bptt`), not five of each; its graph holds no while_v2 gradient."""
    from darts_tf.config import RNNSearchConfig
    from darts_tf.rnn import bptt
    from darts_tf.rnn.genotypes import PRIMITIVES, STEPS
    from darts_tf.rnn.model import BN_EPSILON, BN_MOMENTUM
    from darts_tf.rnn.search import RecurrentSearch, build_search_model

    config = RNNSearchConfig(batch_size=4, emsize=8, nhid=8, unrolled=True, seed=3)
    model = RecurrentSearch(build_search_model(config, 50), config)
    forward, backward = bptt._search_passes(tuple(PRIMITIVES), STEPS, BN_MOMENTUM, BN_EPSILON)
    before = forward.experimental_get_tracing_count(), backward.experimental_get_tracing_count()
    tokens = tf.TensorSpec([None, 4], tf.int32)
    step = tf.function(model.train_step, input_signature=[((tokens, tokens, tf.TensorSpec([2], tf.int32)),
                                                           (tokens, tokens))], autograph=False)  # fmt: skip
    graph = step.get_concrete_function().graph
    after = forward.experimental_get_tracing_count(), backward.experimental_get_tracing_count()
    assert after[0] - before[0] <= 1 and after[1] - before[1] <= 1  # 0 if another test traced this signature
    calls = [op.type for op in graph.get_operations() if op.type in ("PartitionedCall", "StatefulPartitionedCall")]
    assert len(calls) == 10, calls  # 5 forward + 5 backward calls of the two functions
    names = [name for name in graph._functions if "while" in name and "grad" in name.lower()]
    assert not names, names[:3]


@pytest.mark.slow
def test_search_records_every_epoch_and_resumes_exactly(tmp_path):
    from darts_tf import runs
    from darts_tf.rnn.search import run_rnn_search

    unrolled = False
    folder = corpus_folder(tmp_path / "corpus")
    straight = run_rnn_search(search_config(tmp_path, folder, "a", unrolled=unrolled), verbose=0)
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
    with pytest.raises(Interrupt):
        run_rnn_search(
            search_config(tmp_path, folder, "b", unrolled=unrolled), verbose=0, callbacks=[InterruptAfter(1)]
        )
    resumed = run_rnn_search(search_config(tmp_path, folder, "b"), resume=True, verbose=0)
    assert resumed["first_epoch"] == 1 and resumed["genotype"] == straight["genotype"]
    with np.load(run / "alphas_epoch_002.npz") as a, np.load(tmp_path / "b" / "alphas_epoch_002.npz") as b:
        np.testing.assert_allclose(a["alphas"], b["alphas"], rtol=0, atol=1e-7)
    with pytest.raises(runs.RunDirError, match="already finished"):
        run_rnn_search(search_config(tmp_path, folder, "b"), resume=True, verbose=0)

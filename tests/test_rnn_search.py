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

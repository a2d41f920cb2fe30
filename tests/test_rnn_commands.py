"""darts-tf search-rnn / train-rnn: settings and errors."""

import subprocess
import sys

import pytest

from darts_tf.config import RNNSearchConfig, RNNTrainConfig, check_rnn_config
from rnn_helpers import ROOT


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="`emsize` must equal `nhid`"):
        check_rnn_config(RNNSearchConfig(emsize=32, nhid=64))
    with pytest.raises(ValueError, match="`dropoutx` must be in \\[0, 1\\)"):
        check_rnn_config(RNNTrainConfig(dropoutx=1.0))
    with pytest.raises(ValueError, match="`virtual_step` must be original or paper. Received: 'both'"):
        check_rnn_config(RNNSearchConfig(virtual_step="both"))


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

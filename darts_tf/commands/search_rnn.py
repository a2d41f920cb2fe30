"""Recurrent DARTS search (Penn Treebank cells; the original's rnn/train_search.py).

darts-tf search-rnn --preset quick --data-dir ../shared/data/ptb-sample   # minutes on a CPU
darts-tf search-rnn --data-dir data/penn                                   # the paper's search
darts-tf search-rnn --data-dir data/penn --unrolled                        # second order
darts-tf search-rnn --resume runs/search_rnn
"""

from __future__ import annotations

import argparse

from darts_tf.commands.common import config_from_args, fail, verbosity
from darts_tf.commands.rnn import add_rnn_arguments
from darts_tf.config import RNN_SEARCH_PRESETS, RNNSearchConfig
from darts_tf.errors import DartsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_rnn_arguments(p, RNN_SEARCH_PRESETS, RNNSearchConfig().run_dir)
    p.add_argument("--unrolled", action="store_true", default=None, help="second-order architecture gradient")
    p.add_argument(
        "--virtual-step", choices=["original", "paper"], default=None,
        help="second order: 'original' (default) keeps the tied embedding fixed in the virtual step w' as "
        "quark0/darts computes it; 'paper' moves every weight (docs/fidelity.md)",
    )  # fmt: skip
    p.add_argument("--arch-learning-rate", type=float, help="Adam learning rate of the alphas (3e-3)")
    p.add_argument("--arch-weight-decay", type=float, help="coupled L2 of the alphas (1e-3)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = config_from_args(parser, args, RNNSearchConfig, RNN_SEARCH_PRESETS)
    from darts_tf.runtime import configure

    configure("recurrent")  # before TensorFlow runs anything
    from darts_tf.rnn.search import run_rnn_search

    try:
        result = run_rnn_search(config, resume=bool(args.resume), overwrite=args.overwrite, verbose=verbosity(args))
    except DartsError as error:
        fail(parser, error)
    history = result["history"]
    print(f"search finished in {result['seconds']:.0f} s; run folder: {result['config'].run_dir}")
    for i, ppl in enumerate(history["val_ppl"]):
        print(f"  epoch {result['first_epoch'] + i + 1}: valid ppl {ppl:.2f}")
    print(f"genotype: {result['genotype'].to_json()}")
    return 0

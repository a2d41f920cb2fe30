"""Flags the recurrent commands (search-rnn, train-rnn) share."""

from __future__ import annotations

import argparse

from darts_tf.commands.common import add_precision_argument


def add_rnn_arguments(p: argparse.ArgumentParser, presets: dict, default_run_dir: str) -> None:
    p.add_argument(
        "--preset", choices=sorted(presets), default="paper",
        help="paper (default: the original's settings) or quick (CPU-sized, on the shared PTB sample)",
    )  # fmt: skip
    p.add_argument(
        "--data-dir",
        help="corpus folder: train.txt, valid.txt, test.txt (or ptb.*.txt, wiki.*.tokens); default data/penn",
    )
    p.add_argument(
        "--train-portion", type=float,
        help="without a training file: train on this first part of the validation text (quick preset: 0.8)",
    )  # fmt: skip
    p.add_argument("--run-dir", default=None, help=f"output folder (default {default_run_dir})")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress: errors and the result")
    for flag, kind, what in (
        ("--emsize", int, "embedding size (= --nhid)"), ("--nhid", int, "hidden size"),
        ("--epochs", int, "epochs"), ("--batch-size", int, "batch size"), ("--bptt", int, "sequence length"),
        ("--learning-rate", float, "SGD learning rate (20)"), ("--clip", float, "gradient norm clip (0.25)"),
        ("--weight-decay", float, "coupled L2 weight decay"), ("--dropout", float, "output dropout"),
        ("--dropouth", float, "hidden-state dropout in the cell"), ("--dropoutx", float, "input dropout in the cell"),
        ("--dropouti", float, "embedding-output dropout"), ("--dropoute", float, "embedding (whole word) dropout"),
        ("--ar-alpha", float, "AR weight"), ("--tar-beta", float, "TAR weight (1e-3)"), ("--seed", int, "seed"),
        ("--eval-batch-size", int, "validation batch size (10)"),
        ("--max-steps", int, "at most this many weight steps per epoch (0: the whole text)"),
    ):  # fmt: skip
        p.add_argument(flag, type=kind, help=what)
    add_precision_argument(p)

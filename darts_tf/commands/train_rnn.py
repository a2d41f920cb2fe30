"""Train a recurrent cell's language model, report its test perplexity, export it (the original's rnn/train.py).

darts-tf train-rnn --preset quick --data-dir ../shared/data/ptb-sample
darts-tf train-rnn --arch DARTS_V2 --data-dir data/penn --epochs 600
darts-tf train-rnn --arch runs/search_rnn/genotype.json --data-dir data/penn
darts-tf train-rnn --resume runs/train_rnn
"""

from __future__ import annotations

import argparse

from darts_tf.commands.common import config_from_args, fail, verbosity
from darts_tf.commands.rnn import add_rnn_arguments
from darts_tf.config import RNN_TRAIN_PRESETS, RNNTrainConfig
from darts_tf.errors import DartsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_rnn_arguments(p, RNN_TRAIN_PRESETS, RNNTrainConfig().run_dir)
    p.add_argument("--arch", help="DARTS_V1, DARTS_V2 (default) or a recurrent genotype JSON file")
    p.add_argument("--nonmono", type=int, help="epochs without improvement before averaged SGD (5)")
    p.add_argument("--test-batch-size", type=int, help="batch size of the final test perplexity (1)")
    p.add_argument("--no-export", dest="export", action="store_false", default=None, help="skip the SavedModel")
    p.add_argument("--export-dir", help="SavedModel base folder (default saved_models)")
    p.add_argument("--export-name", help="model name under --export-dir (default: the arch name)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = config_from_args(parser, args, RNNTrainConfig, RNN_TRAIN_PRESETS)
    from darts_tf.runtime import configure

    configure("recurrent")  # before TensorFlow runs anything
    from darts_tf.rnn.train import run_rnn_training

    try:
        result = run_rnn_training(config, resume=bool(args.resume), overwrite=args.overwrite, verbose=verbosity(args))
    except DartsError as error:
        fail(parser, error)
    print(f"training finished in {result['seconds']:.0f} s; run folder: {result['config'].run_dir}")
    print(f"best epoch {result['best_epoch']}: valid ppl {result['valid_ppl']:.2f}, test ppl {result['test_ppl']:.2f}")
    if result["export_path"]:
        print(f"SavedModel: {result['export_path']}")
    return 0

#!/usr/bin/env python
"""Train a DARTS evaluation network from a genotype, then export it as a SavedModel.

python scripts/train_eval.py --preset quick --data-dir ../shared/data/cifar10-sample
python scripts/train_eval.py --arch DARTS_V2                      # the paper's 600 epochs, tfds CIFAR-10
python scripts/train_eval.py --arch runs/search/genotype.json     # a genotype found by search.py
python scripts/train_eval.py --resume runs/eval                   # continue an interrupted run
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args(argv=None):
    from darts_tf.cli import add_run_arguments, add_training_arguments, config_from_args
    from darts_tf.trainer import PRESETS, TrainConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, PRESETS, TrainConfig().run_dir)
    p.add_argument(
        "--arch",
        help="published genotype (NASNet, AmoebaNet, DARTS_V1, DARTS_V2) or a genotype JSON file; default DARTS_V2",
    )
    p.add_argument("--genotype", dest="arch", help="same as --arch: a genotype JSON file written by search.py")
    add_training_arguments(p, cutout_help="cutout length (0: off; default 16)")
    p.add_argument("--no-auxiliary", dest="auxiliary", action="store_false", default=None)
    p.add_argument("--auxiliary-weight", type=float)
    p.add_argument("--drop-path-prob", type=float)
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--no-export", dest="export", action="store_false", default=None, help="skip the SavedModel")
    p.add_argument("--export-dir", help="SavedModel base folder (default saved_models)")
    p.add_argument("--export-name", help="model name under --export-dir (default: the arch name)")
    args = p.parse_args(argv)
    positive = ["epochs", "batch_size", "C", "layers", "eval_batch_size"]
    return p, args, config_from_args(p, args, TrainConfig, PRESETS, positive=positive)


def main(argv=None) -> int:
    parser, args, config = parse_args(argv)
    from darts_tf.cli import fail
    from darts_tf.trainer import run_training

    try:
        result = run_training(
            config, resume=bool(args.resume), overwrite=args.overwrite, verbose=0 if args.quiet else 1
        )
    except ValueError as error:  # DataError, RunDirError, ExportError, bad genotype: one line
        fail(parser, error)
    history = result["history"]
    config = result["config"]
    print(f"training finished in {result['seconds']:.0f} s; run folder: {config.run_dir}")
    print(f"parameters (without the auxiliary head): {result['parameters']:,}")
    for i, (acc, top5) in enumerate(zip(history.get("val_accuracy", []), history.get("val_top5", []))):
        print(f"  epoch {result['first_epoch'] + i + 1}: test top-1 {acc:.4f}, top-5 {top5:.4f}")
    if result["export_path"]:
        print(f"SavedModel: {result['export_path']}")
    return 0


if __name__ == "__main__":
    from darts_tf.runtime import restart_with_huge_pages

    restart_with_huge_pages()  # malloc on 2 MiB pages: a much sooner first step (see darts_tf.runtime)
    sys.exit(main())

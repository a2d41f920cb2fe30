#!/usr/bin/env python
"""DARTS architecture search (Liu et al., ICLR 2019) on CIFAR-10 or a local copy of it.

python scripts/search.py --preset quick --data-dir ../shared/data/cifar10-sample
python scripts/search.py                      # the paper's search, CIFAR-10 from tfds
python scripts/search.py --resume runs/search # continue an interrupted search
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args(argv=None):
    from darts_tf.cli import add_run_arguments, add_training_arguments, config_from_args
    from darts_tf.searcher import PRESETS, SearchConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, PRESETS, SearchConfig().run_dir)
    add_training_arguments(p, cutout_help="cutout length (0: off, the search default)")
    p.add_argument("--unrolled", action="store_true", default=None, help="second-order architecture gradient")
    p.add_argument("--hessian", choices=["finite_difference", "exact"], default=None)
    p.add_argument("--train-portion", type=float)
    p.add_argument("--arch-learning-rate", type=float)
    p.add_argument("--arch-weight-decay", type=float)
    p.add_argument(
        "--no-shared-trace",
        dest="shared_trace",
        action="store_false",
        default=None,
        help="inline every edge, one variable per tensor: first step ~130 s later, +1.7 GiB at the paper size",
    )
    p.add_argument(
        "--graph-optimization",
        choices=["reduced", "off"],
        default=None,
        help="grappler: reduced (default) or off: first step up to ~5 s sooner, +0.2-0.4 GiB peak memory",
    )
    args = p.parse_args(argv)
    config = config_from_args(p, args, SearchConfig, PRESETS, positive=["epochs", "batch_size", "C", "layers"])
    return p, args, config


def main(argv=None) -> int:
    parser, args, config = parse_args(argv)
    from darts_tf.cli import fail
    from darts_tf.runtime import configure_for_search
    from darts_tf.searcher import run_search

    configure_for_search(graph_optimization=config.graph_optimization)  # before TensorFlow runs anything

    try:
        result = run_search(config, resume=bool(args.resume), overwrite=args.overwrite, verbose=0 if args.quiet else 1)
    except ValueError as error:  # DataError, RunDirError, bad genotype/flags: one line
        fail(parser, error)
    history = result["history"]
    print(f"search finished in {result['seconds']:.0f} s; run folder: {result['config'].run_dir}")
    for i, (acc, top5) in enumerate(zip(history.get("val_accuracy", []), history.get("val_top5", []))):
        print(f"  epoch {result['first_epoch'] + i + 1}: val top-1 {acc:.4f}, top-5 {top5:.4f}")
    print(f"genotype: {result['genotype'].to_json()}")
    return 0


if __name__ == "__main__":
    from darts_tf.runtime import restart_with_huge_pages

    restart_with_huge_pages()  # malloc on 2 MiB pages: a much sooner first step (see darts_tf.runtime)
    sys.exit(main())

#!/usr/bin/env python
"""DARTS architecture search (Liu et al., ICLR 2019) on CIFAR-10 or a local copy of it.

python scripts/search.py --preset quick --data-dir ../shared/data/cifar10-sample
python scripts/search.py                      # the paper's search, CIFAR-10 from tfds
python scripts/search.py --resume runs/search # continue an interrupted search
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args(argv=None):
    from darts_tf.searcher import PRESETS, SearchConfig

    d = SearchConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="paper (default) or quick (CPU-sized)")
    p.add_argument("--dataset", choices=["cifar10", "synthetic"], default=None, help=f"default {d.dataset}")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 python batches (folder or .tar.gz); default: tfds")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--C", type=int, help="initial channels")
    p.add_argument("--layers", type=int, help="number of cells")
    p.add_argument("--seed", type=int)
    p.add_argument("--unrolled", action="store_true", default=None, help="second-order architecture gradient")
    p.add_argument("--hessian", choices=["finite_difference", "exact"], default=None)
    p.add_argument("--train-portion", type=float)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--learning-rate-min", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--arch-learning-rate", type=float)
    p.add_argument("--arch-weight-decay", type=float)
    p.add_argument("--cutout", type=int, help="cutout length (0: off, the search default)")
    p.add_argument("--subset", type=int, help="use only the first N training images")
    p.add_argument("--run-dir", default=None, help=f"output folder (default {d.run_dir})")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the search in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    positive = ["epochs", "batch_size", "C", "layers"]
    for name in positive:
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive. Received: {value}")
    if args.resume and args.run_dir and os.path.abspath(args.run_dir) != os.path.abspath(args.resume):
        p.error("--resume RUN_DIR and a different --run-dir cannot be combined")
    values = {**PRESETS[args.preset]}
    for field in dataclasses.fields(SearchConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = value
    if args.resume:
        values["run_dir"] = args.resume
    return p, args, SearchConfig(**values)


def main(argv=None) -> int:
    parser, args, config = parse_args(argv)
    from darts_tf.data import DataError
    from darts_tf.runs import RunDirError
    from darts_tf.searcher import run_search

    try:
        result = run_search(config, resume=bool(args.resume), overwrite=args.overwrite, verbose=0 if args.quiet else 1)
    except (DataError, RunDirError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    history = result["history"]
    print(f"search finished in {result['seconds']:.0f} s; run folder: {result['config'].run_dir}")
    for i, (acc, top5) in enumerate(zip(history.get("val_accuracy", []), history.get("val_top5", []))):
        print(f"  epoch {i + 1}: val top-1 {acc:.4f}, top-5 {top5:.4f}")
    print(f"genotype: {result['genotype'].to_json()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

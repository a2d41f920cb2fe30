#!/usr/bin/env python
"""Test-set accuracy (top-1, top-5) of a trained network: a SavedModel or a training run's checkpoint.

python scripts/evaluate.py --saved-model saved_models/darts_v2/1 --data-dir ../shared/data/cifar10-sample
python scripts/evaluate.py --run-dir runs/eval --data-dir ../shared/data/cifar10-sample
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--saved-model", help="a SavedModel folder (NAME/VERSION) exported by darts_tf")
    model.add_argument("--run-dir", help="a train_eval.py run folder (its latest checkpoint)")
    p.add_argument("--dataset", choices=["cifar10", "synthetic"], default=None, help="default: the run's, or cifar10")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 python batches (folder or .tar.gz); default: tfds")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if args.batch_size <= 0:
        p.error(f"--batch-size must be positive. Received: {args.batch_size}")
    return p, args


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    from darts_tf.cli import fail

    try:
        from darts_tf import data
        from darts_tf.export import evaluate_saved_model, load_serving_signature
        from darts_tf.trainer import evaluate_run

        if args.saved_model:
            load_serving_signature(args.saved_model)  # fails fast, before loading data
            source = data.load_data(args.dataset or "cifar10", args.data_dir)
            result = evaluate_saved_model(args.saved_model, source.test_images, source.test_labels, args.batch_size)
        else:
            result = evaluate_run(args.run_dir, args.dataset, args.data_dir, args.batch_size)
    except ValueError as error:
        fail(parser, error)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test images: {result['images']}  top-1: {result['accuracy']:.4f}  top-5: {result['top5']:.4f}")
    return 0


if __name__ == "__main__":
    from darts_tf.runtime import restart_with_huge_pages

    restart_with_huge_pages()  # malloc on 2 MiB pages: a much sooner first step (see darts_tf.runtime)
    sys.exit(main())

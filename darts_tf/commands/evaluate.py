"""Test-set accuracy (top-1, top-5) of a trained network: a SavedModel, a .tflite, an .onnx or a run's checkpoint;
for a recurrent language model (`darts-tf train-rnn`'s run or SavedModel), its test perplexity.

darts-tf evaluate --model saved_models/darts_v2/1 --data-dir ../shared/data/cifar10-sample
darts-tf evaluate --model saved_models/darts_v2/1/model_int8.tflite --data-dir ../shared/data/cifar10-sample
darts-tf evaluate --run-dir runs/eval
darts-tf evaluate --model saved_models/darts_v2/1/model.tflite --latency    # its LiteRT latency at batch 1
darts-tf evaluate --run-dir runs/rnn_train                                  # test perplexity of the best model
darts-tf evaluate --model saved_models/darts_rnn/1 --data-dir ../shared/data/ptb-sample
"""

from __future__ import annotations

import argparse
import json

from darts_tf.commands.common import add_data_arguments, data_arguments, fail
from darts_tf.config import AUGMENTATIONS
from darts_tf.errors import DartsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--model", "--saved-model", dest="model",
        help="a SavedModel folder (NAME/VERSION), or a .tflite or .onnx file, exported by darts_tf",
    )  # fmt: skip
    model.add_argument("--run-dir", help="a training run folder (its latest checkpoint)")
    add_data_arguments(p)
    p.add_argument(
        "--augmentation", choices=AUGMENTATIONS, default="cifar",
        help="with --model: the training augmentation, which picks the test transform of streamed files "
        "(imagenet: shorter side to 256/224 x size, centre crop); a run folder knows its own",
    )  # fmt: skip
    p.add_argument(
        "--batch-size", type=int,
        help="images per evaluation batch (default 256); a language model: text columns (default: the run's test "
        "batch, 1 for a SavedModel, as the original's test perplexity)",
    )  # fmt: skip
    p.add_argument(
        "--latency", action="store_true",
        help="with a .tflite --model: its latency at batch 1 with the LiteRT interpreter (median of --repeats "
        "loops); accuracy too when --data-dir or --dataset is given",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="--latency: interpreter threads (1)")
    p.add_argument("--repeats", type=int, default=15, help="--latency: timed loops (15)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.batch_size is not None and args.batch_size <= 0:
        parser.error(f"--batch-size must be positive. Received: {args.batch_size}")
    if _language_model(args):
        return _perplexity(args, parser)
    args.batch_size = args.batch_size or 256
    if args.latency:
        return _latency(args, parser)
    try:
        from darts_tf import data
        from darts_tf.cnn.train import evaluate_run
        from darts_tf.export.formats import evaluate_model, load_predictor

        if args.model:
            load_predictor(args.model)  # fails fast, before loading data
            source = data.load_data(**data_arguments(args))
            print(f"data: {source.description}")
            result = evaluate_model(
                args.model, source.test_images, source.test_labels, args.batch_size, args.augmentation,
                bool(args.skip_bad_images),
            )  # fmt: skip
        else:
            result = evaluate_run(args.run_dir, args.dataset, args.data_dir, args.batch_size)
    except DartsError as error:
        fail(parser, error)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test images: {result['images']}  top-1: {result['accuracy']:.4f}  top-5: {result['top5']:.4f}")
    return 0


def _language_model(args: argparse.Namespace) -> bool:
    from darts_tf.rnn.export import is_language_model
    from darts_tf.rnn.train import is_language_run

    return is_language_model(args.model) if args.model else is_language_run(args.run_dir)


def _perplexity(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.latency or args.dataset:
        parser.error("a language model is evaluated on --data-dir (a corpus folder); --dataset and --latency are for "
                     f"image networks. Received: {args.model or args.run_dir}")  # fmt: skip
    try:
        if args.model:
            from darts_tf.rnn.export import evaluate_language_model

            if not args.data_dir:
                parser.error("--model of a language model needs --data-dir: a corpus folder with a test file")
            result = evaluate_language_model(args.model, args.data_dir, args.batch_size or 1)
        else:
            from darts_tf.rnn.train import evaluate_language_run

            result = evaluate_language_run(args.run_dir, args.data_dir, args.batch_size)
    except DartsError as error:
        fail(parser, error)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test words: {result['words']} ({result['test_file']})  perplexity: {result['perplexity']:.2f}  "
              f"(batch {result['batch_size']})")  # fmt: skip
    return 0


def _latency(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.model or not args.model.endswith(".tflite"):
        parser.error(f"--latency measures a .tflite --model. Received: {args.model or args.run_dir!r}")
    if args.threads <= 0 or args.repeats <= 0:
        parser.error(f"--threads and --repeats must be positive. Received: {args.threads}, {args.repeats}")
    try:
        from darts_tf.export.latency import time_tflite

        result = {"model": args.model, "latency_ms": time_tflite(args.model, args.threads, args.repeats),
                  "threads": args.threads, "batch": 1}  # fmt: skip
        if args.data_dir or args.dataset:
            from darts_tf import data
            from darts_tf.export.formats import evaluate_model

            source = data.load_data(**data_arguments(args))
            result |= evaluate_model(
                args.model, source.test_images, source.test_labels, args.batch_size, args.augmentation,
                bool(args.skip_bad_images),
            )  # fmt: skip
    except DartsError as error:
        fail(parser, error)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"latency: {result['latency_ms']:.3f} ms (batch 1, {args.threads} thread(s), LiteRT)")
    if "accuracy" in result:
        print(f"test images: {result['images']}  top-1: {result['accuracy']:.4f}  top-5: {result['top5']:.4f}")
    return 0

"""The whole DARTS pipeline on one preset: search -> train the found cell -> evaluate -> export -> serve.

darts-tf pipeline --preset quick --data-dir ../shared/data/cifar10-sample   # minutes on a CPU
darts-tf pipeline --run-dir runs/pipeline                                   # the paper's settings (days on a GPU)
darts-tf pipeline --preset quick --data-dir ../shared/data/cifar10-sample --latency-table table.json \
    --latency-budget 3   # a cell under 3 ms at the table's network, which is then trained (darts-tf latency-table)

RUN_DIR/search and RUN_DIR/train are an ordinary search and training run
(`darts-tf search/train --resume` continue them); the SavedModel goes to
EXPORT_DIR/NAME/VERSION; the last step loads it with TensorFlow alone and
classifies the first test images through its `serving_default` signature.
"""

from __future__ import annotations

import argparse
import os

from darts_tf.commands.common import (
    BUDGET_FIELDS,
    add_budget_arguments,
    add_data_arguments,
    add_precision_argument,
    add_space_arguments,
    fail,
    verbosity,
)
from darts_tf.config import SEARCH_PRESETS, TRAIN_PRESETS, SearchConfig, TrainConfig
from darts_tf.errors import DartsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(SEARCH_PRESETS), default="paper", help="paper (default) or quick")
    add_data_arguments(p, defaults=True)
    p.add_argument("--run-dir", default="runs/pipeline", help="holds search/ and train/ (default runs/pipeline)")
    p.add_argument("--export-dir", default="saved_models", help="SavedModel base folder (default saved_models)")
    p.add_argument("--export-name", default="darts_pipeline", help="model name under --export-dir")
    p.add_argument("--subset", type=int, default=0, help="use only N training images, as many per class (both runs)")
    p.add_argument("--seed", type=int, help="seed of both runs (default: each preset's)")
    add_precision_argument(p)
    add_space_arguments(p)
    add_budget_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace runs already in --run-dir")
    p.add_argument("--quiet", action="store_true", help="no per-step progress")


def _served_prediction(path: str, source, classes: int = 8) -> str:
    """Loads the SavedModel with TensorFlow alone and classifies the first test images."""
    import tensorflow as tf

    from darts_tf import data

    images, labels = next(iter(data.test_dataset(source.test_images, source.test_labels).batch(classes)))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    predicted = [name.decode() for name in serve(images=images)["classes"].numpy()]
    truth = [source.class_names[i] for i in labels.numpy()]
    return f"served prediction (first {classes} test images): {predicted} (labels {truth})"


def _table_network(latency_table: str | None) -> dict:
    """With a latency table, the training network is the one it was measured for: {"C", "layers"}."""
    if not latency_table:
        return {}
    from darts_tf.cnn.cost import LatencyTable

    network = LatencyTable.load(latency_table).network
    return {"C": int(network["C"]), "layers": int(network["layers"])}


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.subset < 0:
        parser.error(f"--subset must be positive. Received: {args.subset}")
    seed = {} if args.seed is None else {"seed": args.seed}
    shared = {"dataset": args.dataset, "data_dir": args.data_dir, "subset": args.subset, **seed}
    for name in ("image_size", "channels", "tfds_data_dir", "skip_bad_images", "stream", "cache", "precision"):
        if getattr(args, name) is not None:
            shared[name] = getattr(args, name)
    space = {name: getattr(args, name) for name in ("space", "primitives", "steps", "multiplier", "inputs_per_node")}
    space = {name: value for name, value in space.items() if value is not None}
    if args.ops_module is not None:
        shared["ops_module"] = args.ops_module
    budgets = {name: getattr(args, name) for name in BUDGET_FIELDS if getattr(args, name) is not None}
    try:
        search_config = SearchConfig(
            **{
                **SEARCH_PRESETS[args.preset],
                **shared,
                **space,
                **budgets,
                "run_dir": os.path.join(args.run_dir, "search"),
            }
        )
        measured = _table_network(search_config.latency_table)
    except DartsError as error:
        fail(parser, error)
    train_config = TrainConfig(
        **{
            **TRAIN_PRESETS[args.preset],
            **shared,
            **measured,
            "run_dir": os.path.join(args.run_dir, "train"),
            "arch": os.path.join(search_config.run_dir, "genotype.json"),
            "export_dir": args.export_dir,
            "export_name": args.export_name,
        }
    )
    verbose = verbosity(args)
    from darts_tf.runtime import configure

    configure("search")  # before TensorFlow runs anything; the training settings follow below
    from darts_tf import runs
    from darts_tf.cnn.search import run_search
    from darts_tf.cnn.train import run_training
    from darts_tf.export import evaluate_saved_model

    try:
        if search_config.strategy == "auto" and not getattr(args, "quiet", False):
            from darts_tf.distribute import resolve_auto

            chosen, why = resolve_auto()
            print(f"strategy: {'one device' if chosen == 'one' else chosen} (auto: {why})", flush=True)
        print(f"1/4 search ({args.preset}): {search_config.run_dir}", flush=True)
        searched = run_search(search_config, overwrite=args.overwrite, verbose=verbose)
        print(f"    {searched['seconds']:.0f} s; genotype: {searched['genotype'].to_json()}", flush=True)
        if search_config.latency_table:
            from darts_tf.commands.search import measure_found

            measure_found(parser, search_config.run_dir)
        configure("training")
        print(f"2/4 train the found cell ({args.preset}): {train_config.run_dir}", flush=True)
        trained = run_training(train_config, overwrite=args.overwrite, verbose=verbose)
        path = trained["export_path"]
        print(f"    {trained['seconds']:.0f} s; {trained['parameters']:,} parameters", flush=True)
        print(f"3/4 export: SavedModel {path}", flush=True)
        source = runs.load_run_data(train_config)
        result = evaluate_saved_model(
            path, source.test_images, source.test_labels, skip_bad_images=train_config.skip_bad_images
        )
        print(f"4/4 serve: {result['images']} test images through the SavedModel: top-1 {result['accuracy']:.4f}, "
              f"top-5 {result['top5']:.4f}")  # fmt: skip
        print("    " + _served_prediction(path, source))
    except DartsError as error:
        fail(parser, error)
    summary = {"search": search_config.run_dir, "train": train_config.run_dir, "saved_model": path}
    print("pipeline finished: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return 0

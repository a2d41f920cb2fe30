"""DARTS architecture search (Liu et al., ICLR 2019) on CIFAR-10, tfds or your own images.

darts-tf search --preset quick --data-dir ../shared/data/cifar10-sample
darts-tf search                                # the paper's search, CIFAR-10 from tfds
darts-tf search --unrolled --run-dir runs/second_order
darts-tf search --resume runs/search           # continue an interrupted search
darts-tf search --early-stop skip:2 --max-skip 2   # collapse guards (DARTS+, P-DARTS)
darts-tf search --preset pcdarts                   # PC-DARTS: partial channels, edge normalisation
darts-tf search --latency-table table.json --latency-budget 2.5   # a cell for the device (latency-table)
darts-tf search --strategy mirrored                # every visible GPU (--logical-cpus N: N CPU devices)
TF_CONFIG=... darts-tf search --strategy multi_worker  # the same command on every worker
"""

from __future__ import annotations

import argparse
import os

from darts_tf.commands.common import (
    add_budget_arguments,
    add_distribute_arguments,
    add_precision_argument,
    add_run_arguments,
    add_space_arguments,
    add_training_arguments,
    config_from_args,
    fail,
    start_strategy,
    verbosity,
)
from darts_tf.config import SEARCH_PRESETS, SearchConfig
from darts_tf.errors import DartsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, SEARCH_PRESETS, SearchConfig().run_dir)
    add_training_arguments(p, cutout_help="cutout length (0: off, the search default)", defaults=SearchConfig())
    p.add_argument("--unrolled", action="store_true", default=None, help="second-order architecture gradient")
    p.add_argument(
        "--hessian", choices=["finite_difference", "exact"], default=None,
        help="second order: the paper's finite-difference Hessian-vector product (default) or the exact one",
    )  # fmt: skip
    p.add_argument(
        "--train-portion", type=float,
        help="share of the training images the weights train on; the rest steps the alphas (0.5)",
    )  # fmt: skip
    p.add_argument("--arch-learning-rate", type=float, help="Adam learning rate of the alphas (3e-4)")
    p.add_argument("--arch-weight-decay", type=float, help="coupled L2 of the alphas (1e-3)")
    p.add_argument(
        "--beta-decay", type=float, metavar="LAMBDA",
        help="beta-DARTS: regularise the alphas with weight LAMBDA * epoch / 100 (their setting: 50; default 0: off)",
    )  # fmt: skip
    p.add_argument(
        "--max-skip", type=int, metavar="N",
        help="P-DARTS: at most N skip connections in the derived normal cell (the weakest give way)",
    )  # fmt: skip
    p.add_argument(
        "--early-stop", metavar="RULE",
        help="DARTS+: skip:N stops when the derived normal cell holds N skip connections (keeping the genotype "
        "before), stable:E when the genotype has not changed for E epochs",
    )  # fmt: skip
    p.add_argument(
        "--partial-channels", type=int, metavar="K",
        help="PC-DARTS: each edge's ops see 1/K of its channels, the rest bypass them (their setting: 4)",
    )  # fmt: skip
    p.add_argument(
        "--edge-normalization", action="store_true", default=None,
        help="PC-DARTS: per-node softmax weights of the edges (betas), trained with the alphas and used in derivation",
    )  # fmt: skip
    p.add_argument(
        "--arch-warmup", type=int, metavar="EPOCHS",
        help="train the weights only for the first EPOCHS epochs (PC-DARTS: 15)",
    )  # fmt: skip
    add_space_arguments(p)
    add_budget_arguments(p)
    p.add_argument(
        "--seeds", type=int, nargs="+", metavar="SEED",
        help="one search per seed, each in RUN_DIR/seed_<SEED>; prints each seed's result and their mean and "
        "standard deviation (the NAS-Bench-201 table accuracy with --space nb201), written to RUN_DIR/seeds.json",
    )  # fmt: skip
    p.add_argument(
        "--no-shared-trace",
        dest="shared_trace",
        action="store_false",
        default=None,
        help="inline every edge, one variable per tensor (the plain reference): a much slower start, more memory",
    )
    add_distribute_arguments(p)
    add_precision_argument(p)
    p.add_argument(
        "--graph-optimization",
        choices=["reduced", "off"],
        default="reduced",
        help="grappler (a runtime setting): reduced (default) or off: a slightly sooner first step, more peak memory",
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = config_from_args(
        parser,
        args,
        SearchConfig,
        SEARCH_PRESETS,
        positive=["epochs", "batch_size", "C", "layers", "steps", "multiplier"],
    )
    strategy = start_strategy(parser, args, config, "search")  # before TensorFlow runs anything
    from darts_tf.cnn.search import run_search

    if args.seeds:
        return run_seeds(parser, args, config, strategy)
    try:
        result = run_search(
            config, resume=bool(args.resume), overwrite=args.overwrite, verbose=verbosity(args),
            strategy=strategy,
        )  # fmt: skip
    except DartsError as error:  # bad input, data, run folders, a diverged run, a lost worker
        fail(parser, error)
    history = result["history"]
    print(f"search finished in {result['seconds']:.0f} s; run folder: {result['config'].run_dir}")
    for i, (acc, top5) in enumerate(zip(history.get("val_accuracy", []), history.get("val_top5", []))):
        print(f"  epoch {result['first_epoch'] + i + 1}: val top-1 {acc:.4f}, top-5 {top5:.4f}")
    print(f"genotype: {result['genotype'].to_json()}")
    if result["config"].latency_table:
        measure_found(parser, result["config"].run_dir)
    return 0


def measure_found(parser: argparse.ArgumentParser, run_dir: str) -> None:
    """The found network's real latency: exported as LiteRT and timed as the table was (RUN_DIR/latency.json)."""
    from darts_tf.export.latency import measure_search_result

    try:
        result = measure_search_result(run_dir)
    except DartsError as error:
        fail(parser, error)
    if result.get("measured_ms") is None:
        print(f"latency: predicted {result['predicted_ms']:.3f} ms ({result['note']})")
        return
    budget = "" if not result.get("budget_ms") else f", budget {result['budget_ms']:g} ms"
    print(
        f"latency of the found network (LiteRT, {result['threads']} thread(s)): measured {result['measured_ms']:.3f} "
        f"ms, predicted {result['predicted_ms']:.3f} ms{budget} ({os.path.join(run_dir, 'latency.json')})"
    )


def run_seeds(parser: argparse.ArgumentParser, args: argparse.Namespace, config, strategy) -> int:
    """`--seeds`: the search once per seed (RUN_DIR/seed_<SEED>, resumable one by one), then a summary line per
    seed, the mean and standard deviation (np.std: over the seeds, not a sample estimate) and RUN_DIR/seeds.json."""
    import dataclasses

    import numpy as np

    from darts_tf.cnn.search import run_search, table_accuracy
    from darts_tf.runs import write_json_atomic

    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds lists a seed twice. Received: {args.seeds}")
    rows = []
    for seed in args.seeds:
        seeded = dataclasses.replace(config, seed=seed, run_dir=os.path.join(config.run_dir, f"seed_{seed}"))
        resume = bool(args.resume) and os.path.exists(os.path.join(seeded.run_dir, "config.json"))
        try:
            result = run_search(seeded, resume=resume, overwrite=args.overwrite, verbose=verbosity(args),
                                strategy=strategy)  # fmt: skip
        except DartsError as error:
            fail(parser, error)
        accuracy = result["history"].get("val_accuracy", [float("nan")])
        row = {"seed": seed, "genotype": result["genotype"].to_dict(), "seconds": round(result["seconds"], 1),
               "val_accuracy": float(accuracy[-1]) if accuracy else None,
               "table_accuracy": table_accuracy(result["genotype"])}  # fmt: skip
        rows.append(row)
        table = "" if row["table_accuracy"] is None else f", table accuracy {row['table_accuracy']:.2f} %"
        print(f"seed {seed}: {result['seconds']:.0f} s{table}; genotype {result['genotype'].to_json()}", flush=True)
    summary = {}
    for name in ("table_accuracy", "seconds"):
        values = [row[name] for row in rows if row[name] is not None]
        if values:
            summary[name] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    write_json_atomic(os.path.join(config.run_dir, "seeds.json"), {"seeds": rows, "summary": summary})
    line = f"{len(rows)} seeds: search {summary['seconds']['mean']:.0f} +- {summary['seconds']['std']:.0f} s"
    if "table_accuracy" in summary:
        stats = summary["table_accuracy"]
        line += f"; NAS-Bench-201 table accuracy {stats['mean']:.2f} +- {stats['std']:.2f} %"
    print(line + f" ({os.path.join(config.run_dir, 'seeds.json')})")
    return 0

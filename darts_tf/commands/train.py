"""Train a DARTS evaluation network from a genotype, then export it as a SavedModel.

darts-tf train --preset quick --data-dir ../shared/data/cifar10-sample
darts-tf train --arch DARTS_V2                    # the paper's 600 epochs, tfds CIFAR-10
darts-tf train --genotype runs/search/genotype.json
darts-tf train --resume runs/eval                 # continue an interrupted run
darts-tf train --preset imagenet --data-dir ~/imagenet --stream   # the original's ImageNet recipe
darts-tf train --strategy mirrored --batch-size 192   # every visible GPU, 192 images a step in all
"""

from __future__ import annotations

import argparse

from darts_tf.commands.common import (
    add_distribute_arguments,
    add_ops_module_argument,
    add_precision_argument,
    add_run_arguments,
    add_training_arguments,
    config_from_args,
    fail,
    start_strategy,
    verbosity,
)
from darts_tf.config import AUGMENTATIONS, LR_SCHEDULES, NETWORKS, TRAIN_PRESETS, TrainConfig
from darts_tf.errors import DartsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, TRAIN_PRESETS, TrainConfig().run_dir)
    p.add_argument(
        "--arch",
        help="published genotype (NASNet, AmoebaNet, DARTS_V1, DARTS_V2) or a genotype JSON file; default DARTS_V2",
    )
    p.add_argument("--genotype", dest="arch", help="same as --arch: a genotype JSON file written by the search")
    add_ops_module_argument(p)
    add_training_arguments(p, cutout_help="cutout length (0: off; default 16)", defaults=TrainConfig())
    p.add_argument("--network", choices=NETWORKS, help="cifar (NetworkCIFAR, default) or imagenet (NetworkImageNet)")
    p.add_argument(
        "--augmentation", choices=AUGMENTATIONS,
        help="cifar (pad-4 crop, flip; default) or imagenet (random-resized crop, flip, colour jitter)",
    )  # fmt: skip
    p.add_argument("--label-smoothing", type=float, help="label smoothing of the loss (default 0; imagenet 0.1)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="cosine (default) or exponential (x --lr-decay/epoch)")
    p.add_argument("--lr-decay", type=float, help="exponential schedule's factor per epoch (default 0.97)")
    p.add_argument(
        "--no-auxiliary", dest="auxiliary", action="store_false", default=None,
        help="no auxiliary head (the paper trains with one, weight 0.4)",
    )  # fmt: skip
    p.add_argument("--auxiliary-weight", type=float, help="weight of the auxiliary head's loss (0.4)")
    p.add_argument("--drop-path-prob", type=float, help="drop-path rate reached at the last epoch, linear ramp (0.2)")
    p.add_argument("--eval-batch-size", type=int, help="batch size of the test-set evaluation each epoch (256)")
    p.add_argument("--no-export", dest="export", action="store_false", default=None, help="skip the SavedModel")
    p.add_argument("--export-dir", help="SavedModel base folder (default saved_models)")
    p.add_argument("--export-name", help="model name under --export-dir (default: the arch name)")
    add_distribute_arguments(p)
    add_precision_argument(p)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    positive = ["epochs", "batch_size", "C", "layers", "eval_batch_size"]
    config = config_from_args(parser, args, TrainConfig, TRAIN_PRESETS, positive=positive)
    strategy = start_strategy(parser, args, config, "training")  # before TensorFlow runs anything
    from darts_tf.cnn.train import run_training

    try:
        result = run_training(
            config, resume=bool(args.resume), overwrite=args.overwrite, verbose=verbosity(args),
            strategy=strategy,
        )  # fmt: skip
    except DartsError as error:  # bad input, data, run folders, a diverged run, a lost worker
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

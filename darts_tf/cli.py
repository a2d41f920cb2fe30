"""Shared command-line plumbing for the scripts: presets + flags -> a config dataclass."""

from __future__ import annotations

import argparse
import dataclasses
import os


def add_run_arguments(parser: argparse.ArgumentParser, presets: dict, default_run_dir: str) -> None:
    """Flags every run script has: preset, data source, run folder, resume/overwrite, quiet."""
    parser.add_argument(
        "--preset", choices=sorted(presets), default="paper", help="paper (default) or quick (CPU-sized)"
    )
    parser.add_argument("--dataset", choices=["cifar10", "synthetic"], default=None, help="default cifar10 (tfds)")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 python batches (folder or .tar.gz); default: tfds")
    parser.add_argument("--subset", type=int, help="use only the first N training images")
    parser.add_argument("--run-dir", default=None, help=f"output folder (default {default_run_dir})")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    parser.add_argument("--quiet", action="store_true")


def add_training_arguments(parser: argparse.ArgumentParser, cutout_help: str) -> None:
    """Network size and weight-optimizer flags shared by search.py and train_eval.py."""
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--C", type=int, help="initial channels")
    parser.add_argument("--layers", type=int, help="number of cells")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--learning-rate-min", type=float)
    parser.add_argument("--momentum", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--grad-clip", type=float)
    parser.add_argument("--cutout", type=int, help=cutout_help)


def config_from_args(parser, args, config_class, presets: dict, positive=()):
    """The preset's values overridden by every flag given; errors exit via `parser.error`."""
    for name in positive:
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive. Received: {value}")
    if args.resume and args.run_dir and os.path.abspath(args.run_dir) != os.path.abspath(args.resume):
        parser.error("--resume RUN_DIR and a different --run-dir cannot be combined")
    values = {**presets[args.preset]}
    for field in dataclasses.fields(config_class):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = value
    if args.resume:
        values["run_dir"] = args.resume
    return config_class(**values)


def fail(parser: argparse.ArgumentParser, error: Exception) -> None:
    """Exits with status 2 and one line naming the problem."""
    parser.exit(2, f"{parser.prog}: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}\n")

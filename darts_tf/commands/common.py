"""Shared command-line plumbing: presets + flags -> a config dataclass, one-line errors, quiet logs."""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import os
import re
import sys
import threading

from darts_tf.config import DATASETS, PRECISIONS, STRATEGIES
from darts_tf.errors import DartsError

# TensorFlow's C++ logs (absl format: "I0000 00:00:1795939113.218200    2913 port.cc:153] ..."), the
# line absl prints before them, and the continuation of the CPU-feature notice. TF_CPP_MIN_LOG_LEVEL
# no longer silences the ones printed at import (TensorFlow 2.19+), so the commands filter stderr.
_TF_LOG_LINE = re.compile(
    rb"^([IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |WARNING: All log messages before absl::InitializeLog"
    rb"|To enable the following instructions: |\t \[\[\{\{node "
    # LiteRT's converter and interpreter (plain prints): the calibration summary, the CPU delegate notice.
    rb"|fully_quantize: \d|INFO: Created TensorFlow Lite XNNPACK delegate)"
)


def add_run_arguments(parser: argparse.ArgumentParser, presets: dict, default_run_dir: str) -> None:
    """Flags every run command has: preset, data source, run folder, resume/overwrite, quiet."""
    names = ", ".join(sorted(set(presets) - {"paper", "quick"}))
    parser.add_argument(
        "--preset", choices=sorted(presets), default="paper",
        help="paper (default), quick (CPU-sized)" + (f" or {names}" if names else ""),
    )  # fmt: skip
    add_data_arguments(parser)
    parser.add_argument("--subset", type=int, help="use only N training images, as many of each class")
    parser.add_argument("--run-dir", default=None, help=f"output folder (default {default_run_dir})")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    parser.add_argument(
        "--quiet", action="store_true", help="no per-epoch tables or progress: the data line, errors and the result"
    )


def dataset_name(value: str) -> str:
    """argparse type of --dataset: cifar10, synthetic or tfds:NAME."""
    if value in DATASETS or (value.startswith("tfds:") and len(value) > 5):
        return value
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(DATASETS)} or tfds:NAME. Received: {value!r}")


def add_data_arguments(parser: argparse.ArgumentParser, defaults: bool = False) -> None:
    """Where the images come from and their shape: the same flags in every command."""
    parser.add_argument(
        "--dataset", type=dataset_name, default="cifar10" if defaults else None,
        help="cifar10 (tfds, the default), synthetic, or tfds:NAME (any tensorflow-datasets image classification)",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", default=None,
        help="CIFAR-10 or CIFAR-100 python batches, an image folder (train/<class>/*, test/<class>/*) or an .npz "
        "(x_train, y_train, x_test, y_test); detected",
    )  # fmt: skip
    parser.add_argument("--image-size", type=int, help="resize images to this square size (default: their own)")
    parser.add_argument("--channels", type=int, choices=[1, 3], help="1 (grey) or 3 (colour); default: the data's")
    parser.add_argument("--tfds-data-dir", help="an existing tensorflow-datasets cache folder")
    parser.add_argument(
        "--skip-bad-images", action="store_true", default=None, help="skip unreadable image files (and count them)"
    )
    parser.add_argument(
        "--stream", action="store_true", default=None,
        help="image folders: decode images from disk on the fly (automatic above 4 GiB decoded; needs --image-size)",
    )  # fmt: skip
    parser.add_argument(
        "--cache", metavar="DIR", help="image folders: decode once into DIR (.npy), then read it memory-mapped"
    )


def data_arguments(args: argparse.Namespace) -> dict:
    """The data flags of `add_data_arguments` as `darts_tf.data.load_data` keyword arguments."""
    return {
        "dataset": args.dataset or "cifar10", "data_dir": args.data_dir, "image_size": args.image_size or 0,
        "channels": args.channels or 0, "tfds_data_dir": args.tfds_data_dir,
        "skip_bad_images": bool(args.skip_bad_images), "stream": bool(args.stream), "cache": args.cache,
    }  # fmt: skip


def add_training_arguments(parser: argparse.ArgumentParser, cutout_help: str, defaults) -> None:
    """Network size and weight-optimizer flags shared by `darts-tf search` and `darts-tf train`.

    `defaults`: the command's config at the paper's settings, whose values the help names.
    """
    d = defaults
    parser.add_argument("--epochs", type=int, help=f"training epochs (paper: {d.epochs})")
    parser.add_argument(
        "--batch-size", type=int, help=f"images per step, the global batch over all replicas (paper: {d.batch_size})"
    )
    parser.add_argument("--C", type=int, help=f"initial channels (paper: {d.C})")
    parser.add_argument("--layers", type=int, help=f"number of cells (paper: {d.layers})")
    parser.add_argument("--seed", type=int, help=f"seed of the weights, data order and noise (default {d.seed})")
    parser.add_argument(
        "--learning-rate", type=float, help=f"SGD learning rate of the weights at the start (paper: {d.learning_rate})"
    )
    parser.add_argument(
        "--learning-rate-min",
        type=float,
        help=f"learning rate at the schedule's end (paper: {d.learning_rate_min})",
    )
    parser.add_argument("--momentum", type=float, help=f"SGD momentum (paper: {d.momentum})")
    parser.add_argument(
        "--weight-decay", type=float, help=f"coupled L2 of the weights, g + wd * w (paper: {d.weight_decay})"
    )
    parser.add_argument("--grad-clip", type=float, help=f"clip weight gradients at this global norm ({d.grad_clip})")
    parser.add_argument("--cutout", type=int, help=cutout_help)


def add_ops_module_argument(parser: argparse.ArgumentParser) -> None:
    """--ops-module (ops of yours) of `darts-tf search`, `train` and `pipeline`."""
    parser.add_argument(
        "--ops-module", metavar="FILE_OR_MODULE",
        help="a .py file or module imported first: its darts_tf.cnn.space.register_op calls add ops of yours "
        "(docs/extending.md)",
    )  # fmt: skip


def add_space_arguments(parser: argparse.ArgumentParser) -> None:
    """The search space's flags (darts_tf.cnn.space) of `darts-tf search` and `pipeline`."""
    parser.add_argument(
        "--space", choices=["darts", "nb201"],
        help="the cell space: darts (default) or nb201, NAS-Bench-201's cell and network (--preset nb201: its "
        "search settings; --layers then counts cells per stage; darts-tf score rates the found cell)",
    )  # fmt: skip
    parser.add_argument(
        "--primitives", nargs="+", metavar="OP",
        help="the candidate ops of every edge, registered names (default: DARTS's eight: none max_pool_3x3 "
        "avg_pool_3x3 skip_connect sep_conv_3x3 sep_conv_5x5 dil_conv_3x3 dil_conv_5x5)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, metavar="N", help="intermediate nodes per cell (4)")
    parser.add_argument("--multiplier", type=int, metavar="N", help="last nodes a cell concatenates (4)")
    parser.add_argument("--inputs-per-node", type=int, choices=[1, 2], help="edges kept per node in derivation (2)")
    add_ops_module_argument(parser)


BUDGET_FIELDS = ("latency_table", "latency_budget", "flops_budget", "params_budget", "budget_weight", "budget_form",
                 "cost_C", "cost_layers")  # fmt: skip


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """Costs and budgets of the found network (darts_tf.cnn.cost) for `darts-tf search` and `pipeline`."""
    parser.add_argument(
        "--latency-table", metavar="FILE",
        help="a latency table (darts-tf latency-table): each epoch records the derived network's predicted "
        "latency, and the costs are counted at the table's network size",
    )  # fmt: skip
    parser.add_argument(
        "--latency-budget", type=float, metavar="MS", help="a latency budget in ms (with --latency-table)"
    )
    parser.add_argument("--flops-budget", type=float, metavar="M", help="budget in millions of mult-adds")
    parser.add_argument("--params-budget", type=float, metavar="M", help="budget in millions of parameters")
    parser.add_argument("--budget-weight", type=float, metavar="W", help="weight of the budget penalty (1.0)")
    parser.add_argument(
        "--budget-form", choices=["hinge", "linear", "fbnet"],
        help="hinge (default: W * max(0, E/B - 1)), linear (ProxylessNAS: W * E/B) or fbnet (FBNet: the loss "
        "times a log-cost factor) on the expected cost E and budget B",
    )  # fmt: skip
    parser.add_argument(
        "--cost-C", dest="cost_C", type=int, metavar="N",
        help="without a table: the evaluation network's initial channels the costs are counted for (36; nb201: --C)",
    )  # fmt: skip
    parser.add_argument(
        "--cost-layers", type=int, metavar="N",
        help="without a table: the evaluation network's cells the costs are counted for (20; nb201: --layers)",
    )  # fmt: skip


def add_distribute_arguments(parser: argparse.ArgumentParser) -> None:
    """--strategy and --logical-cpus (darts_tf.distribute) of `darts-tf search` and `darts-tf train`."""
    parser.add_argument(
        "--strategy", choices=list(STRATEGIES), default=None,
        help="auto (default: mirrored over the GPUs when more than one is visible), one, mirrored, or "
        "multi_worker (TF_CONFIG); --batch-size stays the global batch",
    )  # fmt: skip
    parser.add_argument(
        "--logical-cpus", type=int, metavar="N",
        help="split the CPU into N logical devices (a runtime setting; --strategy mirrored then uses them)",
    )  # fmt: skip
    parser.add_argument(
        "--sync-batchnorm", type=on_off, metavar="{on,off}", default=None,
        help="under several replicas: BatchNorm statistics of the global batch (on, default: what one device "
        "computes) or of each replica's batch (off: faster, a different result, as PyTorch's DataParallel)",
    )  # fmt: skip


def on_off(value: str) -> bool:
    """argparse type of an on/off flag."""
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off. Received: {value!r}")
    return value == "on"


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--precision (darts_tf.precision) of `darts-tf search`, `train`, `pipeline`, `search-rnn` and `train-rnn`."""
    parser.add_argument(
        "--precision", choices=list(PRECISIONS), default=None,
        help="float32 (default), mixed_bfloat16 or mixed_float16 (loss-scaled): the networks' compute type; "
        "variables, logits and losses stay float32, the second-order architecture gradient is float32",
    )  # fmt: skip


def start_strategy(parser: argparse.ArgumentParser, args: argparse.Namespace, config, workload: str):
    """Applies the runtime settings, then makes the run's strategy, before TensorFlow runs anything else."""
    from darts_tf import distribute
    from darts_tf.runtime import configure

    try:
        options = {"graph_optimization": args.graph_optimization} if workload == "search" else {}
        configure(workload, **options)
        if args.logical_cpus is not None:  # after the thread settings: it starts TensorFlow's runtime
            distribute.split_cpu(args.logical_cpus)
        strategy = distribute.make_strategy(config.strategy)
    except DartsError as error:
        fail(parser, error)
    if not getattr(args, "quiet", False):
        print(distribute.describe(strategy, config.strategy), flush=True)
    return strategy


def config_from_args(parser, args, config_class, presets: dict, positive=()):
    """The preset's values overridden by every flag given; errors exit via `parser.error`."""
    for name in positive:
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive. Received: {value}")
    if args.resume and args.run_dir and os.path.abspath(args.run_dir) != os.path.abspath(args.resume):
        parser.error("--resume RUN_DIR and a different --run-dir cannot be combined")
    values, given = {**presets[args.preset]}, {}
    for field in dataclasses.fields(config_class):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = given[field.name] = value
    if args.resume:
        values["run_dir"] = args.resume
        _note_ignored_on_resume(args.resume, given)
    return config_class(**values)


# Settings a resumed run takes from the command line rather than from its config.json (darts_tf.runs.begin_run).
_HONOURED_ON_RESUME = ("run_dir", "strategy")


def _note_ignored_on_resume(run_dir: str, given: dict) -> None:
    """One line on stderr naming the flags a resumed run does not apply: it continues with its config.json's."""
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as handle:
            saved = json.load(handle)
    except (OSError, ValueError):
        return  # the run's own checks report a missing or damaged folder
    ignored = [
        f"--{name.replace('_', '-')} {value}"
        for name, value in given.items()
        if name not in _HONOURED_ON_RESUME and name in saved and saved[name] != value
    ]
    if ignored:
        print(f"--resume {run_dir}: the run continues with the settings in its config.json; not applied: "
              f"{', '.join(ignored)}", file=sys.stderr, flush=True)  # fmt: skip


def verbosity(args: argparse.Namespace) -> int:
    """0 with --quiet; else Keras's 1 (a progress bar) on a terminal, 2 (a line per epoch) in a file or a pipe."""
    if args.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def as_flags(message: str) -> str:
    """A library message with the config fields it names (`batch_size`) as the flags that set them (--batch-size)."""
    return re.sub(r"`([A-Za-z_][A-Za-z0-9_]*)`", lambda match: "--" + match[1].replace("_", "-"), message)


def fail(parser: argparse.ArgumentParser, error: Exception) -> None:
    """Exits with status 2 and one line naming the problem (a `DartsError`'s fields named as flags)."""
    line = str(error).splitlines()[0] if str(error) else type(error).__name__
    parser.exit(2, f"{parser.prog}: error: {as_flags(line)}\n")


def quiet_tensorflow_logs() -> None:
    """Drops TensorFlow's C++ info/warning/error log lines from this process's stderr (fatal ones pass).

    Everything else written to file descriptor 2 (Python tracebacks, our one-line
    errors, subprocesses' output) passes through unchanged. For the commands only
    (`--verbose` skips it): it replaces descriptor 2 with a pipe read by a thread.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Python-side TensorFlow warnings
    try:  # absl's Python logging (tensorflow-datasets' cache warnings); a TensorFlow dependency
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as source:
            while chunk := source.read(65536):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                kept = b"".join(line + b"\n" for line in lines if not _TF_LOG_LINE.match(line))
                if kept:
                    os.write(original, kept)
        if pending and not _TF_LOG_LINE.match(pending):
            os.write(original, pending)

    thread = threading.Thread(target=forward, name="darts-tf-stderr", daemon=True)
    thread.start()

    def restore():
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end here: the thread sees the end and finishes
        thread.join(timeout=5)

    atexit.register(restore)

"""Speed and memory of darts_tf against the original PyTorch DARTS: prints a table (and JSON with --json).

darts-tf benchmark                                   # everything (CPU; about 30 minutes on 2 cores)
darts-tf benchmark --search-batches 16 --orders first --skip-eval --skip-serve --skip-data --skip-folder   # one row
darts-tf benchmark --device gpu --json gpu.json
darts-tf benchmark --strategy mirrored --replicas 1 2 --C 8 --layers 5 --train-C 16 --train-layers 8  # scaling

Every configuration runs in a fresh process: its time to first step counts from that
process's start (Python and TensorFlow imports, model building, tracing, graph
optimisation and the first step), and its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import os
import sys

from darts_tf.commands.common import fail
from darts_tf.errors import ConfigError

# The measuring code is not part of the library: it is `benchmarks/` beside `darts_tf/` in a
# source checkout (an editable install, `pip install -e .`, reaches it).
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The workers start with the malloc pages the command chooses (--huge-pages), not by restarting.
RESTART_WITH_HUGE_PAGES = False


def _command():
    if not os.path.isfile(os.path.join(_ROOT, "benchmarks", "command.py")):
        return None
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    from benchmarks import command

    return command


def add_arguments(p: argparse.ArgumentParser) -> None:
    command = _command()
    if command is not None:
        command.add_arguments(p)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    command = _command()
    if command is None:
        fail(parser, ConfigError(
            "the benchmark runs from a source checkout of darts_tf (its benchmarks/ folder): "
            "git clone the repository, pip install -e . there, and run darts-tf benchmark"
        ))  # fmt: skip
    return command.run(args, parser)

"""`darts-tf benchmark`: speed and memory against the original DARTS code (benchmarks/ of a source checkout)."""

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
        p.description = command.__doc__  # its examples and method
        command.add_arguments(p)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    command = _command()
    if command is None:
        fail(parser, ConfigError(
            "the benchmark runs from a source checkout of darts_tf (its benchmarks/ folder): "
            "git clone the repository, pip install -e . there, and run darts-tf benchmark"
        ))  # fmt: skip
    return command.run(args, parser)

"""The `darts-tf` command line: one program, a subcommand per step of the pipeline.

    darts-tf search    # DARTS architecture search (a genotype)
    darts-tf train     # train an evaluation network from a genotype, export it
    darts-tf evaluate  # test accuracy of a training run, a SavedModel, a .tflite or an .onnx
    darts-tf export    # SavedModel, LiteRT, ONNX from a training run or the original's weights
    darts-tf pipeline  # search -> train -> evaluate -> export -> a served prediction
    darts-tf benchmark # speed and memory against the original
    darts-tf visualize # cell diagrams, alpha heatmaps and their animation, curves, a report
    darts-tf latency-table  # per-op LiteRT latencies: search for a cell under a latency budget
    darts-tf score     # a NAS-Bench-201 cell's test accuracy and rank in the benchmark's table
    darts-tf search-rnn / train-rnn  # the recurrent (Penn Treebank) half of the paper

Parsing (and `--help`) imports no TensorFlow. Before a subcommand runs, the
process restarts once with malloc on transparent huge pages (see
`darts_tf.runtime`; `DARTS_TF_HUGE_PAGES=0` opts out) and TensorFlow's C++
start-up logs are filtered from stderr unless `--verbose` is given.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help); each module has `add_arguments(parser)` and `run(args, parser) -> int`.
COMMANDS = {
    "search": ("darts_tf.commands.search", "DARTS architecture search: a genotype"),
    "train": ("darts_tf.commands.train", "train an evaluation network from a genotype and export it"),
    "evaluate": ("darts_tf.commands.evaluate", "test accuracy of a training run or a SavedModel"),
    "export": ("darts_tf.commands.export", "a SavedModel from a training run or the original's PyTorch weights"),
    "pipeline": ("darts_tf.commands.pipeline", "search -> train -> evaluate -> export -> a served prediction"),
    "benchmark": ("darts_tf.commands.benchmark", "speed and memory against the original DARTS code"),
    "visualize": ("darts_tf.commands.visualize", "pictures of a run or genotype: cells, alpha heatmaps, a report"),
    "latency-table": ("darts_tf.commands.latency_table", "per-op LiteRT latency table of an evaluation network"),
    "score": ("darts_tf.commands.score", "a NAS-Bench-201 cell's CIFAR-10 test accuracy and rank, from the table"),
    "search-rnn": ("darts_tf.commands.search_rnn", "recurrent (Penn Treebank) cell search: a recurrent genotype"),
    "train-rnn": ("darts_tf.commands.train_rnn", "train a recurrent cell's language model: perplexity, SavedModel"),
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the flag (argparse prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the flags)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="darts-tf", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name,
            help=help_text,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ start-up and runtime logs")
        sub.set_defaults(_module=module, _parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs `darts-tf` with `argv` (default: the command line); returns the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    module = args._module
    from darts_tf.runtime import enable_onednn, restart_with_huge_pages

    enable_onednn()  # before TensorFlow starts (it reads the variable then); a restart keeps it
    if getattr(module, "RESTART_WITH_HUGE_PAGES", True):
        restart_with_huge_pages()  # replaces the process once; nothing above has touched TensorFlow
    if not args.verbose:
        from darts_tf.commands.common import quiet_tensorflow_logs

        quiet_tensorflow_logs()
    return module.run(args, args._parser)

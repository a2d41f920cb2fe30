"""Pictures of a search or training run, or of a genotype: cell diagrams, alpha heatmaps, animation, report.

darts-tf visualize runs/search                       # into runs/search/visualize/: cells, heatmaps,
                                                     # search.gif, curves.png, report.html
darts-tf visualize DARTS_V2 --out pictures --format png svg pdf
darts-tf visualize runs/search/genotype.json --out pictures
"""

from __future__ import annotations

import argparse

from darts_tf.commands.common import fail
from darts_tf.errors import DartsError

FORMATS = ("png", "svg", "pdf")
# Drawing needs no huge pages and no TensorFlow (a training run's report loads its SavedModel lazily).
RESTART_WITH_HUGE_PAGES = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="a run folder, a genotype JSON file, or a published genotype name (DARTS_V2, ...)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/visualize, or . for a genotype)")
    p.add_argument("--format", nargs="+", choices=FORMATS, default=["png", "svg"], help="picture formats")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from darts_tf.visualize import visualize

    try:
        written = visualize(args.target, args.out, tuple(dict.fromkeys(args.format)))
    except DartsError as error:  # bad genotype JSON, unknown name, unreadable run folder
        fail(parser, error)
    for path in written:
        print(path)
    return 0

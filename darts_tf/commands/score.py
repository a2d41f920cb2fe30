"""A NAS-Bench-201 cell's CIFAR-10 test accuracy and rank among the 15,625, from the benchmark's table.

darts-tf score '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|'
darts-tf score runs/nb201_search             # its genotype.json
darts-tf score genotype.json --json          # {"arch": ..., "test_accuracy": ..., "rank": ...}

The table (200 epochs, one seed, by the authors of AnalogNAS-Bench) comes with the optional
extra: pip install 'darts_tf[bench]'.
"""

from __future__ import annotations

import argparse
import json
import os

from darts_tf.commands.common import fail
from darts_tf.errors import DartsError, GenotypeError

RESTART_WITH_HUGE_PAGES = False  # no TensorFlow here


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cell", help='a NAS-Bench-201 arch string, a genotype JSON file ({"arch": ...}) or a run folder')
    p.add_argument("--json", action="store_true", help='print {"arch", "test_accuracy", "rank"} as JSON')


def read_cell(cell: str):
    """The `Nb201Genotype` an arch string, a genotype JSON file or a run folder (its genotype.json) names."""
    from darts_tf.nb201.genotypes import Nb201Genotype

    if os.path.isdir(cell):
        path = os.path.join(cell, "genotype.json")
        if not os.path.isfile(path):
            raise GenotypeError(f"run folder {cell!r} has no genotype.json")
        return Nb201Genotype.load(path)
    if cell.strip().startswith("|"):
        return Nb201Genotype.from_arch(cell)
    if os.path.isfile(cell):
        return Nb201Genotype.load(cell)
    raise GenotypeError(
        f"{cell!r} is neither a NAS-Bench-201 arch string (|op~0|+...), a genotype file nor a run folder"
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from darts_tf.nb201.table import CELLS, score

    try:
        result = score(read_cell(args.cell))
    except DartsError as error:  # a malformed cell, a missing file, the table not installed
        fail(parser, error)
    if args.json:
        print(json.dumps(result))
    else:
        accuracy, rank = result["test_accuracy"], result["rank"]
        print(f"{result['arch']}: CIFAR-10 test accuracy {accuracy:.2f} %, rank {rank:,} of {CELLS:,}")
    return 0

"""Every NAS-Bench-201 cell's CIFAR-10 test accuracy, offline: score a cell without training it.

The table is the pip package `analog-nasbench` (IBM's AnalogNAS-Bench, Apache-2.0; the optional
extra `darts_tf[bench]`): the 15,625 NAS-Bench-201 cells trained by its authors (200 epochs,
one seed; field `baseline_accuracy`, in %). Its file is a pickle of objects of the package's
own classes; it is read here without importing the package (which needs pandas) and without
running code from the pickle: only the package's two record classes are allowed, and they
become plain attribute holders.

Its key is NASLib's encoding of a cell: six op indices into (skip_connect, none, nor_conv_3x3,
nor_conv_1x1, avg_pool_3x3), for the edges 0->1, 0->2, 0->3, 1->2, 1->3, 2->3 (NASLib's
`EDGE_LIST` with its nodes numbered from 1; `convert_str_to_op_indices`). Checked on the data:
the all-skip cell scores 60.78, the best 94.07 (|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|
+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|), the median 90.41.
"""

from __future__ import annotations

import functools
import importlib.metadata
import pickle

import numpy as np

from darts_tf.errors import DataError
from darts_tf.nb201.genotypes import EDGES, Nb201Genotype

PACKAGE = "analog-nasbench"
TABLE_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")  # NASLib's index order
TABLE_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))  # NASLib's EDGE_LIST, nodes from 0
CELLS = 5 ** len(EDGES)
INSTALL = f"pip install 'darts_tf[bench]' (the table is the package {PACKAGE}, a 2.9 MB wheel)"


def table_key(genotype: Nb201Genotype) -> tuple[int, ...]:
    """The table's key of a cell: its op indices in NASLib's edge and op order."""
    return tuple(TABLE_OPS.index(genotype.ops[EDGES.index(edge)]) for edge in TABLE_EDGES)


class _Record:
    """What one of the package's records becomes: its fields as attributes, nothing else."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("a record without a field dictionary")
        self.__dict__.update(state)


class _TableUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "analognasbench.data" and name in ("Architecture", "DriftMeasurement"):
            return _Record
        raise pickle.UnpicklingError(f"it asks for the global {module}.{name}, which the table never holds")


def table_path() -> str:
    """The table file of the installed `analog-nasbench` (found from its metadata, not by importing it)."""
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"the NAS-Bench-201 table is not installed: {INSTALL}") from None
    for file in files:
        if file.name == "data.anb" and file.parts[0] == "analognasbench":
            return str(file.locate())
    raise DataError(f"{PACKAGE} is installed without its table analognasbench/data.anb: reinstall it ({INSTALL})")


@functools.cache
def load_table(path: str | None = None) -> dict[tuple[int, ...], float]:
    """{table key: CIFAR-10 test accuracy %} of all 15,625 cells (read once per process and path)."""
    path = path or table_path()
    try:
        with open(path, "rb") as handle:
            records = _TableUnpickler(handle).load()
        # The file's accuracies carry float noise beyond their 4 decimals (88.47039999999998): rounded.
        table = {tuple(int(i) for i in k): round(float(record.baseline_accuracy), 4) for k, record in records.items()}
    except Exception as error:  # a damaged or foreign file can fail in many ways: one line
        raise DataError(f"cannot read the NAS-Bench-201 table {path!r}: {error}") from None
    if len(table) != CELLS:
        raise DataError(f"the NAS-Bench-201 table {path!r} holds {len(table)} cells. Expected: {CELLS}")
    return table


def score(genotype: Nb201Genotype, path: str | None = None) -> dict:
    """{"arch", "test_accuracy" (%), "rank" (1 = best of 15,625; ties share the better rank)} of a cell."""
    table = load_table(path)
    accuracy = table[table_key(genotype)]
    rank = 1 + int(np.sum(np.fromiter(table.values(), float, len(table)) > accuracy))
    return {"arch": genotype.arch, "test_accuracy": accuracy, "rank": rank}

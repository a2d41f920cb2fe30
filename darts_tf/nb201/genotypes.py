"""NAS-Bench-201 cells as data: the arch string, its six edges, derivation from the alphas.

A NAS-Bench-201 cell (Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search", ICLR 2020, arXiv:2001.00326, Sec. 2.1) has 4 nodes; node 0 is the cell's
input, node j sums one op on every earlier node, node 3 is the output. Each of the 6 edges holds
one of 5 ops, so the space has 5^6 = 15,625 cells, written as the benchmark's own string
`|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|`
(node by node, `op~input`). This module depends on NumPy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from darts_tf.cnn.space import SearchSpace
from darts_tf.errors import ConfigError, GenotypeError
from darts_tf.files import JsonDocument

# The benchmark's op list, in its order (NAS_BENCH_201 in its code): the alphas' columns.
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 4
# (input, node) of each edge in the arch string's order, which is also the alphas' rows.
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for j in range(1, NODES) for i in range(j))
# The space as darts_tf's mixed edges see it: the benchmark's ops, its pool weighed as w * pool(x)
# (no BatchNorm after it, unlike DARTS's edge), cells of 3 nodes after the input.
NB201_SPACE = SearchSpace(
    OPS, steps=NODES - 1, multiplier=1, inputs_per_node=1, none="none", skip="skip_connect", pool_batchnorm=False,
    cell="nb201",
)  # fmt: skip


@dataclass(frozen=True)
class Nb201Genotype(JsonDocument):
    """A NAS-Bench-201 cell: `ops[k]` is the op of edge `EDGES[k]` (input i -> node j).

    Written as the benchmark's arch string (`arch`, `from_arch`) and in genotype.json as
    `{"arch": "|...|"}`. Immutable and validated on construction.
    """

    KIND = "genotype"
    ERROR = GenotypeError

    ops: tuple[str, ...]

    def __post_init__(self):
        ops = self.ops
        if isinstance(ops, str) or not isinstance(ops, Sequence) or len(ops) != len(EDGES):
            raise GenotypeError(f"A NAS-Bench-201 cell has {len(EDGES)} edges, one op each. Received: ops={ops!r}")
        for (i, j), op in zip(EDGES, ops):
            if op not in OPS:
                raise GenotypeError(
                    f"NAS-Bench-201 edge {i} -> {j}: unknown op {op!r}. Expected one of: {', '.join(OPS)}"
                )
        object.__setattr__(self, "ops", tuple(ops))

    @property
    def arch(self) -> str:
        """The benchmark's string: |op~0|+|op~0|op~1|+|op~0|op~1|op~2|."""
        nodes = []
        for j in range(1, NODES):
            nodes.append("|" + "|".join(f"{self.ops[EDGES.index((i, j))]}~{i}" for i in range(j)) + "|")
        return "+".join(nodes)

    @classmethod
    def from_arch(cls, arch: str) -> Nb201Genotype:
        """Parses the benchmark's string (one line naming what is wrong otherwise)."""
        if not isinstance(arch, str):
            raise GenotypeError(f"A NAS-Bench-201 arch string must be a string. Received: {arch!r}")
        nodes = arch.strip().split("+")
        shape = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
        if len(nodes) != NODES - 1:
            raise GenotypeError(f"A NAS-Bench-201 arch string has {NODES - 1} nodes: {shape}. Received: {arch!r}")
        ops = {}
        for j, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|")):
                raise GenotypeError(f"NAS-Bench-201 node {j} must be written |op~i|...|. Received: {node!r}")
            entries = node[1:-1].split("|")
            if len(entries) != j:
                raise GenotypeError(f"NAS-Bench-201 node {j} takes {j} input(s). Received: {node!r}")
            for i, entry in enumerate(entries):
                op, _, source = entry.partition("~")
                if source != str(i):
                    raise GenotypeError(
                        f"NAS-Bench-201 node {j}: entry {entry!r} must name input {i} (as {op or 'op'}~{i}) in {arch!r}"
                    )
                ops[(i, j)] = op
        return cls(tuple(ops[edge] for edge in EDGES))

    def to_dict(self) -> dict:
        return {"arch": self.arch}

    @classmethod
    def from_dict(cls, data: dict) -> Nb201Genotype:
        if not isinstance(data, dict) or set(data) != {"arch"}:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise GenotypeError(f'A NAS-Bench-201 genotype is {{"arch": "|...|"}}. Received keys: {keys}')
        return cls.from_arch(data["arch"])

    def counts(self) -> dict:
        """{op: how many edges hold it} (the all-skip collapse: 6 skip_connect)."""
        return {op: self.ops.count(op) for op in OPS}


def derive_nb201(alphas: np.ndarray | Sequence, max_skip: int | None = None) -> Nb201Genotype:
    """The cell of alphas [6, 5]: on every edge the op of largest weight, `none` included (first on ties), as
    the benchmark's DARTS code derives (its `genotype()`: argmax over all ops per edge).

    `max_skip` (P-DARTS's rule, Chen et al., arXiv:1904.12760): while the cell holds more skip connections,
    the kept one of smallest weight is ruled out on its edge and that edge takes its next op.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.shape != (len(EDGES), len(OPS)):
        raise GenotypeError(f"NAS-Bench-201 alphas must have shape {(len(EDGES), len(OPS))}. Received: {alphas.shape}")
    if not np.all(np.isfinite(alphas)):
        raise GenotypeError("NAS-Bench-201 alphas hold non-finite values (NaN or inf)")
    weights = np.exp(alphas - alphas.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    if max_skip is not None and max_skip < 0:
        raise ConfigError(f"`max_skip` must be >= 0. Received: max_skip={max_skip}")
    skip = OPS.index("skip_connect")
    while True:
        chosen = np.argmax(weights, axis=1)
        skips = [edge for edge in range(len(EDGES)) if chosen[edge] == skip]
        if max_skip is None or len(skips) <= max_skip:
            return Nb201Genotype(tuple(OPS[int(k)] for k in chosen))
        weakest = min(skips, key=lambda edge: weights[edge, skip])
        weights[weakest, skip] = -1.0  # below every weight: the edge's next op wins


def format_alphas(alphas: np.ndarray) -> str:
    """softmax(alphas) as a text table: one row per edge, one column per op."""
    weights = np.exp(alphas - alphas.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    lines = ["edge    " + " ".join(f"{op:>13}" for op in OPS)]
    for (i, j), row in zip(EDGES, weights):
        lines.append(f"{i}->{j}    " + " ".join(f"{v:13.4f}" for v in row))
    return "\n".join(lines)

"""Recurrent cell genotypes: the DARTS Penn Treebank search space (no TensorFlow).

A recurrent cell has `STEPS` = 8 nodes after the initial state s0 (computed from
[x_t, h_{t-1}]); node i + 1 takes one predecessor j <= i and applies an activation
to it through the highway form s = s_j + sigmoid(c) * (f(h) - s_j). The cell's output
is the mean of the `concat` nodes (1..8).

Reference: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search",
ICLR 2019 (arXiv:1806.09055), Sec. 2.1 and 3.1.2 (recurrent cells).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from darts_tf.errors import GenotypeError
from darts_tf.files import JsonDocument, looks_like_path

PRIMITIVES = ("none", "tanh", "relu", "sigmoid", "identity")
STEPS = 8
CONCAT = 8
_NONE_INDEX = PRIMITIVES.index("none")


def num_edges(steps: int = STEPS) -> int:
    """Edges of the recurrent search cell: node i + 1 has i + 1 predecessors (s0..s_i)."""
    return steps * (steps + 1) // 2


@dataclasses.dataclass(frozen=True)
class RecurrentGenotype(JsonDocument):
    """A discrete recurrent cell: `recurrent[i] = (activation, predecessor)` of node i + 1, `concat` the averaged nodes.

    Immutable, validated on construction, and round-trips through JSON.
    """

    KIND = "recurrent genotype"
    ERROR = GenotypeError

    recurrent: tuple[tuple[str, int], ...]
    concat: tuple[int, ...]

    def __post_init__(self):
        recurrent = []
        for position, edge in enumerate(self.recurrent):
            if not isinstance(edge, (list, tuple)) or len(edge) != 2:
                raise GenotypeError(
                    f"recurrent genotype node {position + 1}: expected (op, predecessor). Received: {edge!r}"
                )
            op, predecessor = edge
            if op not in PRIMITIVES or op == "none":
                raise GenotypeError(
                    f"Unknown recurrent op {op!r} at node {position + 1}. Expected one of: {', '.join(PRIMITIVES[1:])}"
                )
            if isinstance(predecessor, bool) or not isinstance(predecessor, (int, np.integer)):
                raise GenotypeError(f"recurrent genotype node {position + 1}: predecessor must be an integer")
            if not 0 <= int(predecessor) <= position:
                raise GenotypeError(
                    f"recurrent genotype node {position + 1}: predecessor must be in [0, {position}]. "
                    f"Received: {predecessor}"
                )
            recurrent.append((str(op), int(predecessor)))
        if not recurrent:
            raise GenotypeError("recurrent genotype needs at least one node")
        concat = tuple(int(c) for c in self.concat)
        if not concat or any(not 0 <= c <= len(recurrent) for c in concat):
            raise GenotypeError(
                f"recurrent genotype concat must name nodes in [0, {len(recurrent)}]. Received: {concat}"
            )
        object.__setattr__(self, "recurrent", tuple(recurrent))
        object.__setattr__(self, "concat", concat)

    @property
    def steps(self) -> int:
        return len(self.recurrent)

    def to_dict(self) -> dict:
        return {"recurrent": [list(edge) for edge in self.recurrent], "concat": list(self.concat)}

    @classmethod
    def from_dict(cls, data: dict) -> RecurrentGenotype:
        if not isinstance(data, dict) or set(data) != {"recurrent", "concat"}:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise GenotypeError(f"recurrent genotype JSON must have keys 'recurrent' and 'concat'. Received: {keys}")
        return cls(recurrent=tuple(tuple(edge) for edge in data["recurrent"]), concat=tuple(data["concat"]))


_ALL_NODES = tuple(range(1, STEPS + 1))
# The original's rnn/genotypes.py.
DARTS_V1 = RecurrentGenotype(
    recurrent=(("relu", 0), ("relu", 1), ("tanh", 2), ("relu", 3), ("relu", 4), ("identity", 1), ("relu", 5),
               ("relu", 1)),
    concat=_ALL_NODES,
)  # fmt: skip
DARTS_V2 = RecurrentGenotype(
    recurrent=(("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2), ("sigmoid", 5), ("tanh", 3),
               ("relu", 5)),
    concat=_ALL_NODES,
)  # fmt: skip
GENOTYPES = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS_V2}


def get_genotype(name_or_path: str) -> RecurrentGenotype:
    """A published recurrent genotype by name ("DARTS_V2") or one loaded from a JSON file."""
    if name_or_path in GENOTYPES:
        return GENOTYPES[name_or_path]
    if os.path.exists(name_or_path):
        return RecurrentGenotype.load(name_or_path)
    if looks_like_path(name_or_path):
        raise GenotypeError(f"recurrent genotype file {name_or_path!r} does not exist")
    raise GenotypeError(
        f"Unknown recurrent genotype {name_or_path!r}. Expected one of {sorted(GENOTYPES)} or a genotype JSON file"
    )


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def derive_recurrent_genotype(alphas: np.ndarray | Sequence, steps: int = STEPS) -> RecurrentGenotype:
    """The discrete cell from architecture weights [num_edges, 5], as the original's `genotype()`.

    Softmax over ops per edge; node i + 1 keeps its single predecessor whose strongest
    non-`none` op weight is largest (ties: lower index) and that edge's argmax op
    other than `none` (ties: first in `PRIMITIVES` order); every node is averaged.
    """
    alphas = np.asarray(alphas)
    expected = (num_edges(steps), len(PRIMITIVES))
    if alphas.shape != expected:
        raise GenotypeError(f"alphas must have shape {expected} for steps={steps}. Received: shape={alphas.shape}")
    if not np.all(np.isfinite(alphas)):
        raise GenotypeError("alphas hold non-finite values (NaN or inf)")
    weights = softmax(alphas)
    gene, start = [], 0
    ops = [k for k in range(len(PRIMITIVES)) if k != _NONE_INDEX]
    for i in range(steps):
        w = weights[start : start + i + 1]
        strength = [max(w[j][k] for k in ops) for j in range(i + 1)]
        j = sorted(range(i + 1), key=lambda x: -strength[x])[0]
        best = None
        for k in ops:
            if best is None or w[j][k] > w[j][best]:
                best = k
        gene.append((PRIMITIVES[best], j))
        start += i + 1
    return RecurrentGenotype(recurrent=tuple(gene), concat=tuple(range(1, steps + 1)))  # CONCAT = 8 at 8 steps


def format_alphas(alphas: np.ndarray, steps: int = STEPS) -> str:
    """A text table of softmax(alphas): one row per edge (predecessor -> node), one column per op."""
    weights = softmax(np.asarray(alphas))
    lines = ["edge      " + " ".join(f"{p:>9}" for p in PRIMITIVES)]
    row = 0
    for i in range(steps):
        for j in range(i + 1):
            lines.append(f"{j}->{i + 1:<7}" + " ".join(f"{v:9.4f}" for v in weights[row]))
            row += 1
    return "\n".join(lines)

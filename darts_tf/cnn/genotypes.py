"""The DARTS CNN search space as data: primitives, genotypes, derivation.

This module depends on NumPy only, so genotypes can be read, written and
derived without importing TensorFlow.

Reference: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search",
ICLR 2019 (arXiv:1806.09055), Section 2.4 ("Deriving discrete architectures").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from darts_tf.errors import ConfigError, GenotypeError
from darts_tf.files import JsonDocument, looks_like_path

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

# Every op a genotype may name: the search space, then two ops of the genotypes the
# original ships for comparison (NASNet's and AmoebaNet's cells), never searched over.
OPERATIONS: tuple[str, ...] = PRIMITIVES + ("sep_conv_7x7", "conv_7x1_1x7")

_NONE_INDEX = PRIMITIVES.index("none")


def num_edges(steps: int = 4) -> int:
    """Number of mixed edges in a search cell with `steps` intermediate nodes."""
    return sum(2 + i for i in range(steps))


def _as_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise GenotypeError(f"{what} must be an integer. Received: {value!r}")
    return int(value)


def _validate_cell(kind: str, edges, concat) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
    if not isinstance(edges, (list, tuple)):
        raise GenotypeError(f"Genotype.{kind} must be a list of (op, input) pairs. Received: {edges!r}")
    if len(edges) == 0 or len(edges) % 2:
        raise GenotypeError(
            f"Genotype.{kind} must hold 2 (op, input) pairs per intermediate node, an even, "
            f"non-zero count. Received: {len(edges)} pairs"
        )
    clean = []
    for position, entry in enumerate(edges):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise GenotypeError(f"Genotype.{kind}[{position}] must be an (op, input) pair. Received: {entry!r}")
        op, index = entry
        if op not in OPERATIONS:
            raise GenotypeError(
                f"Genotype.{kind}[{position}] names unknown op {op!r}. Expected one of {', '.join(OPERATIONS)}"
            )
        index = _as_int(index, f"Genotype.{kind}[{position}] input index")
        node = position // 2  # intermediate node fed by this edge; its own index is node + 2
        if not 0 <= index < node + 2:
            raise GenotypeError(
                f"Genotype.{kind}[{position}] = ({op!r}, {index}): node {node + 2} can only take "
                f"inputs 0..{node + 1} (earlier nodes). Received input index: {index}"
            )
        clean.append((op, index))
    steps = len(clean) // 2
    if not isinstance(concat, (list, tuple, range)) or len(concat) == 0:
        raise GenotypeError(f"Genotype.{kind}_concat must be a non-empty list. Received: {concat!r}")
    concat_clean = []
    for value in concat:
        value = _as_int(value, f"Genotype.{kind}_concat entry")
        if not 0 <= value < steps + 2:
            raise GenotypeError(
                f"Genotype.{kind}_concat entry {value} is not a node of a {steps}-step cell "
                f"(expected 0..{steps + 1}). Received: {list(concat)!r}"
            )
        concat_clean.append(value)
    return tuple(clean), tuple(concat_clean)


@dataclass(frozen=True)
class Genotype(JsonDocument):
    """A discrete DARTS cell pair (normal and reduction), as in the paper's Figure 4/5.

    `normal` and `reduce` list, for each intermediate node in order, two
    `(op_name, input_index)` pairs; inputs 0 and 1 are the cell's two inputs
    and `k >= 2` is intermediate node `k - 2`. `*_concat` lists the nodes whose
    outputs are concatenated to form the cell output. Instances are immutable,
    validated on construction, and round-trip through JSON.
    """

    KIND = "genotype"
    ERROR = GenotypeError

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self):
        normal, normal_concat = _validate_cell("normal", self.normal, self.normal_concat)
        reduce, reduce_concat = _validate_cell("reduce", self.reduce, self.reduce_concat)
        object.__setattr__(self, "normal", normal)
        object.__setattr__(self, "normal_concat", normal_concat)
        object.__setattr__(self, "reduce", reduce)
        object.__setattr__(self, "reduce_concat", reduce_concat)

    def to_dict(self) -> dict:
        return {
            "normal": [[op, index] for op, index in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, index] for op, index in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Genotype:
        if not isinstance(data, dict):
            raise GenotypeError(f"A genotype must be a JSON object. Received: {type(data).__name__}")
        expected = {"normal", "normal_concat", "reduce", "reduce_concat"}
        missing = sorted(expected - set(data))
        extra = sorted(set(data) - expected)
        if missing or extra:
            raise GenotypeError(
                f"A genotype must have exactly the keys {sorted(expected)}. Missing: {missing}; unexpected: {extra}"
            )
        return cls(
            normal=data["normal"],
            normal_concat=data["normal_concat"],
            reduce=data["reduce"],
            reduce_concat=data["reduce_concat"],
        )

    @property
    def steps(self) -> int:
        return len(self.normal) // 2


# The two hand-designed/evolved cells the original ships (its genotypes.py), as published
# by Zoph et al. (NASNet-A, CVPR 2018) and Real et al. (AmoebaNet-A, AAAI 2019).
NASNET = Genotype(
    normal=[
        ("sep_conv_5x5", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_5x5", 0),
        ("sep_conv_3x3", 0),
        ("avg_pool_3x3", 1),
        ("skip_connect", 0),
        ("avg_pool_3x3", 0),
        ("avg_pool_3x3", 0),
        ("sep_conv_3x3", 1),
        ("skip_connect", 1),
    ],
    normal_concat=[2, 3, 4, 5, 6],
    reduce=[
        ("sep_conv_5x5", 1),
        ("sep_conv_7x7", 0),
        ("max_pool_3x3", 1),
        ("sep_conv_7x7", 0),
        ("avg_pool_3x3", 1),
        ("sep_conv_5x5", 0),
        ("skip_connect", 3),
        ("avg_pool_3x3", 2),
        ("sep_conv_3x3", 2),
        ("max_pool_3x3", 1),
    ],
    reduce_concat=[4, 5, 6],
)

AMOEBANET = Genotype(
    normal=[
        ("avg_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_5x5", 2),
        ("sep_conv_3x3", 0),
        ("avg_pool_3x3", 3),
        ("sep_conv_3x3", 1),
        ("skip_connect", 1),
        ("skip_connect", 0),
        ("avg_pool_3x3", 1),
    ],
    normal_concat=[4, 5, 6],
    reduce=[
        ("avg_pool_3x3", 0),
        ("sep_conv_3x3", 1),
        ("max_pool_3x3", 0),
        ("sep_conv_7x7", 2),
        ("sep_conv_7x7", 0),
        ("avg_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("conv_7x1_1x7", 0),
        ("sep_conv_3x3", 5),
    ],
    reduce_concat=[3, 4, 6],
)

DARTS_V1 = Genotype(
    normal=[
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("avg_pool_3x3", 0),
    ],
    reduce_concat=[2, 3, 4, 5],
)

DARTS_V2 = Genotype(
    normal=[
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ],
    reduce_concat=[2, 3, 4, 5],
)

DARTS = DARTS_V2

GENOTYPES: dict[str, Genotype] = {
    "NASNet": NASNET,
    "AmoebaNet": AMOEBANET,
    "DARTS_V1": DARTS_V1,
    "DARTS_V2": DARTS_V2,
    "DARTS": DARTS,
}


def get_genotype(name_or_path: str) -> Genotype:
    """Returns a published genotype by name (e.g. "DARTS_V2") or loads a JSON file."""
    if name_or_path in GENOTYPES:
        return GENOTYPES[name_or_path]
    if os.path.exists(name_or_path):
        return Genotype.load(name_or_path)
    if looks_like_path(name_or_path):
        raise GenotypeError(f"genotype file {name_or_path!r} does not exist")
    raise GenotypeError(
        f"Unknown genotype {name_or_path!r}. Expected one of {sorted(GENOTYPES)} or the path of a genotype JSON file"
    )


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def _parse_cell(weights: np.ndarray, steps: int) -> list[tuple[str, int]]:
    gene = []
    start = 0
    for node in range(steps):
        n_inputs = node + 2
        w = weights[start : start + n_inputs]
        # Strength of an edge = its strongest op other than `none`.
        strength = [max(w[j][k] for k in range(w.shape[1]) if k != _NONE_INDEX) for j in range(n_inputs)]
        # Stable sort by decreasing strength: ties keep the lower edge index first.
        kept = sorted(range(n_inputs), key=lambda j: -strength[j])[:2]
        for j in kept:
            best = None
            for k in range(w.shape[1]):
                if k != _NONE_INDEX and (best is None or w[j][k] > w[j][best]):
                    best = k  # strict '>' keeps the first maximum
            gene.append((PRIMITIVES[best], j))
        start += n_inputs
    return gene


def _check_alphas(alphas, name: str, steps: int) -> np.ndarray:
    alphas = np.asarray(alphas)
    expected = (num_edges(steps), len(PRIMITIVES))
    if alphas.shape != expected:
        raise GenotypeError(f"{name} must have shape {expected} for steps={steps}. Received: shape={alphas.shape}")
    if not np.all(np.isfinite(alphas)):
        raise GenotypeError(f"{name} holds non-finite values (NaN or inf)")
    return alphas


def edge_weights(betas: np.ndarray | Sequence, steps: int = 4) -> np.ndarray:
    """PC-DARTS edge normalisation: softmax of `betas` [num_edges] over the edges into each node."""
    betas = np.asarray(betas)
    sizes = [node + 2 for node in range(steps)]
    return np.concatenate([softmax(piece) for piece in np.split(betas, np.cumsum(sizes)[:-1])])


def _check_betas(betas, name: str, steps: int) -> np.ndarray:
    betas = np.asarray(betas)
    if betas.shape != (num_edges(steps),):
        raise GenotypeError(f"{name} must have shape {(num_edges(steps),)} for steps={steps}. Received: {betas.shape}")
    if not np.all(np.isfinite(betas)):
        raise GenotypeError(f"{name} holds non-finite values (NaN or inf)")
    return betas


def derive_genotype(
    alphas_normal: np.ndarray | Sequence,
    alphas_reduce: np.ndarray | Sequence,
    steps: int = 4,
    multiplier: int = 4,
    max_skip: int | None = None,
    betas_normal: np.ndarray | Sequence | None = None,
    betas_reduce: np.ndarray | Sequence | None = None,
) -> Genotype:
    """Derives the discrete cells from architecture weights, exactly as the paper.

    Softmax over ops per edge; for each intermediate node keep the 2 incoming
    edges whose strongest non-`none` op weight is largest (ties: lower edge
    index first), and on each kept edge take the argmax op other than `none`
    (ties: first in `PRIMITIVES` order).

    `max_skip` (P-DARTS, Chen et al., arXiv:1904.12760, Sec. 3.3): while the normal
    cell holds more skip connections, the kept skip connection of smallest weight is
    ruled out on its edge (weight 0) and the cell is derived again, so the next
    strongest choices take its place.

    `betas_normal`/`betas_reduce` (PC-DARTS edge normalisation, Xu et al., arXiv:1907.05737):
    each edge's op weights are multiplied by its edge weight (`edge_weights`) before the
    edges are ranked, as their `genotype()` does.
    """
    normal = softmax(_check_alphas(alphas_normal, "alphas_normal", steps))
    reduce = softmax(_check_alphas(alphas_reduce, "alphas_reduce", steps))
    if (betas_normal is None) != (betas_reduce is None):
        raise GenotypeError("derive_genotype expected both betas_normal and betas_reduce, or neither")
    if betas_normal is not None:
        normal = normal * edge_weights(_check_betas(betas_normal, "betas_normal", steps), steps)[:, None]
        reduce = reduce * edge_weights(_check_betas(betas_reduce, "betas_reduce", steps), steps)[:, None]
    concat = list(range(2 + steps - multiplier, steps + 2))
    cell = _parse_cell(normal, steps)
    if max_skip is not None:
        if max_skip < 0:
            raise ConfigError(f"`max_skip` must be >= 0. Received: max_skip={max_skip}")
        skip = PRIMITIVES.index("skip_connect")
        normal = normal.copy()
        while sum(op == "skip_connect" for op, _ in cell) > max_skip:
            rows = [_edge_row(position, j) for position, (op, j) in enumerate(cell) if op == "skip_connect"]
            weakest = min(rows, key=lambda row: normal[row][skip])
            normal[weakest][skip] = 0.0
            cell = _parse_cell(normal, steps)
    return Genotype(
        normal=cell,
        normal_concat=concat,
        reduce=_parse_cell(reduce, steps),
        reduce_concat=concat,
    )


def _edge_row(position: int, source: int) -> int:
    """The alphas row of the edge into node `position // 2` from input `source`."""
    node = position // 2
    return node * (node + 3) // 2 + source  # rows before node n: sum of (i + 2) for i < n


def format_alphas(alphas: np.ndarray, steps: int = 4) -> str:
    """A text table of softmax(alphas): one row per edge, one column per op."""
    weights = softmax(np.asarray(alphas))
    header = "edge        " + " ".join(f"{p[:12]:>12}" for p in PRIMITIVES)
    lines = [header]
    row = 0
    for node in range(steps):
        for j in range(node + 2):
            values = " ".join(f"{v:12.4f}" for v in weights[row])
            lines.append(f"{j}->{node + 2:<9}" + values)
            row += 1
    return "\n".join(lines)

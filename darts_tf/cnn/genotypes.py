"""DARTS CNN genotypes and their derivation from architecture weights, for any `SearchSpace`.

This module depends on NumPy only, so genotypes can be read, written and
derived without importing TensorFlow. The space (`darts_tf.cnn.space`, the paper's
`DARTS_SPACE` by default) says which ops the weights' columns are, which is `none`,
which is the skip connection and how many inputs derivation keeps per node.

Reference: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search",
ICLR 2019 (arXiv:1806.09055), Section 2.4 ("Deriving discrete architectures").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from darts_tf.cnn.space import BUILTIN_WEIGHTING, DARTS_SPACE, PRIMITIVES, SearchSpace, is_registered, registered_ops
from darts_tf.errors import ConfigError, GenotypeError
from darts_tf.files import JsonDocument, looks_like_path

# Every op darts_tf builds itself: the DARTS space, then two ops of the genotypes the original ships
# for comparison (NASNet's and AmoebaNet's cells). A genotype may also name ops you registered
# (`darts_tf.cnn.space.register_op`).
OPERATIONS: tuple[str, ...] = tuple(BUILTIN_WEIGHTING)


def num_edges(steps: int = 4) -> int:
    """Number of mixed edges in a search cell with `steps` intermediate nodes."""
    return sum(2 + i for i in range(steps))


def _as_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise GenotypeError(f"{what} must be an integer. Received: {value!r}")
    return int(value)


def _validate_cell(kind: str, edges, concat, per_node: int) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
    if not isinstance(edges, (list, tuple)):
        raise GenotypeError(f"Genotype.{kind} must be a list of (op, input) pairs. Received: {edges!r}")
    if len(edges) == 0 or len(edges) % per_node:
        raise GenotypeError(
            f"Genotype.{kind} must hold {per_node} (op, input) {'pair' if per_node == 1 else 'pairs'} per "
            f"intermediate node, a non-zero multiple of {per_node}. Received: {len(edges)} pairs"
        )
    clean = []
    for position, entry in enumerate(edges):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise GenotypeError(f"Genotype.{kind}[{position}] must be an (op, input) pair. Received: {entry!r}")
        op, index = entry
        if not isinstance(op, str) or not is_registered(op):
            raise GenotypeError(
                f"Genotype.{kind}[{position}] names unknown op {op!r}. Expected one of {', '.join(registered_ops())}"
            )
        index = _as_int(index, f"Genotype.{kind}[{position}] input index")
        node = position // per_node  # intermediate node fed by this edge; its own index is node + 2
        if not 0 <= index < node + 2:
            raise GenotypeError(
                f"Genotype.{kind}[{position}] = ({op!r}, {index}): node {node + 2} can only take "
                f"inputs 0..{node + 1} (earlier nodes). Received input index: {index}"
            )
        clean.append((op, index))
    steps = len(clean) // per_node
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
    `(op_name, input_index)` pairs (`inputs_per_node` of them: 2 in DARTS's space);
    inputs 0 and 1 are the cell's two inputs and `k >= 2` is intermediate node `k - 2`.
    `*_concat` lists the nodes whose outputs are concatenated to form the cell output.
    Ops are registered names (`darts_tf.cnn.space`). Instances are immutable, validated
    on construction, and round-trip through JSON (`inputs_per_node` is written when not 2).
    """

    KIND = "genotype"
    ERROR = GenotypeError

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]
    inputs_per_node: int = 2

    def __post_init__(self):
        per_node = _as_int(self.inputs_per_node, "Genotype.inputs_per_node")
        if not 1 <= per_node <= 2:
            raise GenotypeError(f"Genotype.inputs_per_node must be 1 or 2. Received: {per_node}")
        normal, normal_concat = _validate_cell("normal", self.normal, self.normal_concat, per_node)
        reduce, reduce_concat = _validate_cell("reduce", self.reduce, self.reduce_concat, per_node)
        object.__setattr__(self, "normal", normal)
        object.__setattr__(self, "normal_concat", normal_concat)
        object.__setattr__(self, "reduce", reduce)
        object.__setattr__(self, "reduce_concat", reduce_concat)

    def to_dict(self) -> dict:
        data = {
            "normal": [[op, index] for op, index in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, index] for op, index in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }
        if self.inputs_per_node != 2:
            data["inputs_per_node"] = self.inputs_per_node
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Genotype:
        if not isinstance(data, dict):
            raise GenotypeError(f"A genotype must be a JSON object. Received: {type(data).__name__}")
        expected = {"normal", "normal_concat", "reduce", "reduce_concat"}
        missing = sorted(expected - set(data))
        extra = sorted(set(data) - expected - {"inputs_per_node"})
        if missing or extra:
            raise GenotypeError(
                f"A genotype must have exactly the keys {sorted(expected)} (and optionally inputs_per_node). "
                f"Missing: {missing}; unexpected: {extra}"
            )
        return cls(
            normal=data["normal"],
            normal_concat=data["normal_concat"],
            reduce=data["reduce"],
            reduce_concat=data["reduce_concat"],
            inputs_per_node=data.get("inputs_per_node", 2),
        )

    @property
    def steps(self) -> int:
        return len(self.normal) // self.inputs_per_node

    def ops(self) -> set[str]:
        """Every op name the two cells use."""
        return {op for op, _ in self.normal + self.reduce}


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


def _parse_cell(weights: np.ndarray, space: SearchSpace) -> list[tuple[str, int]]:
    ops = [k for k, name in enumerate(space.primitives) if name != space.none]
    gene = []
    start = 0
    for node in range(space.steps):
        n_inputs = node + 2
        w = weights[start : start + n_inputs]
        # Strength of an edge = its strongest op other than `none`.
        strength = [max(w[j][k] for k in ops) for j in range(n_inputs)]
        # Stable sort by decreasing strength: ties keep the lower edge index first.
        kept = sorted(range(n_inputs), key=lambda j: -strength[j])[: space.inputs_per_node]
        for j in kept:
            best = None
            for k in ops:
                if best is None or w[j][k] > w[j][best]:
                    best = k  # strict '>' keeps the first maximum
            gene.append((space.primitives[best], j))
        start += n_inputs
    return gene


def _check_alphas(alphas, name: str, space: SearchSpace) -> np.ndarray:
    alphas = np.asarray(alphas)
    expected = (space.num_edges, space.num_ops)
    if alphas.shape != expected:
        raise GenotypeError(
            f"{name} must have shape {expected} for steps={space.steps} and {space.num_ops} ops. "
            f"Received: shape={alphas.shape}"
        )
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


def resolve_space(
    space: SearchSpace | dict | None = None, steps: int | None = None, multiplier: int | None = None,
    default: SearchSpace = DARTS_SPACE,
):  # fmt: skip
    """`space` (a `SearchSpace` or its dict, as a layer's config holds it; `default` when None, DARTS's unless
    given) with `steps`/`multiplier` given apart: they set the default's, and must agree with a given space's."""
    if isinstance(space, dict):
        space = SearchSpace.from_dict(space)
    if space is None:
        changes = {k: v for k, v in (("steps", steps), ("multiplier", multiplier)) if v is not None}
        return default.replace(**changes) if changes else default
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"Expected a darts_tf.cnn.space.SearchSpace. Received: space={space!r}")
    for name, value in (("steps", steps), ("multiplier", multiplier)):
        if value is not None and value != getattr(space, name):
            raise ConfigError(f"{name}={value} disagrees with the search space's {name}={getattr(space, name)}")
    return space


def derive_genotype(
    alphas_normal: np.ndarray | Sequence,
    alphas_reduce: np.ndarray | Sequence,
    steps: int | None = None,
    multiplier: int | None = None,
    max_skip: int | None = None,
    betas_normal: np.ndarray | Sequence | None = None,
    betas_reduce: np.ndarray | Sequence | None = None,
    space: SearchSpace | None = None,
) -> Genotype:
    """Derives the discrete cells from architecture weights, exactly as the paper.

    Softmax over ops per edge; for each intermediate node keep the `space.inputs_per_node`
    (2) incoming edges whose strongest non-`none` op weight is largest (ties: lower edge
    index first), and on each kept edge take the argmax op other than `none`
    (ties: first in the space's order). `space` is DARTS's unless given; `steps` and
    `multiplier` alone set DARTS's cell sizes.

    `max_skip` (P-DARTS, Chen et al., arXiv:1904.12760, Sec. 3.3): while the normal
    cell holds more skip connections, the kept skip connection of smallest weight is
    ruled out on its edge (weight 0) and the cell is derived again, so the next
    strongest choices take its place.

    `betas_normal`/`betas_reduce` (PC-DARTS edge normalisation, Xu et al., arXiv:1907.05737):
    each edge's op weights are multiplied by its edge weight (`edge_weights`) before the
    edges are ranked, as their `genotype()` does.
    """
    space = resolve_space(space, steps, multiplier)
    steps = space.steps
    normal = softmax(_check_alphas(alphas_normal, "alphas_normal", space))
    reduce = softmax(_check_alphas(alphas_reduce, "alphas_reduce", space))
    if (betas_normal is None) != (betas_reduce is None):
        raise GenotypeError("derive_genotype expected both betas_normal and betas_reduce, or neither")
    if betas_normal is not None:
        normal = normal * edge_weights(_check_betas(betas_normal, "betas_normal", steps), steps)[:, None]
        reduce = reduce * edge_weights(_check_betas(betas_reduce, "betas_reduce", steps), steps)[:, None]
    concat = list(range(2 + steps - space.multiplier, steps + 2))
    cell = _parse_cell(normal, space)
    if max_skip is not None:
        if max_skip < 0:
            raise ConfigError(f"`max_skip` must be >= 0. Received: max_skip={max_skip}")
        if space.skip is None:
            raise ConfigError("`max_skip` needs a skip connection in the search space (its `skip` is None)")
        skip = space.index(space.skip)
        normal = normal.copy()
        while sum(op == space.skip for op, _ in cell) > max_skip:
            rows = [_edge_row(position // space.inputs_per_node, j) for position, (op, j) in enumerate(cell)
                    if op == space.skip]  # fmt: skip
            weakest = min(rows, key=lambda row: normal[row][skip])
            normal[weakest][skip] = 0.0
            cell = _parse_cell(normal, space)
    return Genotype(
        normal=cell,
        normal_concat=concat,
        reduce=_parse_cell(reduce, space),
        reduce_concat=concat,
        inputs_per_node=space.inputs_per_node,
    )


def _edge_row(node: int, source: int) -> int:
    """The alphas row of the edge into intermediate node `node` from input `source`."""
    return node * (node + 3) // 2 + source  # rows before node n: sum of (i + 2) for i < n


def format_alphas(alphas: np.ndarray, steps: int = 4, primitives: Sequence[str] = PRIMITIVES) -> str:
    """A text table of softmax(alphas): one row per edge, one column per op (`primitives`, the space's)."""
    weights = softmax(np.asarray(alphas))
    header = "edge        " + " ".join(f"{p[:12]:>12}" for p in primitives)
    lines = [header]
    row = 0
    for node in range(steps):
        for j in range(node + 2):
            values = " ".join(f"{v:12.4f}" for v in weights[row])
            lines.append(f"{j}->{node + 2:<9}" + values)
            row += 1
    return "\n".join(lines)

"""What a cell costs on the device: latency, mult-adds and parameters of the evaluation network.

The evaluation network a search's cells become (`NetworkCIFAR` for the DARTS space,
`Nb201Network` for NAS-Bench-201's) is a list of *units*: the fixed parts (stem, the
cells' preprocessing, their node sums and concatenation, the reduction blocks, the head)
and one op on each kept edge. A unit's mult-adds and parameters are counted analytically
(the built-in ops by formula; your own ops by building them), its latency read from a
`LatencyTable` measured with the LiteRT interpreter (`darts_tf.export.latency`) or on a
phone with LiteRT's `benchmark_model`.

`CostModel` turns that into
- the cost of a derived genotype (the sum over its network's units), and
- the expected cost of the architecture variables, differentiable in them: each edge's
  cost is its ops' costs weighted by softmax(alpha) (DARTS: over the ops derivation can
  pick, `none` left out), and the edges into a node are weighted by what derivation keeps
  of them (`inputs_per_node` of the node's edges: uniformly, or by PC-DARTS's edge
  weights softmax(beta)), so 8 of the 14 edges of a DARTS cell count.

`budget_gradients` adds a budget on any of these to the architecture gradient: a hinge on
the budget (the default), ProxylessNAS's additive expected cost (Cai et al., arXiv:1812.00332,
Eq. 5) or FBNet's multiplicative log-cost (Wu et al., arXiv:1812.03443, Eq. 2), as FBNet,
ProxylessNAS and TF-NAS add a per-op latency table's expected cost to their loss.

Units: latency in milliseconds, mult-adds in millions (one multiply-add counted once, as the
DARTS paper's "multi-add" column), parameters in millions (trainable, as the paper's).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import numpy as np

from darts_tf.cnn.genotypes import Genotype, num_edges
from darts_tf.cnn.search_model import reduction_layers
from darts_tf.cnn.space import BUILTIN_WEIGHTING, DARTS_SPACE, SearchSpace, is_registered, op_spec
from darts_tf.errors import ConfigError
from darts_tf.files import atomic_file

METRICS = ("latency", "flops", "params")
UNITS = {"latency": "ms", "flops": "M mult-adds", "params": "M parameters"}
COLUMNS = {"latency": "latency_ms", "flops": "flops_m", "params": "params_m"}  # metrics.csv / TensorBoard names
FORMS = ("hinge", "linear", "fbnet")
TABLE_FORMAT = "darts_tf.latency_table"


@dataclasses.dataclass(frozen=True)
class Unit:
    """One measurable piece of an evaluation network.

    `kind` is an op name (one edge's op) or a fixed part: "stem", "preprocess" (ReLU-1x1
    conv-BN), "factorized_reduce", "combine" (a cell's node sums and concatenation: `extra` nodes
    of `c_in` channels each), "resblock" (NAS-Bench-201's reduction block), "head" (global pooling
    and classifier: `c_out` classes), "invoke" (the interpreter's fixed cost per call).
    `height` x `width` is the input's size.
    """

    kind: str
    c_in: int
    c_out: int
    height: int
    width: int
    stride: int = 1
    extra: int = 0

    @property
    def key(self) -> str:
        text = f"{self.kind}/{self.c_in}-{self.c_out}/{self.height}x{self.width}/s{self.stride}"
        return text + (f"/n{self.extra}" if self.extra else "")

    @classmethod
    def from_key(cls, key: str) -> Unit:
        parts = key.split("/")
        try:
            c_in, c_out = (int(n) for n in parts[1].split("-"))
            height, width = (int(n) for n in parts[2].split("x"))
            stride = int(parts[3].removeprefix("s"))
            extra = int(parts[4].removeprefix("n")) if len(parts) == 5 else 0
            if len(parts) not in (4, 5) or not parts[0]:
                raise ValueError
        except (ValueError, IndexError):
            raise ConfigError(
                f"Latency table: a unit key must read kind/Cin-Cout/HxW/sS[/nN]. Received: {key!r}"
            ) from None
        return cls(parts[0], c_in, c_out, height, width, stride, extra)

    @property
    def out_size(self) -> tuple[int, int]:
        return -(-self.height // self.stride), -(-self.width // self.stride)


INVOKE = Unit("invoke", 0, 0, 0, 0)


# -- analytic mult-adds and parameters -------------------------------------------------------------


def _sep(k):
    return lambda c, hw: (2 * hw[1] * (k * k * c + c * c), 2 * (k * k * c + c * c + 2 * c))


def _dil(k):
    return lambda c, hw: (hw[1] * (k * k * c + c * c), k * k * c + c * c + 2 * c)


def _conv(k):
    return lambda c, hw: (hw[1] * k * k * c * c, k * k * c * c + 2 * c)


# (channels, (input pixels, output pixels)) -> (mult-adds, parameters) of a built-in op at C in = C out.
_BUILTIN_OPS = {
    "none": lambda c, hw: (0, 0),
    "max_pool_3x3": lambda c, hw: (0, 0),
    "avg_pool_3x3": lambda c, hw: (0, 0),
    "sep_conv_3x3": _sep(3),
    "sep_conv_5x5": _sep(5),
    "sep_conv_7x7": _sep(7),
    "dil_conv_3x3": _dil(3),
    "dil_conv_5x5": _dil(5),
    "nor_conv_1x1": _conv(1),
    "nor_conv_3x3": _conv(3),
}


def _op_counts(unit: Unit) -> tuple[int, int]:
    c, (ho, wo) = unit.c_in, unit.out_size
    hw = (unit.height * unit.width, ho * wo)
    if unit.kind == "skip_connect":  # FactorizedReduce at stride 2: two 1x1 convs to C/2 and a BN
        return (hw[1] * c * c, c * c + 2 * c) if unit.stride == 2 else (0, 0)
    if unit.kind == "conv_7x1_1x7":  # 1x7 at stride (1, s) then 7x1 at (s, 1), one BN
        return unit.height * wo * 7 * c * c + hw[1] * 7 * c * c, 14 * c * c + 2 * c
    if unit.kind in _BUILTIN_OPS:
        return _BUILTIN_OPS[unit.kind](c, hw)
    return _built_counts(unit)


def _built_counts(unit: Unit) -> tuple[int, int]:
    """Mult-adds (TensorFlow's profiler: float ops / 2) and trainable parameters of an op of yours."""
    import tensorflow as tf

    from darts_tf.cnn.ops import build_op, make_op

    layer = make_op(unit.kind, unit.c_in, unit.stride, affine=True)
    shape = (1, unit.height, unit.width, unit.c_in)
    build_op(unit.kind, layer, shape, unit.stride)
    params = sum(int(np.prod(v.shape)) for v in layer.trainable_weights)
    function = tf.function(lambda x: layer(x, training=False)).get_concrete_function(tf.TensorSpec(shape))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(function.graph, options=options)
    return int(profile.total_float_ops) // 2, params


def unit_counts(unit: Unit) -> tuple[int, int]:
    """(mult-adds, trainable parameters) of `unit` in the evaluation network (affine BatchNorms, no biases
    but the classifier's)."""
    c_in, c_out, (ho, wo) = unit.c_in, unit.c_out, unit.out_size
    pixels = ho * wo
    if unit.kind == "stem":  # 3x3 conv + BN
        return pixels * 9 * c_in * c_out, 9 * c_in * c_out + 2 * c_out
    if unit.kind in ("preprocess", "factorized_reduce"):  # 1x1 conv(s) + BN
        return pixels * c_in * c_out, c_in * c_out + 2 * c_out
    if unit.kind == "resblock":  # ReLU-3x3 (stride 2)-BN, ReLU-3x3-BN, avg pool + 1x1 shortcut
        macs = pixels * (9 * c_in * c_out + 9 * c_out * c_out + c_in * c_out)
        return macs, 9 * c_in * c_out + 9 * c_out * c_out + c_in * c_out + 4 * c_out
    if unit.kind == "head":  # (NAS-Bench-201: the last BN + ReLU), global pooling, classifier
        return c_in * c_out, c_in * c_out + c_out + (2 * c_in if unit.extra else 0)
    if unit.kind in ("combine", "invoke"):
        return 0, 0
    return _op_counts(unit)


# -- the evaluation network as units ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """An evaluation network as units: `fixed` ones, and per cell its kind ("normal", "reduce" or "cell")
    and each mixed edge's (channels, height, width, stride) in the search cell's edge order."""

    fixed: tuple[Unit, ...]
    cells: tuple[tuple[str, tuple[tuple[int, int, int, int], ...]], ...]


def network_layout(
    space: SearchSpace, C: int, layers: int, image_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10
) -> Layout:
    """The units of `NetworkCIFAR(C, layers)` (no auxiliary head) for a DARTS-cell space, or of
    `Nb201Network(C, cells=layers)` for NAS-Bench-201's."""
    height, width, channels = (int(n) for n in image_shape)
    for name, value in (("C", C), ("layers", layers), ("num_classes", num_classes)):
        if int(value) <= 0:
            raise ConfigError(f"The cost model expected a positive `{name}`. Received: {value!r}")
    if space.cell == "nb201":
        return _nb201_layout(space, C, layers, height, width, channels, num_classes)
    fixed, cells = [INVOKE, Unit("stem", channels, 3 * C, height, width)], []
    c_pp = c_p = 3 * C
    size_pp = size_p = (height, width)
    c_curr, reduction_prev = C, False
    reductions = reduction_layers(layers)
    for i in range(layers):
        reduction = i in reductions
        c_curr = c_curr * 2 if reduction else c_curr
        if reduction_prev:
            fixed.append(Unit("factorized_reduce", c_pp, c_curr, *size_pp, stride=2))
        else:
            fixed.append(Unit("preprocess", c_pp, c_curr, *size_pp))
        fixed.append(Unit("preprocess", c_p, c_curr, *size_p))
        out = (-(-size_p[0] // 2), -(-size_p[1] // 2)) if reduction else size_p
        edges = []
        for node in range(space.steps):
            for source in range(2 + node):
                stride = 2 if reduction and source < 2 else 1
                h, w = size_p if source < 2 else out
                edges.append((c_curr, h, w, stride))
        cells.append(("reduce" if reduction else "normal", tuple(edges)))
        fixed.append(Unit("combine", c_curr, space.multiplier * c_curr, *out, extra=space.steps))
        c_pp, c_p, size_pp, size_p, reduction_prev = c_p, space.multiplier * c_curr, size_p, out, reduction
    fixed.append(Unit("head", c_p, num_classes, *size_p))
    return Layout(tuple(fixed), tuple(cells))


def _nb201_layout(space, C, cells_per_stage, height, width, channels, num_classes) -> Layout:
    fixed, cells = [INVOKE, Unit("stem", channels, C, height, width)], []
    size, c = (height, width), C
    for stage in range(3):
        if stage:
            fixed.append(Unit("resblock", c, 2 * c, *size, stride=2))
            c, size = 2 * c, (size[0] // 2, size[1] // 2)
        for _ in range(cells_per_stage):
            cells.append(("cell", tuple((c, *size, 1) for _ in range(space.num_edges))))
            fixed.append(Unit("combine", c, c, *size, extra=space.steps))
    fixed.append(Unit("head", c, num_classes, *size, extra=1))
    return Layout(tuple(fixed), tuple(cells))


# -- latency tables ----------------------------------------------------------------------------------


@dataclasses.dataclass
class LatencyTable:
    """Per-unit latency (ms) of one evaluation network's units on one device.

    `network` says which network it was measured for ({"space", "C", "layers", "image_shape",
    "num_classes"}); `device`, `threads`, `runtime` ("litert" here, "benchmark_model" imported from a
    device) and `litert` (its version) say where. JSON with `save`/`load`.
    """

    entries: dict[str, float]
    network: dict
    device: str = ""
    threads: int = 1
    runtime: str = "litert"
    litert: str = ""
    repeats: int = 0

    def latency(self, unit: Unit) -> float:
        try:
            return self.entries[unit.key]
        except KeyError:
            raise ConfigError(
                f"Latency table has no entry for {unit.key!r} (measured for {_describe(self.network)}); "
                "measure one for this network with `darts-tf latency-table`"
            ) from None

    def to_dict(self) -> dict:
        return {"format": TABLE_FORMAT, "version": 1, "unit": "ms", **dataclasses.asdict(self)}

    def save(self, path: str) -> str:
        with atomic_file(path, "w") as handle:
            json.dump(self.to_dict(), handle, indent=1, sort_keys=True)
        return path

    @classmethod
    def from_dict(cls, document: dict, where: str = "latency table") -> LatencyTable:
        if not isinstance(document, dict) or document.get("format") != TABLE_FORMAT:
            raise ConfigError(f'{where}: not a darts_tf latency table (expected "format": "{TABLE_FORMAT}")')
        entries, network = document.get("entries"), document.get("network")
        if not isinstance(entries, dict) or not entries:
            raise ConfigError(f"{where}: `entries` must be a non-empty {{unit key: milliseconds}} object")
        for key, value in entries.items():
            Unit.from_key(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{where}: the latency of {key!r} must be a number >= 0. Received: {value!r}")
        required = ("space", "C", "layers", "image_shape", "num_classes")
        if not isinstance(network, dict) or any(k not in network for k in required):
            raise ConfigError(f"{where}: `network` must give {', '.join(required)}. Received: {network!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in document.items() if k in fields})

    @classmethod
    def load(cls, path: str) -> LatencyTable:
        try:
            with open(path) as handle:
                document = json.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"`latency_table`: no file at {path!r}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"`latency_table` {path!r} is not valid JSON: {error}") from None
        return cls.from_dict(document, where=f"latency table {path!r}")


def _describe(network: dict) -> str:
    shape = "x".join(str(n) for n in network.get("image_shape", ()))
    space = network.get("space")
    name = space.get("cell", "darts") if isinstance(space, dict) else space
    return f"{name} network C={network.get('C')} layers={network.get('layers')} {shape}"


# -- the cost model ------------------------------------------------------------------------------------


class CostModel:
    """Latency (with a `table`), mult-adds and parameters of the evaluation network of `space` at
    `C`/`layers`, for derived genotypes (`of_genotype`) and, differentiably, for architecture variables
    (`expected`).

    Args:
        space: the search space (`darts_tf.cnn.space.SearchSpace`; NAS-Bench-201's: `NB201_SPACE`).
        C, layers: the evaluation network's initial channels and cells (NAS-Bench-201: cells per stage).
        image_shape, num_classes: its input and classes.
        table: a `LatencyTable` measured for this network, or None (no latency).
    """

    def __init__(self, space: SearchSpace = DARTS_SPACE, C: int = 36, layers: int = 20, image_shape=(32, 32, 3),
                 num_classes: int = 10, table: LatencyTable | None = None):  # fmt: skip
        self.space = space
        self.C = C
        self.layers = layers
        self.image_shape = tuple(int(n) for n in image_shape)
        self.num_classes = num_classes
        self.table = table
        self.layout = network_layout(space, C, layers, self.image_shape, num_classes)
        self.metrics = METRICS if table is not None else METRICS[1:]
        if table is not None:
            _check_table_network(table, self.network)
        # metric -> (fixed cost, {cell kind: [edges, ops] summed over that kind's cells})
        self.terms = {metric: self._terms(metric) for metric in self.metrics}

    @property
    def network(self) -> dict:
        return {
            "space": self.space.to_dict(), "C": self.C, "layers": self.layers,
            "image_shape": list(self.image_shape), "num_classes": self.num_classes,
        }  # fmt: skip

    def units(self) -> list[Unit]:
        """Every unit the table must give: the fixed parts and each op on each edge shape, once."""
        seen = dict.fromkeys(self.layout.fixed)
        for _, edges in self.layout.cells:
            for c, h, w, stride in edges:
                for op in self.space.primitives:
                    seen.setdefault(Unit(op, c, c, h, w, stride))
        return list(seen)

    def unit_cost(self, unit: Unit, metric: str) -> float:
        if metric == "latency":
            return self.table.latency(unit)
        macs, params = _cached_counts(unit)
        return (macs if metric == "flops" else params) / 1e6

    def _terms(self, metric: str):
        fixed = sum(self.unit_cost(u, metric) for u in self.layout.fixed)
        kinds: dict[str, np.ndarray] = {}
        for kind, edges in self.layout.cells:
            ops = self.space.primitives
            matrix = np.array([[self.unit_cost(Unit(op, c, c, h, w, s), metric) for op in ops] for c, h, w, s in edges])
            kinds[kind] = kinds.get(kind, 0.0) + matrix
        return fixed, kinds

    def of_genotype(self, genotype) -> dict[str, float]:
        """{metric: cost} of the evaluation network of `genotype` (a `Genotype`, or an `Nb201Genotype`)."""
        chosen = self._chosen_edges(genotype)
        result = {}
        for metric in self.metrics:
            fixed, kinds = self.terms[metric]
            total = fixed
            for kind, picks in chosen.items():
                total += sum(float(kinds[kind][edge, self.space.index(op)]) for edge, op in picks)
            result[metric] = float(total)
        return result

    def _chosen_edges(self, genotype) -> dict[str, list[tuple[int, str]]]:
        if self.space.cell == "nb201":
            return {"cell": list(enumerate(genotype.ops))}
        if not isinstance(genotype, Genotype):
            raise ConfigError(
                f"The cost model of a DARTS space expected a Genotype. Received: {type(genotype).__name__}"
            )
        chosen = {}
        per_node = genotype.inputs_per_node
        for kind, edges in (("normal", genotype.normal), ("reduce", genotype.reduce)):
            if len(edges) != per_node * self.space.steps:
                raise ConfigError(
                    f"The cost model expected {per_node * self.space.steps} {kind} edges ({self.space.steps} nodes). "
                    f"Received: {len(edges)}"
                )
            picks = []
            for position, (op, source) in enumerate(edges):
                node = position // per_node
                picks.append((num_edges(node) + source, op))
            chosen[kind] = picks
        return chosen

    def expected(self, alphas: dict, betas: dict | None = None) -> dict:
        """{metric: expected cost} (float32 tensors) of architecture variables by cell kind.

        `alphas`: {"normal": [edges, ops], "reduce": ...} (NAS-Bench-201: {"cell": ...});
        `betas`: PC-DARTS's edge weights by kind (their per-node softmax weights the edges), or None.
        """
        import tensorflow as tf

        result = {}
        for metric in self.metrics:
            fixed, kinds = self.terms[metric]
            total = tf.constant(fixed, tf.float32)
            for kind, matrix in kinds.items():
                weights = self._op_probabilities(tf.cast(alphas[kind], tf.float32))
                edge_costs = tf.reduce_sum(weights * tf.constant(matrix, tf.float32), axis=-1)
                beta = None if betas is None else betas.get(kind)
                total += tf.reduce_sum(self._edge_weights(beta) * edge_costs)
            result[metric] = total
        return result

    def derived(self, alphas: dict, betas: dict | None = None) -> dict:
        """{metric: cost} (float32 tensors, no gradient) of the network derivation keeps from these variables,
        computed in the graph as `derive_genotype` / `derive_nb201` derive (without `max_skip`): the edges into
        each node ranked by their strongest op other than `none` (weighted by the betas' edge weights), the
        first `inputs_per_node` kept with their argmax op; ties as derivation's (lower index first)."""
        import tensorflow as tf

        result = {}
        for metric in self.metrics:
            fixed, kinds = self.terms[metric]
            total = tf.constant(fixed, tf.float32)
            for kind, matrix in kinds.items():
                matrix = tf.constant(matrix, tf.float32)
                weights = tf.nn.softmax(tf.stop_gradient(tf.cast(alphas[kind], tf.float32)), axis=-1)
                if self.space.cell == "nb201":
                    best = tf.argmax(weights, axis=-1, output_type=tf.int32)
                    total += tf.reduce_sum(tf.gather(matrix, best, batch_dims=1))
                    continue
                if betas is not None and betas.get(kind) is not None:
                    weights *= tf.stop_gradient(self._edge_weights(betas[kind]))[:, None] / self.space.inputs_per_node
                if self.space.none is not None:
                    none = self.space.index(self.space.none)
                    weights = tf.tensor_scatter_nd_update(
                        tf.transpose(weights), [[none]], -tf.ones([1, self.space.num_edges])
                    )
                    weights = tf.transpose(weights)
                best = tf.argmax(weights, axis=-1, output_type=tf.int32)
                strength = tf.reduce_max(weights, axis=-1)
                edge_costs = tf.gather(matrix, best, batch_dims=1)
                for node in range(self.space.steps):
                    start, n = num_edges(node), node + 2
                    _, kept = tf.math.top_k(strength[start : start + n], k=self.space.inputs_per_node)
                    total += tf.reduce_sum(tf.gather(edge_costs[start : start + n], kept))
            result[metric] = total
        return result

    def _op_probabilities(self, alphas):
        import tensorflow as tf

        none = self.space.none
        if self.space.cell == "nb201" or none is None:  # NAS-Bench-201 derivation may pick none (no edge)
            return tf.nn.softmax(alphas, axis=-1)
        mask = np.array([0.0 if op == none else 1.0 for op in self.space.primitives], np.float32)
        logits = alphas + tf.constant(np.where(mask > 0, 0.0, -1e9).astype(np.float32))
        return tf.nn.softmax(logits, axis=-1)

    def _edge_weights(self, betas):
        import tensorflow as tf

        if self.space.cell == "nb201":
            return tf.ones([self.space.num_edges])
        keep = self.space.inputs_per_node
        pieces = []
        for node in range(self.space.steps):
            n = 2 + node
            if betas is None:
                pieces.append(tf.fill([n], keep / n))
            else:
                start = num_edges(node)
                pieces.append(keep * tf.nn.softmax(tf.cast(betas[start : start + n], tf.float32)))
        return tf.concat(pieces, axis=0)


_COUNTS: dict[tuple, tuple[int, int]] = {}


def _cached_counts(unit: Unit) -> tuple[int, int]:
    """`unit_counts`, kept per unit (and per factory for an op of yours: re-registering it counts again)."""
    factory = None if unit.kind in BUILTIN_WEIGHTING or not is_registered(unit.kind) else op_spec(unit.kind).factory
    key = (unit, factory)
    if key not in _COUNTS:
        _COUNTS[key] = unit_counts(unit)
    return _COUNTS[key]


def _check_table_network(table: LatencyTable, network: dict) -> None:
    mine = {k: network[k] for k in ("C", "layers", "num_classes")} | {"image_shape": list(network["image_shape"])}
    theirs = {k: table.network.get(k) for k in ("C", "layers", "num_classes")}
    theirs["image_shape"] = list(table.network.get("image_shape") or [])
    if mine != theirs:
        raise ConfigError(
            f"Latency table was measured for {_describe(table.network)}, not for the cost model's "
            f"{_describe(network)}: measure one with `darts-tf latency-table` (or pass its network's size)"
        )


# -- budgets in the architecture loss ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Budget:
    """A budget on one metric of the derived network (`metric` in METRICS, `target` in its unit).

    forms, with E the expected cost and B = `target`:
    - "hinge" (default): weight * E / B while the derived network's cost D or E is over the budget, else 0:
      free under the budget, pulling the expected cost down while either is above it. The derived network
      is the one that counts, and early in a search E (an average over all ops) is far below D (the argmax
      ops): a hinge on E alone would not act.
    - "linear" (ProxylessNAS): weight * E / B, always pulling toward cheaper ops.
    - "fbnet" (FBNet): the validation loss times weight * (log(E / B) + 1)^exponent (log clipped at
      -0.99 so the base stays positive), a multiplicative, saturating pressure.
    """

    metric: str
    target: float
    weight: float = 1.0
    form: str = "hinge"
    exponent: float = 0.6

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ConfigError(f"Budget metric must be one of {', '.join(METRICS)}. Received: {self.metric!r}")
        if not (isinstance(self.target, (int, float)) and math.isfinite(self.target) and self.target > 0):
            raise ConfigError(f"`{self.metric}_budget` must be a positive number. Received: {self.target!r}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"`budget_weight` must be 0 or more. Received: {self.weight!r}")
        if self.form not in FORMS:
            raise ConfigError(f"`budget_form` must be one of {', '.join(FORMS)}. Received: {self.form!r}")


def penalty(budget: Budget, expected, val_loss, derived=None):
    """The budget's term of the architecture loss for expected cost `expected` (tensors); the hinge is also on
    while the `derived` network's cost is over the budget."""
    import tensorflow as tf

    ratio = expected / budget.target
    if budget.form == "hinge":
        over = ratio > 1.0 if derived is None else tf.logical_or(ratio > 1.0, derived > budget.target)
        return budget.weight * tf.cast(over, ratio.dtype) * ratio
    if budget.form == "linear":
        return budget.weight * ratio
    base = tf.maximum(tf.math.log(ratio) + 1.0, 0.01)
    return tf.cast(tf.stop_gradient(val_loss), tf.float32) * budget.weight * (base**budget.exponent - 1.0)


def budget_gradients(cost_model: CostModel, budgets: Sequence[Budget], alphas: dict, betas: dict | None, val_loss):
    """(gradients, {"penalty", metric: expected}) of the budgets' penalty with respect to `alphas` and
    `betas` ({cell kind: variable}), as lists in the order of `list(alphas) + list(betas)` values.

    Pure: architecture variables in, gradients out; add them to the architecture gradient. FBNet's form
    multiplies the validation loss: its gradient here is the loss times the factor's gradient, and the
    caller scales the loss's own gradient by the factor (`fbnet_factor`).
    """
    import keras
    import tensorflow as tf

    variables = list(alphas.values()) + list((betas or {}).values())
    derived = cost_model.derived(alphas, betas)
    with tf.GradientTape() as tape:
        tape.watch([v.value if isinstance(v, keras.Variable) else v for v in variables])
        expected = cost_model.expected(alphas, betas)
        total = tf.add_n([penalty(b, expected[b.metric], val_loss, derived[b.metric]) for b in budgets])
    gradients = tape.gradient(total, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return gradients, {"penalty": total, **expected}


def fbnet_factor(budgets: Sequence[Budget], expected: dict):
    """The factor FBNet's form multiplies the validation loss by (1 without an fbnet budget): the product of
    1 + weight * ((log(E/B) + 1)^exponent - 1) over the fbnet budgets, held constant."""
    import tensorflow as tf

    factor = tf.constant(1.0)
    for b in budgets:
        if b.form == "fbnet":
            base = tf.maximum(tf.math.log(tf.stop_gradient(expected[b.metric]) / b.target) + 1.0, 0.01)
            factor *= 1.0 + b.weight * (base**b.exponent - 1.0)
    return factor


def cost_model_for(space: SearchSpace, C: int, layers: int, image_shape, num_classes: int,
                   latency_table: str | None = None) -> CostModel:  # fmt: skip
    """A `CostModel`; with a `latency_table` file, at the network the table was measured for (its `C`,
    `layers`, image shape and classes; one line if the space's ops or the image differ)."""
    table = None
    if latency_table:
        table = LatencyTable.load(os.fspath(latency_table))
        network = table.network
        C, layers = int(network["C"]), int(network["layers"])
        if list(network["image_shape"]) != [int(n) for n in image_shape]:
            raise ConfigError(
                f"Latency table {latency_table!r} was measured for {_describe(network)} images, not "
                f"{'x'.join(str(n) for n in image_shape)}: measure one at this size"
            )
        num_classes = int(network["num_classes"])
    return CostModel(space, C, layers, image_shape, num_classes, table)

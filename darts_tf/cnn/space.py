"""The CNN search space as a value: candidate ops by name, nodes per cell, inputs kept per node.

A `SearchSpace` says what a DARTS-style search chooses from; the search network, its
mixed edges, derivation, genotype validation, the pictures and the PyTorch names take
it as an argument (`DARTS_SPACE`, the paper's, is the default everywhere). Its ops are
names in a registry: the eight DARTS primitives and the two extra ops of the published
NASNet/AmoebaNet cells are built in, and `register_op` adds your own.

This module depends on the standard library only (an op's factory builds a Keras
layer when a network is built), so spaces and genotypes can be read and checked
without importing TensorFlow.

Reference: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search",
ICLR 2019 (arXiv:1806.09055), Sections 2.1-2.4.
"""

from __future__ import annotations

import dataclasses
import keyword
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from darts_tf.errors import ConfigError

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

# How a mixed edge applies an op's architecture weight w to its output:
WEIGHTINGS = {
    "multiply": "w * op(x) (the default for your ops)",
    "batchnorm": "the op ends in a darts_tf BatchNorm whose `call` takes `output_scale=w`: w * BN(z) in one "
    "normalisation (the DARTS convolutions); its `normalization_stages` let several replicas share statistics",
    "pool": "op(x), then a non-affine BatchNorm the edge adds, scaled by w (the DARTS pools)",
    "zero": "the op is zero: not computed (its weight still takes gradient through the softmax)",
}

# The ops darts_tf builds itself (`darts_tf.cnn.ops` gives their layers): the DARTS primitives,
# then the two ops of the published NASNet and AmoebaNet cells (sep_conv_7x7, conv_7x1_1x7).
BUILTIN_WEIGHTING: dict[str, str] = {
    "none": "zero",
    "max_pool_3x3": "pool",
    "avg_pool_3x3": "pool",
    "skip_connect": "batchnorm",  # the identity at stride 1 (w * x), FactorizedReduce at stride 2
    "sep_conv_3x3": "batchnorm",
    "sep_conv_5x5": "batchnorm",
    "dil_conv_3x3": "batchnorm",
    "dil_conv_5x5": "batchnorm",
    "sep_conv_7x7": "batchnorm",
    "conv_7x1_1x7": "batchnorm",
    # NAS-Bench-201's convolutions (Dong & Yang, ICLR 2020): ReLU -> k x k conv -> BN.
    "nor_conv_1x1": "batchnorm",
    "nor_conv_3x3": "batchnorm",
}

CELLS = ("darts", "nb201")  # the cell a space's edges form (see `SearchSpace.cell`)

OpFactory = Callable[..., object]  # (channels, stride, affine, **layer_kwargs) -> keras.layers.Layer


@dataclass(frozen=True)
class OpSpec:
    """A registered op: its `factory(channels, stride, affine, **layer_kwargs)` building the Keras layer
    (layer_kwargs hold `name` and `dtype`; stride is 1 or 2, and a stride-2 op halves the height and
    width as a 3x3 convolution with padding 1 does), and its `weighting` (a key of `WEIGHTINGS`)."""

    name: str
    factory: OpFactory
    weighting: str = "multiply"


_REGISTRY: dict[str, OpSpec] = {}


def register_op(name: str, factory: OpFactory, weighting: str = "multiply", replace: bool = False) -> OpSpec:
    """Adds op `name` to the registry, so a `SearchSpace` and genotypes can name it.

    `factory(channels, stride, affine, **layer_kwargs)` returns a Keras layer mapping
    [N, H, W, channels] to [N, H / stride, W / stride, channels] (see `OpSpec`); `weighting`
    says how a mixed edge weighs it (`WEIGHTINGS`). `replace=True` re-registers a name of
    yours (a built-in op cannot be replaced).
    """
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ConfigError(f"register_op expected an op name made of letters, digits and _. Received: name={name!r}")
    if name in BUILTIN_WEIGHTING:
        raise ConfigError(f"register_op: {name!r} is a built-in op of darts_tf and cannot be replaced")
    if name in _REGISTRY and not replace:
        raise ConfigError(f"register_op: op {name!r} is already registered (replace=True re-registers it)")
    if not callable(factory):
        raise ConfigError(f"register_op expected a callable factory for op {name!r}. Received: {factory!r}")
    if weighting not in WEIGHTINGS:
        raise ConfigError(
            f"register_op expected weighting one of {', '.join(WEIGHTINGS)} for op {name!r}. "
            f"Received: weighting={weighting!r}"
        )
    spec = OpSpec(name, factory, weighting)
    _REGISTRY[name] = spec
    return spec


def unregister_op(name: str) -> None:
    """Removes an op of yours from the registry (a no-op for names never registered)."""
    if name in BUILTIN_WEIGHTING:
        raise ConfigError(f"unregister_op: {name!r} is a built-in op of darts_tf")
    _REGISTRY.pop(name, None)


def _register_builtin(name: str, factory: OpFactory) -> None:
    _REGISTRY[name] = OpSpec(name, factory, BUILTIN_WEIGHTING[name])


def is_registered(name: str) -> bool:
    """Whether `name` is an op a space or a genotype may name (built in, or registered)."""
    return name in BUILTIN_WEIGHTING or name in _REGISTRY


def registered_ops() -> tuple[str, ...]:
    """Every op name: the built-ins (DARTS's primitives first), then yours in registration order."""
    return tuple(BUILTIN_WEIGHTING) + tuple(name for name in _REGISTRY if name not in BUILTIN_WEIGHTING)


def weighting(name: str) -> str:
    """How a mixed edge weighs op `name` (a key of `WEIGHTINGS`), known without building anything."""
    if name in BUILTIN_WEIGHTING:
        return BUILTIN_WEIGHTING[name]
    return op_spec(name).weighting


def op_spec(name: str) -> OpSpec:
    """The registry entry of op `name`; one line naming the op and the known ones if it has none."""
    if name in BUILTIN_WEIGHTING and name not in _REGISTRY:
        import darts_tf.cnn.ops  # noqa: F401 - registers the built-in ops' layers
    if name not in _REGISTRY:
        raise ConfigError(f"Unknown op {name!r}. Expected one of: {', '.join(registered_ops())} (or register_op it)")
    return _REGISTRY[name]


@dataclass(frozen=True)
class SearchSpace:
    """What a DARTS-style cell search chooses from (arXiv:1806.09055, Sec. 2.1-2.4).

    Args:
        primitives: the candidate ops of every mixed edge, by registered name, in the order of
            the architecture weights' columns.
        steps: intermediate nodes per cell; node i takes an edge from each of the cell's two
            inputs and every earlier node.
        multiplier: how many of the last nodes the cell's output concatenates.
        inputs_per_node: how many incoming edges derivation keeps per node (1 or 2: the first
            node has two candidate inputs).
        none: the op derivation never picks and edges rank without (None: every op counts).
        skip: the skip connection (what `max_skip` and the DARTS+ early stop count; None: none).
        pool_batchnorm: whether an edge follows ops weighed by "pool" with a non-affine BatchNorm
            (DARTS's edge does; NAS-Bench-201's weighs its pool as `w * op(x)`).
        cell: "darts" (two cell inputs, preprocessing, `inputs_per_node` edges kept per node) or
            "nb201" (one input, every edge kept with one op: `darts_tf.nb201`).
    """

    primitives: tuple[str, ...] = PRIMITIVES
    steps: int = 4
    multiplier: int = 4
    inputs_per_node: int = 2
    none: str | None = "none"
    skip: str | None = "skip_connect"
    pool_batchnorm: bool = True
    cell: str = "darts"

    def __post_init__(self):
        primitives = self.primitives
        if isinstance(primitives, str) or not isinstance(primitives, Sequence) or not primitives:
            raise ConfigError(f"SearchSpace expected a non-empty list of op names. Received: primitives={primitives!r}")
        primitives = tuple(primitives)
        for name in primitives:
            if not isinstance(name, str) or not is_registered(name):
                raise ConfigError(
                    f"`primitives`: unknown op {name!r}. Expected one of: {', '.join(registered_ops())} "
                    "(or register_op it first)"
                )
        repeated = sorted({name for name in primitives if primitives.count(name) > 1})
        if repeated:
            raise ConfigError(f"`primitives`: ops listed twice: {repeated}. Received: {list(primitives)}")
        for field in ("steps", "multiplier", "inputs_per_node"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SearchSpace expected a positive integer `{field}`. Received: {field}={value!r}")
        if self.multiplier > self.steps:
            raise ConfigError(
                f"SearchSpace expected multiplier <= steps. Received: multiplier={self.multiplier}, steps={self.steps}"
            )
        if self.inputs_per_node > 2:
            raise ConfigError(
                "SearchSpace expected inputs_per_node 1 or 2 (the first node has two candidate inputs). "
                f"Received: inputs_per_node={self.inputs_per_node}"
            )
        for field in ("none", "skip"):
            value = getattr(self, field)
            if value is not None and value not in primitives:
                raise ConfigError(
                    f"SearchSpace: `{field}` must be one of the primitives or None. Received: {field}={value!r}"
                )
        if self.cell not in CELLS:
            raise ConfigError(f"SearchSpace expected cell one of {', '.join(CELLS)}. Received: cell={self.cell!r}")
        if len([name for name in primitives if name != self.none]) == 0:
            raise ConfigError(f"SearchSpace needs an op besides `none`. Received: primitives={list(primitives)}")
        object.__setattr__(self, "primitives", primitives)

    @property
    def num_edges(self) -> int:
        """Mixed edges per cell: 2 + 3 + ... + (steps + 1) in a DARTS cell, 1 + 2 + ... + steps in NAS-Bench-201's."""
        first = 2 if self.cell == "darts" else 1
        return sum(first + i for i in range(self.steps))

    @property
    def num_ops(self) -> int:
        return len(self.primitives)

    def index(self, name: str) -> int:
        """The column of op `name` in the architecture weights."""
        return self.primitives.index(name)

    def replace(self, **changes) -> SearchSpace:
        """A copy with `changes` (e.g. `steps=3`), validated."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["primitives"] = list(self.primitives)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SearchSpace:
        if not isinstance(data, dict):
            raise ConfigError(f"A search space must be a JSON object. Received: {type(data).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"A search space has the keys {sorted(known)}. Unexpected: {unknown}")
        return cls(**data)


DARTS_SPACE = SearchSpace()  # the paper's: 8 ops, 4 nodes, 2 inputs kept per node


def search_space(primitives=None, steps: int = 4, multiplier: int = 4, inputs_per_node: int = 2) -> SearchSpace:
    """The DARTS space with its ops replaced by `primitives` (None: DARTS's) and the given cell sizes;
    `none` and `skip` stay set when the ops include them."""
    if isinstance(primitives, str):
        raise ConfigError(f"Expected a list of op names. Received: primitives={primitives!r}")
    primitives = PRIMITIVES if primitives is None else tuple(primitives)
    return SearchSpace(
        primitives, steps, multiplier, inputs_per_node,
        none="none" if "none" in primitives else None,
        skip="skip_connect" if "skip_connect" in primitives else None,
    )  # fmt: skip

"""Weights from the original PyTorch DARTS code, as NumPy state dicts.

`load_pytorch_state_dict(model, state_dict)` fills a darts_tf network
(SearchNetwork, NetworkCIFAR, NetworkImageNet) from a
dict name -> array in the original's naming (`stem.0.weight`,
`cells.3._ops.7._ops.4.op.1.weight`, ..., `alphas_normal`), transposing
kernel layouts (OIHW -> HWIO, depthwise [C,1,k,k] -> [k,k,C,1], Linear
[out,in] -> [in,out]). Torch is not needed: convert a checkpoint with

    sd = torch.load("weights.pt", map_location="cpu")
    state_dict = {k: v.numpy() for k, v in sd.items()}
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from darts_tf.cnn import eval_model, ops, search_model
from darts_tf.errors import ConfigError
from darts_tf.files import read_npz

# Kinds of parameter layout.
CONV = "conv"  # Keras [kh, kw, in, out]  <-> PyTorch [out, in, kh, kw]
DEPTHWISE = "depthwise"  # Keras [kh, kw, C, 1] <-> PyTorch [C, 1, kh, kw]
LINEAR = "linear"  # Keras [in, out]  <-> PyTorch [out, in]
VECTOR = "vector"  # same layout

# Entries that the original's state dicts hold but that carry no model state here.
IGNORED_SUFFIXES = ("num_batches_tracked",)
# Entries a darts_tf model has that the original's `state_dict()` lacks (the
# original keeps its alphas outside the module, PC-DARTS its betas too); loaded when present.
OPTIONAL_NAMES = ("alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce")


def _to_keras(array: np.ndarray, kind: str) -> np.ndarray:
    if kind == CONV:
        return np.transpose(array, (2, 3, 1, 0))
    if kind == DEPTHWISE:
        return np.transpose(array, (2, 3, 0, 1))
    if kind == LINEAR:
        return np.transpose(array)
    return array


def _to_torch(array: np.ndarray, kind: str) -> np.ndarray:
    if kind == CONV:
        return np.transpose(array, (3, 2, 0, 1))
    if kind == DEPTHWISE:
        return np.transpose(array, (2, 3, 0, 1))
    if kind == LINEAR:
        return np.transpose(array)
    return array


def _prefixed(prefix: str, variables: dict) -> dict:
    return {f"{prefix}.{name}": value for name, value in variables.items()}


def _sequence(*entries) -> dict:
    """The names of a `torch.nn.Sequential`: (index, sublayer) pairs under `prefix.index`."""
    names = {}
    for index, sublayer in entries:
        if sublayer is not None:
            names.update(_prefixed(index, torch_variables(sublayer)))
    return names


def _cell(cell, ops_list) -> dict:
    names = {**_prefixed("preprocess0", torch_variables(cell.preprocess0))}
    names.update(_prefixed("preprocess1", torch_variables(cell.preprocess1)))
    for index, op in enumerate(ops_list):
        names.update(_prefixed(f"_ops.{index}", torch_variables(op)))
    return names


def _mixed_op(edge: search_model.MixedOp) -> dict:
    if edge.shared_trace:  # each tensor is a slice of the edge's two packed variables
        shared = edge._shared
        packed = {"weights": edge.packed_weights, "statistics": edge.packed_statistics}
        names = {}
        for name, (variable, kind) in _mixed_op(shared.template).items():
            which, offset, shape = shared.slots[id(variable)]
            names[name] = (search_model.PackedSlice(packed[which], offset, shape), kind)
        return names
    names = {}
    for index, primitive in enumerate(edge.space.primitives):  # the original's `_ops` list: the space's order
        if primitive not in edge.primitive_ops:  # `none`
            continue
        if primitive in edge.pool_bns:  # PyTorch: Sequential(pool, BatchNorm2d)
            names.update(_prefixed(f"_ops.{index}.1", torch_variables(edge.pool_bns[primitive])))
        else:
            names.update(_prefixed(f"_ops.{index}", torch_variables(edge.primitive_ops[primitive])))
    return names


def _search_network(network: search_model.SearchNetwork) -> dict:
    names = {**_prefixed("stem.0", torch_variables(network.stem_conv))}
    names.update(_prefixed("stem.1", torch_variables(network.stem_bn)))
    for index, cell in enumerate(network.cells):
        names.update(_prefixed(f"cells.{index}", torch_variables(cell)))
    names.update(_prefixed("classifier", torch_variables(network.classifier)))
    names["alphas_normal"] = (network.alphas_normal, VECTOR)
    names["alphas_reduce"] = (network.alphas_reduce, VECTOR)
    if network.edge_normalization:  # PC-DARTS
        names["betas_normal"] = (network.betas_normal, VECTOR)
        names["betas_reduce"] = (network.betas_reduce, VECTOR)
    return names


_STEMS = {
    "NetworkCIFAR": {"stem.0": "stem_conv", "stem.1": "stem_bn"},
    "NetworkImageNet": {
        "stem0.0": "stem0_conv1",
        "stem0.1": "stem0_bn1",
        "stem0.3": "stem0_conv2",
        "stem0.4": "stem0_bn2",
        "stem1.1": "stem1_conv",
        "stem1.2": "stem1_bn",
    },
}


def _eval_network(network) -> dict:
    names = {}
    for prefix, layer_name in _STEMS[type(network).__name__].items():
        names.update(_prefixed(prefix, torch_variables(network.get_layer(layer_name))))
    for index in range(network.num_layers):
        names.update(_prefixed(f"cells.{index}", torch_variables(network.get_layer(f"cell_{index}"))))
    if network.auxiliary:
        names.update(_prefixed("auxiliary_head", torch_variables(network.get_layer("auxiliary_head"))))
    names.update(_prefixed("classifier", torch_variables(network.get_layer("classifier"))))
    return names


# The original's parameter names of each darts_tf layer, as its PyTorch module would list them.
_NAMES = [
    (ops.Conv2D, lambda layer: {"weight": (layer.kernel, DEPTHWISE if layer.depthwise else CONV)}),
    (
        ops.BatchNorm,
        lambda layer: {
            **({"weight": (layer.gamma, VECTOR), "bias": (layer.beta, VECTOR)} if layer.affine else {}),
            "running_mean": (layer.moving_mean, VECTOR),
            "running_var": (layer.moving_variance, VECTOR),
        },
    ),
    # Sequential(ReLU, Conv2d, BatchNorm2d)
    (ops.ReLUConvBN, lambda layer: _sequence(("op.1", layer.conv), ("op.2", layer.bn))),
    # Sequential(ReLU, Conv2d(groups=C), Conv2d(1x1), BatchNorm2d)
    (ops.DilConv, lambda x: _sequence(("op.1", x.depthwise), ("op.2", x.pointwise), ("op.3", x.bn))),
    # Sequential(ReLU, dw, pw, BN, ReLU, dw, pw, BN)
    (
        ops.SepConv,
        lambda x: _sequence(
            ("op.1", x.depthwise1),
            ("op.2", x.pointwise1),
            ("op.3", x.bn1),
            ("op.5", x.depthwise2),
            ("op.6", x.pointwise2),
            ("op.7", x.bn2),
        ),  # fmt: skip
    ),
    (ops.FactorizedReduce, lambda x: _sequence(("conv_1", x.conv_1), ("conv_2", x.conv_2), ("bn", x.bn))),
    # conv_7x1_1x7 is a bare Sequential(ReLU, Conv2d (1, k), Conv2d (k, 1), BatchNorm2d): no `op.`
    (
        ops.FactorizedConv,
        lambda x: {
            "1.weight": (x.kernel_1xk, CONV),
            "2.weight": (x.kernel_kx1, CONV),
            **_prefixed("3", torch_variables(x.bn)),
        },
    ),
    (keras.layers.Dense, lambda layer: {"weight": (layer.kernel, LINEAR), "bias": (layer.bias, VECTOR)}),
    (keras.layers.Conv2D, lambda layer: {"weight": (layer.kernel, CONV)}),  # the auxiliary head's 2x2 conv
    (search_model.MixedOp, _mixed_op),
    (search_model.SearchCell, lambda cell: _cell(cell, cell.edges)),
    (search_model.SearchNetwork, _search_network),
    (eval_model.EvalCell, lambda cell: _cell(cell, cell.cell_ops)),
    # Sequential(ReLU, AvgPool, Conv2d, BN, ReLU, Conv2d, [BN,] ReLU) + Linear
    (
        eval_model.AuxiliaryHead,
        lambda x: {
            **_sequence(("features.2", x.conv1), ("features.3", x.bn1), ("features.5", x.conv2)),
            **_sequence(("features.6", x.bn2), ("classifier", x.classifier)),
        },
    ),
    (eval_model.NetworkCIFAR, _eval_network),
    (eval_model.NetworkImageNet, _eval_network),
]


def torch_variables(layer) -> dict:
    """name -> (variable, layout kind) in the original's naming, for a built darts_tf layer or network.

    Networks (SearchNetwork, NetworkCIFAR, NetworkImageNet) are named as the
    original's `state_dict()`; their parts as the corresponding submodule.
    Layers without parameters (pools, identity, `none`, drop path) have none.
    """
    if not getattr(layer, "built", False):
        raise ValueError(f"Layer {layer.name!r} must be built before its weights can be mapped")
    for layer_class, names in _NAMES:
        if isinstance(layer, layer_class):
            return names(layer)
    if isinstance(layer, keras.Model):
        raise ValueError(
            f"Model {layer.name!r} has no PyTorch weight mapping; expected a SearchNetwork, NetworkCIFAR or "
            "NetworkImageNet"
        )
    if layer.weights and not isinstance(layer, eval_model.DropPath):
        raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}) has weights but no PyTorch naming")
    return {}


def load_pytorch_state_dict(model, state_dict: Mapping[str, np.ndarray]) -> None:
    """Fills `model` from a PyTorch DARTS state dict of NumPy arrays.

    Every weight and BatchNorm statistic of the model must be present with
    the original's shape; names the model does not have are rejected, except
    `*.num_batches_tracked`. A `module.` prefix on every name (a state dict
    saved from `nn.DataParallel`) is removed. `alphas_normal`/`alphas_reduce` are loaded when
    present. All problems are reported together in one ValueError, and
    nothing is assigned unless the whole dict matches.
    """
    targets = torch_variables(model)
    if state_dict and all(name.startswith("module.") for name in state_dict):
        # Saved from nn.DataParallel (the original's ImageNet training).
        state_dict = {name[len("module.") :]: value for name, value in state_dict.items()}
    missing = [name for name in targets if name not in state_dict and name not in OPTIONAL_NAMES]
    unexpected = [name for name in state_dict if name not in targets and not name.endswith(IGNORED_SUFFIXES)]
    mismatched = []
    assignments = []
    for name, (variable, kind) in targets.items():
        if name not in state_dict:
            continue
        array = np.asarray(state_dict[name])
        expected = tuple(_to_torch(np.empty(tuple(variable.shape), dtype=np.uint8), kind).shape)
        if array.shape != expected:
            mismatched.append(f"{name}: expected {expected}, received {array.shape}")
            continue
        assignments.append((variable, _to_keras(array, kind)))
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(
                f"unexpected {len(unexpected)}: {', '.join(unexpected[:10])}{' ...' if len(unexpected) > 10 else ''}"
            )
        if mismatched:
            parts.append(f"shape mismatch {len(mismatched)}: {'; '.join(mismatched[:10])}")
        raise ConfigError(f"State dict does not match {model.name!r}: " + " | ".join(parts))
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))


def read_npz_state_dict(path: str) -> dict[str, np.ndarray]:
    """A state dict saved with `np.savez`, read without pickle (an object array is refused, never unpickled)."""
    try:
        return read_npz(path)
    except OSError as error:
        raise ConfigError(f"Cannot read state dict {path!r}: {error.strerror or error}") from None
    except ValueError as error:
        raise ConfigError(f"State dict {path!r} is not a plain .npz of arrays: {error}") from None


def to_pytorch_state_dict(model) -> dict[str, np.ndarray]:
    """The inverse of `load_pytorch_state_dict`: the model's weights in the original's naming."""
    return {
        name: np.ascontiguousarray(_to_torch(np.asarray(variable.numpy()), kind))
        for name, (variable, kind) in torch_variables(model).items()
    }

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

import numpy as np

from darts_tf.ops import CONV, DEPTHWISE, LINEAR

# Entries that the original's state dicts hold but that carry no model state here.
IGNORED_SUFFIXES = ("num_batches_tracked",)
# Entries a darts_tf model has that the original's `state_dict()` lacks (the
# original keeps its alphas outside the module); loaded when present.
OPTIONAL_NAMES = ("alphas_normal", "alphas_reduce")


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


def torch_variables(model) -> dict:
    """name -> (variable, layout kind) in the original's naming, for a built darts_tf network."""
    if not getattr(model, "built", False):
        raise ValueError(f"Model {model.name!r} must be built before its weights can be mapped")
    if hasattr(model, "torch_variables"):
        return model.torch_variables()
    from darts_tf import eval_model

    if eval_model.is_eval_network(model):
        return eval_model.network_torch_variables(model)
    raise ValueError(
        f"Model {model.name!r} has no PyTorch weight mapping; expected a SearchNetwork, NetworkCIFAR or NetworkImageNet"
    )


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
        raise ValueError(f"State dict does not match {model.name!r}: " + " | ".join(parts))
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))


def read_npz_state_dict(path: str) -> dict[str, np.ndarray]:
    """A state dict saved with `np.savez`, read without pickle (an object array is refused, never unpickled)."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except OSError as error:
        raise ValueError(f"Cannot read state dict {path!r}: {error.strerror or error}") from None
    except ValueError as error:  # object arrays (need pickle) and files that are not .npz
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"State dict {path!r} is not a plain .npz of arrays: {reason}") from None
    except Exception as error:  # zipfile.BadZipFile, EOFError, ... from a damaged file
        raise ValueError(f"State dict {path!r} is not a readable .npz: {type(error).__name__}") from None


def to_pytorch_state_dict(model) -> dict[str, np.ndarray]:
    """The inverse of `load_pytorch_state_dict`: the model's weights in the original's naming."""
    return {
        name: np.ascontiguousarray(_to_torch(np.asarray(variable.numpy()), kind))
        for name, (variable, kind) in torch_variables(model).items()
    }

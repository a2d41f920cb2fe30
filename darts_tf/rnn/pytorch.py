"""Weights of the original's recurrent models (quark0/darts rnn/), as NumPy state dicts.

Names as the original's `state_dict()`: `encoder.weight` (= `decoder.weight`, tied),
`decoder.bias`, `rnns.0._W0`, `rnns.0._Ws.{i}`, and for the search model
`rnns.0.bn.running_mean` / `running_var`; its architecture weights (kept outside the
module there) as `weights`. Layouts are the same in both frameworks (x.mm(W)).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from darts_tf.errors import ConfigError
from darts_tf.rnn.model import RNNModel

IGNORED_SUFFIXES = ("num_batches_tracked",)
OPTIONAL_NAMES = ("weights", "decoder.weight")  # the alphas; the tied decoder is the encoder


def torch_variables(model: RNNModel) -> dict:
    """name -> variable in the original's naming."""
    if not model.built:
        raise ValueError(f"Model {model.name!r} must be built before its weights can be mapped")
    cell = model.cell
    names = {"encoder.weight": model.embedding, "decoder.weight": model.embedding, "decoder.bias": model.decoder_bias}
    names["rnns.0._W0"] = cell.W0
    names.update({f"rnns.0._Ws.{i}": w for i, w in enumerate(cell.Ws)})
    if model.searching:
        names["rnns.0.bn.running_mean"] = cell.moving_mean
        names["rnns.0.bn.running_var"] = cell.moving_variance
        names["weights"] = model.alphas
    return names


def to_pytorch_state_dict(model: RNNModel) -> dict[str, np.ndarray]:
    return {name: np.array(variable.numpy()) for name, variable in torch_variables(model).items()}


def load_pytorch_state_dict(model: RNNModel, state_dict: Mapping[str, np.ndarray]) -> None:
    """Fills `model` from the original's state dict (all problems in one ValueError; nothing assigned on error)."""
    targets = torch_variables(model)
    if state_dict and all(name.startswith("module.") for name in state_dict):
        state_dict = {name[len("module.") :]: value for name, value in state_dict.items()}
    missing = [n for n in targets if n not in state_dict and n not in OPTIONAL_NAMES]
    unexpected = [n for n in state_dict if n not in targets and not n.endswith(IGNORED_SUFFIXES)]
    mismatched = [
        f"{n}: expected {tuple(targets[n].shape)}, received {np.shape(state_dict[n])}"
        for n in targets
        if n in state_dict and tuple(np.shape(state_dict[n])) != tuple(targets[n].shape)
    ]
    if missing or unexpected or mismatched:
        problems = (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        parts = [f"{what} {len(items)}: {', '.join(items[:10])}" for what, items in problems if items]
        raise ConfigError(f"State dict does not match {model.name!r}: " + " | ".join(parts))
    if "decoder.weight" in state_dict and not np.array_equal(
        state_dict["decoder.weight"], state_dict["encoder.weight"]
    ):
        raise ConfigError("State dict's decoder.weight differs from encoder.weight: the model ties them")
    for name, variable in targets.items():
        if name in state_dict:
            variable.assign(np.asarray(state_dict[name]).astype(variable.dtype))

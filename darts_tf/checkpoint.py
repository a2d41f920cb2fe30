"""tf.train.Checkpoint objects for darts_tf models and optimizers.

Keras 3 keeps sublayers held in Python lists and dicts in its own tracking
containers, which `tf.train.Checkpoint(model=model)` does not traverse: such a
checkpoint would silently hold only the model's top-level variables. The
helpers here name every variable explicitly (a model's by its path below the
model, an optimizer's by position), so checkpoints hold all of them,
alphas included, and restoring verifies that nothing was left out.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from darts_tf.errors import RunDirError
from darts_tf.files import atomic_directory


def _key(path: str) -> str:
    return path.replace("/", ".")


def model_variables_by_name(model) -> dict:
    """Every variable of a built model keyed by its path below the model."""
    if not model.built:
        raise ValueError(f"Model {model.name!r} must be built before it can be checkpointed")
    named = {}
    prefix = f"{model.name}/"
    for variable in model.variables:
        # Subclassed models prefix their variables' paths with the model's name,
        # functional ones start at the top-level layer.
        path = variable.path[len(prefix) :] if variable.path.startswith(prefix) else variable.path
        name = _key(path)
        if name in named:
            raise ValueError(f"Two variables of {model.name!r} share the checkpoint name {name!r}")
        named[name] = variable
    return named


def optimizer_variables_by_name(optimizer) -> dict:
    """An optimizer's variables (iterations, slots) keyed by position; build it first."""
    return {f"v{i:05d}": v for i, v in enumerate(optimizer.variables)}


def make_checkpoint(model=None, **optimizers) -> tf.train.Checkpoint:
    """A tf.train.Checkpoint of every variable of `model` and of each built optimizer."""
    children = {}
    if model is not None:
        children["model"] = tf.train.Checkpoint(**model_variables_by_name(model))
    for name, optimizer in optimizers.items():
        children[name] = tf.train.Checkpoint(**optimizer_variables_by_name(optimizer))
    return tf.train.Checkpoint(**children)


def write_atomic(
    checkpoint: tf.train.Checkpoint,
    directory: str,
    prefix: str = "ckpt",
    json_files: dict | None = None,
    previous: str | None = None,
) -> str:
    """Writes `checkpoint` (and `json_files`, name -> data) into `directory`, whole or not at all.

    Returns the checkpoint path inside it (see `darts_tf.files.atomic_directory`); with
    `previous`, the checkpoint it replaces is kept there.
    """
    with atomic_directory(directory, previous=previous) as tmp:
        checkpoint.write(os.path.join(tmp, prefix))
        for name, data in (json_files or {}).items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
    return os.path.join(os.path.abspath(directory), prefix)


def restore(checkpoint: tf.train.Checkpoint, path: str, partial: bool = False) -> None:
    """Restores `checkpoint` from `path`, requiring every variable to be found there.

    With `partial=False` the file must hold nothing else either; `partial=True`
    allows it to hold more (e.g. reading only the model of a model+optimizer checkpoint).
    """
    status = checkpoint.read(path)
    try:
        if partial:
            status.assert_existing_objects_matched().expect_partial()
        else:
            status.assert_consumed()
    except AssertionError as error:  # TensorFlow's message runs to many lines
        first = str(error).strip().splitlines()[0]
        raise RunDirError(f"Checkpoint {path!r} does not match the model's variables: {first}") from None

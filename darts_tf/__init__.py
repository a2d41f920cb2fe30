"""darts_tf: DARTS (Liu, Simonyan & Yang, ICLR 2019, arXiv:1806.09055) on TensorFlow 2 / Keras 3.

The genotypes and configs are imported eagerly (NumPy only); everything that
needs TensorFlow is imported on first use, so `import darts_tf` stays light.
"""

import importlib

from darts_tf.cnn.genotypes import AMOEBANET, DARTS, DARTS_V1, DARTS_V2, NASNET, PRIMITIVES, Genotype, derive_genotype
from darts_tf.cnn.space import DARTS_SPACE, SearchSpace, register_op
from darts_tf.config import SearchConfig, TrainConfig

_LAZY = {
    "OPS": "darts_tf.cnn.ops",
    "MixedOp": "darts_tf.cnn.search_model",
    "SearchCell": "darts_tf.cnn.search_model",
    "SearchNetwork": "darts_tf.cnn.search_model",
    "NetworkCIFAR": "darts_tf.cnn.eval_model",
    "NetworkImageNet": "darts_tf.cnn.eval_model",
    "run_search": "darts_tf.cnn.search",
    "run_training": "darts_tf.cnn.train",
    "load_pytorch_state_dict": "darts_tf.cnn.pytorch",
    "to_pytorch_state_dict": "darts_tf.cnn.pytorch",
    "architect": None,
}

__all__ = [
    "AMOEBANET",
    "DARTS",
    "DARTS_V1",
    "DARTS_SPACE",
    "DARTS_V2",
    "NASNET",
    "PRIMITIVES",
    "Genotype",
    "SearchConfig",
    "SearchSpace",
    "TrainConfig",
    "derive_genotype",
    "register_op",
    *_LAZY,
]
__version__ = "0.1.0"


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'darts_tf' has no attribute {name!r}")
    module = _LAZY[name]
    if module is None:
        return importlib.import_module(f"darts_tf.{name}")
    return getattr(importlib.import_module(module), name)

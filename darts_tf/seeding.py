"""Seeded weight initialisation that leaves the process's random state as it was.

`keras.utils.set_random_seed` reseeds Python's, NumPy's and TensorFlow's global generators
for the whole process. The builders only need Keras's initialisers to draw from a seed:
an unseeded Keras initialiser (and `keras.random.SeedGenerator(None)`) takes its seed from
Python's `random` when it is made, so that state alone is seeded inside the block and
restored after it. NumPy's and TensorFlow's global state are never touched.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

from darts_tf.errors import ConfigError


@contextlib.contextmanager
def initializer_seed(seed: int) -> Iterator[None]:
    """Inside the block Keras's unseeded initialisers draw as after `keras.utils.set_random_seed(seed)`."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"initializer_seed expected an integer seed. Received: seed={seed!r}")
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


@contextlib.contextmanager
def random_state_kept() -> Iterator[None]:
    """Draws inside the block consume nothing outside it: Python's and NumPy's global states are restored
    (what building a throwaway layer needs, so that later weights do not depend on it)."""
    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)

"""Small shared builders for the tests."""

import keras
import numpy as np
import tensorflow as tf

from darts_tf.cnn.search_model import SearchNetwork


def tiny_search_network(dtype="float32", C=4, num_classes=3, layers=3, size=8, seed=0, steps=4, **options):
    """A 3-cell search network (normal, reduction, reduction) on size x size RGB inputs.

    `options` go to `SearchNetwork` (partial_channels, edge_normalization, shared_trace).
    """
    keras.utils.set_random_seed(seed)
    model = SearchNetwork(C, num_classes, layers, steps=steps, multiplier=min(steps, 4), dtype=dtype, **options)
    model.build((None, size, size, 3))
    rng = np.random.default_rng(seed)
    # Alphas far from uniform so the second-order term is visible.
    for alpha in model.arch_variables:
        alpha.assign(rng.normal(scale=0.5, size=alpha.shape).astype(alpha.dtype))
    return model


def random_batch(n=4, size=8, num_classes=3, dtype="float32", seed=1):
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.normal(size=(n, size, size, 3)).astype(dtype))
    labels = tf.constant(rng.integers(0, num_classes, size=n), tf.int32)
    return images, labels

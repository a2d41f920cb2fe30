import numpy as np
import pytest
import tensorflow as tf

from darts_tf.eval_model import NetworkCIFAR, NetworkImageNet, count_parameters
from darts_tf.genotypes import DARTS_V1, DARTS_V2


@pytest.mark.parametrize(
    "builder, genotype, expected",
    [
        (lambda g: NetworkCIFAR(36, 10, 20, True, g), DARTS_V2, 3_349_342),
        (lambda g: NetworkCIFAR(36, 10, 20, True, g), DARTS_V1, 3_169_414),
        (lambda g: NetworkImageNet(48, 1000, 14, True, g), DARTS_V2, 4_718_752),
    ],
)
def test_parameter_counts_equal_the_original(builder, genotype, expected):
    assert count_parameters(builder(genotype)) == expected


def test_small_network_outputs_and_drop_path():
    model = NetworkCIFAR(8, 10, 5, True, DARTS_V2)
    images = tf.random.normal([4, 32, 32, 3])
    out = model(images, training=True)
    assert out["logits"].shape == (4, 10) and out["aux_logits"].shape == (4, 10)
    a = model(images, training=False)["logits"].numpy()
    b = model(images, training=False)["logits"].numpy()
    np.testing.assert_array_equal(a, b)
    rates = [v for v in model.non_trainable_variables if v.path.endswith("drop_path/rate")]
    assert len(rates) == 5
    for v in rates:
        v.assign(0.5)
    np.testing.assert_array_equal(model(images, training=False)["logits"].numpy(), a)  # inference: no drop path


def test_requires_genotype():
    with pytest.raises(ValueError, match="expected a genotype"):
        NetworkCIFAR(8, 10, 5, True, None)

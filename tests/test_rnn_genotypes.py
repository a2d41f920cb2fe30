"""darts_tf.rnn.genotypes: the published recurrent cells, JSON, derivation."""

import numpy as np
import pytest

from darts_tf.rnn.genotypes import (
    DARTS_V1,
    DARTS_V2,
    PRIMITIVES,
    RecurrentGenotype,
    derive_recurrent_genotype,
    get_genotype,
    num_edges,
)


def test_published_genotypes_and_json_round_trip(tmp_path):
    assert DARTS_V2.recurrent[0] == ("sigmoid", 0) and DARTS_V2.concat == tuple(range(1, 9))
    assert [op for op, _ in DARTS_V1.recurrent] == ["relu", "relu", "tanh", "relu", "relu", "identity", "relu", "relu"]
    DARTS_V2.save(tmp_path / "g.json")
    assert RecurrentGenotype.load(tmp_path / "g.json") == DARTS_V2 == get_genotype(str(tmp_path / "g.json"))
    assert get_genotype("DARTS") == DARTS_V2
    for bad, message in [
        ({"recurrent": [["conv", 0]], "concat": [1]}, "Unknown recurrent op 'conv'"),
        ({"recurrent": [["relu", 1]], "concat": [1]}, "predecessor must be in \\[0, 0\\]"),
        ({"recurrent": [["relu", 0]], "concat": [2]}, "concat must name nodes"),
        ({"normal": []}, "keys 'recurrent' and 'concat'"),
    ]:
        with pytest.raises(ValueError, match=message):
            RecurrentGenotype.from_dict(bad)
    with pytest.raises(ValueError, match="not valid JSON"):
        RecurrentGenotype.from_json("{")


def test_derivation_keeps_one_strongest_predecessor_per_node():
    alphas = np.zeros((num_edges(), len(PRIMITIVES)))
    # node 1: its only edge (0) prefers relu; node 2: edge from node 1 with a strong tanh beats node 0.
    alphas[0, PRIMITIVES.index("relu")] = 2.0
    alphas[2, PRIMITIVES.index("tanh")] = 3.0
    alphas[1, PRIMITIVES.index("none")] = 9.0  # `none` never counts
    genotype = derive_recurrent_genotype(alphas)
    assert genotype.recurrent[0] == ("relu", 0) and genotype.recurrent[1] == ("tanh", 1)
    assert genotype.recurrent[2] == ("tanh", 0)  # all equal: the lower predecessor, the first op after `none`
    assert genotype.concat == tuple(range(1, 9))
    with pytest.raises(ValueError, match="shape \\(36, 5\\)"):
        derive_recurrent_genotype(np.zeros((14, 5)))

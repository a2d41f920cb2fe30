import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from darts_tf.cnn.genotypes import DARTS, DARTS_V1, DARTS_V2, PRIMITIVES, Genotype, derive_genotype, num_edges


def test_primitives_in_paper_order():
    assert PRIMITIVES == (
        "none",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "dil_conv_5x5",
    )
    assert num_edges(4) == 14


def test_genotypes_module_does_not_import_tensorflow():
    code = "import sys, darts_tf.cnn.genotypes; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_published_genotypes():
    assert DARTS is DARTS_V2
    assert DARTS_V2.normal[-1] == ("dil_conv_3x3", 2)
    assert DARTS_V1.reduce[-1] == ("avg_pool_3x3", 0)
    assert DARTS_V1.normal_concat == (2, 3, 4, 5)


def test_json_round_trip(tmp_path):
    for genotype in (DARTS_V1, DARTS_V2):
        assert Genotype.from_json(genotype.to_json()) == genotype
        path = tmp_path / "g.json"
        genotype.save(path)
        assert Genotype.load(path) == genotype
        assert json.loads(path.read_text())["normal"][0] == list(genotype.normal[0])


def test_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DARTS_V2.normal = ()


def _alphas(table):
    """alphas whose softmax ranks ops as `table` says: {edge: {op: logit}}; everything else 0."""
    alphas = np.zeros((14, 8))
    for edge, ops in table.items():
        for op, value in ops.items():
            alphas[edge, PRIMITIVES.index(op)] = value
    return alphas


def test_derive_known_answer():
    # Node 2 (edges 0, 1): edge 1 strongest (sep_conv_5x5), then edge 0 (max_pool).
    # Node 3 (edges 2, 3, 4): `none` dominates edge 2 but does not count; edge 3 and 4 kept.
    table = {
        0: {"max_pool_3x3": 2.0},
        1: {"sep_conv_5x5": 3.0},
        2: {"none": 10.0, "avg_pool_3x3": 0.5},
        3: {"dil_conv_5x5": 1.0},
        4: {"skip_connect": 2.0},
        # node 4 (edges 5..8): edges 8 and 6
        6: {"sep_conv_3x3": 1.5},
        8: {"dil_conv_3x3": 4.0},
        # node 5 (edges 9..13): edges 13 and 9
        9: {"avg_pool_3x3": 1.0},
        13: {"max_pool_3x3": 5.0},
    }
    g = derive_genotype(_alphas(table), _alphas({}))
    assert g.normal == (
        ("sep_conv_5x5", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("dil_conv_5x5", 1),
        ("dil_conv_3x3", 3),
        ("sep_conv_3x3", 1),
        ("max_pool_3x3", 4),
        ("avg_pool_3x3", 0),
    )
    assert g.normal_concat == (2, 3, 4, 5)


def test_derive_none_exclusion_on_the_chosen_op():
    # On edge 1 `none` is the largest weight; the op must still be the best non-none one.
    table = {0: {"avg_pool_3x3": 1.0}, 1: {"none": 5.0, "dil_conv_3x3": 2.0}}
    g = derive_genotype(_alphas(table), _alphas({}))
    # Edge 1's strength is its dil_conv weight (0.046), weaker than edge 0's avg_pool (0.28).
    assert g.normal[:2] == (("avg_pool_3x3", 0), ("dil_conv_3x3", 1))


def test_derive_ties_as_the_original():
    # All-zero alphas: every op ties. Edges keep index order, the op is the first non-none.
    g = derive_genotype(np.zeros((14, 8)), np.zeros((14, 8)))
    expected = (
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
    )  # fmt: skip
    assert g.normal == expected and g.reduce == expected
    # A tie between edges 1 and 2 of node 3 (edge 0 weaker): the lower index wins the first slot.
    table = {3: {"sep_conv_3x3": 1.0}, 4: {"sep_conv_5x5": 1.0}, 2: {"skip_connect": 0.5}}
    g = derive_genotype(_alphas(table), _alphas({}))
    assert g.normal[2:4] == (("sep_conv_3x3", 1), ("sep_conv_5x5", 2))


def test_derive_rejects_bad_alphas():
    with pytest.raises(ValueError, match=r"alphas_normal must have shape \(14, 8\)"):
        derive_genotype(np.zeros((13, 8)), np.zeros((14, 8)))
    with pytest.raises(ValueError, match="alphas_reduce holds non-finite"):
        derive_genotype(np.zeros((14, 8)), np.full((14, 8), np.nan))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["normal"].__setitem__(3, ["conv_9x9", 1]), r"Genotype.normal\[3\] names unknown op 'conv_9x9'"),
        (lambda d: d["reduce"].__setitem__(1, ["skip_connect", 2]), r"Genotype.reduce\[1\] = \('skip_connect', 2\)"),
        (lambda d: d["normal"].pop(), "Genotype.normal must hold 2 .* pairs per intermediate node"),
        (lambda d: d["normal_concat"].append(9), "Genotype.normal_concat entry 9"),
        (lambda d: d.pop("reduce"), r"Missing: \['reduce'\]"),
        (lambda d: d["normal"].__setitem__(0, ["sep_conv_3x3", "1"]), r"Genotype.normal\[0\] input index"),
    ],
)
def test_bad_genotypes_rejected(mutate, message):
    data = json.loads(DARTS_V2.to_json())
    mutate(data)
    with pytest.raises(ValueError, match=message):
        Genotype.from_json(json.dumps(data))


def test_bad_json_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not valid JSON"):
        Genotype.from_json("{normal: ")
    with pytest.raises(ValueError, match="Cannot read genotype file"):
        Genotype.load(tmp_path / "nope.json")


def test_max_skip_replaces_the_weakest_skip_connections_as_p_darts():
    from darts_tf.cnn.genotypes import PRIMITIVES, derive_genotype

    skip, sep, dil = (PRIMITIVES.index(op) for op in ("skip_connect", "sep_conv_3x3", "dil_conv_3x3"))
    normal = np.zeros((14, 8))
    normal[:, skip] = [5.0, 4.0, 3.0, 2.9, 0, 2.0, 1.9, 0, 0, 1.5, 1.4, 0, 0, 0]  # skip strongest on 8 edges
    normal[:, sep] = 1.0
    normal[:, dil] = 0.5
    reduce = np.zeros((14, 8))
    plain = derive_genotype(normal, reduce)
    assert sum(op == "skip_connect" for op, _ in plain.normal) == 8
    limited = derive_genotype(normal, reduce, max_skip=2)
    # The two strongest skips (edges c_{k-2}->0 and c_{k-1}->0) stay; every other edge takes its next op.
    assert limited.normal[:2] == (("skip_connect", 0), ("skip_connect", 1))
    assert [op for op, _ in limited.normal[2:]] == ["sep_conv_3x3"] * 6
    none_left = derive_genotype(normal, reduce, max_skip=0).normal
    assert "skip_connect" not in {op for op, _ in none_left}
    assert set(none_left[:2]) == {("sep_conv_3x3", 0), ("sep_conv_3x3", 1)}  # order by the remaining weights
    assert limited.reduce == plain.reduce
    with pytest.raises(ValueError, match="`max_skip` must be >= 0"):
        derive_genotype(normal, reduce, max_skip=-1)

"""NAS-Bench-201 cells (darts_tf.nb201): the arch string, derivation, the table and `darts-tf score`."""

import importlib.metadata
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from darts_tf.errors import DataError, GenotypeError
from darts_tf.nb201 import table
from darts_tf.nb201.genotypes import EDGES, OPS, Nb201Genotype, derive_nb201

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ops_edges_and_the_arch_string():
    assert OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert EDGES == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    genotype = Nb201Genotype.from_arch(BEST)
    assert genotype.ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_1x1",
                            "nor_conv_3x3")  # fmt: skip
    assert genotype.arch == BEST and Nb201Genotype.from_json(genotype.to_json()) == genotype
    assert json.loads(genotype.to_json()) == {"arch": BEST}
    assert genotype.counts()["nor_conv_3x3"] == 4


@pytest.mark.parametrize(
    "arch, message",
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|", "has 3 nodes"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|a~0|b~1|c~2|", "node 2 takes 2 input"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~1|nor_conv_3x3~0|+" + "|skip_connect~0|skip_connect~1|skip_connect~2|",
         "entry 'nor_conv_3x3~1' must name input 0"),
        (BEST.replace("nor_conv_1x1", "conv_5x5"), "edge 1 -> 3: unknown op 'conv_5x5'. Expected one of: none, "),
        ("nor_conv_3x3~0|+|x~0|y~1|+|a~0|b~1|c~2|", "node 1 must be written"),
    ],
)  # fmt: skip
def test_malformed_arch_strings_are_one_line_errors(arch, message):
    with pytest.raises(GenotypeError, match=message) as error:
        Nb201Genotype.from_arch(arch)
    assert "\n" not in str(error.value)


def test_derivation_is_the_argmax_of_every_edge_none_included():
    alphas = np.zeros((6, 5))
    alphas[0, 0] = 1.0  # none wins edge 0 -> 1
    alphas[1, 3] = 2.0
    alphas[5, [2, 4]] = 3.0  # a tie: the first op
    assert derive_nb201(alphas).ops == ("none", "nor_conv_3x3", "none", "none", "none", "nor_conv_1x1")
    with pytest.raises(GenotypeError, match=r"shape \(6, 5\)"):
        derive_nb201(np.zeros((14, 8)))


def _naslib_key(arch: str) -> tuple:
    """NASLib's convert_str_to_op_indices, written out: nodes numbered from 1, its op and edge order."""
    names = ["skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3"]
    node_ops = [[entry.split("~")[0] for entry in node.strip()[1:-1].split("|")] for node in arch.split("+")]
    return tuple(names.index(node_ops[v - 2][u - 1]) for u, v in ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)))


def test_table_key_is_naslibs_encoding():
    rng = np.random.default_rng(0)
    for _ in range(50):
        genotype = Nb201Genotype(tuple(rng.choice(OPS, size=6)))
        assert table.table_key(genotype) == _naslib_key(genotype.arch)
    assert table.table_key(Nb201Genotype.from_arch(BEST)) == (2, 2, 0, 2, 3, 2)


def test_scores_from_the_table():
    scores = table.load_table()
    assert len(scores) == 15625 and set(scores) == {k for k in scores if len(k) == 6}
    assert table.score(Nb201Genotype.from_arch(BEST)) == {"arch": BEST, "test_accuracy": 94.0664, "rank": 1}
    skip = table.score(Nb201Genotype.from_arch(ALL_SKIP))
    assert skip["test_accuracy"] == pytest.approx(60.7836) and skip["rank"] == 15145
    assert np.median(list(scores.values())) == pytest.approx(90.4064)
    assert scores[(1,) * 6] == 10.0  # every edge `none`: chance


def test_the_table_runs_no_code_and_says_how_to_get_it(tmp_path, monkeypatch):
    hostile = tmp_path / "data.anb"
    hostile.write_bytes(pickle.dumps({(0,) * 6: os.getcwd}))  # a global the table never holds
    with pytest.raises(DataError, match="asks for the global posix.getcwd"):
        table.load_table(str(hostile))
    (tmp_path / "short.anb").write_bytes(pickle.dumps({}))
    with pytest.raises(DataError, match="holds 0 cells. Expected: 15625"):
        table.load_table(str(tmp_path / "short.anb"))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(DataError, match=r"not installed: pip install 'darts_tf\[bench\]'"):
        table.table_path()


def _score(*argv, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "darts_tf.commands", "score", *argv], capture_output=True, text=True,
                          cwd=cwd)  # fmt: skip


def test_score_command(tmp_path):
    out = _score(BEST)
    assert out.returncode == 0 and out.stdout.strip() == f"{BEST}: CIFAR-10 test accuracy 94.07 %, rank 1 of 15,625"
    run = tmp_path / "run"
    run.mkdir()
    Nb201Genotype.from_arch(ALL_SKIP).save(run / "genotype.json")
    for target in (str(run), str(run / "genotype.json")):
        out = _score(target, "--json")
        assert json.loads(out.stdout) == {"arch": ALL_SKIP, "test_accuracy": 60.7836, "rank": 15145}
    for bad, message in ((str(tmp_path), "has no genotype.json"), ("|none~0|", "has 3 nodes"),
                         ("nothing_here", "is neither a NAS-Bench-201 arch string")):  # fmt: skip
        out = _score(bad)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1

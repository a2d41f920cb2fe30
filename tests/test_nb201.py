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


# The networks (darts_tf.nb201.model) and the search and training runs over the NAS-Bench-201 space.

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from darts_tf.architect import cross_entropy  # noqa: E402
from darts_tf.nb201.model import Nb201Network, Nb201SearchCell, Nb201SearchNetwork  # noqa: E402
from helpers import random_batch  # noqa: E402


def _expected_parameters(genotype: Nb201Genotype, C=16, cells=5, classes=10) -> int:
    """The benchmark's network counted by hand: ReLU-conv-BN ops (k*k*C*C + 2C), the stem, the two residual
    reduction blocks (two 3x3 ReLU-conv-BN and a 1x1 shortcut), the last BatchNorm and the classifier."""
    per_op = {"nor_conv_3x3": lambda c: 9 * c * c + 2 * c, "nor_conv_1x1": lambda c: c * c + 2 * c}
    total = 3 * C * 9 + 2 * C
    for stage in range(3):
        c = C * 2**stage
        if stage:
            total += 9 * (c // 2) * c + 2 * c + 9 * c * c + 2 * c + (c // 2) * c
        total += cells * sum(per_op.get(op, lambda c: 0)(c) for op in genotype.ops)
    return total + 2 * 4 * C + 4 * C * classes + classes


def test_network_parameters_are_the_benchmarks():
    all_conv = Nb201Genotype(("nor_conv_3x3",) * 6)
    network = Nb201Network(all_conv)
    count = sum(int(np.prod(v.shape)) for v in network.trainable_variables)
    assert count == _expected_parameters(all_conv) == 1_531_546  # the benchmark's 1.5315 M for this cell
    best = Nb201Genotype.from_arch(BEST)
    assert sum(int(np.prod(v.shape)) for v in Nb201Network(best).trainable_variables) == _expected_parameters(best)
    outputs = network(tf.zeros((2, 32, 32, 3)))
    assert list(outputs) == ["logits"] and outputs["logits"].shape == (2, 10)
    again = Nb201Network.from_config(network.get_config())
    assert again.genotype == all_conv and again.count_params() == network.count_params()
    from darts_tf.cnn.genotypes import DARTS_V2

    with pytest.raises(GenotypeError, match="expected a NAS-Bench-201 genotype"):
        Nb201Network(DARTS_V2)


def test_search_network_variables():
    network = Nb201SearchNetwork(16, 10, 5)
    network.build((None, 32, 32, 3))
    assert network.alphas.shape == (6, 5) and network.arch_variables == [network.alphas]
    # Per cell 6 edges x (1x1 + 3x3 conv, BatchNorms without parameters): 60 C^2; the rest as the benchmark's.
    rest = _expected_parameters(Nb201Genotype(("none",) * 6))
    expected = rest + 5 * sum(60 * (16 * 2**stage) ** 2 for stage in range(3))
    assert sum(int(np.prod(v.shape)) for v in network.weight_variables) == expected == 1_686_106
    pc = Nb201SearchNetwork(8, 10, 1, partial_channels=2, edge_normalization=True)
    pc.build((None, 16, 16, 3))
    assert pc.arch_variables == [pc.alphas, pc.betas] and set(pc.arch_arrays()) == {"alphas", "betas"}
    assert pc(tf.zeros((2, 16, 16, 3)), training=True).shape == (2, 10)


def _copy_into_packed(plain, packed):
    flat = lambda vs: tf.concat([tf.reshape(v, [-1]) for v in vs], axis=0)  # noqa: E731
    for a, b in zip(plain.blocks, packed.blocks):
        if isinstance(a, Nb201SearchCell):
            for p, q in zip(a.edges, b.edges):
                q.packed_weights.assign(flat(p.trainable_variables))
                q.packed_statistics.assign(flat(p.non_trainable_variables))
        else:
            for x, y in zip(a.weights, b.weights):
                y.assign(x)
    layers = ("stem_conv", "stem_bn", "lastact_bn", "classifier")
    for x, y in zip([v for name in layers for v in getattr(plain, name).weights] + [plain.alphas],
                    [v for name in layers for v in getattr(packed, name).weights] + [packed.alphas]):  # fmt: skip
        y.assign(x)


def test_packed_edges_equal_plain_edges_and_cells_use_batch_statistics():
    networks = []
    for shared in (False, True):
        keras.utils.set_random_seed(0)
        network = Nb201SearchNetwork(4, 3, 1, shared_trace=shared, dtype="float64")
        network.build((None, 8, 8, 3))
        networks.append(network)
    plain, packed = networks
    plain.alphas.assign(np.random.default_rng(0).normal(scale=0.5, size=(6, 5)))
    _copy_into_packed(plain, packed)
    images, labels = random_batch(dtype="float64")
    results = []
    for network in networks:
        with tf.GradientTape() as tape:
            loss = cross_entropy(labels, network(images, training=True))
        gradients = tape.gradient(loss, [network.alphas, network.stem_conv.kernel])
        results.append([loss.numpy()] + [g.numpy() for g in gradients])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
    # The cells' BatchNorms take the batch's statistics in inference too (the benchmark's track_running_stats
    # False): their moving statistics neither change in training nor matter in inference.
    cell = packed.blocks[0]
    before = [e.packed_statistics.numpy().copy() for e in cell.edges]
    stem_before = packed.stem_bn.moving_mean.numpy().copy()
    packed(images, training=True)
    assert all(np.array_equal(b, e.packed_statistics.numpy()) for b, e in zip(before, cell.edges))
    assert not np.array_equal(stem_before, packed.stem_bn.moving_mean.numpy())  # the stem's do move
    inference = packed(images, training=False).numpy()
    for edge in cell.edges:
        edge.packed_statistics.assign(np.random.default_rng(1).uniform(0.5, 2.0, edge.packed_statistics.shape))
    np.testing.assert_array_equal(packed(images, training=False).numpy(), inference)


def test_derivation_with_max_skip():
    alphas = np.zeros((6, 5))
    alphas[:, 1] = [3.0, 2.0, 1.5, 2.5, 1.0, 0.5]  # skip_connect everywhere, of different strengths
    alphas[:, 3] = 0.2  # then nor_conv_3x3
    assert derive_nb201(alphas).ops == ("skip_connect",) * 6
    kept = derive_nb201(alphas, max_skip=2).ops
    assert kept == ("skip_connect", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_3x3")


def test_nesterov_sgd_is_pytorchs():
    from darts_tf.optimizers import SGD

    w0, grads = np.array([1.0, -2.0, 0.5]), [np.array([0.1, 0.2, -0.3]), np.array([-0.2, 0.1, 0.4])] * 2
    variable = tf.Variable(w0)
    optimizer = SGD(0.1, momentum=0.9, coupled_weight_decay=5e-4, nesterov=True)
    w, buf = w0.copy(), np.zeros(3)
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g), variable)])
        d = g + 5e-4 * w  # torch.optim.SGD(nesterov=True): buf = m buf + d; w -= lr (d + m buf)
        buf = 0.9 * buf + d
        w = w - 0.1 * (d + 0.9 * buf)
    np.testing.assert_allclose(variable.numpy(), w, rtol=1e-7)  # Keras keeps the learning rate in float32


def test_a_search_records_each_epochs_cell_and_its_table_accuracy(tmp_path):
    from darts_tf.cnn.search import run_search
    from darts_tf.config import SEARCH_PRESETS, SearchConfig

    values = {**SEARCH_PRESETS["nb201"], "C": 4, "layers": 1, "epochs": 2, "batch_size": 16, "subset": 64}
    config = SearchConfig(dataset="synthetic", run_dir=str(tmp_path / "run"), eval_batch_size=64, **values)
    result = run_search(config, verbose=0)
    assert isinstance(result["genotype"], Nb201Genotype)
    rows = list(__import__("csv").DictReader(open(tmp_path / "run" / "metrics.csv")))
    for row in rows:
        genotype = Nb201Genotype.from_json(row["genotype"])
        assert float(row["nb201_test_accuracy"]) == table.score(genotype)["test_accuracy"]
    assert Nb201Genotype.load(tmp_path / "run" / "genotype.json") == result["genotype"]
    with np.load(tmp_path / "run" / "alphas_epoch_002.npz") as arrays:
        assert list(arrays) == ["alphas"] and derive_nb201(arrays["alphas"]) == result["genotype"]
    assert (tmp_path / "run" / "cell_nb201.png").exists()


@pytest.mark.slow
def test_nb201_commands_end_to_end(tmp_path):
    """search --preset nb201 (second order) -> score -> train --preset nb201 -> export -> evaluate -> visualize."""

    def darts_tf(*argv):
        out = subprocess.run([sys.executable, "-m", "darts_tf.commands", *argv], capture_output=True, text=True,
                             cwd=tmp_path)  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    tiny = ["--dataset", "synthetic", "--subset", "128", "--C", "4", "--layers", "1", "--quiet"]
    darts_tf("search", "--preset", "nb201", "--unrolled", "--epochs", "1", "--batch-size", "16", *tiny,
             "--run-dir", "search")  # fmt: skip
    scored = json.loads(darts_tf("score", "search", "--json"))
    assert scored["arch"] == Nb201Genotype.load(tmp_path / "search" / "genotype.json").arch
    darts_tf("train", "--preset", "nb201", "--genotype", "search/genotype.json", "--epochs", "1", "--batch-size",
             "32", *tiny, "--run-dir", "train", "--export-dir", "exports", "--export-name", "nb201")  # fmt: skip
    assert (tmp_path / "exports" / "nb201" / "1" / "saved_model.pb").exists()
    out = darts_tf("evaluate", "--model", "exports/nb201/1", "--dataset", "synthetic")
    assert "top-1" in out
    written = darts_tf("visualize", "search", "--out", "pictures").split()
    assert "pictures/report.html" in written and "pictures/search.gif" in written

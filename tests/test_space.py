"""The search space as a value (darts_tf.cnn.space): the registry, spaces of one's own, and docs/extending.md."""

import os
import re
import shlex
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf.architect import cross_entropy
from darts_tf.cnn import ops
from darts_tf.cnn.eval_model import NetworkCIFAR
from darts_tf.cnn.genotypes import Genotype, derive_genotype, format_alphas
from darts_tf.cnn.search_model import SearchNetwork, packing_problems
from darts_tf.cnn.space import (
    BUILTIN_WEIGHTING,
    DARTS_SPACE,
    PRIMITIVES,
    WEIGHTINGS,
    SearchSpace,
    is_registered,
    op_spec,
    register_op,
    registered_ops,
    search_space,
    unregister_op,
    weighting,
)
from darts_tf.config import SearchConfig, check_choices, import_ops_module
from darts_tf.errors import ConfigError, GenotypeError
from helpers import random_batch
from space_ops import register_test_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
register_test_ops()


def test_darts_space_is_the_papers():
    assert DARTS_SPACE.primitives == PRIMITIVES == (
        "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
        "dil_conv_5x5",
    )  # fmt: skip
    assert (DARTS_SPACE.steps, DARTS_SPACE.multiplier, DARTS_SPACE.inputs_per_node) == (4, 4, 2)
    assert (DARTS_SPACE.none, DARTS_SPACE.skip, DARTS_SPACE.num_edges, DARTS_SPACE.num_ops) == (
        "none", "skip_connect", 14, 8
    )  # fmt: skip
    assert search_space() == DARTS_SPACE
    assert SearchSpace.from_dict(DARTS_SPACE.to_dict()) == DARTS_SPACE
    assert [weighting(name) for name in PRIMITIVES] == ["zero", "pool", "pool"] + ["batchnorm"] * 5


def test_every_builtin_op_is_registered_with_its_layer():
    # What import-time asserts pinned before: the ops package builds exactly the built-in names.
    assert set(ops.OPS) == set(BUILTIN_WEIGHTING)
    assert registered_ops()[: len(BUILTIN_WEIGHTING)] == tuple(BUILTIN_WEIGHTING)
    for name in BUILTIN_WEIGHTING:
        assert op_spec(name).weighting == BUILTIN_WEIGHTING[name] and op_spec(name).factory is ops.OPS[name]
    assert set(WEIGHTINGS) == {"multiply", "batchnorm", "pool", "zero"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"primitives": ("none", "conv_9x9")}, r"`primitives`: unknown op 'conv_9x9'. Expected one of: none, "),
        ({"primitives": ("none", "skip_connect", "none")}, r"ops listed twice: \['none'\]"),
        ({"primitives": "sep_conv_3x3"}, "a non-empty list of op names"),
        ({"primitives": ()}, "a non-empty list of op names"),
        ({"primitives": ("none",), "skip": None}, "needs an op besides `none`"),
        ({"steps": 0}, "positive integer `steps`"),
        ({"multiplier": 5}, "multiplier <= steps"),
        ({"inputs_per_node": 3}, "inputs_per_node 1 or 2"),
        ({"primitives": ("skip_connect", "sep_conv_3x3")}, "`none` must be one of the primitives or None"),
        ({"skip": "max_pool_3x3", "primitives": ("none", "skip_connect")}, "`skip` must be one of the primitives"),
    ],
)
def test_bad_spaces_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as error:
        SearchSpace(**kwargs)
    assert "\n" not in str(error.value)


def test_register_op_checks_and_unregisters():
    factory = lambda C, stride, affine, **kw: ops.Identity(**kw)  # noqa: E731
    with pytest.raises(ConfigError, match="letters, digits and _"):
        register_op("conv 3x3", factory)
    with pytest.raises(ConfigError, match="built-in op of darts_tf and cannot be replaced"):
        register_op("sep_conv_3x3", factory)
    with pytest.raises(ConfigError, match="callable factory"):
        register_op("space_test_op", "not a factory")
    with pytest.raises(ConfigError, match="weighting one of multiply, batchnorm, pool, zero"):
        register_op("space_test_op", factory, weighting="scale")
    register_op("space_test_op", factory)
    try:
        with pytest.raises(ConfigError, match="already registered"):
            register_op("space_test_op", factory)
        register_op("space_test_op", factory, "pool", replace=True)
        assert weighting("space_test_op") == "pool" and registered_ops()[-1] == "space_test_op"
        assert Genotype([("space_test_op", 0), ("space_test_op", 1)], [2], [("skip_connect", 0)] * 2, [2])
    finally:
        unregister_op("space_test_op")
    assert not is_registered("space_test_op")
    with pytest.raises(GenotypeError, match="unknown op 'space_test_op'"):
        Genotype([("space_test_op", 0), ("space_test_op", 1)], [2], [("skip_connect", 0)] * 2, [2])
    with pytest.raises(ConfigError, match="Unknown op 'space_test_op'"):
        ops.make_op("space_test_op", 4, 1)


def test_genotype_with_one_input_per_node_round_trips(tmp_path):
    genotype = Genotype([("test_conv", 0), ("skip_connect", 2)], [2, 3], [("test_gate", 1), ("none", 0)], [3], 1)
    assert genotype.steps == 2 and genotype.to_dict()["inputs_per_node"] == 1
    genotype.save(tmp_path / "g.json")
    assert Genotype.load(tmp_path / "g.json") == genotype
    assert "inputs_per_node" not in Genotype.from_dict({**genotype.to_dict(), "inputs_per_node": 2} | {
        "normal": [["test_conv", 0], ["skip_connect", 1]], "reduce": [["test_conv", 0], ["none", 1]],
        "normal_concat": [2], "reduce_concat": [2],
    }).to_dict()  # fmt: skip
    with pytest.raises(GenotypeError, match="node 3 can only take inputs 0..2"):
        Genotype([("test_conv", 0), ("skip_connect", 3)], [2, 3], [("test_gate", 1), ("none", 0)], [3], 1)
    with pytest.raises(GenotypeError, match="inputs_per_node must be 1 or 2"):
        Genotype([("test_conv", 0)], [2], [("test_gate", 1)], [2], 3)


def _by_hand(weights: np.ndarray, space: SearchSpace) -> list:
    """The derivation rule written out for a small case: per node, rank the edges by their best op other
    than `none` and keep the top `inputs_per_node`; on each, that best op."""
    cols = [k for k, name in enumerate(space.primitives) if name != space.none]
    gene, row = [], 0
    for node in range(space.steps):
        rows = weights[row : row + node + 2][:, cols]
        order = np.argsort(-rows.max(axis=1), kind="stable")[: space.inputs_per_node]
        gene += [(space.primitives[cols[int(np.argmax(rows[j]))]], int(j)) for j in order]
        row += node + 2
    return gene


@pytest.mark.parametrize("per_node, none", [(1, "none"), (2, None), (1, None)])
def test_derivation_follows_the_space(per_node, none):
    space = SearchSpace(("none", "test_conv", "skip_connect", "avg_pool_3x3"), 3, 2, per_node, none, "skip_connect")
    rng = np.random.default_rng(per_node)
    normal, reduce = rng.normal(size=(2, 9, 4))
    normal[:, 0] += 3.0  # `none` strongest everywhere: it only counts when the space has no `none`
    genotype = derive_genotype(normal, reduce, space=space)
    softmax = lambda a: np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)  # noqa: E731
    assert list(genotype.normal) == _by_hand(softmax(normal), space)
    assert list(genotype.reduce) == _by_hand(softmax(reduce), space)
    assert genotype.normal_concat == (3, 4) and genotype.inputs_per_node == per_node
    assert (none is None) == ("none" in {op for op, _ in genotype.normal})
    with pytest.raises(GenotypeError, match=r"shape \(9, 4\) for steps=3 and 4 ops"):
        derive_genotype(np.zeros((14, 8)), np.zeros((14, 8)), space=space)
    with pytest.raises(ConfigError, match="steps=4 disagrees with the search space's steps=3"):
        derive_genotype(normal, reduce, steps=4, space=space)
    assert format_alphas(normal, 3, space.primitives).splitlines()[0].split()[1:] == list(space.primitives)


def test_max_skip_reads_the_space_and_needs_a_skip():
    space = SearchSpace(("none", "test_conv", "skip_connect"), 2, 2, 2, "none", "skip_connect")
    normal = np.zeros((5, 3))
    normal[:, 2] = 2.0  # skip_connect everywhere
    genotype = derive_genotype(normal, normal, space=space, max_skip=1)
    assert sum(op == "skip_connect" for op, _ in genotype.normal) == 1
    no_skip = SearchSpace(("none", "test_conv", "avg_pool_3x3"), 2, 2, skip=None)
    with pytest.raises(ConfigError, match="needs a skip connection"):
        derive_genotype(normal, normal, space=no_skip, max_skip=1)
    with pytest.raises(ConfigError, match="`max_skip` and `early_stop` skip:N count skip_connect"):
        check_choices(SearchConfig(primitives=["none", "test_conv"], early_stop="skip:2"))
    with pytest.raises(ConfigError, match="`primitives`: unknown op 'bogus'"):
        check_choices(SearchConfig(primitives=["none", "bogus"]))


def _copy_plain_into_packed(plain, packed):
    """Every tensor of the plain network into the packed one: a packed edge's vectors are its template's
    tensors (built as a plain edge is) in order."""
    flat = lambda vs: tf.concat([tf.reshape(v, [-1]) for v in vs], axis=0)  # noqa: E731
    for plain_cell, packed_cell in zip(plain.cells, packed.cells):
        for p, q in zip(plain_cell.edges, packed_cell.edges):
            q.packed_weights.assign(flat(p.trainable_variables))
            q.packed_statistics.assign(flat(p.non_trainable_variables))
        for a, b in zip(plain_cell.preprocess0.weights + plain_cell.preprocess1.weights,
                        packed_cell.preprocess0.weights + packed_cell.preprocess1.weights):  # fmt: skip
            b.assign(a)
    for a, b in zip(plain.stem_conv.weights + plain.stem_bn.weights + plain.classifier.weights + plain.arch_variables,
                    packed.stem_conv.weights + packed.stem_bn.weights + packed.classifier.weights
                    + packed.arch_variables):  # fmt: skip
        b.assign(a)


def test_packed_edges_with_ops_of_ones_own_equal_plain_edges():
    space = SearchSpace((*PRIMITIVES, "test_conv", "test_relu_conv"), steps=2, multiplier=2)
    assert packing_problems(space) == {}
    networks = []
    for shared in (False, True):
        keras.utils.set_random_seed(0)
        network = SearchNetwork(4, 3, 3, space=space, shared_trace=shared, dtype="float64")
        network.build((None, 8, 8, 3))
        networks.append(network)
    plain, packed = networks
    assert plain.alphas_normal.shape == (5, 10)
    rng = np.random.default_rng(0)
    for alpha in plain.arch_variables:
        alpha.assign(rng.normal(scale=0.5, size=alpha.shape))
    _copy_plain_into_packed(plain, packed)
    images, labels = random_batch(dtype="float64")
    results = []
    for network in (plain, packed):
        with tf.GradientTape() as tape:
            loss = cross_entropy(labels, network(images, training=True))
        arch, weights = tape.gradient(loss, [network.arch_variables, network.cells[0].edges[0].trainable_variables])
        stats = network.cells[1].edges[3].non_trainable_variables
        results.append((loss.numpy(), [g.numpy() for g in arch], np.concatenate([np.ravel(w) for w in weights]),
                        np.concatenate([np.ravel(v.numpy()) for v in stats])))  # fmt: skip
    (l1, a1, w1, s1), (l2, a2, w2, s2) = results
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    for g1, g2 in zip(a1, a2):
        np.testing.assert_allclose(g1, g2, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(w1, w2, rtol=1e-9, atol=1e-13)  # an edge's weight gradient, every op's
    np.testing.assert_allclose(s1, s2, rtol=1e-12)  # moving statistics after the step (the edges' BNs)
    assert packed.genotype() == plain.genotype() and packed.genotype().ops() <= set(space.primitives)


def test_an_op_packed_edges_cannot_run_gives_one_warning_and_plain_edges():
    space = search_space(["none", "skip_connect", "sep_conv_3x3", "test_gate"], steps=2, multiplier=2)
    assert packing_problems(space, 4) == {"test_gate": "trainable weights other than darts_tf Conv2D kernels"}
    state = np.random.get_state()[1].copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        network = SearchNetwork(4, 3, 3, space=space)
    assert np.array_equal(state, np.random.get_state()[1])  # the probe draws nothing
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "packed edges cannot run op(s) ['test_gate']" in messages[0]
    assert not network.shared_trace
    network.build((None, 8, 8, 3))
    assert network(random_batch()[0], training=True).shape == (4, 3)
    again = SearchNetwork.from_config(network.get_config())
    assert again.space == space and not again.shared_trace


def test_an_op_of_the_wrong_shape_is_named():
    register_op("space_bad_op", lambda C, stride, affine, **kw: ops.Identity(**kw))  # never halves
    try:
        with pytest.raises(ConfigError, match=r"op 'space_bad_op' at stride 2 maps \[1, 8, 8, 4\] to \[1, 8, 8, 4\]"):
            SearchNetwork(4, 3, 3, space=search_space(["none", "space_bad_op"], steps=2, multiplier=2))
    finally:
        unregister_op("space_bad_op")


def test_three_nodes_a_cell_and_the_found_cell_builds():
    keras.utils.set_random_seed(1)
    space = DARTS_SPACE.replace(steps=3, multiplier=3)
    network = SearchNetwork(4, 3, 3, space=space)
    network.build((None, 8, 8, 3))
    assert network.alphas_normal.shape == (9, 8) and network.steps == 3 and len(network.cells[0].edges) == 9
    genotype = network.genotype()
    assert genotype.steps == 3 and genotype.normal_concat == (2, 3, 4)
    config = network.get_config()
    assert config["space"] == space.to_dict() and SearchNetwork.from_config(config).space == space
    with pytest.raises(ConfigError, match="steps=4 disagrees"):
        SearchNetwork(4, 3, 3, steps=4, space=space)
    one_input = Genotype([("test_conv", 1), ("test_relu_conv", 2), ("skip_connect", 0)], [3, 4],
                         [("max_pool_3x3", 0), ("test_gate", 2), ("test_conv", 3)], [3, 4], 1)  # fmt: skip
    model = NetworkCIFAR(8, 3, 3, False, one_input, input_shape=(16, 16, 3))
    assert model(tf.zeros((2, 16, 16, 3)))["logits"].shape == (2, 3)
    count = lambda layer: sum(int(np.prod(v.shape)) for v in layer.trainable_variables)  # noqa: E731
    normal, reduce = model.get_layer("cell_0"), model.get_layer("cell_1")  # C=8, then 16 channels
    assert [count(op) for op in normal.cell_ops] == [8 * 8 * 9 + 2 * 8, 8 * 8 * 9, 0]  # ReLU-conv-BN, ReLU-conv
    assert count(reduce.cell_ops[1]) == 16 * 16 + 16  # test_gate's Dense


def test_config_names_the_space_and_imports_ops_modules(tmp_path):
    config = SearchConfig(primitives=["none", "skip_connect", "test_conv"], steps=3, multiplier=2, inputs_per_node=1)
    from darts_tf.config import search_space as config_space

    assert config_space(config) == SearchSpace(("none", "skip_connect", "test_conv"), 3, 2, 1)
    with pytest.raises(ConfigError, match="`ops_module` 'missing.py' does not exist"):
        import_ops_module("missing.py")
    with pytest.raises(ConfigError, match="`ops_module` 'no_such_module_here' is not an importable module"):
        import_ops_module("no_such_module_here")
    module = tmp_path / "my_ops.py"
    module.write_text(
        "from darts_tf.cnn.ops import Identity\nfrom darts_tf.cnn.space import register_op\n"
        "register_op('space_module_op', lambda C, s, affine, **kw: Identity(**kw))\n"
    )
    try:
        import_ops_module(str(module))
        import_ops_module(str(module))  # a second import does nothing (no "already registered")
        assert is_registered("space_module_op")
    finally:
        unregister_op("space_module_op")


def test_search_command_names_a_bad_op_as_its_flag(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "darts_tf.commands", "search", "--primitives", "none", "conv_9x9", "--dataset",
         "synthetic", "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2 and not (tmp_path / "run").exists()
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("darts-tf search: error: --primitives: unknown op 'conv_9x9'. Expected one of: none, max_pool_3x3")
    )


def _blocks(kind: str) -> list[str]:
    with open(os.path.join(ROOT, "docs", "extending.md"), encoding="utf-8") as handle:
        return re.findall(rf"```{kind}\n(.*?)```", handle.read(), re.S)


@pytest.mark.slow
def test_extending_md_python_runs_as_written(tmp_path, monkeypatch):
    os.symlink(os.path.join(ROOT, "docs"), tmp_path / "docs")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for index, block in enumerate(_blocks("python")):
        exec(compile(block, f"docs/extending.md python block {index}", "exec"), namespace)  # noqa: S102
    assert namespace["found"].inputs_per_node == 1
    assert (tmp_path / "runs" / "extending" / "own_space" / "genotype.json").exists()


@pytest.mark.slow
def test_extending_md_commands_run_as_written(tmp_path):
    os.symlink(os.path.join(ROOT, "docs"), tmp_path / "docs")
    (commands,) = _blocks("bash")
    for command in commands.replace("\\\n", " ").strip().splitlines():
        argv = shlex.split(command)
        assert argv[0] == "darts-tf"
        out = subprocess.run([sys.executable, "-m", "darts_tf.commands", *argv[1:]], cwd=tmp_path,
                             capture_output=True, text=True)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
    import_ops_module(os.path.join(ROOT, "docs", "examples", "extra_ops.py"))  # this process reads conv_3x3 too
    genotype = Genotype.load(tmp_path / "runs" / "conv_3x3_search" / "genotype.json")
    assert genotype.steps == 4 and "conv_3x3" in genotype.ops()  # the op of one's own was chosen
    import json

    config = json.loads((tmp_path / "runs" / "conv_3x3_search" / "config.json").read_text())
    assert config["primitives"][-1] == "conv_3x3" and config["ops_module"] == "docs/examples/extra_ops.py"
    assert (tmp_path / "runs" / "conv_3x3_train" / "metrics.csv").exists()
    trained = Genotype.load(tmp_path / "runs" / "conv_3x3_train" / "genotype.json")
    assert trained == genotype  # the searched cell, ops of one's own included, trained and exported:
    assert (tmp_path / "saved_models" / "darts_eval" / "1" / "saved_model.pb").exists()

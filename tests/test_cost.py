"""darts_tf.cnn.cost: counted costs against built networks and TensorFlow's profiler, the expected cost and its
gradient, latency tables, and budgets in the architecture gradient."""

import json

import numpy as np
import pytest
import tensorflow as tf

from darts_tf.cnn import cost
from darts_tf.cnn.cost import Budget, CostModel, LatencyTable, Unit
from darts_tf.cnn.eval_model import NetworkCIFAR, count_parameters
from darts_tf.cnn.genotypes import DARTS_V1, DARTS_V2, Genotype, num_edges
from darts_tf.cnn.search import ArchitectureSearch, arch_by_kind, budgets_of, search_cost_model
from darts_tf.cnn.space import search_space
from darts_tf.config import SearchConfig, check_choices
from darts_tf.errors import ConfigError
from darts_tf.nb201.genotypes import NB201_SPACE, OPS, Nb201Genotype
from darts_tf.nb201.model import Nb201Network
from darts_tf.optimizers import SGD, Adam
from helpers import random_batch, tiny_search_network

RANDOM = Genotype(
    normal=[("sep_conv_5x5", 1), ("avg_pool_3x3", 0), ("dil_conv_5x5", 2), ("skip_connect", 0),
            ("max_pool_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_3x3", 4), ("sep_conv_5x5", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("skip_connect", 0), ("sep_conv_5x5", 1), ("avg_pool_3x3", 2), ("dil_conv_5x5", 0),
            ("sep_conv_3x3", 3), ("max_pool_3x3", 1), ("dil_conv_3x3", 4), ("skip_connect", 1)],
    reduce_concat=[2, 3, 4, 5],
)  # fmt: skip


def conv_macs(model_fn, shape) -> int:
    """Mult-adds of the convolutions and matmuls of a traced model, by TensorFlow's profiler (float ops / 2)."""
    function = tf.function(model_fn).get_concrete_function(tf.TensorSpec(shape))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    options["account_type_regexes"] = ["Conv2D", "DepthwiseConv2dNative", "MatMul", "Conv2DBackpropInput"]
    return int(tf.compat.v1.profiler.profile(function.graph, options=options).total_float_ops) // 2


@pytest.mark.parametrize("genotype", [DARTS_V2, DARTS_V1, RANDOM], ids=["darts_v2", "darts_v1", "random"])
def test_darts_network_parameters_and_mult_adds_match_the_built_network(genotype):
    model = CostModel(C=8, layers=5, image_shape=(16, 16, 3), num_classes=7)
    counted = model.of_genotype(genotype)
    network = NetworkCIFAR(8, 7, 5, auxiliary=False, genotype=genotype, input_shape=(16, 16, 3))
    assert round(counted["params"] * 1e6) == count_parameters(network)
    macs = conv_macs(lambda x: network(x, training=False)["logits"], (1, 16, 16, 3))
    assert round(counted["flops"] * 1e6) == macs


def test_paper_network_counts():
    """DARTS (second order) at the paper's CIFAR-10 size: the 3.3M parameters of its Table 1, exactly the
    built network's 3,349,342."""
    counted = CostModel(C=36, layers=20).of_genotype(DARTS_V2)
    assert round(counted["params"] * 1e6) == 3_349_342
    assert counted["flops"] == pytest.approx(528.35904)


def test_nb201_counts_match_the_built_network_and_the_benchmark():
    model = CostModel(NB201_SPACE, C=16, layers=5)
    best = Nb201Genotype(("nor_conv_3x3",) * 6)
    # The benchmark's own numbers for its all-3x3 cell: 1.531546 M parameters, 220.11968 M FLOPs (mult-adds).
    assert model.of_genotype(best)["params"] == pytest.approx(1.531546)
    assert model.of_genotype(best)["flops"] == pytest.approx(220.11968)
    rng = np.random.default_rng(3)
    for _ in range(3):
        genotype = Nb201Genotype(tuple(str(op) for op in rng.choice(OPS, 6)))
        small = CostModel(NB201_SPACE, C=4, layers=1, image_shape=(8, 8, 3))
        network = Nb201Network(genotype, C=4, cells=1, input_shape=(8, 8, 3))
        trainable = sum(int(np.prod(v.shape)) for v in network.trainable_weights)
        assert round(small.of_genotype(genotype)["params"] * 1e6) == trainable
        macs = conv_macs(lambda x, n=network: n(x, training=False)["logits"], (1, 8, 8, 3))
        assert round(small.of_genotype(genotype)["flops"] * 1e6) == macs


@pytest.mark.parametrize("op", ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "skip_connect",
                                "conv_7x1_1x7", "sep_conv_7x7", "nor_conv_1x1", "nor_conv_3x3"])  # fmt: skip
@pytest.mark.parametrize("stride", [1, 2])
def test_op_formulas_match_the_profiler_and_the_built_layer(op, stride):
    unit = Unit(op, 12, 12, 10, 10, stride)
    assert cost.unit_counts(unit) == cost._built_counts(unit)


def test_three_node_space_with_one_input_per_node():
    space = search_space(["none", "skip_connect", "sep_conv_3x3", "avg_pool_3x3"], steps=3, multiplier=3,
                         inputs_per_node=1)  # fmt: skip
    genotype = Genotype([("sep_conv_3x3", 0), ("skip_connect", 2), ("sep_conv_3x3", 3)], [2, 3, 4],
                        [("avg_pool_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0)], [2, 3, 4],
                        inputs_per_node=1)  # fmt: skip
    model = CostModel(space, C=6, layers=4, image_shape=(12, 12, 3))
    network = NetworkCIFAR(6, 10, 4, auxiliary=False, genotype=genotype, input_shape=(12, 12, 3))
    assert round(model.of_genotype(genotype)["params"] * 1e6) == count_parameters(network)
    assert len(model.layout.cells[0][1]) == num_edges(3)


def reference_expected(model: CostModel, metric: str, alphas: dict, betas: dict | None) -> float:
    """The expected cost written out in NumPy: per edge, the costs of the non-`none` ops weighted by their
    renormalised softmax; per node, `inputs_per_node` times the mean (or the softmax(beta)-weighted sum) of its
    edges; every cell of the network at its own shape; the fixed parts once."""
    space = model.space
    total = sum(model.unit_cost(u, metric) for u in model.layout.fixed)
    keep = [op != space.none for op in space.primitives]
    for kind, edges in model.layout.cells:
        p = np.exp(alphas[kind]) * keep
        p = p / p.sum(axis=1, keepdims=True)
        for node in range(space.steps):
            start, n = num_edges(node), node + 2
            if betas is None:
                weights = np.full(n, 1.0 / n)
            else:
                b = np.exp(betas[kind][start : start + n])
                weights = b / b.sum()
            for k in range(n):
                c, h, w, s = edges[start + k]
                costs = [model.unit_cost(Unit(op, c, c, h, w, s), metric) for op in space.primitives]
                total += space.inputs_per_node * weights[k] * float(np.dot(p[start + k], costs))
    return total


@pytest.mark.parametrize("with_betas", [False, True])
def test_expected_cost_matches_a_numpy_reference(with_betas):
    model = CostModel(C=8, layers=5)
    rng = np.random.default_rng(0)
    alphas = {k: rng.normal(size=(14, 8)).astype(np.float32) for k in ("normal", "reduce")}
    betas = {k: rng.normal(size=14).astype(np.float32) for k in ("normal", "reduce")} if with_betas else None
    expected = model.expected(alphas, betas)
    for metric in ("flops", "params"):
        assert float(expected[metric]) == pytest.approx(reference_expected(model, metric, alphas, betas), rel=1e-5)


def test_expected_cost_of_one_hot_alphas_is_the_derived_cost_scaled_by_the_kept_edges():
    """With every edge's softmax on one op, the expected cost is each node's edges at that op times 2 / n."""
    model = CostModel(C=8, layers=5)
    index = model.space.index("sep_conv_3x3")
    alphas = {k: np.where(np.arange(8) == index, 50.0, 0.0)[None].repeat(14, 0).astype(np.float32)
              for k in ("normal", "reduce")}  # fmt: skip
    fixed, kinds = model.terms["params"]
    want = fixed + sum(
        2.0 / (node + 2) * kinds[kind][num_edges(node) + k, index]
        for kind in kinds for node in range(4) for k in range(node + 2)
    )  # fmt: skip
    assert float(model.expected(alphas)["params"]) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("space_name", ["darts", "nb201"])
def test_expected_cost_gradient_matches_finite_differences(space_name):
    if space_name == "nb201":
        model, shapes = CostModel(NB201_SPACE, C=8, layers=2), {"cell": (6, 5)}
    else:
        model, shapes = CostModel(C=8, layers=5), {"normal": (14, 8), "reduce": (14, 8)}
    rng = np.random.default_rng(1)
    alphas = {k: tf.constant(rng.normal(size=s), tf.float64) for k, s in shapes.items()}

    def value(a):
        return float(model.expected({k: tf.cast(v, tf.float32) for k, v in a.items()})["flops"])

    with tf.GradientTape() as tape:
        tape.watch(list(alphas.values()))
        total = model.expected({k: tf.cast(v, tf.float32) for k, v in alphas.items()})["flops"]
    gradients = tape.gradient(total, list(alphas.values()))
    eps = 1e-2
    for (kind, a), g in zip(alphas.items(), gradients):
        for row, col in [(0, 1), (3, 4), (5, 2)]:
            bump = np.zeros(a.shape)
            bump[row, col] = eps
            plus = value({**alphas, kind: a + bump})
            minus = value({**alphas, kind: a - bump})
            assert g.numpy()[row, col] == pytest.approx((plus - minus) / (2 * eps), rel=2e-3, abs=1e-4)


def test_none_takes_no_expected_cost_in_a_darts_cell_but_removes_an_nb201_edge():
    darts = CostModel(C=8, layers=5)
    a = np.zeros((14, 8), np.float32)
    high_none = a.copy()
    high_none[:, 0] = 20.0
    base = float(darts.expected({"normal": a, "reduce": a})["flops"])
    assert float(darts.expected({"normal": high_none, "reduce": high_none})["flops"]) == pytest.approx(base)
    nb201 = CostModel(NB201_SPACE, C=8, layers=2)
    b = np.zeros((6, 5), np.float32)
    b_none = b.copy()
    b_none[:, 0] = 20.0
    fixed = nb201.terms["flops"][0]
    assert float(nb201.expected({"cell": b_none})["flops"]) == pytest.approx(fixed, rel=1e-4)
    assert float(nb201.expected({"cell": b})["flops"]) > fixed


def test_budget_forms_and_their_gradients():
    model = CostModel(C=8, layers=5)
    alphas = {k: tf.zeros((14, 8)) for k in ("normal", "reduce")}
    expected = float(model.expected(alphas)["flops"])
    loss = tf.constant(2.0)
    under, _ = cost.budget_gradients(model, [Budget("flops", 2 * expected)], alphas, None, loss)
    assert all(float(tf.reduce_max(tf.abs(g))) == 0.0 for g in under)  # hinge: free under the budget
    with tf.GradientTape() as tape:
        tape.watch(list(alphas.values()))
        e = model.expected(alphas)["flops"]
    de = tape.gradient(e, list(alphas.values()))
    for form, scale in (("hinge", 3.0 / (0.5 * expected)), ("linear", 3.0 / (0.5 * expected))):
        grads, values = cost.budget_gradients(model, [Budget("flops", 0.5 * expected, 3.0, form)], alphas, None, loss)
        for g, d in zip(grads, de):
            np.testing.assert_allclose(g.numpy(), scale * d.numpy(), rtol=1e-4, atol=1e-9)
        assert float(values["flops"]) == pytest.approx(expected, rel=1e-6)
    budget = Budget("flops", 0.5 * expected, 0.5, "fbnet", exponent=0.6)
    grads, values = cost.budget_gradients(model, [budget], alphas, None, loss)
    base = np.log(2.0) + 1.0  # E / B = 2
    factor = float(cost.fbnet_factor([budget], values))
    assert factor == pytest.approx(1.0 + 0.5 * (base**0.6 - 1.0), rel=1e-5)
    # d/dalpha [loss * (1 + w (log(E/B) + 1)^b - w)] at fixed loss = loss * w * b * base^(b-1) / E * dE
    scale = 2.0 * 0.5 * 0.6 * base ** (0.6 - 1.0) / expected
    for g, d in zip(grads, de):
        np.testing.assert_allclose(g.numpy(), scale * d.numpy(), rtol=1e-4, atol=1e-9)


def test_a_tight_budget_moves_alpha_mass_to_cheaper_ops_in_a_few_steps():
    """Search steps with a mult-adds budget at half the expected cost against the same steps without one: the
    expected cost falls and the convolutions lose softmax mass to the parameter-free ops."""
    results = {}
    for name, budgets in (("free", ()), ("budget", "tight")):
        network = tiny_search_network()
        model = CostModel(C=8, layers=5)
        if budgets == "tight":
            alphas, _ = arch_by_kind(network)
            budgets = [Budget("flops", 0.5 * float(model.expected(alphas)["flops"]), weight=5.0)]
        search = ArchitectureSearch(network, cost_model=model, budgets=budgets)
        search.compile(SGD(0.01, momentum=0.9), Adam(0.03, beta_1=0.5))
        batch = random_batch()
        for _ in range(5):
            search.train_step((batch, batch))
        alphas, _ = arch_by_kind(network)
        conv = [network.space.index(op) for op in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")]
        mass = float(np.mean(tf.nn.softmax(alphas["normal"], axis=-1).numpy()[:, conv].sum(axis=1)))
        results[name] = (float(model.expected(alphas)["flops"]), mass)
    assert results["budget"][0] < 0.99 * results["free"][0]
    assert results["budget"][1] < results["free"][1] - 0.01


def test_search_config_budgets_and_the_cost_model(tmp_path):
    config = SearchConfig(flops_budget=300.0, params_budget=2.0, budget_weight=0.5, budget_form="linear")
    assert budgets_of(config) == [Budget("flops", 300.0, 0.5, "linear"), Budget("params", 2.0, 0.5, "linear")]
    model = search_cost_model(config, (32, 32, 3), 10)
    assert (model.C, model.layers, model.metrics) == (36, 20, ("flops", "params"))
    nb201 = search_cost_model(SearchConfig(space="nb201", layers=5, C=16), (32, 32, 3), 10)
    assert (nb201.C, nb201.layers) == (16, 5)
    check_choices(config)
    with pytest.raises(ConfigError, match="`latency_budget` needs a `latency_table`"):
        check_choices(SearchConfig(latency_budget=2.0))
    with pytest.raises(ConfigError, match="`budget_form` must be one of hinge, linear, fbnet. Received: 'l2'"):
        check_choices(SearchConfig(budget_form="l2"))
    with pytest.raises(ConfigError, match="`flops_budget` must be a number >= 0. Received: -1"):
        check_choices(SearchConfig(flops_budget=-1))
    with pytest.raises(ConfigError, match="`cost_C`/`cost_layers` come from the `latency_table`"):
        check_choices(SearchConfig(latency_table="t.json", cost_C=16))


def small_table(model: CostModel, scale: float = 1e-3) -> LatencyTable:
    """A table of made-up latencies (mult-adds times `scale`, 0.01 ms per fixed part) for `model`'s network."""
    entries = {}
    for unit in model.units():
        macs, _ = cost.unit_counts(unit)
        entries[unit.key] = 0.01 + scale * macs / 1e6
    return LatencyTable(entries, model.network, device="test", threads=1)


def test_latency_table_round_trip_and_predictions(tmp_path):
    model = CostModel(C=8, layers=5)
    table = small_table(model)
    path = table.save(str(tmp_path / "table.json"))
    loaded = LatencyTable.load(path)
    assert loaded == table
    with_table = CostModel(C=8, layers=5, table=loaded)
    want = sum(table.entries[u.key] for u in with_table.layout.fixed)
    chosen = with_table._chosen_edges(DARTS_V2)
    for kind, picks in chosen.items():
        cells = [edges for k, edges in with_table.layout.cells if k == kind]
        for edges in cells:
            for edge, op in picks:
                c, h, w, s = edges[edge]
                want += table.entries[Unit(op, c, c, h, w, s).key]
    assert with_table.of_genotype(DARTS_V2)["latency"] == pytest.approx(want)
    config = SearchConfig(latency_table=path, latency_budget=1.0, C=4, layers=3)
    searched = search_cost_model(config, (32, 32, 3), 10)
    assert (searched.C, searched.layers, searched.metrics) == (8, 5, ("latency", "flops", "params"))


def test_latency_table_errors_name_the_problem(tmp_path):
    model = CostModel(C=8, layers=5)
    table = small_table(model)
    missing = dict(table.entries)
    key = Unit("sep_conv_5x5", 16, 16, 16, 16, 1).key
    del missing[key]
    partial = LatencyTable(missing, model.network)
    with pytest.raises(ConfigError, match=f"Latency table has no entry for '{key}' \\(measured for darts network C=8"):
        CostModel(C=8, layers=5, table=partial)
    with pytest.raises(ConfigError, match="measured for darts network C=8 layers=5 32x32x3, not for the cost model"):
        CostModel(C=16, layers=5, table=table)
    bad = tmp_path / "bad.json"
    for document, message in [
        ({"entries": {}}, "not a darts_tf latency table"),
        ({**table.to_dict(), "entries": {}}, "`entries` must be a non-empty"),
        ({**table.to_dict(), "entries": {key: -1.0}}, f"the latency of '{key}' must be a number >= 0"),
        ({**table.to_dict(), "entries": {"sep_conv/8/8": 1.0}}, "a unit key must read kind/Cin-Cout/HxW/sS"),
        ({**table.to_dict(), "network": {"C": 8}}, "`network` must give space, C, layers"),
    ]:
        bad.write_text(json.dumps(document))
        with pytest.raises(ConfigError, match=message):
            LatencyTable.load(str(bad))
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        LatencyTable.load(str(bad))
    with pytest.raises(ConfigError, match="`latency_table`: no file at"):
        LatencyTable.load(str(tmp_path / "none.json"))
    with pytest.raises(ConfigError, match="was measured for darts network C=8 layers=5 32x32x3 images, not 16x16x3"):
        cost.cost_model_for(model.space, 8, 5, (16, 16, 3), 10, table.save(str(tmp_path / "t.json")))


def test_unit_keys_round_trip():
    for unit in CostModel(C=8, layers=5).units() + CostModel(NB201_SPACE, C=8, layers=2).units():
        assert Unit.from_key(unit.key) == unit


@pytest.mark.parametrize("variant", ["second_order", "pc_darts", "nb201_betas", "float64"])
def test_budgets_add_the_same_term_to_every_architecture_gradient(variant):
    """Second order, PC-DARTS's betas, NAS-Bench-201, a float64 network (second order): the budgeted gradient
    is the plain one plus the budget's."""
    if variant == "nb201_betas":
        from darts_tf.nb201.model import Nb201SearchNetwork

        network = Nb201SearchNetwork(4, 3, 1, edge_normalization=True)
        network.build((None, 8, 8, 3))
        model = CostModel(NB201_SPACE, C=4, layers=1, image_shape=(8, 8, 3))
    else:
        dtype = "float64" if variant == "float64" else "float32"
        network = tiny_search_network(edge_normalization=variant == "pc_darts", dtype=dtype)
        model = CostModel(C=8, layers=5)
    alphas, betas = arch_by_kind(network)
    budgets = [Budget("params", 0.5 * float(model.expected(alphas, betas)["params"]), weight=2.0)]
    unrolled = variant in ("second_order", "float64")
    batch = random_batch(dtype="float64" if variant == "float64" else "float32")
    searches = []
    for with_budget in (False, True):
        chosen = budgets if with_budget else ()
        search = ArchitectureSearch(network, unrolled=unrolled, cost_model=model, budgets=chosen)
        search.compile(SGD(0.01, momentum=0.9), Adam(3e-4))
        searches.append(search)
    plain, _ = searches[0].arch_gradients(batch, batch)
    budgeted, _ = searches[1].arch_gradients(batch, batch)
    extra, _ = cost.budget_gradients(model, budgets, alphas, betas, tf.constant(0.0))
    extra += [tf.zeros_like(v) for v in network.arch_variables[len(extra) :]]
    assert len(budgeted) == len(network.arch_variables)
    for p, b, e in zip(plain, budgeted, extra, strict=True):
        np.testing.assert_allclose(b.numpy(), p.numpy() + e.numpy(), rtol=1e-5, atol=1e-7)
    assert any(float(tf.reduce_max(tf.abs(e))) > 0 for e in extra)
    if variant == "pc_darts":  # the betas carry budget gradient: they weigh which edges derivation keeps
        assert float(tf.reduce_max(tf.abs(extra[2]))) > 0


@pytest.mark.parametrize("case", ["darts", "betas", "nb201", "one_input"])
def test_derived_cost_in_the_graph_is_the_derived_genotypes(case):
    """`CostModel.derived` (TensorFlow, in the step) equals the cost of the genotype `derive_genotype` /
    `derive_nb201` derive, ties included (alphas drawn from few values)."""
    from darts_tf.cnn.genotypes import derive_genotype
    from darts_tf.nb201.genotypes import derive_nb201

    rng = np.random.default_rng(7)
    for trial in range(5):
        if case == "nb201":
            model = CostModel(NB201_SPACE, C=8, layers=2)
            a = rng.integers(0, 3, size=(6, 5)).astype(np.float32) if trial % 2 else rng.normal(size=(6, 5))
            want = model.of_genotype(derive_nb201(a))
            got = model.derived({"cell": tf.constant(a, tf.float32)})
        else:
            space = search_space(steps=3, multiplier=3, inputs_per_node=1) if case == "one_input" else None
            model = CostModel(space or search_space(), C=8, layers=5)
            shape = (model.space.num_edges, model.space.num_ops)
            a = {
                k: (rng.integers(0, 3, size=shape) if trial % 2 else rng.normal(size=shape)).astype(np.float32)
                for k in ("normal", "reduce")
            }
            betas = {k: rng.normal(size=shape[0]).astype(np.float32) for k in a} if case == "betas" else None
            names = {} if betas is None else {"betas_normal": betas["normal"], "betas_reduce": betas["reduce"]}
            want = model.of_genotype(derive_genotype(a["normal"], a["reduce"], space=model.space, **names))
            got = model.derived({k: tf.constant(v) for k, v in a.items()}, betas)
        for metric in ("flops", "params"):
            assert float(got[metric]) == pytest.approx(want[metric], rel=1e-5)


def test_the_hinge_acts_while_the_derived_network_is_over_the_budget():
    """Near-uniform alphas: the expected cost (an average over all ops) is under the budget, the derived network
    (argmax: the convolutions) over it; the hinge pulls, at weight / budget times the expected cost's gradient."""
    model = CostModel(C=8, layers=5)
    a = np.zeros((14, 8), np.float32)
    a[:, model.space.index("sep_conv_5x5")] = 0.01  # derivation picks the most expensive op everywhere
    alphas = {k: tf.constant(a) for k in ("normal", "reduce")}
    expected = float(model.expected(alphas)["flops"])
    derived = float(model.derived(alphas)["flops"])
    assert derived > 1.5 * expected
    target = 0.5 * (expected + derived)
    grads, _ = cost.budget_gradients(model, [Budget("flops", target, 2.0)], alphas, None, tf.constant(1.0))
    with tf.GradientTape() as tape:
        tape.watch(list(alphas.values()))
        e = model.expected(alphas)["flops"]
    for g, d in zip(grads, tape.gradient(e, list(alphas.values()))):
        np.testing.assert_allclose(g.numpy(), 2.0 / target * d.numpy(), rtol=1e-4, atol=1e-9)
    free, _ = cost.budget_gradients(model, [Budget("flops", 1.01 * derived, 2.0)], alphas, None, tf.constant(1.0))
    assert all(float(tf.reduce_max(tf.abs(g))) == 0.0 for g in free)

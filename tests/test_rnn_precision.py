"""Mixed precision of the recurrent space: float32 where it matters, loss scaling, the hypergradient, the export."""

import numpy as np
import pytest
import tensorflow as tf

from darts_tf.config import RNNSearchConfig, RNNTrainConfig, check_rnn_config
from darts_tf.errors import ConfigError
from darts_tf.rnn import architect
from darts_tf.rnn.export import export_language_model
from darts_tf.rnn.genotypes import get_genotype
from darts_tf.rnn.model import RNNModel, float32_model, nll_of_logits
from darts_tf.rnn.search import RecurrentSearch
from darts_tf.rnn.train import LanguageModelTrainer
from darts_tf.seeding import initializer_seed

MIXED = ("mixed_bfloat16", "mixed_float16")
NTOKEN, SIZE, BATCH, LENGTH = 50, 16, 4, 8
DROPOUTS = dict(dropout=0.3, dropouth=0.25, dropoutx=0.3, dropouti=0.2, dropoute=0.1)


def language_model(policy, genotype=None, seed=0, **dropouts):
    with initializer_seed(seed):
        model = RNNModel(NTOKEN, SIZE, SIZE, **{**DROPOUTS, **dropouts}, genotype=genotype, dtype=policy)
        model.build()
    return model


def same_weights(target, source):
    for a, b in zip(target.weights, source.weights, strict=True):
        a.assign(b)


def tokens(seed=1, length=LENGTH):
    return tf.constant(np.random.default_rng(seed).integers(0, NTOKEN, (length, BATCH)), tf.int32)


def cosine(a, b):
    a = np.concatenate([np.ravel(x) for x in a])
    b = np.concatenate([np.ravel(x) for x in b])
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_recurrent_precision_is_checked():
    for config in (RNNSearchConfig(precision="float64"), RNNTrainConfig(precision="half")):
        with pytest.raises(ConfigError, match="`precision` must be one of float32, mixed_bfloat16, mixed_float16"):
            check_rnn_config(config)
    check_rnn_config(RNNTrainConfig(precision="mixed_float16"))


@pytest.mark.parametrize("policy", MIXED)
@pytest.mark.parametrize("arch", [None, "DARTS_V2"])
def test_language_model_under_mixed_precision_computes_float32s_loss_and_gradients(policy, arch):
    genotype = None if arch is None else get_genotype(arch)
    reference, model = language_model("float32", genotype), language_model(policy, genotype)
    same_weights(model, reference)
    text, seed = tokens(), tf.constant([3, 4])
    results = {}
    for name, network in (("float32", reference), (policy, model)):
        with tf.GradientTape() as tape:
            out = network(text[:-1], network.init_hidden(BATCH), training=True, seed=seed)
            loss = nll_of_logits(out["logits"], text[1:])
        gradients = [tf.convert_to_tensor(g) for g in tape.gradient(loss, network.trainable_variables)]
        results[name] = out, float(loss), gradients
    out, loss, gradients = results[policy]
    assert {v.dtype for v in model.weights} <= {"float32", "int64", "uint32", "int32"}  # variables float32
    assert out["logits"].dtype == tf.float32 and out["log_probs"].dtype == tf.float32
    assert out["hidden"].dtype == model.compute_dtype and out["raw_outputs"].dtype == model.compute_dtype
    assert all(g.dtype == tf.float32 for g in gradients)
    assert abs(loss - results["float32"][1]) < 2e-3 * results["float32"][1]
    # bfloat16 keeps 8 bits of a value, float16 11: the gradients of every weight and alpha together.
    assert cosine(gradients, results["float32"][2]) > (0.99 if policy == "mixed_bfloat16" else 0.999)
    if genotype is None:  # the search cell's BatchNorm statistics, computed and carried in float32
        tolerance = 0.05 if policy == "mixed_bfloat16" else 0.005  # the nodes' states are in the half type
        for name in ("moving_mean", "moving_variance"):
            half, full = getattr(model.cell, name), getattr(reference.cell, name).numpy()
            assert half.dtype == "float32"
            assert np.abs(half.numpy() - full).max() < tolerance * np.abs(full).max(), name


@pytest.mark.parametrize("policy", MIXED)
def test_dropout_masks_do_not_depend_on_the_policy(policy):
    masks = language_model("float32").dropout_masks(tf.constant([5, 6]), BATCH)
    half = language_model(policy).dropout_masks(tf.constant([5, 6]), BATCH)
    for key, mask in masks.items():
        assert half[key].dtype == policy.split("_")[1]
        np.testing.assert_array_equal(half[key].numpy(), tf.cast(mask, half[key].dtype).numpy())
    kept = [float(tf.reduce_mean(tf.cast(mask > 0, tf.float32))) for mask in masks.values()]
    assert len(kept) == 5 and min(kept) < 0.9  # masks that drop something


@pytest.mark.parametrize("policy", MIXED)
def test_second_order_architecture_gradient_is_float32s(policy):
    reference, model = language_model("float32"), language_model(policy)
    rng = np.random.default_rng(0)
    reference.alphas.assign(rng.normal(scale=0.5, size=reference.alphas.shape).astype("float32"))
    same_weights(model, reference)
    results = []
    for network in (reference, model):
        train = (tokens(1)[:-1], tokens(1)[1:], network.init_hidden(BATCH))
        val = (tokens(2)[:-1], tokens(2)[1:], network.init_hidden(BATCH))
        grads, val_loss, hidden = architect.second_order_arch_gradients(
            network, train, val, eta=tf.constant(2.0), seed=tf.constant([7, 8])
        )
        assert hidden.dtype == network.compute_dtype
        results.append((grads[0].numpy(), float(val_loss)))
    # The whole second-order gradient runs in float32 (`full_precision`): float32's, to its round-off.
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5, atol=1e-6 * np.abs(results[0][0]).max())
    assert results[1][1] == pytest.approx(results[0][1], rel=1e-6)
    for a, b in zip(model.weights, reference.weights):  # and the weights are restored bit for bit
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The first-order gradient runs in the compute type.
    first = [
        architect.first_order_arch_gradients(
            network, (tokens(2)[:-1], tokens(2)[1:], network.init_hidden(BATCH)), seed=tf.constant([7, 8])
        )[0]
        for network in (reference, model)
    ]
    assert cosine(first[1], first[0]) > 0.99


def _one_training_step(policy, loss_scale):
    """The weights' change in one training step of a DARTS_V2 model whose weights are scaled by 3e-3: the recurrent
    weights' float16 gradients are 1e-8-1e-6, at or below float16's smallest normal number."""
    no_dropout = dict(dropout=0, dropouth=0, dropoutx=0, dropouti=0, dropoute=0)
    config = RNNTrainConfig(emsize=SIZE, nhid=SIZE, batch_size=BATCH, learning_rate=1.0, clip=1e9, weight_decay=0.0,
                            tar_beta=0.0, precision=policy, **no_dropout)  # fmt: skip
    network = language_model(policy, get_genotype("DARTS_V2"), **no_dropout)
    for variable in network.trainable_variables:
        variable.assign(variable * 3e-3)
    before = [v.numpy() for v in network.trainable_variables]
    trainer = LanguageModelTrainer(network, config)
    if loss_scale is None:
        trainer.loss_scale = None
    else:
        trainer.loss_scale.value.assign(loss_scale)
    text = tokens()
    tf.function(trainer.step)(text[:-1], text[1:], network.init_hidden(BATCH), tf.constant([1, 2]))
    return {v.name: v.numpy() - b for v, b in zip(network.trainable_variables, before)}


def test_float16_step_whose_unscaled_gradients_underflow():
    expected = _one_training_step("float32", None)
    unscaled = _one_training_step("mixed_float16", None)
    scaled = _one_training_step("mixed_float16", 2.0**15)
    recurrent = [name for name in expected if name.startswith("W")]
    assert len(recurrent) == 9 and all(np.abs(expected[name]).max() < 1e-5 for name in recurrent)
    # Unscaled, float16 loses most of some weights' gradients (W6: 94 % of them zero, float32: none) ...
    lost = [np.mean((unscaled[n] == 0) & (expected[n] != 0)) for n in recurrent]
    assert max(lost) > 0.5
    # ... scaled by 2^15, every weight moves as in float32.
    for name, change in expected.items():
        np.testing.assert_allclose(scaled[name], change, rtol=0, atol=5e-3 * np.abs(change).max(), err_msg=name)


def test_a_non_finite_search_step_is_skipped_and_halves_the_scale():
    network = language_model("mixed_float16")
    config = RNNSearchConfig(emsize=SIZE, nhid=SIZE, batch_size=BATCH, precision="mixed_float16")
    search = RecurrentSearch(network, config)
    search.loss_scale.value.assign(2.0**120)  # the scaled losses overflow float16's gradients
    before = {v.path: v.numpy() for v in network.trainable_variables}
    text, val = tokens(1), tokens(2)
    step = tf.function(search.step)
    args = (text[:-1], text[1:], network.init_hidden(BATCH), val[:-1], val[1:], network.init_hidden(BATCH))
    raw, _, _ = step(*args, tf.constant([1, 2]))
    for variable in network.trainable_variables:
        np.testing.assert_array_equal(variable.numpy(), before[variable.path])
    assert float(search.loss_scale.value.numpy()) == 2.0**119 and np.isfinite(float(raw))
    search.loss_scale.value.assign(2.0**12)  # a usable scale: the same step moves the alphas and the weights
    step(*args, tf.constant([1, 2]))
    for variable in network.trainable_variables:
        assert not np.array_equal(variable.numpy(), before[variable.path]), variable.path
    assert int(search.loss_scale.finite_steps.numpy()) == 1


def test_mixed_precision_model_exports_float32(tmp_path):
    model = language_model("mixed_bfloat16", get_genotype("DARTS_V2"))
    copy = float32_model(model)
    assert copy.compute_dtype == "float32" and float32_model(copy) is copy
    for a, b in zip(copy.weights, model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    path = export_language_model(model, [f"w{i}" for i in range(NTOKEN)], str(tmp_path / "lm"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    text = tf.transpose(tokens())
    out = serve(tokens=text, state=tf.zeros([BATCH, SIZE]))
    assert out["log_probs"].dtype == tf.float32 and out["state"].dtype == tf.float32
    expected = copy(tf.transpose(text), copy.init_hidden(BATCH))["log_probs"]
    np.testing.assert_allclose(out["log_probs"].numpy(), tf.transpose(expected, [1, 0, 2]).numpy(), atol=1e-5)
    half = model(tf.transpose(text), model.init_hidden(BATCH))["log_probs"]  # the bfloat16 network's own
    np.testing.assert_allclose(out["log_probs"].numpy(), tf.transpose(half, [1, 0, 2]).numpy(), atol=5e-2)


@pytest.mark.slow
def test_float16_search_resumes_with_its_loss_scale_and_bfloat16_training_exports_float32(tmp_path):
    """`--precision` through a search interrupted after its first epoch and resumed by `darts-tf search-rnn
    --resume`, and `darts-tf train-rnn` of its cell."""
    import csv
    import json
    import subprocess
    import sys

    from darts_tf import runs
    from darts_tf.rnn.search import run_rnn_search
    from rnn_helpers import ROOT, Interrupt, InterruptAfter, corpus_folder, search_config

    folder = corpus_folder(tmp_path / "corpus")
    small = ["--data-dir", folder, "--emsize", "16", "--nhid", "16", "--batch-size", "8", "--bptt", "10",
             "--eval-batch-size", "4", "--max-steps", "3", "--quiet"]  # fmt: skip

    def command(*args):
        out = subprocess.run([sys.executable, "-m", "darts_tf.commands", *args], capture_output=True, text=True,
                             cwd=ROOT)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    search = tmp_path / "search"
    with pytest.raises(Interrupt):
        run_rnn_search(search_config(tmp_path, folder, "search", max_steps=3, precision="mixed_float16"), verbose=0,
                       callbacks=[InterruptAfter(1)])  # fmt: skip
    state = runs.read_state(str(search))
    assert state["epoch"] == 1 and state["loss_scale"] == {"value": 2.0**15, "finite_steps": 3}  # none skipped
    command("search-rnn", "--resume", str(search), "--quiet")
    resumed = runs.read_state(str(search))
    assert json.loads((search / "config.json").read_text())["precision"] == "mixed_float16"
    # Exactly the uninterrupted search: the scale and its count went on from the checkpoint (this one skips a
    # step in epoch 2: the scale halves and its count restarts there).
    run_rnn_search(search_config(tmp_path, folder, "straight", max_steps=3, precision="mixed_float16"), verbose=0)
    straight = runs.read_state(str(tmp_path / "straight"))
    assert resumed["epoch"] == 2 and resumed["loss_scale"] == straight["loss_scale"]
    rows = [list(csv.DictReader(open(d / "metrics.csv"))) for d in (search, tmp_path / "straight")]
    assert [r["val_loss"] for r in rows[0]] == [r["val_loss"] for r in rows[1]] and len(rows[0]) == 2

    exports = tmp_path / "exports"
    out = command("train-rnn", *small, "--epochs", "2", "--arch", str(search / "genotype.json"), "--precision",
                  "mixed_bfloat16", "--run-dir", str(tmp_path / "train"), "--export-dir", str(exports))  # fmt: skip
    results = json.loads((tmp_path / "train" / "results.json").read_text())
    assert np.isfinite(results["valid_ppl"]) and np.isfinite(results["test_ppl"]) and results["valid_ppl"] < 45
    serve = tf.saved_model.load(str(exports / "darts_rnn" / "1")).signatures["serving_default"]
    served = serve(tokens=tf.zeros([2, 5], tf.int32), state=tf.zeros([2, 16]))
    assert served["log_probs"].dtype == tf.float32 and served["log_probs"].shape == (2, 5, results["vocabulary"])
    assert "SavedModel:" in out

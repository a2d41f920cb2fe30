"""Mixed precision: policies reach every layer, float32 where it matters, loss scaling, the hypergradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf import architect, precision
from darts_tf.cnn.eval_model import DropPath, NetworkCIFAR, float32_network, inference_model
from darts_tf.cnn.genotypes import DARTS_V2
from darts_tf.cnn.ops import BatchNorm
from darts_tf.cnn.search import ArchitectureSearch
from darts_tf.cnn.search_model import SearchNetwork
from darts_tf.cnn.train import EvalTrainer
from darts_tf.config import SearchConfig, TrainConfig, check_choices
from darts_tf.export import serving_function
from darts_tf.optimizers import SGD, Adam
from darts_tf.seeding import initializer_seed
from helpers import random_batch

MIXED = ("mixed_bfloat16", "mixed_float16")


def search_network(policy, seed=0, C=4, size=8, steps=4):
    with initializer_seed(seed):
        network = SearchNetwork(C, 10, 3, steps=steps, multiplier=steps, dtype=policy)
        network.build((None, size, size, 3))
    rng = np.random.default_rng(seed)
    for alpha in network.arch_variables:  # far from uniform: a visible second-order term
        alpha.assign(rng.normal(scale=0.5, size=alpha.shape).astype("float32"))
    return network


def same_weights(target, source):
    for a, b in zip(target.weights, source.weights, strict=True):
        a.assign(b)


def cosine(a, b):
    a = np.concatenate([np.ravel(x) for x in a])
    b = np.concatenate([np.ravel(x) for x in b])
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def policies_of(model):
    return {layer.dtype_policy.name for layer in model._flatten_layers(include_self=True)}


def test_precision_choices_are_checked():
    for config in (SearchConfig(precision="float64"), TrainConfig(precision="half")):
        with pytest.raises(ValueError, match="`precision` must be one of float32, mixed_bfloat16, mixed_float16"):
            check_choices(config)
    with pytest.raises(ValueError, match="`precision` must be one of"):
        precision.dtype_policy("bfloat16")
    assert precision.dtype_policy("mixed_float16").compute_dtype == "float16"


@pytest.mark.parametrize("policy", MIXED)
def test_search_network_variables_float32_logits_float32(policy):
    network = search_network(policy)
    assert {v.dtype for v in network.variables} == {"float32"}
    assert network.cells[0].edges[0].compute_dtype == policy.split("_")[1]
    images, labels = random_batch(size=8, num_classes=10)
    assert network(images, training=True).dtype == tf.float32
    assert network(images, training=False).dtype == tf.float32


@pytest.mark.slow
@pytest.mark.parametrize("hessian", architect.HESSIAN_MODES)
@pytest.mark.parametrize("policy", MIXED)
def test_second_order_gradient_under_mixed_precision_matches_float32(policy, hessian):
    # In half precision the finite difference's eps * v moves are rounding noise (cosine 0.97-0.98
    # under bfloat16 with only the HVP passes in float32): the whole hypergradient runs in float32.
    reference = search_network("float32", steps=2)
    network = search_network(policy, steps=2)
    same_weights(network, reference)
    train, val = random_batch(8, 8, 10, seed=1), random_batch(8, 8, 10, seed=2)

    def gradients(model):
        step = tf.function(
            lambda: architect.second_order_arch_gradients(model, train, val, xi=0.025, hessian=hessian)[0]
        )
        return [g.numpy() for g in step()]

    expected, got = gradients(reference), gradients(network)
    assert cosine(got, expected) >= 0.99
    # The block put every layer back in the mixed policy, and the weights are untouched.
    assert policies_of(network) == {policy}
    for a, b in zip(network.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The first-order gradient runs in half precision (close to, not equal to, float32's).
    first = tf.function(lambda m: architect.first_order_arch_gradients(m, val)[0])
    half, full = [g.numpy() for g in first(network)], [g.numpy() for g in first(reference)]
    assert 0.95 < cosine(half, full) < 1.0 - 1e-7


def test_full_precision_is_reentrant_and_leaves_float32_models_alone():
    network = search_network("mixed_bfloat16")
    with precision.full_precision(network):
        with precision.full_precision(network):
            assert policies_of(network) == {"float32"}
        assert policies_of(network) == {"float32"}
    assert policies_of(network) == {"mixed_bfloat16"}
    plain = search_network("float32")
    with precision.full_precision(plain):
        assert policies_of(plain) == {"float32"}


def test_loss_scale_rule():
    scale = precision.DynamicLossScale(initial_scale=8.0, growth_interval=3)
    history = []
    for finite in (True, True, True, False, True, True, True, True):
        scale.update(tf.constant(finite))
        history.append((float(scale.value.numpy()), int(scale.finite_steps.numpy())))
    assert history == [(8, 1), (8, 2), (16, 0), (8, 0), (8, 1), (8, 2), (16, 0), (16, 1)]
    grads = scale.unscale([tf.constant([32.0, 64.0])])
    np.testing.assert_array_equal(grads[0].numpy(), [2.0, 4.0])
    assert precision.all_finite([tf.constant([1.0]), tf.constant([np.inf])]).numpy() == False  # noqa: E712


def _tiny_classifier(policy):
    """Logits = 2^-23 * Dense(x) (exact in float16): unscaled, the float16 gradient below the rescaling underflows."""
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Flatten(dtype=policy)(inputs)
    x = keras.layers.Dense(10, kernel_initializer="zeros", name="dense", dtype=policy)(x)
    x = keras.layers.Rescaling(2.0**-23, dtype=policy)(x)
    return keras.Model(inputs, {"logits": keras.layers.Activation("linear", dtype="float32")(x)})


def _one_training_step(policy, loss_scale):
    network = _tiny_classifier(policy)
    trainer = EvalTrainer(network, auxiliary_weight=0.0, loss_scale=loss_scale)
    trainer.compile(SGD(1.0, momentum=0.0), grad_clip=1e9)
    images, labels = random_batch(8, 4, 10, seed=3)
    tf.function(trainer.train_step)((tf.abs(images), labels))
    return network.get_layer("dense").kernel.numpy()


def test_float16_step_whose_unscaled_gradient_underflows():
    expected = _one_training_step("float32", None)
    assert 1e-9 < np.abs(expected).max() < 1e-6  # the float32 step moves the weights by ~4e-8
    unscaled = _one_training_step("mixed_float16", None)
    assert np.abs(unscaled).max() == 0.0  # float16 gradients underflowed: no step at all
    # 2^19: the largest logit gradient (0.1125 at uniform softmax) times it stays below float16's maximum,
    # the smallest (0.0125) times it times 2^-23 is a normal float16.
    scaled = _one_training_step("mixed_float16", precision.DynamicLossScale(initial_scale=2.0**19))
    np.testing.assert_allclose(scaled, expected, rtol=2e-3, atol=1e-3 * np.abs(expected).max())


@pytest.mark.slow
def test_a_non_finite_step_is_skipped_and_halves_the_scale():
    network = search_network("mixed_float16")
    loss_scale = precision.DynamicLossScale(initial_scale=2.0**120)  # scaled losses overflow float16's gradients
    search = ArchitectureSearch(network, loss_scale=loss_scale)
    search.compile(SGD(0.1, momentum=0.9), Adam(0.1))
    before = [v.numpy() for v in network.trainable_variables]
    train, val = random_batch(4, 8, 10, seed=1), random_batch(4, 8, 10, seed=2)
    logs = tf.function(search.train_step)((train, val))
    for a, b in zip(network.trainable_variables, before, strict=True):
        np.testing.assert_array_equal(a.numpy(), b)
    assert float(loss_scale.value.numpy()) == 2.0**119
    assert np.isfinite(float(logs["loss"]))
    # With a usable scale the same step moves the alphas and the weights and counts a finite step.
    loss_scale.value.assign(2.0**12)
    tf.function(search.train_step)((train, val))
    assert not np.array_equal(network.alphas_normal.numpy(), before[0])
    assert not np.array_equal(network.weight_variables[0].numpy(), before[2])
    assert int(loss_scale.finite_steps.numpy()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("policy", MIXED)
def test_search_and_evaluation_metrics_under_mixed_precision(policy):
    # The top-5 metric (InTopKV2) has no half-precision kernel: logits reach it in float32.
    network = search_network(policy)
    search = ArchitectureSearch(network, unrolled=True)
    search.compile(SGD(0.025), Adam(3e-4))
    train, val = random_batch(8, 8, 10, seed=1), random_batch(8, 8, 10, seed=2)
    batches = tf.data.Dataset.from_tensors((train, val)).repeat(2)
    search.fit(batches, epochs=1, verbose=0)
    result = search.evaluate(tf.data.Dataset.from_tensors(val), verbose=0, return_dict=True)
    assert set(result) >= {"loss", "accuracy", "top5"} and np.isfinite(result["loss"])


def test_batchnorm_statistics_are_float32_on_the_composite_path():
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, size=(4, 5, 5, 3)), tf.float32)
    full = BatchNorm(fused=False, name="bn")
    half = BatchNorm(fused=False, name="bn", dtype="mixed_float16")
    y_full, y_half = full(x, training=True), half(tf.cast(x, tf.float16), training=True)
    assert y_half.dtype == tf.float16 and half.moving_mean.dtype == "float32"
    np.testing.assert_allclose(y_half.numpy(), y_full.numpy(), atol=5e-3)
    np.testing.assert_allclose(half.moving_variance.numpy(), full.moving_variance.numpy(), rtol=2e-3)


def test_drop_path_masks_do_not_depend_on_the_policy():
    masks = {}
    for policy in ("float32", "mixed_bfloat16"):
        layer = DropPath(seed=7, dtype=policy)
        layer.build((16, 2, 2, 1))
        layer.rate.assign(0.3)
        masks[policy] = layer(tf.ones([16, 2, 2, 1]), training=True).numpy()[:, 0, 0, 0]
    kept = masks["float32"] != 0
    assert 0 < kept.sum() < 16
    np.testing.assert_array_equal(masks["mixed_bfloat16"] != 0, kept)
    # 1 / 0.7 in bfloat16 after the float32 division (one rounding, not two).
    np.testing.assert_allclose(masks["mixed_bfloat16"][kept], 1 / 0.7, rtol=4e-3)


@pytest.mark.parametrize("policy", MIXED)
def test_evaluation_network_policy_round_trip_and_float32_export(policy, tmp_path):
    with initializer_seed(0):
        network = NetworkCIFAR(8, 10, 3, True, DARTS_V2, input_shape=(24, 24, 3), dtype=policy)
    outputs = network(tf.zeros([2, 24, 24, 3]), training=True)
    assert outputs["logits"].dtype == tf.float32 and outputs["aux_logits"].dtype == tf.float32
    assert {v.dtype for v in network.variables if "seed_generator" not in v.path} == {"float32"}
    restored = NetworkCIFAR.from_config(network.get_config())
    assert restored.network_dtype.name == policy
    path = str(tmp_path / "net.keras")
    network.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.network_dtype.name == policy
    # Served in float32 whatever the policy: a float32 copy with the same weights.
    copy = float32_network(network)
    assert copy is not network and policies_of(copy) == {"float32"}
    images = tf.constant(np.random.default_rng(0).integers(0, 256, size=(3, 24, 24, 3)), tf.uint8)
    _, serve = serving_function(network, [0.5] * 3, [0.25] * 3)
    served = serve(images)["logits"].numpy()
    x = (tf.cast(images, tf.float32) / 255.0 - 0.5) / 0.25
    expected = inference_model(copy)(x, training=False).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    graph = serve.get_concrete_function().graph.as_graph_def()
    types = {
        tf.dtypes.as_dtype(node.attr[key].type).name
        for function in graph.library.function
        for node in function.node_def
        for key in ("T", "dtype", "DstT", "SrcT")
        if key in node.attr and node.attr[key].type
    }
    assert not types & {"float16", "bfloat16"}


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_float16_search_resumes_with_its_loss_scale_and_bfloat16_training_exports_float32(tmp_path):
    from darts_tf import runs
    from darts_tf.cnn.search import run_search
    from darts_tf.cnn.train import run_training

    search = SearchConfig(
        dataset="synthetic", image_size=8, subset=64, epochs=2, batch_size=16, C=4, layers=3, steps=2,
        multiplier=2, eval_batch_size=32, precision="mixed_float16", run_dir=str(tmp_path / "search"),
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run_search(search, verbose=0, callbacks=[_StopAfterFirstEpoch()])
    state = runs.read_state(search.run_dir)
    assert state["epoch"] == 1 and state["loss_scale"]["value"] == 2.0**15
    assert state["loss_scale"]["finite_steps"] == 2  # two steps an epoch, none skipped
    resumed = run_search(search, resume=True, verbose=0)
    assert resumed["config"].precision == "mixed_float16"
    assert runs.read_state(search.run_dir)["loss_scale"]["finite_steps"] == 4  # counted on, not restarted
    assert np.isfinite(resumed["history"]["loss"]).all()

    train = TrainConfig(
        dataset="synthetic", image_size=24, subset=32, epochs=1, batch_size=16, C=8, layers=3, eval_batch_size=32,
        arch=str(tmp_path / "search" / "genotype.json"), precision="mixed_bfloat16", run_dir=str(tmp_path / "train"),
        export_dir=str(tmp_path / "exports"),
    )  # fmt: skip
    trained = run_training(train, verbose=0)
    assert np.isfinite(trained["history"]["loss"]).all() and "val_top5" in trained["history"]
    serve = tf.saved_model.load(trained["export_path"]).signatures["serving_default"]
    out = serve(images=tf.zeros([2, 24, 24, 3], tf.uint8))
    assert out["logits"].dtype == tf.float32 and out["probabilities"].dtype == tf.float32

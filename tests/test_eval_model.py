import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf.cnn.eval_model import (
    DropPath,
    NetworkCIFAR,
    NetworkImageNet,
    count_parameters,
    inference_model,
    is_eval_network,
)
from darts_tf.cnn.genotypes import AMOEBANET, DARTS_V1, DARTS_V2, NASNET, get_genotype
from darts_tf.cnn.pytorch import load_pytorch_state_dict, to_pytorch_state_dict


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


def _randomize_statistics(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.non_trainable_variables:
        if v.path.endswith("moving_mean"):
            v.assign(rng.normal(scale=0.1, size=v.shape).astype("float32"))
        elif v.path.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 2.0, size=v.shape).astype("float32"))


def test_pytorch_state_dict_round_trip_cifar():
    keras.utils.set_random_seed(0)
    model = NetworkCIFAR(4, 10, 3, True, DARTS_V2)
    _randomize_statistics(model)
    sd = to_pytorch_state_dict(model)
    # The original's naming and layouts.
    assert sd["stem.0.weight"].shape == (12, 3, 3, 3)
    assert sd["stem.1.running_var"].shape == (12,)
    assert sd["cells.0.preprocess0.op.1.weight"].shape == (4, 12, 1, 1)
    assert sd["cells.1.preprocess1.op.1.weight"].shape == (8, 16, 1, 1)
    assert sd["cells.0._ops.0.op.1.weight"].shape == (4, 1, 3, 3)  # DARTS_V2 normal: sep_conv_3x3 first
    assert sd["cells.2.preprocess0.conv_1.weight"].shape == (8, 16, 1, 1)  # FactorizedReduce after a reduction
    assert sd["auxiliary_head.features.5.weight"].shape == (768, 128, 2, 2)
    assert sd["auxiliary_head.features.6.running_mean"].shape == (768,)
    assert sd["auxiliary_head.classifier.weight"].shape == (10, 768)
    assert sd["classifier.weight"].shape == (10, 64)
    keras.utils.set_random_seed(1)
    other = NetworkCIFAR(4, 10, 3, True, DARTS_V2)
    # As saved from nn.DataParallel, with num_batches_tracked entries.
    wrapped = {f"module.{k}": v for k, v in sd.items()} | {"module.stem.1.num_batches_tracked": np.array(5)}
    load_pytorch_state_dict(other, wrapped)
    trainable = {v.path for v in other.trainable_variables}
    assert len(sd) == len(trainable) + 2 * sum(1 for p in trainable if p.endswith("gamma"))
    images = tf.random.normal([2, 32, 32, 3])
    for key in ("logits", "aux_logits"):
        np.testing.assert_array_equal(model(images)[key].numpy(), other(images)[key].numpy())


def test_pytorch_state_dict_imagenet_names_and_errors():
    model = NetworkImageNet(8, 5, 3, True, DARTS_V2, input_shape=(224, 224, 3))
    sd = to_pytorch_state_dict(model)
    stems = sorted({k.rsplit(".", 1)[0] for k in sd if k.startswith("stem")})
    assert stems == ["stem0.0", "stem0.1", "stem0.3", "stem0.4", "stem1.1", "stem1.2"]
    assert "auxiliary_head.features.6.running_mean" not in sd  # the original's ImageNet head has no last BN
    assert sd["cells.0.preprocess0.conv_1.weight"].shape == (4, 8, 1, 1)  # cell 0 follows the stride-2 stem
    del sd["stem1.2.weight"]
    with pytest.raises(ValueError, match="missing 1: stem1.2.weight"):
        load_pytorch_state_dict(model, sd)


@pytest.mark.parametrize(
    "builder, size",
    [
        (lambda: NetworkCIFAR(4, 10, 3, True, AMOEBANET), 32),
        (lambda: NetworkImageNet(8, 7, 3, False, DARTS_V2, input_shape=(64, 64, 3)), 64),
    ],
    ids=["cifar", "imagenet"],
)
def test_keras_file_round_trip(tmp_path, builder, size):
    model = builder()
    _randomize_statistics(model)
    model.save(tmp_path / "net.keras")
    loaded = keras.saving.load_model(tmp_path / "net.keras")
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    assert loaded.genotype == model.genotype and is_eval_network(loaded)
    images = tf.random.normal([2, size, size, 3])
    np.testing.assert_array_equal(loaded(images)["logits"].numpy(), model(images)["logits"].numpy())
    assert count_parameters(loaded) == count_parameters(model)
    # from_config(get_config()) builds the same architecture (fresh weights).
    rebuilt = type(model).from_config(model.get_config())
    assert [v.shape for v in rebuilt.weights] == [v.shape for v in model.weights]


def test_networks_are_model_classes_and_reject_a_missing_genotype():
    model = NetworkCIFAR(4, 10, 3, False, DARTS_V2.to_dict())  # a genotype's dict works too
    assert isinstance(model, keras.Model) and model.genotype == DARTS_V2 and "aux_logits" not in model.output
    assert model.get_config()["layers"] == 3 and model.get_config()["input_shape"] == [32, 32, 3]
    assert not is_eval_network(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="classifier")]))
    with pytest.raises(ValueError, match="NetworkImageNet expected a genotype. Received: genotype='DARTS_V2'"):
        NetworkImageNet(genotype="DARTS_V2")


def test_inference_model_has_no_auxiliary_head():
    model = NetworkCIFAR(4, 10, 3, True, DARTS_V2)
    served = inference_model(model)
    assert "auxiliary_head" not in {layer.name for layer in served.layers}
    images = tf.random.normal([2, 32, 32, 3])
    np.testing.assert_array_equal(served(images).numpy(), model(images)["logits"].numpy())


def test_drop_path_keeps_the_expectation():
    layer = DropPath(seed=3)
    x = tf.ones([20000, 1, 1, 2])
    layer.build(x.shape)
    layer.rate.assign(0.3)
    out = layer(x, training=True).numpy()
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.7], rtol=1e-6)
    assert np.all(out[:, :, :, 0] == out[:, :, :, 1])  # one decision per sample
    assert abs(out.mean() - 1.0) < 0.03 and abs((out == 0).mean() - 0.3) < 0.02


def test_auxiliary_head_needs_its_input_size():
    with pytest.raises(ValueError, match="auxiliary=False"):
        NetworkCIFAR(4, 10, 3, True, DARTS_V2, input_shape=(16, 16, 3))
    assert NetworkCIFAR(4, 10, 3, False, DARTS_V2, input_shape=(16, 16, 3)).output["logits"].shape == (None, 10)


def test_every_random_tensor_is_drawn_independently():
    keras.utils.set_random_seed(0)
    model = NetworkCIFAR(8, 10, 5, True, DARTS_V2)
    arrays = [v.numpy() for v in model.trainable_variables if np.unique(v.numpy()).size > 1]
    firsts = [float(a.ravel()[0]) for a in arrays]
    assert len(arrays) > 50 and len(set(firsts)) == len(firsts)


def test_auxiliary_head_2x2_conv_uses_pytorch_default_init():
    """nn.Conv2d(128, 768, 2)'s default: U(+-1/sqrt(fan_in)), fan_in = 128 * 2 * 2 (not glorot's +-0.0409)."""
    keras.utils.set_random_seed(0)
    model = NetworkCIFAR(8, 10, 5, True, DARTS_V2)
    kernel = model.get_layer("auxiliary_head").conv2.kernel.numpy()
    assert kernel.shape == (2, 2, 128, 768)
    bound = 1 / np.sqrt(512)
    assert 0.999 * bound < np.abs(kernel).max() <= bound
    np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.01)


@pytest.mark.parametrize(
    "builder, genotype, expected",
    [
        (lambda g: NetworkCIFAR(36, 10, 20, True, g), NASNET, 3_830_950),
        (lambda g: NetworkCIFAR(36, 10, 20, True, g), AMOEBANET, 3_145_078),
        (lambda g: NetworkImageNet(48, 1000, 14, True, g), NASNET, 5_564_320),
        (lambda g: NetworkImageNet(48, 1000, 14, True, g), AMOEBANET, 4_627_360),
        (lambda g: NetworkImageNet(48, 1000, 14, True, g), DARTS_V1, 4_510_432),
    ],
    ids=["cifar-NASNet", "cifar-AmoebaNet", "imagenet-NASNet", "imagenet-AmoebaNet", "imagenet-DARTS_V1"],
)
def test_parameter_counts_of_the_original_genotypes(builder, genotype, expected):
    assert count_parameters(builder(genotype)) == expected


@pytest.mark.parametrize("name", ["NASNet", "AmoebaNet"])
def test_original_genotypes_round_trip_pytorch_state_dicts(name):
    keras.utils.set_random_seed(0)
    genotype = get_genotype(name)
    model = NetworkCIFAR(4, 10, 3, True, genotype)
    sd = to_pytorch_state_dict(model)
    if name == "AmoebaNet":  # conv_7x1_1x7 in the first reduction cell, 9th edge: a bare Sequential there
        assert sd["cells.1._ops.8.1.weight"].shape == (8, 8, 1, 7)
        assert sd["cells.1._ops.8.2.weight"].shape == (8, 8, 7, 1)
        assert sd["cells.1._ops.8.3.running_var"].shape == (8,)
    else:  # sep_conv_7x7 in the reduction cell's 2nd edge
        assert sd["cells.1._ops.1.op.1.weight"].shape == (8, 1, 7, 7)
    other = NetworkCIFAR(4, 10, 3, True, genotype)
    load_pytorch_state_dict(other, sd)
    back = to_pytorch_state_dict(other)
    assert back.keys() == sd.keys()
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value)
    images = tf.random.normal([2, 32, 32, 3])
    np.testing.assert_array_equal(
        model(images, training=False)["logits"].numpy(), other(images, training=False)["logits"].numpy()
    )


@pytest.mark.parametrize("genotype, rounds", [(DARTS_V2, 1 + 4 + 1 + 1 + 2), (AMOEBANET, None)])
def test_cells_under_synchronised_statistics_compute_call_with_one_gather_a_round(monkeypatch, genotype, rounds):
    """Training under several replicas takes `EvalCell`'s staged path (ops advancing side by side, one
    gather of statistics a round of BatchNorms, drop-path masks drawn first): on one device, forced, it
    computes what `call` does (outputs, gradients, moving statistics; drop path 0.3), in float64. DARTS_V2
    (3 cells) gathers 9 times a forward pass: the stem, per cell the preprocessing plus the rounds (normal
    cell 3: its separable convolutions on the inputs, then the dilated one on node 0; reduction cells none),
    the auxiliary head's 2; AmoebaNet runs its 1x7-7x1 convolution (no stages) whole."""
    from darts_tf import replicas

    keras.utils.set_random_seed(0)
    model = NetworkCIFAR(4, 10, 3, True, genotype, input_shape=(24, 24, 3), dtype="float64")
    for v in model.non_trainable_variables:
        if v.path.endswith("drop_path/rate"):
            v.assign(0.3)
    images = tf.constant(np.random.default_rng(0).normal(size=(6, 24, 24, 3)))
    start = [v.numpy() for v in model.variables]

    def run():
        for v, value in zip(model.variables, start):
            v.assign(value)
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            loss = tf.reduce_sum(out["logits"] ** 2) + tf.reduce_sum(out["aux_logits"])
        grads = tape.gradient(loss, model.trainable_variables)
        return [out["logits"], out["aux_logits"], *grads, *model.non_trainable_variables]

    plain = run()
    gathers = []
    gather = replicas.gather
    monkeypatch.setattr(replicas, "gather", lambda v: gathers.append(v) or gather(v))
    monkeypatch.setattr(replicas, "synchronized_statistics", lambda: True)
    staged = run()
    if rounds is not None:
        assert len(gathers) == rounds
    for a, b in zip(plain, staged):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-10, atol=1e-12)
    for i, v in enumerate(model.variables):  # the masks matter: without drop path the logits differ
        start[i] = np.zeros_like(start[i]) if v.path.endswith("drop_path/rate") else start[i]
    assert not np.allclose(plain[0], run()[0], rtol=1e-3)

import numpy as np
import pytest

from darts_tf.cnn.pytorch import load_pytorch_state_dict, to_pytorch_state_dict
from helpers import random_batch, tiny_search_network


@pytest.fixture(scope="module")
def models():
    return tiny_search_network(seed=0), tiny_search_network(seed=7)


def test_layouts_in_original_naming(models):
    model, _ = models
    sd = to_pytorch_state_dict(model)
    assert sd["stem.0.weight"].shape == (12, 3, 3, 3)  # OIHW
    np.testing.assert_array_equal(sd["stem.0.weight"][5, 1, 0, 2], model.stem_conv.kernel.numpy()[0, 2, 1, 5])
    assert sd["cells.0._ops.1._ops.4.op.1.weight"].shape == (4, 1, 3, 3)  # depthwise
    assert sd["cells.0._ops.1._ops.7.op.2.weight"].shape == (4, 4, 1, 1)
    assert sd["cells.0._ops.1._ops.1.1.running_mean"].shape == (4,)  # max pool + BN
    assert sd["cells.1._ops.0._ops.3.conv_1.weight"].shape == (4, 8, 1, 1)  # skip at stride 2
    assert sd["cells.2.preprocess0.conv_2.weight"].shape == (8, 16, 1, 1)  # FactorizedReduce
    assert sd["classifier.weight"].shape == (3, 64)
    assert sd["alphas_normal"].shape == (14, 8)
    assert "cells.0._ops.1._ops.4.op.3.weight" not in sd  # search BN is not affine


def test_round_trip_fills_every_variable(models):
    model, other = models
    sd = to_pytorch_state_dict(model)
    sd["stem.1.num_batches_tracked"] = np.array(3)  # the original's extra entries are accepted
    load_pytorch_state_dict(other, sd)
    for a, b in zip(model.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    images, _ = random_batch()
    np.testing.assert_array_equal(model(images, training=False), other(images, training=False))


def test_alphas_optional(models):
    model, other = models
    sd = to_pytorch_state_dict(model)
    del sd["alphas_normal"], sd["alphas_reduce"]
    before = other.alphas_normal.numpy().copy()
    other.alphas_normal.assign(before + 1)
    load_pytorch_state_dict(other, sd)
    np.testing.assert_array_equal(other.alphas_normal.numpy(), before + 1)


def test_rejects_missing_extra_and_misshaped(models):
    model, other = models
    sd = to_pytorch_state_dict(model)
    del sd["cells.1.preprocess1.op.1.weight"]
    sd["cells.9.bogus.weight"] = np.zeros(3)
    sd["classifier.bias"] = np.zeros(4)
    before = [v.numpy().copy() for v in other.variables]
    with pytest.raises(ValueError) as info:
        load_pytorch_state_dict(other, sd)
    message = str(info.value)
    assert "missing 1: cells.1.preprocess1.op.1.weight" in message
    assert "unexpected 1: cells.9.bogus.weight" in message
    assert "classifier.bias: expected (3,), received (4,)" in message
    assert "\n" not in message
    for v, b in zip(other.variables, before):  # nothing assigned
        np.testing.assert_array_equal(v.numpy(), b)


def test_npz_state_dicts_are_read_without_pickle(models, tmp_path):
    from darts_tf.cnn.pytorch import read_npz_state_dict

    model, _ = models
    sd = to_pytorch_state_dict(model)
    np.savez(tmp_path / "plain.npz", **sd)
    back = read_npz_state_dict(str(tmp_path / "plain.npz"))
    assert back.keys() == sd.keys() and all(np.array_equal(back[k], sd[k]) for k in sd)
    # An object array needs pickle to load: refused in one line, nothing unpickled.
    np.savez(tmp_path / "object.npz", weight=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"object.npz' is not a plain .npz of arrays") as info:
        read_npz_state_dict(str(tmp_path / "object.npz"))
    assert "\n" not in str(info.value)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"junk.npz'"):
        read_npz_state_dict(str(tmp_path / "junk.npz"))
    with pytest.raises(ValueError, match=r"Cannot read state dict .*missing.npz"):
        read_npz_state_dict(str(tmp_path / "missing.npz"))


def test_naming_lives_in_pytorch_and_refuses_what_it_cannot_name():
    import keras

    from darts_tf.cnn.ops import Pool, SepConv
    from darts_tf.cnn.pytorch import torch_variables

    op = SepConv(4, 3, 1)
    op.build((1, 8, 8, 4))
    names = torch_variables(op)
    assert list(names) == [
        "op.1.weight", "op.2.weight", "op.3.weight", "op.3.bias", "op.3.running_mean", "op.3.running_var",
        "op.5.weight", "op.6.weight", "op.7.weight", "op.7.bias", "op.7.running_mean", "op.7.running_var",
    ]  # fmt: skip
    assert not hasattr(op, "torch_variables")  # the layers do not carry the original's naming
    pool = Pool("max", 3, 1)
    pool.build((1, 8, 8, 4))
    assert torch_variables(pool) == {}
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="has no PyTorch weight mapping"):
        torch_variables(other)
    unbuilt = SepConv(4, 3, 1)
    with pytest.raises(ValueError, match="must be built"):
        torch_variables(unbuilt)


def test_pc_darts_betas_round_trip():
    model = tiny_search_network(C=8, seed=0, partial_channels=4, edge_normalization=True)
    other = tiny_search_network(C=8, seed=7, partial_channels=4, edge_normalization=True)
    sd = to_pytorch_state_dict(model)
    assert sd["betas_normal"].shape == (14,) and sd["cells.0._ops.1._ops.4.op.1.weight"].shape == (2, 1, 3, 3)
    load_pytorch_state_dict(other, sd)
    for a, b in zip(model.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    with pytest.raises(ValueError, match="unexpected 2: betas_normal, betas_reduce"):
        load_pytorch_state_dict(tiny_search_network(C=8, partial_channels=4), sd)

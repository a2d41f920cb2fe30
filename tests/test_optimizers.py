import numpy as np
import pytest
import tensorflow as tf

from darts_tf.optimizers import SGD, Adam, EpochCosineDecay, clip_by_global_norm


def test_sgd_follows_pytorch_over_changing_learning_rates():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(4)]
    schedule = EpochCosineDecay(0.1, 0.001, epochs=4, steps_per_epoch=1)
    for dtype in ("float32", "float64"):
        w = tf.Variable(w0.astype(dtype))
        optimizer = SGD(schedule, momentum=0.9, coupled_weight_decay=3e-4)
        optimizer.build([w])
        ref, buf = w0.copy(), np.zeros_like(w0)
        for epoch, g in enumerate(grads):
            optimizer.apply([tf.constant(g.astype(dtype))], [w])
            d = g + 3e-4 * ref  # torch.optim.SGD: L2 added to the gradient, buf = m * buf + d
            buf = 0.9 * buf + d
            ref = ref - schedule.value_at_epoch(epoch) * buf
            np.testing.assert_allclose(w.numpy(), ref, rtol=1e-5 if dtype == "float32" else 1e-7)  # lr is float32
        np.testing.assert_allclose(optimizer.momentum_buffers([w])[0].numpy(), buf, rtol=1e-5)


def test_adam_follows_pytorch():
    rng = np.random.default_rng(1)
    a0 = rng.normal(size=(14, 8))
    a = tf.Variable(a0)
    optimizer = Adam(3e-4, beta_1=0.5, beta_2=0.999, coupled_weight_decay=1e-3)
    optimizer.build([a])
    ref, m, v = a0.copy(), np.zeros_like(a0), np.zeros_like(a0)
    for t in range(1, 4):
        g = rng.normal(size=a0.shape)
        optimizer.apply([tf.constant(g)], [a])
        d = g + 1e-3 * ref
        m = 0.5 * m + 0.5 * d
        v = 0.999 * v + 0.001 * d * d
        ref = ref - 3e-4 / (1 - 0.5**t) * m / (np.sqrt(v) / np.sqrt(1 - 0.999**t) + 1e-8)
        np.testing.assert_allclose(a.numpy(), ref, rtol=0, atol=1e-8)  # Keras keeps lr in float32


def test_clip_by_global_norm_as_torch():
    grads = [tf.constant([3.0, 0.0]), tf.constant([[4.0]])]
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert float(norm) == pytest.approx(5.0)
    np.testing.assert_allclose(clipped[0].numpy(), [3.0 / (5.0 + 1e-6), 0.0], rtol=1e-6)
    unchanged, _ = clip_by_global_norm(grads, 10.0)
    np.testing.assert_array_equal(unchanged[1].numpy(), [[4.0]])


def test_epoch_cosine_decay():
    schedule = EpochCosineDecay(0.025, 0.001, epochs=50, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.025)
    assert float(schedule(9)) == pytest.approx(0.025)  # constant within an epoch
    assert float(schedule(250)) == pytest.approx(0.013)
    assert schedule.value_at_epoch(49) == pytest.approx(0.001 + 0.024 * (1 + np.cos(np.pi * 49 / 50)) / 2)


def test_epoch_exponential_decay_is_steplr_every_epoch():
    from darts_tf.config import TRAIN_PRESETS, TrainConfig
    from darts_tf.optimizers import EpochExponentialDecay, learning_rate_schedule

    schedule = learning_rate_schedule(TrainConfig(**TRAIN_PRESETS["imagenet"]), steps_per_epoch=10)
    assert isinstance(schedule, EpochExponentialDecay)
    for step, epoch in ((0, 0), (9, 0), (10, 1), (2499, 249)):
        np.testing.assert_allclose(float(schedule(step)), 0.1 * 0.97**epoch, rtol=1e-5)
        np.testing.assert_allclose(schedule.value_at_epoch(epoch), 0.1 * 0.97**epoch, rtol=1e-12)
    assert EpochExponentialDecay.from_config(schedule.get_config()).gamma == 0.97
    with pytest.raises(ValueError, match="0 < gamma <= 1"):
        EpochExponentialDecay(0.1, 1.5, 10)

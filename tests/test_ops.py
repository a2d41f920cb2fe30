import numpy as np
import pytest
import tensorflow as tf

from darts_tf.cnn.genotypes import OPERATIONS, PRIMITIVES
from darts_tf.cnn.ops import (
    OPS,
    BatchNorm,
    Conv2D,
    FactorizedReduce,
    Pool,
    make_op,
    max_pool,
    subsample,
)
from darts_tf.cnn.ops.batchnorm import global_statistics, local_moments


def np_conv(x, kernel, stride=1, dilation=1, depthwise=False):
    """Direct NumPy convolution with PyTorch's symmetric padding (the reference)."""
    k = kernel.shape[0]
    pad = dilation * (k - 1) // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    size = lambda n: (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1  # noqa: E731
    out_c = x.shape[3] if depthwise else kernel.shape[3]
    out = np.zeros((x.shape[0], size(x.shape[1]), size(x.shape[2]), out_c))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            for a in range(k):
                for b in range(k):
                    patch = xp[:, i * stride + dilation * a, j * stride + dilation * b, :]
                    out[:, i, j, :] += patch * kernel[a, b, :, 0] if depthwise else patch @ kernel[a, b]
    return out


def np_pool(x, mode, stride):
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=np.nan)
    size = lambda n: (n - 1) // stride + 1  # noqa: E731
    out = np.zeros((x.shape[0], size(x.shape[1]), size(x.shape[2]), x.shape[3]))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            window = xp[:, i * stride : i * stride + 3, j * stride : j * stride + 3, :]
            out[:, i, j] = np.nanmax(window, axis=(1, 2)) if mode == "max" else np.nanmean(window, axis=(1, 2))
    return out


@pytest.mark.parametrize("size", [7, 8, 9])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("primitive", OPERATIONS)
def test_op_output_shapes(primitive, stride, size):
    op = make_op(primitive, 4, stride, affine=True)
    shape = (2, size, size, 4)
    op.build(shape)
    y = op(tf.random.normal(shape), training=True)
    expected = size if stride == 1 else (size + 1) // 2
    assert tuple(y.shape) == (2, expected, expected, 4)
    assert tuple(op.compute_output_shape(shape)) == tuple(y.shape)


def test_op_table_lists_every_operation_the_search_space_first():
    from darts_tf.cnn.genotypes import OPERATIONS, PRIMITIVES
    from darts_tf.cnn.ops import OPS

    assert tuple(OPS) == OPERATIONS
    assert OPERATIONS[: len(PRIMITIVES)] == PRIMITIVES


def test_unknown_op_and_stride():
    with pytest.raises(ValueError, match="Unknown op 'conv_7x7'"):
        make_op("conv_7x7", 4, 1)
    with pytest.raises(ValueError, match="stride must be 1 or 2. Received: stride=3"):
        make_op("sep_conv_3x3", 4, 3)
    # The DARTS space is the paper's 8 ops; two more exist for the original's NASNet/AmoebaNet genotypes,
    # two for NAS-Bench-201's cells.
    assert tuple(OPS) == OPERATIONS == PRIMITIVES + ("sep_conv_7x7", "conv_7x1_1x7", "nor_conv_1x1", "nor_conv_3x3")


def test_stride2_max_pool_samples_like_pytorch():
    ramp = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    got = Pool("max", 3, 2)(tf.constant(ramp))[0, :, :, 0].numpy()
    # PyTorch pads one row/column of -inf on every side: windows centred on 0 and 2.
    np.testing.assert_array_equal(got, [[5, 7], [13, 15]])
    # TensorFlow's own "SAME" pads bottom/right only and gives a shifted grid.
    assert tf.nn.max_pool2d(ramp, 3, 2, "SAME")[0, 0, 0, 0] == 10
    avg = Pool("avg", 3, 2)(tf.constant(ramp))[0, :, :, 0].numpy()
    np.testing.assert_allclose(avg, [[2.5, 4.0], [8.5, 10.0]], rtol=1e-6)  # count_include_pad=False


@pytest.mark.parametrize("training", [False, True])  # max pooling at stride 2: pool + slice at inference
@pytest.mark.parametrize("size", [6, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pools_match_numpy(mode, stride, size, training, rng):
    x = rng.normal(size=(2, size, size, 3))
    got = Pool(mode, 3, stride, dtype="float64")(tf.constant(x), training=training).numpy()
    np.testing.assert_allclose(got, np_pool(x, mode, stride), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("training", [False, True])  # a 1x1 conv trains as a matmul
@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize(
    "k, stride, dilation",
    [(1, 1, 1), (1, 2, 1), (3, 1, 1), (3, 2, 1), (5, 2, 1), (3, 1, 2), (3, 2, 2), (5, 2, 2)],
)
@pytest.mark.parametrize("size", [7, 8])
def test_conv_matches_numpy(k, stride, dilation, depthwise, size, training, rng):
    layer = Conv2D(None if depthwise else 5, k, stride, dilation, depthwise=depthwise, dtype="float64")
    x = rng.normal(size=(2, size, size, 3))
    layer.build(x.shape)
    got = layer(tf.constant(x), training=training).numpy()
    want = np_conv(x, layer.kernel.numpy(), stride, dilation, depthwise)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_dilated_depthwise_gradient(stride, training, rng):
    """Gradients of the dilated depthwise conv equal those of the same conv written with a zero-dilated kernel."""
    layer = Conv2D(None, 3, stride, 2, depthwise=True)
    x = tf.constant(rng.normal(size=(2, 9, 9, 3)), tf.float32)
    layer.build(x.shape)
    kernel = layer.kernel
    taps = [[2 * a, 2 * b] for a in range(3) for b in range(3)]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y1 = layer(x, training=training)
        dense = tf.scatter_nd(taps, tf.reshape(kernel, [9, 3, 1]), [5, 5, 3, 1])
        xp = tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]])
        y2 = tf.nn.depthwise_conv2d(xp, dense, [1, stride, stride, 1], "VALID")
        l1, l2 = tf.reduce_sum(y1 * y1), tf.reduce_sum(y2 * y2)
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
    for a, b in zip(tape.gradient(l1, [x, kernel]), tape.gradient(l2, [x, kernel])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    "size, k, stride, padding, dilation",
    [(8, 5, 1, "SAME", 1), (9, 5, 2, "VALID", 1), (12, 5, 1, "SAME", 2), (10, 7, 1, "SAME", 1), (11, 7, 2, "VALID", 1),
     (13, 9, 1, "SAME", 1), (10, 5, 1, "VALID", 1), (8, 3, 1, "SAME", 1), (12, 3, 1, "SAME", 2)],
)  # fmt: skip
def test_depthwise_conv_values_and_derivatives_equal_tensorflows(size, k, stride, padding, dilation, rng):
    """The training depthwise conv (kernel gradient in 3-wide column pieces): TensorFlow's values, gradients
    and second derivatives (a Hessian-vector product in x and the kernel), float64."""
    from darts_tf.cnn.ops.conv import depthwise_conv

    x = tf.constant(rng.normal(size=(2, size, size, 3)))
    kernel = tf.constant(rng.normal(size=(k, k, 3, 1)))

    def derivatives(conv):
        with tf.GradientTape(persistent=True) as outer:
            outer.watch([x, kernel])
            with tf.GradientTape() as inner:
                inner.watch([x, kernel])
                y = conv(x, kernel)
                loss = tf.reduce_sum(tf.sin(y))
            dx, dk = inner.gradient(loss, [x, kernel])
            second = tf.reduce_sum(dx * dx) + tf.reduce_sum(tf.sin(dk))
        return [y, dx, dk, *outer.gradient(second, [x, kernel])]

    ours = derivatives(lambda x, w: depthwise_conv(x, w, stride, padding, dilation))
    theirs = derivatives(
        lambda x, w: tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], padding, dilations=[dilation] * 2)
    )
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fused", [False, True])
def test_batchnorm_training_matches_pytorch_semantics(fused, rng):
    x = rng.normal(loc=2.0, scale=3.0, size=(4, 5, 5, 6)).astype(np.float32)
    bn = BatchNorm(affine=True, fused=fused)
    bn.build(x.shape)
    bn.gamma.assign(np.linspace(0.5, 1.5, 6))
    bn.beta.assign(np.linspace(-1, 1, 6))
    y = bn(tf.constant(x), training=True).numpy()
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased, as PyTorch normalizes
    want = (x - mean) / np.sqrt(var + 1e-5) * bn.gamma.numpy() + bn.beta.numpy()
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    n = 4 * 5 * 5
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)
    y_eval = bn(tf.constant(x), training=False).numpy()
    mm, mv = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    np.testing.assert_allclose(
        y_eval, (x - mm) / np.sqrt(mv + 1e-5) * bn.gamma.numpy() + bn.beta.numpy(), rtol=1e-5, atol=1e-5
    )


def test_batchnorm_fused_and_composite_agree_with_gradients(rng):
    x = tf.constant(rng.normal(size=(3, 4, 4, 5)), tf.float32)
    outs = []
    for fused in (False, True):
        bn = BatchNorm(affine=True, fused=fused)
        bn.build(x.shape)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=True)
            loss = tf.reduce_sum(tf.sin(y))
        outs.append([y, *tape.gradient(loss, [x, bn.gamma, bn.beta])])
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_batch_norm_without_statistics_update(rng):
    bn = BatchNorm(affine=False)
    x = tf.constant(rng.normal(size=(2, 3, 3, 4)), tf.float32)
    bn.build(x.shape)
    bn(x, training=True, update_statistics=False)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(4))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), np.ones(4))
    bn(x, training=True)
    assert np.abs(bn.moving_mean.numpy()).sum() > 0


def test_factorized_reduce_offsets(rng):
    fr = FactorizedReduce(4, affine=False)
    x = rng.normal(size=(1, 6, 6, 2)).astype(np.float32)
    fr.build(x.shape)
    y = fr(tf.constant(x), training=False).numpy()  # moving stats 0/1: BN is ~identity
    relu = np.maximum(x, 0)
    k1, k2 = fr.conv_1.kernel.numpy()[0, 0], fr.conv_2.kernel.numpy()[0, 0]
    want = np.concatenate([relu[:, ::2, ::2] @ k1, relu[:, 1::2, 1::2] @ k2], axis=-1) / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("stride, padding", [(1, "SAME"), (2, "VALID")])
def test_max_pool_gradients_equal_tensorflows(stride, padding, dtype, rng):
    """First and second derivatives of `max_pool` (own gradient function) equal tf.nn.max_pool2d's."""
    x = tf.constant(rng.normal(size=(2, 8, 8, 3)), dtype)
    results = []
    for pool in (max_pool, lambda v, k, s, p: tf.nn.max_pool2d(v, k, s, p)):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = pool(x, 3, stride, padding)
                loss = tf.reduce_sum(tf.sin(y) * y)
            grad = inner.gradient(loss, x)
            second = tf.reduce_sum(grad * grad)
        results.append((y, grad, outer.gradient(second, x)))
    assert float(tf.reduce_max(tf.abs(results[0][1]))) > 0
    for a, b in zip(*results):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("size", [(8, 8), (8, 6), (7, 8), (9, 9)])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_subsample_is_strided_slicing(size, stride, rng):
    x = tf.constant(rng.normal(size=(2, *size, 5)), tf.float64)
    weights = tf.constant(rng.normal(size=(2, *size, 5)), tf.float64)
    offsets = tuple(range(stride))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        got = subsample(x, stride, offsets)
        want = [x[:, o::stride, o::stride, :] for o in offsets]
        loss_got = sum(tf.reduce_sum(g * weights[:, : g.shape[1], : g.shape[2]] * (o + 1)) for o, g in enumerate(got))
        loss_want = sum(tf.reduce_sum(w * weights[:, : w.shape[1], : w.shape[2]] * (o + 1)) for o, w in enumerate(want))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w.numpy())
    np.testing.assert_array_equal(tape.gradient(loss_got, x).numpy(), tape.gradient(loss_want, x).numpy())
    np.testing.assert_array_equal(subsample(x, stride).numpy(), want[0].numpy())


@pytest.mark.parametrize("size", [6, 7])
def test_factorized_reduce_gradients_match_slicing(size, rng):
    """The even-size path (space_to_depth) gives the original formula's output and gradients."""
    fr = FactorizedReduce(4, affine=True, dtype="float64")
    x = tf.constant(rng.normal(size=(2, size, size, 3)))
    fr.build(x.shape)
    k1, k2 = fr.conv_1.kernel, fr.conv_2.kernel
    variables = [x, k1, k2, fr.bn.gamma]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = fr(x, training=True)
        relu = tf.nn.relu(x)
        shifted = tf.pad(relu[:, 1:, 1:, :], [[0, 0], [0, size % 2], [0, size % 2], [0, 0]])
        out = tf.concat([tf.nn.conv2d(relu, k1, 2, "VALID"), tf.nn.conv2d(shifted, k2, 2, "VALID")], axis=-1)
        mean, var = tf.nn.moments(out, axes=[0, 1, 2])
        want = (out - mean) / tf.sqrt(var + 1e-5) * fr.bn.gamma + fr.bn.beta
        loss_y, loss_want = tf.reduce_sum(tf.sin(y)), tf.reduce_sum(tf.sin(want))
    np.testing.assert_allclose(y.numpy(), want.numpy(), rtol=1e-9, atol=1e-9)
    for a, b in zip(tape.gradient(loss_y, variables), tape.gradient(loss_want, variables)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_batchnorm_scale_is_a_product_of_the_output(affine, fused, training, rng):
    """BN(x, scale=s) is s * BN(x), with the same gradients for x, s and the BN's own weights."""
    x = tf.constant(rng.normal(loc=1.0, size=(3, 4, 4, 5)), tf.float32)
    s = tf.constant(0.37)
    bn = BatchNorm(affine=affine, fused=fused)
    bn.build(x.shape)
    if affine:
        bn.gamma.assign(rng.uniform(0.5, 1.5, 5))
        bn.beta.assign(rng.normal(size=5))
    bn.moving_mean.assign(rng.normal(size=5))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 5))
    results = []
    for folded in (True, False):
        with tf.GradientTape() as tape:
            tape.watch([x, s])
            frozen = {"training": training, "update_statistics": False}
            y = bn(x, scale=s, **frozen) if folded else s * bn(x, **frozen)
            loss = tf.reduce_sum(tf.sin(y))
        results.append([y, *tape.gradient(loss, [x, s, *bn.trainable_variables])])
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    assert abs(float(results[0][2])) > 1e-3


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_local_moments_values_gradients_and_second_derivatives_are_the_plain_formulas(dtype):
    """A replica's [mean, biased variance] and their written-out derivatives (float32: forward and backward
    by fused kernels) against NumPy's values and autodiff of the plain formulas, traced with an unknown
    batch (as the shared edge functions are): values, gradient, Hessian-vector product."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(loc=0.7, size=(3, 4, 5, 2)), dtype)
    v, w = tf.constant(rng.normal(size=x.shape), dtype), tf.constant(rng.normal(size=(4,)), dtype)

    def plain(x):
        mean = tf.reduce_mean(x, axis=[0, 1, 2])
        return tf.concat([mean, tf.reduce_mean(tf.square(x - mean), axis=[0, 1, 2])], 0)

    def derivatives(moments):
        @tf.function(input_signature=[tf.TensorSpec([None, 4, 5, 2], dtype)], autograph=False)
        def run(x):
            with tf.GradientTape() as outer:
                outer.watch(x)
                with tf.GradientTape() as inner:
                    inner.watch(x)
                    y = moments(x)
                    loss = tf.reduce_sum(tf.sin(y) * w)
                g = inner.gradient(loss, x)
                gv = tf.reduce_sum(g * v)
            return y, g, outer.gradient(gv, x)

        return [t.numpy() for t in run(x)]

    ours, reference = derivatives(lambda x: tf.concat(local_moments(x), 0)), derivatives(plain)
    tolerance = {"float64": 1e-12, "float32": 1e-5}[dtype]
    flat = x.numpy().astype(np.float64).reshape(-1, 2)
    np.testing.assert_allclose(ours[0], np.concatenate([flat.mean(0), flat.var(0)]), rtol=tolerance)
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance * np.abs(b).max())
    assert np.abs(reference[2]).max() > 1e-3  # the second derivative is not trivially zero


def test_global_statistics_of_replicas_keep_their_digits_far_from_the_moving_mean():
    """The global batch's mean and variance from two replicas' `local_moments` (stacked as `replicas.gather`
    returns them) equal NumPy's over the whole batch in float32, for channels whose mean is 1,000 times
    their spread and far from the moving mean (the first steps of a run): moments about a fixed point
    (E[d^2] - E[d]^2) came out 23 % and 94 % off there."""
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[1000.0, -300.0, 0.5], scale=[1.0, 0.1, 2.0], size=(8, 3, 3, 3)).astype("float32")
    gathered = tf.stack([tf.concat(local_moments(tf.constant(half)), 0) for half in (x[:4], x[4:])])
    mean, variance = global_statistics(gathered)
    flat = x.astype(np.float64).reshape(-1, 3)
    np.testing.assert_allclose(mean.numpy(), flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(variance.numpy(), flat.var(0), rtol=1e-5)


def test_conv_7x1_1x7_against_a_direct_computation():
    """1x7 conv (stride 1 x s, pad 0 x 3), 7x1 conv (stride s x 1, pad 3 x 0), checked in NumPy."""
    rng = np.random.default_rng(0)
    for stride in (1, 2):
        op = make_op("conv_7x1_1x7", 3, stride, affine=True, dtype="float64")
        x = rng.normal(size=(2, 9, 9, 3))
        op.build(x.shape)
        assert [tuple(v.shape) for v in op.trainable_variables][:2] == [(1, 7, 3, 3), (7, 1, 3, 3)]
        y = op(tf.constant(x), training=False).numpy()  # fresh BN statistics: y = x / sqrt(1 + eps)
        a, b = op.kernel_1xk.numpy(), op.kernel_kx1.numpy()
        h = np.pad(np.maximum(x, 0), [(0, 0), (0, 0), (3, 3), (0, 0)])
        mid = np.stack([np.einsum("nhwc,wcd->nhd", h[:, :, j : j + 7], a[0]) for j in range(0, 9, stride)], axis=2)
        mid = np.pad(mid, [(0, 0), (3, 3), (0, 0), (0, 0)])
        out = np.stack([np.einsum("nhwc,hcd->nwd", mid[:, i : i + 7], b[:, 0]) for i in range(0, 9, stride)], axis=1)
        np.testing.assert_allclose(y, out / np.sqrt(1 + 1e-5), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("size", [8, 7])
def test_stride_2_max_pool_mirror_padding_equals_minus_infinity_padding(size, training):
    """The stride-1 pool subsampled every other pixel (training: `subsample`; inference: a slice, which
    LiteRT runs fast) gives -inf padding's values and gradients, ties too."""
    from darts_tf.cnn.ops import Pool

    rng = np.random.default_rng(size)
    x = tf.constant(rng.integers(0, 3, size=(2, size, size, 3)).astype("float32"))  # many ties
    upstream = tf.constant(rng.normal(size=(2, (size + 1) // 2, (size + 1) // 2, 3)).astype("float32"))
    padded = lambda t: tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=float("-inf"))  # noqa: E731
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = Pool("max", 3, 2)(x, training=training)
        reference = tf.nn.max_pool2d(padded(x), 3, 2, "VALID")
        loss_ours, loss_reference = tf.reduce_sum(ours * upstream), tf.reduce_sum(reference * upstream)
    np.testing.assert_array_equal(ours.numpy(), reference.numpy())
    np.testing.assert_array_equal(tape.gradient(loss_ours, x).numpy(), tape.gradient(loss_reference, x).numpy())


def test_fused_normalize_has_the_composite_formulas_first_and_second_derivatives():
    """The replicas' normalisation with given statistics: one fused kernel forward, a written-out backward;
    gradients in x, mean, variance, scale, offset and a Hessian-vector product equal the composite formula's."""
    from darts_tf.cnn.ops import fused_normalize

    rng = np.random.default_rng(0)
    x, w = (tf.constant(rng.normal(2, 3, size=(4, 5, 5, 3)), tf.float32) for _ in range(2))
    mean, scale, offset = (tf.constant(rng.normal(size=3), tf.float32) for _ in range(3))
    variance = tf.constant(rng.uniform(0.5, 2, size=3), tf.float32)
    inputs = [x, mean, variance, scale, offset]

    def derivatives(normalize):
        with tf.GradientTape() as outer:
            outer.watch(inputs)
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                loss = tf.reduce_sum(tf.sin(normalize(*inputs)) * w)
            grads = tape.gradient(loss, inputs)
            product = tf.add_n([tf.reduce_sum(g * tf.ones_like(g) * 0.3) for g in grads])
        return [y.numpy() for y in grads + outer.gradient(product, inputs)]

    fused = derivatives(lambda *a: fused_normalize(*a, 1e-5))
    composite = derivatives(lambda x, m, v, g, b: (x - m) * (tf.math.rsqrt(v + 1e-5) * g) + b)
    for a, b in zip(fused, composite, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4 * np.max(np.abs(b)))

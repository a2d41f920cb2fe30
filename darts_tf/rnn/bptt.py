"""The recurrent cells' training passes over a sequence, their backward passes written out.

`discrete_cell_sequence` (a genotype's cell, the training run) and `search_cell_sequence` (the
search cell with its BatchNorms, every pass of the search). For the discrete cell, automatic
differentiation of the time loop computes each weight's gradient as one product per time step,
[nhid, B] x [B, 2 nhid] with B the batch (a thin product, slow on a CPU), and adds the products
up step by step. Here the backward loop only carries the state gradients back in time and keeps
every node's pre-activation gradients; a node's weight gradient is then one product per 8 time
steps, [nhid, 8 B] x [8 B, 2 nhid] (a chunk's gradients are all that is held), and W0's one
product over the whole sequence. The input half of W0 is applied to the whole sequence at once,
before the loop and, for its gradients, after it. For the search cell (batch 256: its per-step
products are not thin) the point is the graph: see `search_cell_sequence`. The values are the
original's (its cells, rnn/model.py and model_search.py, in training mode), to the order of the
sums (float rounding); `tests/test_rnn_parity_torch.py` checks the losses and every gradient in
float64. First derivatives only: nothing in darts_tf differentiates a recurrent cell twice (the
second-order search's Hessian-vector product is a finite difference of first derivatives).

Reference: Liu, Simonyan & Yang, ICLR 2019 (arXiv:1806.09055), Sec. 2.1 (the recurrent cell);
Werbos, "Backpropagation through time: what it does and how to do it", Proc. IEEE 1990.
"""

from __future__ import annotations

import tensorflow as tf

from darts_tf.precision import wide_dtype
from darts_tf.rnn.genotypes import RecurrentGenotype

# The cell's activations by name, each with its derivative expressed through its output f (None: 1);
# `darts_tf.rnn.model` takes its activations from here.
ACTIVATIONS = {
    "tanh": (tf.tanh, lambda f: 1.0 - tf.square(f)),
    "sigmoid": (tf.sigmoid, lambda f: f * (1.0 - f)),
    "relu": (tf.nn.relu, lambda f: tf.cast(f > 0, f.dtype)),
    "identity": (tf.identity, None),  # slope 1
}


_CHUNK = 8  # time steps per node-weight gradient product (at batch 64, 512 rows: near a long product's speed)


def _add(total, term):
    return term if total is None else total + term


def _input_projection(inputs, x_mask, W0, nhid: int):
    """(W0's input half, its hidden half, the masked inputs, their product with the input half [T] x [B, 2 nhid]
    as a TensorArray): the input half applied to the whole sequence at once, before the time loop."""
    ninp = W0.shape[0] - nhid
    length, batch = tf.shape(inputs)[0], tf.shape(inputs)[1]
    Wx, Wh = W0[:ninp], W0[ninp:]
    x_masked = inputs * x_mask
    projected = tf.reshape(tf.matmul(tf.reshape(x_masked, [-1, ninp]), Wx), [length, batch, 2 * nhid])
    return Wx, Wh, x_masked, tf.TensorArray(inputs.dtype, size=length).unstack(projected)


def discrete_cell_sequence(
    genotype: RecurrentGenotype, inputs, hidden, x_mask, h_mask, W0, Ws
) -> tuple[tf.Tensor, tf.Tensor]:
    """(outputs [T, B, nhid], last hidden state [B, nhid]) of the discrete cell run over `inputs`
    [T, B, ninp] from `hidden` [B, nhid] in training mode, with the dropout masks `x_mask` [B, ninp]
    and `h_mask` [B, nhid] and the weights `W0` [ninp + nhid, 2 nhid], `Ws` (one [nhid, 2 nhid] per
    node); differentiable in inputs, hidden and the weights (not the masks).
    """
    names = [name for name, _ in genotype.recurrent]
    predecessors = [predecessor for _, predecessor in genotype.recurrent]
    concat = list(genotype.concat)
    nodes = len(names) + 1  # s0 and the genotype's nodes
    if len(Ws) != len(names):
        raise ValueError(f"discrete_cell_sequence expected one W per node ({len(names)}). Received: {len(Ws)} Ws")

    @tf.custom_gradient
    def run(inputs, hidden, x_mask, h_mask, W0, *Ws):
        dtype = inputs.dtype
        nhid = Ws[0].shape[0]
        length = tf.shape(inputs)[0]
        Wx, Wh, x_masked, projected = _input_projection(inputs, x_mask, W0, nhid)

        kept = sorted(set(predecessors))  # the states the backward pass reads: the nodes' inputs

        def new_arrays(count):  # read in the backward loop, stacked after it (kept when read, when eager)
            return [tf.TensorArray(dtype, size=length, clear_after_read=False) for _ in range(count)]

        def step(t, h_prev, outputs, states, gates, activations):
            c, f = tf.split(projected.read(t) + tf.matmul(h_prev * h_mask, Wh), 2, axis=-1)
            c, f = tf.sigmoid(c), tf.tanh(f)
            s = [h_prev + c * (f - h_prev)]
            cs, fs = [c], [f]
            for i, (name, predecessor) in enumerate(zip(names, predecessors)):
                s_prev = s[predecessor]
                c, f = tf.split(tf.matmul(s_prev * h_mask, Ws[i]), 2, axis=-1)
                c, f = tf.sigmoid(c), ACTIVATIONS[name][0](f)
                s.append(s_prev + c * (f - s_prev))
                cs.append(c)
                fs.append(f)
            h = tf.reduce_mean(tf.stack([s[j] for j in concat], axis=0), axis=0)
            write = lambda arrays, values: [a.write(t, v) for a, v in zip(arrays, values)]  # noqa: E731
            states = write(states, [s[j] for j in kept])
            return t + 1, h, outputs.write(t, h), states, write(gates, cs), write(activations, fs)

        _, last, outputs, states, gates, activations = tf.while_loop(
            lambda t, *_: t < length, step,
            (tf.constant(0), hidden, tf.TensorArray(dtype, size=length), new_arrays(len(kept)), new_arrays(nodes),
             new_arrays(nodes)),
        )  # fmt: skip
        outputs = outputs.stack()

        def grad(d_outputs, d_last):
            d_outputs = tf.zeros_like(outputs) if d_outputs is None else d_outputs
            d_last = tf.zeros_like(last) if d_last is None else d_last
            previous = tf.concat([hidden[None], outputs[:-1]], axis=0)  # h_{t-1} at every t
            previous_array = tf.TensorArray(dtype, size=length).unstack(previous)
            d_outputs_array = tf.TensorArray(dtype, size=length).unstack(d_outputs)
            share = tf.cast(1.0 / len(concat), dtype)

            def back(t, dh, first, d_pre0, d_pre):
                dh = dh + d_outputs_array.read(t)
                s = {j: a.read(t) for j, a in zip(kept, states)}
                cs = [a.read(t) for a in gates]
                fs = [a.read(t) for a in activations]
                ds = [None] * nodes  # the loss's gradients in s0 and the nodes at t
                for j in concat:
                    ds[j] = _add(ds[j], dh * share)
                pre = [None] * nodes  # ... and in their pre-activations [c, h]
                for node in range(nodes - 1, 0, -1):  # a node's successors come after it
                    if ds[node] is None:
                        continue
                    i, predecessor = node - 1, predecessors[node - 1]
                    s_prev, c, f, d = s[predecessor], cs[node], fs[node], ds[node]
                    slope = ACTIVATIONS[names[i]][1]
                    df = d * c if slope is None else d * c * slope(f)
                    pre[node] = tf.concat([d * (f - s_prev) * c * (1.0 - c), df], axis=-1)
                    through = tf.matmul(pre[node], Ws[i], transpose_b=True) * h_mask
                    ds[predecessor] = _add(ds[predecessor], d * (1.0 - c) + through)
                h_prev, c, f = previous_array.read(t), cs[0], fs[0]
                d = ds[0] if ds[0] is not None else tf.zeros_like(h_prev)
                pre[0] = tf.concat([d * (f - h_prev) * c * (1.0 - c), d * c * (1.0 - tf.square(f))], axis=-1)
                dh = d * (1.0 - c) + tf.matmul(pre[0], Wh, transpose_b=True) * h_mask
                d_pre = [a.write(t - first, tf.zeros_like(pre[0]) if p is None else p) for a, p in zip(d_pre, pre[1:])]
                return t - 1, dh, first, d_pre0.write(t, pre[0]), d_pre

            flat = lambda x: tf.reshape(x, [-1, x.shape[-1]])  # noqa: E731
            wide = wide_dtype(dtype)  # the node weights' gradients are summed over the chunks in it
            masked = {j: tf.reshape(a.stack() * h_mask, [length, -1]) for j, a in zip(kept, states)}  # [T, B nhid]
            X = [masked[j] for j in predecessors]  # the nodes' inputs, as the forward pass masked them

            def chunk(stop, dh, d_pre0, dWs):
                # Steps [first, stop) back in time, then their share of each node's W gradient in one product.
                first = tf.maximum(stop - _CHUNK, 0)
                d_pre = [tf.TensorArray(dtype, size=stop - first) for _ in range(nodes - 1)]
                _, dh, _, d_pre0, d_pre = tf.while_loop(
                    lambda t, *_: t >= first, back, (stop - 1, dh, first, d_pre0, d_pre)
                )
                dWs = [
                    dW + tf.cast(tf.matmul(tf.reshape(x[first:stop], [-1, nhid]), flat(g.stack()), transpose_a=True),
                                 dW.dtype)
                    for dW, x, g in zip(dWs, X, d_pre)
                ]  # fmt: skip
                return first, dh, d_pre0, dWs

            _, d_hidden, d_pre0, dWs = tf.while_loop(
                lambda stop, *_: stop > 0, chunk,
                (length, d_last, tf.TensorArray(dtype, size=length), [tf.zeros(W.shape, wide) for W in Ws]),
            )  # fmt: skip
            dWs = [tf.cast(dW, dtype) for dW in dWs]
            d_pre0 = flat(d_pre0.stack())  # [T B, 2 nhid]
            dWx = tf.matmul(flat(x_masked), d_pre0, transpose_a=True)
            dWh = tf.matmul(flat(previous * h_mask), d_pre0, transpose_a=True)
            d_inputs = tf.reshape(tf.matmul(d_pre0, Wx, transpose_b=True), tf.shape(inputs)) * x_mask
            return (d_inputs, d_hidden, None, None, tf.concat([dWx, dWh], axis=0), *dWs)

        return (outputs, last), grad

    return run(inputs, hidden, x_mask, h_mask, W0, *Ws)


def _offsets(steps: int) -> list:
    """Node i's rows of the search cell's probs: offsets[i]..offsets[i + 1] (its inputs s_0..s_i)."""
    return [i * (i + 1) // 2 for i in range(steps + 1)]


def search_ops(primitives) -> tuple[list, list]:
    """(the columns of `primitives` other than `none`, their (activation, slope) pairs in `ACTIVATIONS`)."""
    active = [k for k, name in enumerate(primitives) if name != "none"]
    return active, [ACTIVATIONS[primitives[k]] for k in active]


def search_node_weights(probs, primitives, steps: int) -> list:
    """Per search node i: (the weights of its inputs' non-`none` ops [i + 1, 1, 1, ops], their sum
    [i + 1, 1, 1]), cut from `probs` [num_edges, len(primitives)] once per sequence, outside the time loop."""
    offsets = _offsets(steps)
    if probs.shape[0] != offsets[-1]:
        raise ValueError(
            f"The search cell expected probs with {offsets[-1]} rows for {steps} nodes. "
            f"Received: probs.shape={probs.shape}"
        )
    chosen = tf.gather(probs, search_ops(primitives)[0], axis=1)
    nodes = []
    for i in range(steps):
        w = chosen[offsets[i] : offsets[i + 1], None, None, :]
        nodes.append((w, tf.reduce_sum(w, axis=-1)))
    return nodes


def search_node(states, masked, W, node_weights, functions) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(a search node before its BatchNorm [B, nhid], its gates c = sigmoid(c') and h' [i + 1, B, nhid]) from its
    inputs `states` [i + 1, B, nhid] (`masked`: as the product sees them) and its W [nhid, 2 nhid].

    The original's sum over inputs j and ops k of w_jk * (s_j + c_j * (f_k(h'_j) - s_j)), with
    [c'_j, h'_j] = masked_j W, gathered per input: W_j s_j + c_j * (G_j - W_j s_j), W_j = sum_k w_jk,
    G_j = sum_k w_jk f_k(h'_j): the same sum in fewer element-wise kernels.
    """
    nhid = W.shape[0]
    ch = tf.matmul(tf.reshape(masked, [-1, nhid]), W)
    c, h = tf.split(tf.reshape(ch, [states.shape[0], -1, 2 * nhid]), 2, axis=-1)
    c = tf.sigmoid(c)
    w, total = node_weights
    gathered = tf.add_n([w[..., k] * f(h) for k, (f, _) in enumerate(functions)])
    kept = total * states
    return tf.reduce_sum(kept + c * (gathered - kept), axis=0), c, h


def _batch_norm_forward(x, statistics, momentum: float, epsilon: float):
    """(x normalised by its batch statistics, 1 / sqrt(variance + epsilon), the moving statistics updated),
    in `x`'s wide type, as PyTorch's BatchNorm1d(affine=False) in training mode."""
    mean = tf.reduce_mean(x, axis=0)
    variance = tf.reduce_mean(tf.square(x - mean), axis=0)  # biased, for normalising
    n = tf.cast(tf.shape(x)[0], x.dtype)
    moving_mean, moving_variance = statistics
    statistics = (
        (1.0 - momentum) * moving_mean + momentum * mean,
        (1.0 - momentum) * moving_variance + momentum * variance * n / (n - 1.0),  # unbiased
    )
    inverse = tf.math.rsqrt(variance + epsilon)
    return (x - mean) * inverse, inverse, statistics


def _batch_norm_backward(d_normalised, normalised, inverse):
    """The gradient in BatchNorm's input from the one in its output (batch statistics, no affine)."""
    mean_d = tf.reduce_mean(d_normalised, axis=0)
    mean_dx = tf.reduce_mean(d_normalised * normalised, axis=0)
    return inverse * (d_normalised - mean_d - normalised * mean_dx)


def search_cell_sequence(
    inputs, hidden, probs, x_mask, h_mask, W0, Ws, statistics, primitives, momentum: float, epsilon: float
) -> tuple[tf.Tensor, tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
    """(outputs [T, B, nhid], last hidden state [B, nhid], the moving BatchNorm statistics after the sequence)
    of the search cell run over `inputs` [T, B, ninp] from `hidden` [B, nhid] in training mode.

    Node i + 1 sums over its inputs j <= i and the activations k of `primitives` (`none` adds
    nothing) w_jk * (s_j + c_j * (f_k(h_j) - s_j)), with [c_j, h_j] = (s_j * h_mask) W_{i+1} and w
    the rows of `probs` [num_edges, len(primitives)] (softmax of the alphas); s0 and every node
    pass through BatchNorm1d(affine=False) with the batch's statistics; `statistics` (moving mean,
    moving variance, in the wide type) are updated with `momentum` as PyTorch does. Differentiable
    in inputs, hidden, probs and the weights (not the masks, nor the statistics); under a mixed policy
    `probs` and the weights may come in float32 (cast inside), and take float32 gradients.

    The forward loop keeps each step's states, gates, pre-activations and BatchNorm scales; the
    backward loop carries the state gradients back in time, recomputing the activations. Under a
    mixed policy the BatchNorms, their gradients and the sums of the weights' and probs' gradients
    over time run in float32. Automatic differentiation of the time loop computes the same values to
    the order of the sums, but while_v2 builds that gradient anew at every call (an accumulator
    captured per forward value): five times per second-order step, most of its trace, with 1.7x the
    memory (docs/performance.md).
    """
    active, functions = search_ops(primitives)
    steps = len(Ws)
    offsets = _offsets(steps)

    @tf.custom_gradient
    def run(inputs, hidden, probs_in, x_mask, h_mask, W0_in, *Ws_in):
        # The weights and probs come in float32 under a mixed policy and take float32 gradients, summed so.
        dtype = inputs.dtype
        wide = wide_dtype(dtype)
        probs, W0, Ws = tf.cast(probs_in, dtype), tf.cast(W0_in, dtype), [tf.cast(W, dtype) for W in Ws_in]
        nhid = Ws[0].shape[0]
        length = tf.shape(inputs)[0]
        Wx, Wh, x_masked, projected = _input_projection(inputs, x_mask, W0, nhid)
        node_weights = search_node_weights(probs, primitives, steps)

        def normalised(x, statistics):
            x, inverse, statistics = _batch_norm_forward(tf.cast(x, wide), statistics, momentum, epsilon)
            return tf.cast(x, dtype), inverse, statistics

        def new_array(d=dtype):
            return tf.TensorArray(d, size=length, clear_after_read=False)

        def step(t, h_prev, mean, variance, outputs, states, inverses, gates, pre, first):
            c0, f0 = tf.split(projected.read(t) + tf.matmul(h_prev * h_mask, Wh), 2, axis=-1)
            c0, f0 = tf.sigmoid(c0), tf.tanh(f0)
            s, inverse, statistics = normalised(h_prev + c0 * (f0 - h_prev), (mean, variance))
            s, inv, cs, hs = [s], [inverse], [], []
            for i in range(steps):
                S = tf.stack(s, axis=0)  # [i + 1, B, nhid]
                node, c, h = search_node(S, S * h_mask, Ws[i], node_weights[i], functions)
                node, inverse, statistics = normalised(node, statistics)
                s.append(node)
                inv.append(inverse)
                cs.append(c)
                hs.append(h)
            h = tf.reduce_mean(tf.stack(s[1:], axis=0), axis=0)  # nodes 1..steps (the original's CONCAT)
            return (
                t + 1, h, *statistics, outputs.write(t, h), states.write(t, tf.stack(s, axis=0)),
                inverses.write(t, tf.stack(inv, axis=0)), gates.write(t, tf.concat(cs, axis=0)),
                pre.write(t, tf.concat(hs, axis=0)), first.write(t, tf.stack([c0, f0], axis=0)),
            )  # fmt: skip

        mean, variance = (tf.cast(x, wide) for x in statistics)
        loop = tf.while_loop(
            lambda t, *_: t < length, step,
            (tf.constant(0), hidden, mean, variance, tf.TensorArray(dtype, size=length), new_array(),
             new_array(wide), new_array(), new_array(), new_array()),
        )  # fmt: skip
        _, last, mean, variance, outputs, states, inverses, gates, pre, first = loop
        outputs = outputs.stack()

        def grad(d_outputs, d_last, d_mean, d_variance):
            del d_mean, d_variance  # the moving statistics take no gradient
            d_outputs = tf.zeros_like(outputs) if d_outputs is None else d_outputs
            d_last = tf.zeros_like(last) if d_last is None else d_last
            previous = tf.concat([hidden[None], outputs[:-1]], axis=0)  # h_{t-1} at every t
            previous_array = tf.TensorArray(dtype, size=length).unstack(previous)
            d_outputs_array = tf.TensorArray(dtype, size=length).unstack(d_outputs)
            share = tf.cast(1.0 / steps, dtype)

            def back(t, dh, d_pre0, d_probs, dWs):
                dh = dh + d_outputs_array.read(t)
                S_all, inv = states.read(t), inverses.read(t)
                C, H = gates.read(t), pre.read(t)
                c0, f0 = tf.unstack(first.read(t), axis=0)
                ds = [None] + [dh * share] * steps  # the loss's gradients in the normalised states at t
                d_rows = [None] * steps
                dWs = list(dWs)
                for i in range(steps - 1, -1, -1):
                    dr = _batch_norm_backward(tf.cast(ds[i + 1], wide), tf.cast(S_all[i + 1], wide), inv[i + 1])
                    dr = tf.cast(dr, dtype)[None]  # [1, B, nhid]
                    S = S_all[: i + 1]
                    c, h = C[offsets[i] : offsets[i + 1]], H[offsets[i] : offsets[i + 1]]
                    w, total = node_weights[i]
                    fs = [f(h) for f, _ in functions]
                    gathered = tf.add_n([w[..., k] * f for k, f in enumerate(fs)])
                    kept = total * S
                    d_kept = dr * (1.0 - c)
                    d_gathered = dr * c
                    d_c = dr * (gathered - kept) * c * (1.0 - c)
                    slope_sum = None  # sum_k w_jk f_k'(h_j); the identity's slope is 1
                    for k, (f, (_, slope)) in enumerate(zip(fs, functions)):
                        slope_sum = _add(slope_sum, w[..., k] if slope is None else w[..., k] * slope(f))
                    d_h = d_gathered * slope_sum
                    # d w_jk = sum over batch and channels of d_gathered * f_k(h_j) + d_kept * s_j
                    through_total = tf.reduce_sum(tf.cast(d_kept * S, wide), axis=[1, 2])
                    d_rows[i] = tf.stack(
                        [tf.reduce_sum(tf.cast(d_gathered * f, wide), axis=[1, 2]) + through_total for f in fs], axis=1
                    )  # [i + 1, active ops]
                    d_ch = tf.reshape(tf.concat([d_c, d_h], axis=-1), [-1, 2 * nhid])
                    dWs[i] = dWs[i] + tf.cast(
                        tf.matmul(tf.reshape(S * h_mask, [-1, nhid]), d_ch, transpose_a=True), wide
                    )
                    d_S = d_kept * total + tf.reshape(tf.matmul(d_ch, Ws[i], transpose_b=True), tf.shape(S)) * h_mask
                    for j in range(i + 1):
                        ds[j] = d_S[j] if ds[j] is None else ds[j] + d_S[j]
                d = tf.cast(_batch_norm_backward(tf.cast(ds[0], wide), tf.cast(S_all[0], wide), inv[0]), dtype)
                h_prev = previous_array.read(t)
                pre0 = tf.concat([d * (f0 - h_prev) * c0 * (1.0 - c0), d * c0 * (1.0 - tf.square(f0))], axis=-1)
                dh = d * (1.0 - c0) + tf.matmul(pre0, Wh, transpose_b=True) * h_mask
                d_probs = d_probs + tf.concat(d_rows, axis=0)
                return t - 1, dh, d_pre0.write(t, pre0), d_probs, dWs

            _, d_hidden, d_pre0, d_active, dWs = tf.while_loop(
                lambda t, *_: t >= 0, back,
                (length - 1, d_last, tf.TensorArray(dtype, size=length), tf.zeros([offsets[-1], len(active)], wide),
                 [tf.zeros(W.shape, wide) for W in Ws]),
            )  # fmt: skip
            flat = lambda x: tf.reshape(x, [-1, x.shape[-1]])  # noqa: E731
            d_pre0 = flat(d_pre0.stack())  # [T B, 2 nhid]
            d_inputs = tf.reshape(tf.matmul(d_pre0, Wx, transpose_b=True), tf.shape(inputs)) * x_mask
            d_pre0 = tf.cast(d_pre0, wide)
            dWx = tf.matmul(tf.cast(flat(x_masked), wide), d_pre0, transpose_a=True)
            dWh = tf.matmul(tf.cast(flat(previous * h_mask), wide), d_pre0, transpose_a=True)
            d_probs = tf.scatter_nd(
                [[k] for k in active], tf.transpose(d_active), [probs.shape[1], offsets[-1]]
            )  # the `none` column: zero
            return (
                d_inputs, d_hidden, tf.cast(tf.transpose(d_probs), probs_in.dtype), None, None,
                tf.cast(tf.concat([dWx, dWh], axis=0), W0_in.dtype),
                *[tf.cast(dW, W.dtype) for dW, W in zip(dWs, Ws_in)],
            )  # fmt: skip

        return (outputs, last, mean, variance), grad

    outputs, last, mean, variance = run(inputs, hidden, probs, x_mask, h_mask, W0, *Ws)
    return outputs, last, (mean, variance)

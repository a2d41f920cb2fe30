"""The discrete recurrent cell's training pass over a sequence, its backward pass written out.

Automatic differentiation of the time loop computes each weight's gradient as one product
per time step, [nhid, B] x [B, 2 nhid] with B the batch (a thin product, slow on a CPU), and
adds the products up step by step. Here the backward loop only carries the state gradients
back in time and keeps every node's pre-activation gradients; a node's weight gradient is then
one product per 8 time steps, [nhid, 8 B] x [8 B, 2 nhid] (a chunk's gradients are all that
is held), and W0's one product over the whole sequence. The input half of W0 is applied to the
whole sequence at once, before the loop and, for its gradients, after it. The values are the
original's (its cell, rnn/model.py, in training mode), to the order of the sums (float
rounding); `tests/test_rnn_parity_torch.py` checks the loss and every gradient in float64.
First derivatives only: nothing in darts_tf differentiates the discrete cell twice.

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
        ninp = W0.shape[0] - nhid
        length, batch = tf.shape(inputs)[0], tf.shape(inputs)[1]
        Wx, Wh = W0[:ninp], W0[ninp:]
        x_masked = inputs * x_mask
        projected = tf.reshape(tf.matmul(tf.reshape(x_masked, [-1, ninp]), Wx), [length, batch, 2 * nhid])
        projected = tf.TensorArray(dtype, size=length).unstack(projected)

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

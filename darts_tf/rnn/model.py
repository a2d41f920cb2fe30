"""The recurrent DARTS cell (search and discrete) and its language model (Penn Treebank).

The computation is the original's (quark0/darts rnn/model.py and model_search.py):
node 0 is s0 = h + sigmoid(c0) * (tanh(h0) - h) with [c0, h0] = [x, h] W0; node i + 1
takes predecessor states s_j through [c, h'] = s_j W_{i+1} and s = s_j + sigmoid(c) *
(f(h') - s_j); the cell output h_t is the mean of nodes 1..8. In search every node sums
all its predecessors and all activations, weighted by softmax(alphas), with one W per
node shared by its incoming edges, and a non-affine BatchNorm after s0 and every node.
Dropout masks: on x and h inside the cell (one mask per sequence), variational (locked)
dropout on the embeddings and the outputs, and embedding dropout (whole words).

Tensors are time-major, [time, batch, ...], as the original; tokens are int32.

Reference: Liu, Simonyan & Yang, ICLR 2019 (arXiv:1806.09055), Sec. 2.1, 3.1.2;
Merity, Keskar & Socher, "Regularizing and Optimizing LSTM Language Models" (arXiv:1708.02182)
for the dropouts, AR/TAR and averaged SGD.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from darts_tf.architect import cross_entropy
from darts_tf.errors import ConfigError
from darts_tf.precision import to_float32, wide_dtype
from darts_tf.rnn.bptt import (
    ACTIVATIONS,
    discrete_cell_sequence,
    search_cell_sequence,
    search_node,
    search_node_weights,
    search_ops,
)
from darts_tf.rnn.genotypes import PRIMITIVES, STEPS, RecurrentGenotype, derive_recurrent_genotype, num_edges

INIT_RANGE = 0.04
BN_MOMENTUM, BN_EPSILON = 0.1, 1e-5  # PyTorch's BatchNorm1d defaults

_ACTIVATIONS = {name: f for name, (f, _) in ACTIVATIONS.items()}
_SEARCH_FUNCTIONS = search_ops(PRIMITIVES)[1]


def _uniform():
    return keras.initializers.RandomUniform(-INIT_RANGE, INIT_RANGE)


def dropout_mask(seed, shape, rate: float, dtype) -> tf.Tensor:
    """A 0 or 1 / (1 - rate) mask, a pure function of the stateless `seed` (int32 [2]); drawn and formed in
    float32 (or float64) and then cast, so a half-precision network drops what a float32 one drops."""
    keep = 1.0 - rate
    uniform = tf.random.stateless_uniform(shape, seed, dtype=wide_dtype(dtype))
    return tf.cast(tf.floor(uniform + keep) / keep, dtype)


def _with_genotype(config: dict) -> dict:
    """A layer config with its genotype dict turned back into a `RecurrentGenotype`."""
    config = dict(config)
    if config.get("genotype") is not None:
        config["genotype"] = RecurrentGenotype.from_dict(config["genotype"])
    return config


@keras.saving.register_keras_serializable(package="darts_tf")
class RecurrentCell(keras.layers.Layer):
    """A DARTS recurrent cell run over a sequence (arXiv:1806.09055, Sec. 2.1, Fig. 1/6).

    With a `genotype` it is the discrete cell; without, the search cell, whose call takes
    the op weights `probs` [num_edges, 5] (softmax of the alphas).

    Args:
        ninp: input size.
        nhid: hidden size.
        genotype: a `RecurrentGenotype`, or None for the search cell.
        steps: nodes after s0 (the search cell's; a genotype brings its own).
    """

    def __init__(self, ninp, nhid, genotype=None, steps=STEPS, **kwargs):
        super().__init__(**kwargs)
        self.ninp = ninp
        self.nhid = nhid
        self.genotype = genotype
        self.steps = genotype.steps if genotype is not None else steps

    def build(self, input_shape=None):
        # Read in float32 under a mixed policy (cast where used): the search cell's gradients in them are
        # summed over the sequence in float32.
        self.W0 = self.add_weight(name="W0", shape=(self.ninp + self.nhid, 2 * self.nhid), initializer=_uniform(),
                                  autocast=False)  # fmt: skip
        self.Ws = [
            self.add_weight(name=f"W{i + 1}", shape=(self.nhid, 2 * self.nhid), initializer=_uniform(), autocast=False)
            for i in range(self.steps)
        ]
        if self.genotype is None:  # BatchNorm1d(nhid, affine=False), shared by s0 and every node; float32 reads
            self.moving_mean = self.add_weight(name="moving_mean", shape=(self.nhid,), initializer="zeros",
                                               trainable=False, autocast=False)  # fmt: skip
            self.moving_variance = self.add_weight(name="moving_variance", shape=(self.nhid,), initializer="ones",
                                                   trainable=False, autocast=False)  # fmt: skip

    def _batch_norm(self, x):
        # Evaluation: the moving statistics, in float32 under a mixed policy.
        dtype, x = x.dtype, tf.cast(x, wide_dtype(x.dtype))
        mean, variance = tf.cast(self.moving_mean, x.dtype), tf.cast(self.moving_variance, x.dtype)
        return tf.cast((x - mean) * tf.math.rsqrt(variance + BN_EPSILON), dtype)

    def _step(self, x, h_prev, node_weights):
        """The cell at one time step in evaluation mode (no dropout; the search cell's moving statistics)."""
        c0, h0 = tf.split(tf.matmul(tf.concat([x, h_prev], axis=-1), tf.cast(self.W0, x.dtype)), 2, axis=-1)
        s0 = h_prev + tf.sigmoid(c0) * (tf.tanh(h0) - h_prev)
        if self.genotype is not None:
            states = [s0]
            for i, (name, predecessor) in enumerate(self.genotype.recurrent):
                s_prev = states[predecessor]
                c, h = tf.split(tf.matmul(s_prev, tf.cast(self.Ws[i], x.dtype)), 2, axis=-1)
                states.append(s_prev + tf.sigmoid(c) * (_ACTIVATIONS[name](h) - s_prev))
            return tf.reduce_mean(tf.stack([states[i] for i in self.genotype.concat], axis=0), axis=0)
        states = [self._batch_norm(s0)]
        for i in range(self.steps):
            stacked = tf.stack(states, axis=0)
            s, _, _ = search_node(stacked, stacked, tf.cast(self.Ws[i], x.dtype), node_weights[i], _SEARCH_FUNCTIONS)
            states.append(self._batch_norm(s))
        return tf.reduce_mean(tf.stack(states[1:], axis=0), axis=0)  # nodes 1..steps (the original's CONCAT)

    def call(self, inputs, hidden, probs=None, x_mask=None, h_mask=None, training=False, update_statistics=True):
        """(outputs [T, B, nhid], the last hidden state [B, nhid]) of the sequence `inputs` [T, B, ninp]."""
        if self.genotype is None and probs is None:
            raise ValueError("The search cell needs probs (softmax of the alphas) in its call")
        training = bool(training)
        dtype = inputs.dtype
        searching = self.genotype is None
        if training:  # the backward passes written out (`darts_tf.rnn.bptt`)
            batch = tf.shape(inputs)[1]
            x_mask = tf.ones([batch, self.ninp], dtype) if x_mask is None else x_mask
            h_mask = tf.ones([batch, self.nhid], dtype) if h_mask is None else h_mask
            W0, Ws = tf.cast(self.W0, dtype), [tf.cast(W, dtype) for W in self.Ws]
            if not searching:
                return discrete_cell_sequence(self.genotype, inputs, tf.cast(hidden, dtype), x_mask, h_mask, W0, Ws)
            wide = wide_dtype(dtype)
            statistics = (tf.cast(self.moving_mean, wide), tf.cast(self.moving_variance, wide))
            outputs, h, (mean, variance) = search_cell_sequence(
                inputs, tf.cast(hidden, dtype), probs, x_mask, h_mask, tf.convert_to_tensor(self.W0),
                [tf.convert_to_tensor(W) for W in self.Ws], statistics, PRIMITIVES, BN_MOMENTUM, BN_EPSILON,
            )  # fmt: skip
            if update_statistics:
                self.moving_mean.assign(tf.cast(mean, self.moving_mean.dtype))
                self.moving_variance.assign(tf.cast(variance, self.moving_variance.dtype))
            return outputs, h
        length = tf.shape(inputs)[0]
        # Read through a TensorArray: the gradient of `inputs[t]` would be a zero-filled [T, B, ninp] per step.
        steps_in = tf.TensorArray(dtype, size=length).unstack(inputs)
        node_weights = search_node_weights(tf.cast(probs, dtype), PRIMITIVES, self.steps) if searching else None

        def body(t, h, outputs):
            h = self._step(steps_in.read(t), h, node_weights)
            return t + 1, h, outputs.write(t, h)

        _, h, outputs = tf.while_loop(
            lambda t, *_: t < length, body, (tf.constant(0), tf.cast(hidden, dtype), tf.TensorArray(dtype, size=length))
        )
        return outputs.stack(), h

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "ninp": self.ninp,
                "nhid": self.nhid,
                "genotype": None if self.genotype is None else self.genotype.to_dict(),
                "steps": self.steps,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**_with_genotype(config))


class RNNModel(keras.Model):
    """The DARTS recurrent language model (arXiv:1806.09055, Sec. 3.1.2; the original's RNNModel).

    Embedding (tied to the decoder), locked dropout, one DARTS cell, locked dropout,
    linear decoder and log-softmax. With `genotype=None` it is the search model
    (`RNNModelSearch`): the cell is the search cell and the alphas [36, 5] are a
    variable of the model (`arch_variables`).

    Args:
        ntoken: vocabulary size.
        ninp, nhid: embedding and hidden size (equal, as the original requires).
        dropout, dropouth, dropoutx, dropouti, dropoute: output, hidden, input (inside the
            cell), embedding-output and embedding (whole word) dropout rates.
        genotype: a `RecurrentGenotype`, or None to search.
    """

    def __init__(
        self, ntoken, ninp=850, nhid=850, dropout=0.75, dropouth=0.25, dropoutx=0.75, dropouti=0.2, dropoute=0.1,
        genotype=None, steps=STEPS, **kwargs,
    ):  # fmt: skip
        super().__init__(**kwargs)
        if ninp != nhid:
            raise ConfigError(f"RNNModel expected ninp == nhid (tied weights). Received: ninp={ninp}, nhid={nhid}")
        for name, rate in (("dropout", dropout), ("dropouth", dropouth), ("dropoutx", dropoutx),
                           ("dropouti", dropouti), ("dropoute", dropoute)):  # fmt: skip
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"RNNModel expected {name} in [0, 1). Received: {name}={rate}")
        self.ntoken = ntoken
        self.ninp = ninp
        self.nhid = nhid
        self.dropout = dropout
        self.dropouth = dropouth
        self.dropoutx = dropoutx
        self.dropouti = dropouti
        self.dropoute = dropoute
        self.genotype = genotype
        self.steps = genotype.steps if genotype is not None else steps
        self.cell = RecurrentCell(ninp, nhid, genotype, self.steps, name="cell", dtype=self.dtype_policy)
        self.seed_generator = keras.random.SeedGenerator(0, name="dropout_seeds")

    def build(self, input_shape=None):
        self.embedding = self.add_weight(name="embedding", shape=(self.ntoken, self.ninp), initializer=_uniform())
        # Read in float32 under a mixed policy (added to float32 logits; the softmax of the alphas).
        self.decoder_bias = self.add_weight(name="decoder_bias", shape=(self.ntoken,), initializer="zeros",
                                            autocast=False)  # fmt: skip
        if self.genotype is None:
            self.alphas = self.add_weight(
                name="alphas", shape=(num_edges(self.steps), len(PRIMITIVES)),
                initializer=keras.initializers.RandomNormal(stddev=1e-3), autocast=False,
            )  # fmt: skip
        self.cell.build()
        self.built = True

    @property
    def searching(self) -> bool:
        return self.genotype is None

    @property
    def arch_variables(self) -> list:
        return [self.alphas] if self.searching else []

    @property
    def weight_variables(self) -> list:
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    def init_hidden(self, batch_size: int) -> tf.Tensor:
        return tf.zeros([batch_size, self.nhid], self.compute_dtype)

    def dropout_masks(self, seed, batch) -> dict:
        """The training-mode dropout masks of a batch, a pure function of `seed` (int32 [2]): "word" [ntoken, 1]
        (embedding dropout, whole words), "input" [1, B, ninp] and "output" [1, B, nhid] (locked), "x" [B, ninp]
        and "h" [B, nhid] (inside the cell); None for a rate of 0 (the cell's always a mask)."""
        seed, dtype = tf.cast(seed, tf.int32), self.compute_dtype
        fold = lambda k: tf.random.experimental.stateless_fold_in(seed, k)  # noqa: E731
        return {
            "word": dropout_mask(fold(0), [self.ntoken, 1], self.dropoute, dtype) if self.dropoute else None,
            "input": dropout_mask(fold(1), [1, batch, self.ninp], self.dropouti, dtype) if self.dropouti else None,
            "x": dropout_mask(fold(2), [batch, self.ninp], self.dropoutx, dtype),
            "h": dropout_mask(fold(3), [batch, self.nhid], self.dropouth, dtype),
            "output": dropout_mask(fold(4), [1, batch, self.nhid], self.dropout, dtype) if self.dropout else None,
        }

    def call(self, tokens, hidden, training=False, seed=None, update_statistics=True):
        """{"log_probs", "logits" [T, B, ntoken], "hidden" [B, nhid], "raw_outputs", "outputs" [T, B, nhid]} of
        tokens [T, B].

        `seed` (int32 [2]) makes the training-mode dropout masks a pure function of it
        (a fresh seed from the model's generator when None).
        """
        training = bool(training)
        dtype = self.compute_dtype
        tokens = tf.convert_to_tensor(tokens)
        batch = tf.shape(tokens)[1]
        embedding = tf.cast(self.embedding, dtype)  # also the decoder's weight (tied), never dropped
        masks = {}
        if training:
            masks = self.dropout_masks(self.seed_generator.next() if seed is None else seed, batch)
        emb = tf.gather(embedding, tokens)
        if masks.get("word") is not None:  # the original's embedded_dropout: the masked weight's rows, looked up
            emb = emb * tf.gather(masks["word"], tokens)
        if masks.get("input") is not None:
            emb = emb * masks["input"]
        probs = tf.nn.softmax(self.alphas, axis=-1) if self.searching else None  # float32; the cell casts
        raw, hidden = self.cell(
            emb, hidden, probs=probs, x_mask=masks.get("x"), h_mask=masks.get("h"), training=training,
            update_statistics=update_statistics,
        )  # fmt: skip
        outputs = raw * masks["output"] if masks.get("output") is not None else raw
        # The decoder's product in the compute type, its logits and log-softmax in float32 (or wider).
        logits = to_float32(tf.matmul(tf.reshape(outputs, [-1, self.ninp]), embedding, transpose_b=True))
        logits = logits + tf.cast(self.decoder_bias, logits.dtype)
        logits = tf.reshape(logits, [tf.shape(tokens)[0], batch, self.ntoken])
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        return {"log_probs": log_probs, "logits": logits, "hidden": hidden, "raw_outputs": raw, "outputs": outputs}

    def genotype_of_alphas(self) -> RecurrentGenotype:
        """The derived recurrent cell (search model only)."""
        return derive_recurrent_genotype(np.asarray(self.alphas.numpy()), self.steps)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "ntoken": self.ntoken,
                "ninp": self.ninp,
                "nhid": self.nhid,
                "dropout": self.dropout,
                "dropouth": self.dropouth,
                "dropoutx": self.dropoutx,
                "dropouti": self.dropouti,
                "dropoute": self.dropoute,
                "genotype": None if self.genotype is None else self.genotype.to_dict(),
                "steps": self.steps,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**_with_genotype(config))


def float32_model(model: RNNModel) -> RNNModel:
    """`model` itself, or for a language model built under a mixed policy a float32 copy with the same
    weights (its variables are float32 already): what the export serves."""
    policy = model.dtype_policy
    if policy.compute_dtype == policy.variable_dtype:
        return model
    copy = RNNModel.from_config({**model.get_config(), "dtype": policy.variable_dtype})
    copy.build()
    copy.set_weights(model.get_weights())
    return copy


def nll(log_probs, targets) -> tf.Tensor:
    """Mean negative log-likelihood of int targets [T, B] under log_probs [T, B, V]."""
    picked = tf.gather(log_probs, tf.cast(targets, tf.int32), axis=-1, batch_dims=2)
    return -tf.reduce_mean(picked)


def nll_of_logits(logits, targets) -> tf.Tensor:
    """`nll(log_softmax(logits), targets)` in TensorFlow's fused kernel (computed in float32 or wider).

    The same loss; its gradient softmax - one_hot comes out of the forward kernel, where the
    gathered log-probabilities' gradient is a scatter into a [T, B, V] tensor (0.4 s of a
    recurrent search pass at batch 256, docs/performance.md).
    """
    return cross_entropy(targets, logits)


def temporal_activation_regularization(raw_outputs, beta: float) -> tf.Tensor:
    """TAR: beta * mean((h_{t+1} - h_t)^2) over the cell's outputs (before output dropout)."""
    raw_outputs = to_float32(raw_outputs)
    return beta * tf.reduce_mean(tf.square(raw_outputs[1:] - raw_outputs[:-1]))


def activation_regularization(outputs, alpha: float) -> tf.Tensor:
    """AR: alpha * mean(h^2) over the dropped outputs."""
    return alpha * tf.reduce_mean(tf.square(to_float32(outputs)))

"""The DARTS search network: mixed ops, search cells and the over-parameterized network.

The architecture weights (`alphas_normal`, `alphas_reduce`, each
[num_edges, ops of the search space]) are variables of the model, so checkpoints hold
them, but they are kept apart from the weights: `weight_variables` is what
the weight optimizer trains, `arch_variables` what the architecture
optimizer trains, and together they cover every trainable variable once.

Reference: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search",
ICLR 2019 (arXiv:1806.09055), Section 2.2 (continuous relaxation) and 3.1.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from darts_tf import internals, replicas
from darts_tf.cnn.genotypes import Genotype, derive_genotype, resolve_space
from darts_tf.cnn.ops import (
    BatchNorm,
    Conv2D,
    Identity,
    ReLUConvBN,
    build_op,
    channel_shuffle,
    conv_output_size,
    halving_max_pool,
    make_op,
    preprocess0,
    torch_uniform,
)
from darts_tf.cnn.ops.batchnorm import local_moments, split_statistics
from darts_tf.cnn.ops.composite import synchronized_apply
from darts_tf.cnn.space import BUILTIN_WEIGHTING, DARTS_SPACE, SearchSpace, weighting
from darts_tf.errors import ConfigError
from darts_tf.precision import to_float32
from darts_tf.seeding import random_state_kept


class PackedSlice:
    """One named tensor stored inside a packed variable (see `MixedOp`).

    What `darts_tf.cnn.pytorch.torch_variables` hands out for a packed edge: it has the tensor's
    `shape` and `dtype`, reads with `numpy()` and writes with `assign()`, so
    weight conversion and inspection work as with a variable of its own.
    """

    def __init__(self, variable, offset: int, shape: tuple):
        self.variable = variable
        self.offset = offset
        self.shape = tuple(shape)
        self.size = int(np.prod(self.shape, dtype=np.int64))

    @property
    def dtype(self):
        return self.variable.dtype

    def take(self, flat) -> np.ndarray:
        """This tensor's piece of `flat` (a value of the packed variable, or its gradient)."""
        return np.asarray(flat)[self.offset : self.offset + self.size].reshape(self.shape)

    def numpy(self) -> np.ndarray:
        return self.take(self.variable.numpy())

    def assign(self, value) -> None:
        flat = np.array(self.variable.numpy())
        flat[self.offset : self.offset + self.size] = np.reshape(value, -1)
        self.variable.assign(flat)


@keras.saving.register_keras_serializable(package="darts_tf")
class MixedOp(keras.layers.Layer):
    """A DARTS edge: the softmax-weighted sum of the space's ops (Eq. 2 of arXiv:1806.09055).

    The ops are `space.primitives` (DARTS's eight by default), each weighed as its registry
    entry says (`darts_tf.cnn.space.WEIGHTINGS`): pooling ops are followed by a non-affine
    BN, as in the original; the `none` op contributes exactly zero to the sum, so it is not
    computed (its architecture weight still receives gradient through the softmax); an op
    ending in a BN takes the op's weight as that BN's scale (`w * BN(z)` computed as one
    normalization); the identity and your ops are multiplied by their weight.

    With `shared_trace=True` (the default) the edge keeps its weights in two
    packed variables, `packed_weights` (every conv kernel of its ops) and
    `packed_statistics` (every BN moving mean and variance), and runs as a
    TensorFlow function shared by every edge of the same shape, which takes
    the packed values and unpacks them inside: it is traced once (not once
    per edge) and kept out of line. A search step's graph then holds one
    call and two variable reads per edge instead of ~1,000 ops and ~28
    reads, and the optimizer updates 2 tensors per edge instead of 12, which
    cuts building, tracing and graph optimisation time several-fold. The
    result is the same computation (`shared_trace=False` gives the plain
    layer, one variable per tensor; a test pins their equality), and
    `darts_tf.cnn.pytorch.torch_variables` names every packed tensor as the original does.

    `partial_channels=K > 1` is PC-DARTS's partial-channel edge (Xu et al., ICLR 2020,
    arXiv:1907.05737, Sec. 3.1): the ops see the first `channels // K` channels, the others
    bypass them (2x2 max-pooled on a stride-2 edge), and the two parts, concatenated, are
    channel-shuffled in K groups. The ops are the same packed, shared edge at 1/K width.
    """

    def __init__(
        self, channels, strides=1, shared_trace=True, edge_functions=None, partial_channels=1, space=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.space = resolve_space(space)
        if not isinstance(partial_channels, int) or partial_channels < 1 or channels % partial_channels:
            raise ConfigError(
                f"MixedOp expected partial_channels, a positive integer dividing channels={channels}. "
                f"Received: partial_channels={partial_channels!r}"
            )
        self.channels = channels
        self.strides = strides
        self.shared_trace = shared_trace
        self.partial_channels = partial_channels
        self.op_channels = channels // partial_channels
        # Shared with the other edges of a network (which passes its own); a lone edge has its own.
        self.edge_functions = edge_functions if edge_functions is not None else EdgeFunctions()
        sub = {"dtype": self.dtype_policy}
        self.primitive_ops = {}
        self.pool_bns = {}
        if shared_trace:  # the ops live in the shared template (see `_SharedEdge`)
            return
        for name in self.space.primitives:
            if weighting(name) == "zero":
                continue
            self.primitive_ops[name] = make_op(name, self.op_channels, strides, affine=False, name=name, **sub)
            if weighting(name) == "pool" and self.space.pool_batchnorm:
                self.pool_bns[name] = BatchNorm(affine=False, name=f"{name}_bn", **sub)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if input_shape[-1] != self.channels:
            raise ValueError(f"MixedOp {self.name!r} expected {self.channels} channels. Received: {input_shape}")
        input_shape = input_shape[:-1] + (self.op_channels,)  # what the ops see
        if self.shared_trace:
            self._edge_input_shape = input_shape
            self.packed_weights = self.add_weight(
                name="packed_weights", shape=(self._shared.weights_size,), initializer=self._shared.initial_weights
            )
            self.packed_statistics = self.add_weight(
                name="packed_statistics",
                shape=(self._shared.statistics_size,),
                initializer=self._shared.initial_statistics,
                trainable=False,
                autocast=False,  # BatchNorm statistics: float32 under a mixed policy
            )
            return
        for name, op in self.primitive_ops.items():
            output_shape = build_op(name, op, input_shape, self.strides)
            if name in self.pool_bns:
                self.pool_bns[name].build(output_shape)

    @property
    def _shared(self) -> _SharedEdge:
        # Looked up by the layer's current policy: `darts_tf.precision.full_precision` runs a
        # mixed-precision edge in float32 (the same packed variables, another template).
        return self.edge_functions.get(
            self.op_channels, self.strides, self._edge_input_shape, self.dtype_policy, self.space
        )

    def call(self, x, op_weights, training=None, update_statistics=True, weight_gradients=True):
        """The weighted sum of the ops on `x`.

        `update_statistics=False`: training-mode BatchNorms leave their moving
        averages alone. `weight_gradients=False`: the packed edge function is
        traced without its weights' gradient (for passes that differentiate
        with respect to the alphas and inputs only), so the conv filter
        gradients are never built; the plain layer ignores it.
        """
        if self.partial_channels == 1:
            return self._mix(x, op_weights, training, update_statistics, weight_gradients)
        mixed, bypass = self.partial_parts(x, op_weights, training, update_statistics, weight_gradients)
        return channel_shuffle(tf.concat([mixed, bypass], axis=-1), self.partial_channels)

    def partial_parts(self, x, op_weights, training=None, update_statistics=True, weight_gradients=True):
        """(mixed ops on the first channels // K channels, the bypassed rest): the edge before its shuffle.

        Concatenation and shuffle are linear, so a cell sums these parts over a node's
        edges and shuffles once per node (the same sum, four shuffles a cell instead of 14).
        """
        seen, bypass = self.split_channels(x)
        return self._mix(seen, op_weights, training, update_statistics, weight_gradients), bypass

    def split_channels(self, x) -> tuple:
        """(the channels the ops see, the bypassed rest, max-pooled on a stride-2 edge); (x, None) without PC-DARTS."""
        if self.partial_channels == 1:
            return x, None
        seen, bypass = x[..., : self.op_channels], x[..., self.op_channels :]
        return seen, halving_max_pool(bypass) if self.strides == 2 else bypass

    def _mix(self, x, op_weights, training, update_statistics, weight_gradients):
        if not self.shared_trace:
            return self.weighted_sum(x, op_weights, training=training, update_statistics=update_statistics)
        training = bool(training)
        frozen = not update_statistics
        updates = training and not frozen
        if training and replicas.synchronized_statistics():  # BatchNorm statistics of the global batch
            (y,) = synchronized_mix([self], [x], [op_weights], update_statistics, weight_gradients)
            return y
        outputs = self._shared.function(
            x,
            op_weights,
            tf.convert_to_tensor(self.packed_weights),
            tf.convert_to_tensor(self.packed_statistics),
            training,
            frozen,
            not weight_gradients,
        )
        if not updates:
            return outputs
        y, updated = outputs
        self.packed_statistics.assign(updated)
        return y

    def weighted_sum(self, x, op_weights, training=None, update_statistics=True):
        if self.shared_trace:
            raise ValueError(f"MixedOp {self.name!r}: weighted_sum needs the plain layer (shared_trace=False)")
        if not isinstance(op_weights, (list, tuple)):  # one op instead of a slice (and its gradient) per op
            op_weights = tf.unstack(op_weights)
        terms = []
        for index, name in enumerate(self.space.primitives):
            if name not in self.primitive_ops:  # `none`: zero
                continue
            op, weight = self.primitive_ops[name], op_weights[index]
            bn = {"training": training, "update_statistics": update_statistics}
            if name in self.pool_bns:
                terms.append(self.pool_bns[name](op(x, training=training), scale=weight, **bn))
            elif isinstance(op, Identity):
                terms.append(weight * x)
            elif weighting(name) == "batchnorm":  # ends in a BatchNorm, which applies the weight
                terms.append(op(x, output_scale=weight, **bn))
            else:  # "multiply": an op of yours
                terms.append(weight * tf.cast(op(x, training=training), x.dtype))
        return tf.add_n(terms)

    def compute_output_shape(self, input_shape):
        size = lambda n: conv_output_size(n, 3, self.strides)  # noqa: E731
        return (input_shape[0], size(input_shape[1]), size(input_shape[2]), self.channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channels": self.channels,
                "strides": self.strides,
                "shared_trace": self.shared_trace,
                "partial_channels": self.partial_channels,
                "space": self.space.to_dict(),
            }
        )
        return config


# Out-of-line calls: grappler optimises each edge function once instead of inlining
# every edge into one graph of ~10^5 ops.
EDGE_FUNCTION_ATTRIBUTES = {"_noinline": True}


def _flatten(values) -> tf.Tensor:
    return tf.concat([tf.reshape(v, [-1]) for v in values], axis=0)


def _unflatten(flat, shapes, sizes) -> list:
    # A 1-D piece of the split already has its shape: no reshape.
    pieces = tf.split(flat, sizes)
    return [piece if len(shape) == 1 else tf.reshape(piece, shape) for piece, shape in zip(pieces, shapes)]


class _SharedEdge:
    """What every packed edge of one shape shares: a plain template MixedOp and its traced function.

    `slots` maps each of the template's tensors to (packed variable, offset,
    shape); `darts_tf.cnn.pytorch` names them as the original does. The function
    computes the edge from packed values (stateless: variables are read
    outside, once per edge) and returns the updated packed statistics.
    """

    def __init__(self, channels, strides, input_shape, dtype_policy, space=DARTS_SPACE):
        # The template's own (unused) initial values must not consume random draws:
        # a network built after `keras.utils.set_random_seed` gets the same weights
        # whether or not the templates already existed.
        with random_state_kept(), tf.init_scope():
            template = MixedOp(
                channels, strides, shared_trace=False, space=space, name="edge_template", dtype=dtype_policy
            )
            template.build(tuple(input_shape))
        self.template = template
        # Where each of the template's tensors sits: id(variable) -> (packed variable, offset, shape).
        self.slots = {}
        self.shapes, self.sizes = {}, {}
        for which, variables in (("weights", template.trainable_variables),
                                 ("statistics", template.non_trainable_variables)):  # fmt: skip
            offset = 0
            self.shapes[which] = [tuple(v.shape) for v in variables]
            self.sizes[which] = [int(np.prod(s, dtype=np.int64)) for s in self.shapes[which]]
            for variable, size in zip(variables, self.sizes[which]):
                self.slots[id(variable)] = (which, offset, tuple(variable.shape))
                offset += size
        # PyTorch's default conv init for each packed kernel (every trainable tensor is one).
        convs = [layer for layer in internals.flatten_layers(template) if isinstance(layer, Conv2D)]
        fan_ins = {id(layer.kernel): layer.fan_in for layer in convs}
        unknown = [v.path for v in template.trainable_variables if id(v) not in fan_ins]
        if unknown:  # `packing_problems` keeps such ops on plain edges
            raise ValueError(f"Packed edge: every trainable tensor must be a conv kernel. Received: {unknown}")
        self.fan_ins = [fan_ins[id(v)] for v in template.trainable_variables]
        self.weights_size = sum(self.sizes["weights"])
        self.statistics_size = sum(self.sizes["statistics"])
        with tf.init_scope():  # also when first asked for inside a trace (`full_precision`)
            self._statistics0 = np.concatenate([np.ravel(v.numpy()) for v in template.non_trainable_variables])
        self.function = replicas.TracedOnce(
            tf.function(self.edge, autograph=False, experimental_attributes=EDGE_FUNCTION_ATTRIBUTES)
        )
        # Under several replicas: each op as its BatchNorm stages (see `synchronized_mix`).
        # Ops weighed by "multiply" (no BatchNorm inside: `packing_problems`) run whole in `finish`.
        self.space = space
        self.stages = {}
        for name in space.primitives:
            op = template.primitive_ops.get(name)
            if name in template.pool_bns:
                self.stages[name] = [(lambda x, op=op: op(x, training=True), template.pool_bns[name])]
            elif op is not None and not isinstance(op, Identity) and weighting(name) == "batchnorm":
                self.stages[name] = op.normalization_stages(training=True)
        self.stage_count = max((len(stages) for stages in self.stages.values()), default=0)
        self.stage, self.finish = (
            replicas.TracedOnce(tf.function(f, autograph=False, experimental_attributes=EDGE_FUNCTION_ATTRIBUTES))
            for f in (self._stage, self._finish)
        )

    def _unpack(self, weights, statistics, arch_only) -> tuple:
        # Gradients the caller never uses are not in the functions' backward passes: the
        # moving statistics never get one, the weights none when `arch_only`.
        statistics = tf.stop_gradient(statistics)
        if arch_only:
            weights = tf.stop_gradient(weights)
        trainable = _unflatten(weights, self.shapes["weights"], self.sizes["weights"])
        return trainable, _unflatten(statistics, self.shapes["statistics"], self.sizes["statistics"])

    def _scope(self, weights, statistics, arch_only):
        # The template's variables read as the given packed values (what `stateless_call` does).
        trainable, moving = self._unpack(weights, statistics, arch_only)
        template = self.template
        mapping = list(zip(template.trainable_variables, trainable))
        mapping += list(zip(template.non_trainable_variables, moving))
        return keras.StatelessScope(state_mapping=mapping)

    def staged(self, stage: int) -> list:
        """The ops with a BatchNorm stage `stage` (0 = the first), in the space's order."""
        return [name for name, stages in self.stages.items() if len(stages) > stage]

    def _split_statistics(self, stage, gathered) -> dict:
        # Every replica's moments of this edge's BatchNorms at `stage` ([replicas, means | variances]) ->
        # {op: its BatchNorm's global (mean, variance)}. Here, not at the call: traced once per function.
        names = self.staged(stage)
        sizes = [self.stages[name][stage][1].moving_mean.shape[0] for name in names]
        return {name: tf.unstack(piece) for name, piece in zip(names, split_statistics(gathered, sizes))}

    def _stage(self, stage, inputs, gathered, weights, statistics, arch_only):
        """Stage `stage` of every op: {op: its pre-normalisation tensor}, and their BatchNorms'
        `local_moments` as one vector [means | variances]. `inputs` is the edge's input at stage 0,
        else {op: the previous stage's pre-normalisation tensor}, normalised here with the global
        batch's statistics from `gathered`, every replica's vector of the previous stage."""
        outputs, means, variances = {}, [], []
        with self._scope(weights, statistics, arch_only):
            previous = self._split_statistics(stage - 1, gathered) if stage else {}
            for name in self.staged(stage):
                transform, bn = self.stages[name][stage]
                h = inputs
                if stage:
                    norm = self.stages[name][stage - 1][1]
                    h = norm.normalize(inputs[name], *previous[name], fused=True)
                # Kept in float32 under a mixed policy: this tensor's normalisation (next stage) and its
                # moments (here) send their gradients back through one cast, summed in float32.
                outputs[name] = to_float32(transform(h))
                mean, variance = local_moments(outputs[name])
                means.append(mean)
                variances.append(variance)
        return outputs, tf.concat(means + variances, axis=0)

    def _finish(self, x, last, gathered, op_weights, weights, statistics, frozen, arch_only, replica_count):
        """The weighted sum of the ops from their last pre-normalisation tensors `last` {op: tensor}
        and `gathered` [each stage's moments of every replica, as `_stage` returned them]; with the
        updated packed statistics unless `frozen`."""
        if not isinstance(op_weights, (list, tuple)):
            op_weights = tf.unstack(op_weights)
        with self._scope(weights, statistics, arch_only):
            moments = [self._split_statistics(stage, vector) for stage, vector in enumerate(gathered)]
            terms = []
            for index, name in enumerate(self.space.primitives):
                op = self.template.primitive_ops.get(name)
                if name in self.stages:
                    bn = self.stages[name][-1][1]
                    mean, variance = moments[len(self.stages[name]) - 1][name]
                    y = bn.normalize(last[name], mean, variance, scale=op_weights[index], fused=True)
                    terms.append(tf.cast(y, x.dtype))
                elif isinstance(op, Identity):
                    terms.append(op_weights[index] * x)
                elif op is not None:  # an op of yours weighed by "multiply" (`none` adds nothing)
                    terms.append(op_weights[index] * tf.cast(op(x, training=True), x.dtype))
            y = tf.add_n(terms)
            if frozen:
                return y
            count = tf.reduce_prod(tf.shape(y)[:3]) * replica_count  # every stage's output has y's size
            updated = {}
            for name, stages in self.stages.items():
                for stage, (_, bn) in enumerate(stages):
                    moving = bn.updated_statistics(*moments[stage][name], count)
                    updated[id(bn.moving_mean)], updated[id(bn.moving_variance)] = moving
            values = [updated.get(id(v), v.value) for v in self.template.non_trainable_variables]
            return y, tf.stop_gradient(_flatten(values))

    def initial_weights(self, shape, dtype=None):
        # A new initializer per tensor and edge, as each plain layer makes its own:
        # each draws its seed, so edges of one shape start from different weights.
        return _flatten([torch_uniform(f)(s, dtype=dtype) for f, s in zip(self.fan_ins, self.shapes["weights"])])

    def initial_statistics(self, shape, dtype=None):
        return tf.constant(self._statistics0, dtype=dtype)

    def edge(self, x, op_weights, weights, statistics, training, frozen, arch_only):
        trainable, moving = self._unpack(weights, statistics, arch_only)
        y, updated = self.template.stateless_call(
            trainable, moving, x, op_weights, training=training, update_statistics=not frozen
        )
        if not training or frozen:  # one output: no zero gradient to feed for unused statistics
            return y
        return y, tf.stop_gradient(_flatten(updated))  # no backward pass through the statistics update


def synchronized_mix(edges, inputs, op_weights, update_statistics=True, weight_gradients=True) -> list:
    """The training-mode outputs of packed `edges` on `inputs` under several replicas, with BatchNorm
    statistics of the global batch: what one device computes at the global batch.

    A BatchNorm's statistics need a cross-replica mean, which a MirroredStrategy can only take at
    the top of the replica function, not inside the edges' shared functions. So each edge runs as
    its BatchNorm stages (`_SharedEdge.stage`: every op's convolutions up to its next BatchNorm,
    returning pre-normalisation tensors and their local moments), and the moments of one stage
    of all `edges` (a node's incoming edges) are gathered in one collective between the stages:
    two a node for the DARTS ops (a separable convolution normalises twice), instead of one per
    BatchNorm (eight or nine an edge). The functions stay shared and traced once per shape.
    """
    arch_only = not weight_gradients
    packed = [(tf.convert_to_tensor(e.packed_weights), tf.convert_to_tensor(e.packed_statistics)) for e in edges]
    current = list(inputs)
    gathered = [[] for _ in edges]  # per edge: each stage's [replicas, its moments] (means | variances)
    for stage in range(max(e._shared.stage_count for e in edges)):
        active = [i for i, e in enumerate(edges) if stage < e._shared.stage_count]
        results = {}
        for i in active:
            if stage:
                given = {name: current[i][name] for name in edges[i]._shared.staged(stage)}
                results[i] = edges[i]._shared.stage(stage, given, gathered[i][-1], *packed[i], arch_only)
            else:
                results[i] = edges[i]._shared.stage(stage, current[i], None, *packed[i], arch_only)
        # One collective for the stage: every replica's moments of all its BatchNorms, split per edge (the
        # global statistics are taken in the edges' functions, traced once, not at every call).
        rows = replicas.gather(tf.concat([results[i][1] for i in active], axis=0))
        for i, piece in zip(active, tf.split(rows, [int(results[i][1].shape[0]) for i in active], axis=1)):
            gathered[i].append(piece)
            current[i] = results[i][0] if stage == 0 else {**current[i], **results[i][0]}
    frozen = not update_statistics
    outputs = []
    for i, edge in enumerate(edges):
        result = edge._shared.finish(
            inputs[i], current[i], gathered[i], op_weights[i], *packed[i], frozen, arch_only, replicas.count()
        )
        if frozen:
            outputs.append(result)
        else:
            y, updated = result
            edge.packed_statistics.assign(updated)
            outputs.append(y)
    return outputs


def packing_problems(space: SearchSpace, channels: int = 16, dtype=None) -> dict[str, str]:
    """{op: why} for the ops of `space` that packed edges (`shared_trace=True`) cannot run; {} if all can.

    A packed edge keeps its ops' weights in one vector, initialised as PyTorch initialises
    convolutions, and under several replicas runs each op as its BatchNorm stages. So an op
    packs when its trainable weights are all darts_tf `Conv2D` kernels, an op weighed by
    "batchnorm" gives its `normalization_stages`, and one weighed by "multiply" holds no
    BatchNorm. The built-in ops all pack. Each op of yours is built at `channels` channels
    and run once on zeros at stride 1 and 2 (its output shape checked: one line naming the
    op if it is not [N, H / stride, W / stride, channels]); no random draw is consumed.
    """
    problems = {}
    for name in space.primitives:
        if name in BUILTIN_WEIGHTING or weighting(name) == "zero":
            continue
        with random_state_kept(), tf.init_scope():
            for stride in (1, 2):
                op = make_op(name, channels, stride, affine=False, name=f"probe_{name}", dtype=dtype)
                y = op(tf.zeros((1, 8, 8, channels)), training=True)
                if tuple(y.shape) != (1, 8 // stride, 8 // stride, channels):
                    raise ConfigError(
                        f"op {name!r} at stride {stride} maps [1, 8, 8, {channels}] to {list(y.shape)}. "
                        f"Expected: [1, {8 // stride}, {8 // stride}, {channels}]"
                    )
                layers = internals.flatten_layers(op)
                kernels = {id(layer.kernel) for layer in layers if isinstance(layer, Conv2D)}
                if any(id(v) not in kernels for v in op.trainable_variables):
                    problems[name] = "trainable weights other than darts_tf Conv2D kernels"
                norms = (BatchNorm, keras.layers.BatchNormalization)
                if weighting(name) == "multiply" and any(isinstance(layer, norms) for layer in layers):
                    problems[name] = 'a BatchNorm inside an op weighed by "multiply"'
                if weighting(name) == "batchnorm" and not hasattr(op, "normalization_stages"):
                    problems[name] = 'weighed by "batchnorm" without `normalization_stages`'
    return problems


def packable(space: SearchSpace, channels: int, dtype=None) -> bool:
    """Whether packed edges can run every op of `space` (`packing_problems`); if not, one warning naming
    the ops and why: the network then uses plain edges."""
    problems = packing_problems(space, channels, dtype)
    if problems:
        reasons = "; ".join(f"{name}: {why}" for name, why in problems.items())
        warnings.warn(
            f"darts_tf: packed edges cannot run op(s) {sorted(problems)} ({reasons}); this network uses "
            "plain edges (shared_trace=False): same numbers, slower to build and trace",
            stacklevel=3,
        )
    return not problems


class EdgeFunctions:
    """The `_SharedEdge` of each edge shape, for the edges of one network.

    A `SearchNetwork` makes one and hands it to all its edges, so each edge
    shape is built and traced once per network; nothing is kept beyond the
    network's life (no module-level cache survives `keras.backend.clear_session`).
    """

    def __init__(self):
        self._edges = {}

    def get(self, channels, strides, input_shape, dtype_policy, space=DARTS_SPACE) -> _SharedEdge:
        key = (channels, strides, tuple(input_shape[1:]), dtype_policy.name, space.primitives, space.pool_batchnorm)
        if key not in self._edges:
            self._edges[key] = _SharedEdge(channels, strides, input_shape, dtype_policy, space)
        return self._edges[key]

    def __len__(self) -> int:
        return len(self._edges)


@keras.saving.register_keras_serializable(package="darts_tf")
class SearchCell(keras.layers.Layer):
    """A DARTS search cell: a DAG of `steps` nodes over mixed edges (arXiv:1806.09055, Sec. 2.1).

    Inputs are the outputs of the two previous cells; node `i` sums a mixed
    op over every earlier node; the output concatenates the last
    `multiplier` nodes. In a reduction cell the edges from the inputs have
    stride 2. `partial_channels` goes to every edge (PC-DARTS); with `edge_weights`
    in the call, node `i` sums its edges weighted by them (PC-DARTS edge normalisation).
    """

    def __init__(
        self, channels, reduction, reduction_prev, steps=None, multiplier=None, shared_trace=True, edge_functions=None,
        partial_channels=1, space=None, **kwargs,
    ):  # fmt: skip
        super().__init__(**kwargs)
        self.space = resolve_space(space, steps, multiplier)
        steps, multiplier = self.space.steps, self.space.multiplier
        self.shared_trace = shared_trace
        self.partial_channels = partial_channels
        edge_functions = edge_functions if edge_functions is not None else EdgeFunctions()
        self.channels = channels
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        self.steps = steps
        self.multiplier = multiplier
        sub = {"dtype": self.dtype_policy}
        self.preprocess0 = preprocess0(channels, reduction_prev, affine=False, **sub)
        self.preprocess1 = ReLUConvBN(channels, 1, 1, affine=False, name="preprocess1", **sub)
        self.edges = []
        for node in range(steps):
            for j in range(node + 2):
                stride = 2 if reduction and j < 2 else 1
                name = f"edge_{j}_{node + 2}"
                self.edges.append(
                    MixedOp(
                        channels, stride, shared_trace, edge_functions, partial_channels, self.space, name=name, **sub
                    )
                )

    def build(self, s0_shape, s1_shape):
        self.preprocess0.build(s0_shape)
        self.preprocess1.build(s1_shape)
        state_shape = self.preprocess1.compute_output_shape(s1_shape)
        reduced_shape = self.edges[0].compute_output_shape(state_shape)
        offset = 0
        for node in range(self.steps):
            for j in range(node + 2):
                self.edges[offset + j].build(state_shape if j < 2 else reduced_shape)
            offset += node + 2

    def call(self, s0, s1, weights, edge_weights=None, training=None, update_statistics=True, weight_gradients=True):
        # One row per edge; a list of rows (`tf.unstack`) saves a slice per edge and its gradient.
        weights = weights if isinstance(weights, (list, tuple)) else tf.unstack(weights)
        if edge_weights is not None and not isinstance(edge_weights, (list, tuple)):
            edge_weights = tf.unstack(edge_weights)
        bn = {"training": training, "update_statistics": update_statistics}
        if training and replicas.synchronized_statistics():  # both in one collective
            states = synchronized_apply([self.preprocess0, self.preprocess1], [s0, s1], update_statistics)
        else:
            states = [self.preprocess0(s0, **bn), self.preprocess1(s1, **bn)]
        edge = {**bn, "weight_gradients": weight_gradients}
        # Several replicas: a node's edges run side by side, one collective per BatchNorm stage.
        synchronized = self.shared_trace and bool(training) and replicas.synchronized_statistics()
        offset = 0
        for _ in range(self.steps):
            node_edges = self.edges[offset : offset + len(states)]
            if synchronized:
                parts = [e.split_channels(h) for e, h in zip(node_edges, states)]
                mixed = synchronized_mix(
                    node_edges, [seen for seen, _ in parts], weights[offset : offset + len(states)],
                    update_statistics, weight_gradients,
                )  # fmt: skip
                terms = mixed if self.partial_channels == 1 else [(m, p[1]) for m, p in zip(mixed, parts)]
            elif self.partial_channels == 1:
                terms = [e(h, weights[offset + j], **edge) for j, (e, h) in enumerate(zip(node_edges, states))]
            else:  # PC-DARTS: the node's sum of the edges' parts, shuffled once (see `MixedOp.partial_parts`)
                terms = [
                    e.partial_parts(h, weights[offset + j], **edge) for j, (e, h) in enumerate(zip(node_edges, states))
                ]
            if edge_weights is not None:
                terms = [_scaled(edge_weights[offset + j], term) for j, term in enumerate(terms)]
            if self.partial_channels == 1:
                node = tf.add_n(terms)
            else:
                parts = [tf.add_n([term[part] for term in terms]) for part in (0, 1)]
                node = channel_shuffle(tf.concat(parts, axis=-1), self.partial_channels)
            offset += len(states)
            states.append(node)
        return tf.concat(states[-self.multiplier :], axis=-1)

    def compute_output_shape(self, s0_shape, s1_shape):
        shape = self.edges[0].compute_output_shape(self.preprocess1.compute_output_shape(s1_shape))
        return shape[:-1] + (self.multiplier * self.channels,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channels": self.channels,
                "reduction": self.reduction,
                "reduction_prev": self.reduction_prev,
                "steps": self.steps,
                "multiplier": self.multiplier,
                "shared_trace": self.shared_trace,
                "partial_channels": self.partial_channels,
                "space": self.space.to_dict(),
            }
        )
        return config


def _scaled(weight, term):
    return tuple(weight * t for t in term) if isinstance(term, tuple) else weight * term


def edge_weights(betas, steps: int) -> tf.Tensor:
    """PC-DARTS edge normalisation: softmax of `betas` [num_edges] over the edges into each node."""
    sizes = [node + 2 for node in range(steps)]
    return tf.concat([tf.nn.softmax(piece) for piece in tf.split(betas, sizes)], axis=0)


def reduction_layers(layers: int) -> tuple[int, int]:
    """Indices of the two reduction cells in a network of `layers` cells (1/3 and 2/3 depth)."""
    return layers // 3, 2 * layers // 3


class SearchNetwork(keras.Model):
    """The DARTS over-parameterized search network (arXiv:1806.09055, Sec. 3.1.1).

    A 3x3 conv + BN stem with `stem_multiplier * C` channels, `layers` search
    cells (reduction cells at 1/3 and 2/3 of the depth, doubling the
    channels), global average pooling and a linear classifier. All normal
    cells share `alphas_normal`, all reduction cells `alphas_reduce`
    ([edges, ops of the search space] each).

    Args:
        C: channels of the first cells.
        num_classes: number of output classes.
        layers: number of cells.
        steps: intermediate nodes per cell (DARTS's 4; or say it in `space`).
        multiplier: nodes concatenated into a cell's output (DARTS's 4; or in `space`).
        space: the `darts_tf.cnn.space.SearchSpace` (ops, nodes, inputs kept per node);
            DARTS's when None. An op that packed edges cannot run (see `packing_problems`)
            makes the network use plain edges (`shared_trace=False`), with one warning.
        stem_multiplier: stem width as a multiple of `C`.
        partial_channels: PC-DARTS (Xu et al., arXiv:1907.05737): each edge's ops see 1/K of
            its channels (`MixedOp`); 1 is plain DARTS.
        edge_normalization: PC-DARTS's edge normalisation: architecture variables
            `betas_normal`/`betas_reduce` [num_edges] whose softmax over the edges into a
            node weighs those edges, trained with the alphas and used in derivation.
    """

    def __init__(
        self, C=16, num_classes=10, layers=8, steps=None, multiplier=None, stem_multiplier=3, shared_trace=True,
        partial_channels=1, edge_normalization=False, space=None, **kwargs,
    ):  # fmt: skip
        super().__init__(**kwargs)
        self.partial_channels = partial_channels
        self.edge_normalization = bool(edge_normalization)
        self.edge_functions = EdgeFunctions()  # this network's edge functions, one per edge shape
        for name, value in (("C", C), ("num_classes", num_classes), ("layers", layers), ("steps", steps)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"SearchNetwork expected a positive integer {name}. Received: {name}={value!r}")
        if steps is not None and multiplier is not None and not 1 <= multiplier <= steps:
            raise ConfigError(
                f"SearchNetwork expected 1 <= multiplier <= steps. Received: multiplier={multiplier}, steps={steps}"
            )
        self.space = resolve_space(space, steps, multiplier)
        steps, multiplier = self.space.steps, self.space.multiplier
        if self.space.cell != "darts":
            raise ConfigError(
                f"SearchNetwork builds DARTS cells; a space of cell {self.space.cell!r} has its own network "
                "(darts_tf.nb201.model.Nb201SearchNetwork for nb201)"
            )
        if not isinstance(partial_channels, int) or partial_channels < 1 or C % partial_channels:
            raise ConfigError(
                f"SearchNetwork expected partial_channels, a positive integer dividing C={C}. "
                f"Received: partial_channels={partial_channels!r}"
            )
        self.shared_trace = shared_trace = shared_trace and packable(
            self.space, C // partial_channels, self.dtype_policy
        )
        self.C = C
        self.num_classes = num_classes
        self.num_layers = layers
        self.steps = steps
        self.multiplier = multiplier
        self.stem_multiplier = stem_multiplier
        sub = {"dtype": self.dtype_policy}
        self.stem_conv = Conv2D(stem_multiplier * C, 3, name="stem_conv", **sub)
        self.stem_bn = BatchNorm(affine=True, name="stem_bn", **sub)
        self.cells = []
        channels, reduction_prev = C, False
        reductions = reduction_layers(layers)
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                channels *= 2
            self.cells.append(
                SearchCell(
                    channels,
                    reduction,
                    reduction_prev,
                    steps,
                    multiplier,
                    shared_trace,
                    self.edge_functions,
                    partial_channels,
                    self.space,
                    name=f"cell_{i}",
                    **sub,
                )  # fmt: skip
            )
            reduction_prev = reduction
        self.classifier_fan_in = multiplier * channels
        self.classifier = keras.layers.Dense(
            num_classes,
            kernel_initializer=torch_uniform(self.classifier_fan_in),
            bias_initializer=torch_uniform(self.classifier_fan_in),
            name="classifier",
            **sub,
        )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            raise ValueError(f"SearchNetwork expected NHWC images. Received: input_shape={input_shape}")
        k, n = self.space.num_edges, self.space.num_ops
        # One initializer per tensor: a Keras initializer draws its seed once, so a shared
        # instance would give both the same values (the original: two `1e-3 * torch.randn`).
        self.alphas_normal = self.add_weight(
            name="alphas_normal", shape=(k, n), initializer=keras.initializers.RandomNormal(stddev=1e-3), autocast=False
        )
        self.alphas_reduce = self.add_weight(
            name="alphas_reduce", shape=(k, n), initializer=keras.initializers.RandomNormal(stddev=1e-3), autocast=False
        )
        if self.edge_normalization:  # PC-DARTS: 1e-3 * randn(k) each
            self.betas_normal = self.add_weight(
                name="betas_normal",
                shape=(k,),
                initializer=keras.initializers.RandomNormal(stddev=1e-3),
                autocast=False,
            )
            self.betas_reduce = self.add_weight(
                name="betas_reduce",
                shape=(k,),
                initializer=keras.initializers.RandomNormal(stddev=1e-3),
                autocast=False,
            )
        self.stem_conv.build(input_shape)
        stem_shape = self.stem_conv.compute_output_shape(input_shape)
        self.stem_bn.build(stem_shape)
        s0 = s1 = stem_shape
        for cell in self.cells:
            cell.build(s0, s1)
            s0, s1 = s1, cell.compute_output_shape(s0, s1)
        self.classifier.build((input_shape[0], s1[-1]))

    def call(self, inputs, training=None, update_statistics=True, weight_gradients=True):
        """Logits of `inputs`.

        `update_statistics=False`: training-mode BatchNorms normalise with batch
        statistics and leave their moving averages alone (the architecture
        gradient's extra passes). `weight_gradients=False`: the edges are traced
        without their weights' gradients (passes that differentiate with
        respect to the alphas only); see `MixedOp.call`.
        """
        x = tf.cast(inputs, self.compute_dtype)
        # The softmaxes in the variables' type (float32 under a mixed policy), then cast for the edges.
        dtype = self.compute_dtype
        weights_normal = tf.unstack(tf.cast(tf.nn.softmax(self.alphas_normal, axis=-1), dtype))
        weights_reduce = tf.unstack(tf.cast(tf.nn.softmax(self.alphas_reduce, axis=-1), dtype))
        edges_normal = edges_reduce = None
        if self.edge_normalization:
            edges_normal = tf.unstack(tf.cast(edge_weights(self.betas_normal, self.steps), dtype))
            edges_reduce = tf.unstack(tf.cast(edge_weights(self.betas_reduce, self.steps), dtype))
        s0 = s1 = self.stem_bn(
            self.stem_conv(x, training=training), training=training, update_statistics=update_statistics
        )
        passes = {"training": training, "update_statistics": update_statistics, "weight_gradients": weight_gradients}
        for cell in self.cells:
            weights, edges = (weights_reduce, edges_reduce) if cell.reduction else (weights_normal, edges_normal)
            s0, s1 = s1, cell(s0, s1, weights, edges, **passes)
        # Logits in float32 under a mixed policy: the losses, metrics and softmax read them.
        return to_float32(self.classifier(tf.reduce_mean(s1, axis=[1, 2]), training=training))

    @property
    def alpha_variables(self) -> list:
        """The op weights [alphas_normal, alphas_reduce]."""
        return [self.alphas_normal, self.alphas_reduce]

    @property
    def beta_variables(self) -> list:
        """The edge weights [betas_normal, betas_reduce] with `edge_normalization`, else []."""
        return [self.betas_normal, self.betas_reduce] if self.edge_normalization else []

    @property
    def arch_variables(self) -> list:
        """Every architecture variable: the alphas, then the betas (PC-DARTS's order)."""
        return self.alpha_variables + self.beta_variables

    def arch_arrays(self) -> dict:
        """name -> NumPy value of every architecture variable (what a run records per epoch)."""
        names = ["alphas_normal", "alphas_reduce"]
        names += ["betas_normal", "betas_reduce"] if self.edge_normalization else []
        return {name: np.asarray(variable.numpy()) for name, variable in zip(names, self.arch_variables)}

    @property
    def weight_variables(self) -> list:
        """Every trainable variable except the architecture weights."""
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    def genotype(self, max_skip: int | None = None) -> Genotype:
        """The derived cells (`derive_genotype`; with edge normalisation, edges weighted by the betas)."""
        return derive_genotype(**self.arch_arrays(), space=self.space, max_skip=max_skip)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "C": self.C,
                "num_classes": self.num_classes,
                "layers": self.num_layers,
                "steps": self.steps,
                "multiplier": self.multiplier,
                "stem_multiplier": self.stem_multiplier,
                "shared_trace": self.shared_trace,
                "partial_channels": self.partial_channels,
                "edge_normalization": self.edge_normalization,
                "space": self.space.to_dict(),
            }
        )
        return config

"""Evaluation networks built from a genotype: NetworkCIFAR and NetworkImageNet.

Functional Keras models (so `summary()`, `.keras` saving and export work),
with the original's structure (Liu et al., arXiv:1806.09055, Sec. 3.2 and
Appendix A.2): a stem, `layers` cells compiled from the genotype (reduction
cells at 1/3 and 2/3 depth), an auxiliary head after the cell at 2/3 depth
(training only), drop path on non-identity ops in training, global pooling
and a linear classifier. The models return a dict: "logits", and
"aux_logits" when built with `auxiliary=True` (a training-time loss only;
`inference_model` gives the logits-only graph that is exported and served).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from darts_tf import replicas
from darts_tf.cnn.genotypes import Genotype
from darts_tf.cnn.ops import (
    BatchNorm,
    Conv2D,
    FactorizedReduce,
    Identity,
    ReLUConvBN,
    build_op,
    make_op,
    preprocess0,
    torch_uniform,
)
from darts_tf.cnn.ops.batchnorm import synchronized_normalize
from darts_tf.cnn.ops.composite import synchronized_apply
from darts_tf.cnn.search_model import reduction_layers
from darts_tf.errors import ConfigError, GenotypeError
from darts_tf.precision import wide_dtype


@keras.saving.register_keras_serializable(package="darts_tf")
class DropPath(keras.layers.Layer):
    """Drops a whole op output per sample with probability `rate`, scaling the rest by 1/keep.

    The rate lives in a non-trainable variable so training can ramp it over
    epochs (the original: drop_path_prob * epoch / epochs). Identity in
    inference. (Larsson et al., FractalNet, 2017; used by DARTS, arXiv:1806.09055.)
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed

    def build(self, input_shape):
        self.rate = self.add_weight(name="rate", shape=(), initializer="zeros", trainable=False, autocast=False)
        # The generator's state is a variable of the model (created here, under the
        # layer's name): checkpoints carry it, so a resumed run draws the same masks.
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="seed_generator")

    def call(self, x, training=None):
        if not training:
            return x
        return x * self.mask(tf.shape(x)[0], x.dtype)

    def mask(self, size, dtype) -> tf.Tensor:
        """The next training-mode mask for a batch of `size` samples: [size, 1, 1, 1] of 0 and 1/keep, as
        `dtype` (each call draws new noise: `call(x)` is `x * mask(len(x), x.dtype)`)."""
        # The mask is drawn and formed in float32 (or wider) whatever x's type: the same masks
        # under a mixed policy as in float32, and an exact 1/keep before the cast.
        wide = wide_dtype(dtype)
        keep = 1.0 - tf.cast(self.rate, wide)
        # Under k replicas each draws the whole global batch's noise (one seed state, the
        # same on every replica) and keeps its slice: the masks one device draws at that batch.
        count = replicas.count()
        noise = keras.random.uniform([size * count, 1, 1, 1], dtype=wide, seed=self.seed_generator)
        if count > 1:
            noise = noise[replicas.index() * size : (replicas.index() + 1) * size]
        # The 1/keep scale goes into the per-sample mask: one pass over x each way, not two.
        return tf.cast(tf.floor(keep + noise) / keep, dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config


def _node_sum(terms: list) -> tf.Tensor:
    # A node's inputs summed as the original does (a + b for two).
    return terms[0] + terms[1] if len(terms) == 2 else tf.add_n(terms)


@keras.saving.register_keras_serializable(package="darts_tf")
class EvalCell(keras.layers.Layer):
    """A discrete DARTS cell compiled from a genotype (arXiv:1806.09055, Fig. 4/5)."""

    def __init__(self, genotype, channels, reduction, reduction_prev, **kwargs):
        super().__init__(**kwargs)
        if isinstance(genotype, dict):
            genotype = Genotype.from_dict(genotype)
        self.genotype = genotype
        self.channels = channels
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        sub = {"dtype": self.dtype_policy}
        self.preprocess0 = preprocess0(channels, reduction_prev, **sub)
        self.preprocess1 = ReLUConvBN(channels, 1, 1, name="preprocess1", **sub)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.indices = [index for _, index in edges]
        self.op_names = [name for name, _ in edges]
        self.cell_ops = []
        for position, (op_name, index) in enumerate(edges):
            stride = 2 if reduction and index < 2 else 1
            self.cell_ops.append(make_op(op_name, channels, stride, affine=True, name=f"op_{position}", **sub))
        self.drop_path = DropPath(name="drop_path", **sub)

    def build(self, s0_shape, s1_shape):
        self.preprocess0.build(s0_shape)
        self.preprocess1.build(s1_shape)
        shapes = [self.preprocess0.compute_output_shape(s0_shape), self.preprocess1.compute_output_shape(s1_shape)]
        per_node = self.genotype.inputs_per_node
        for i in range(len(self.cell_ops) // per_node):
            outs = []
            for position in range(per_node * i, per_node * (i + 1)):
                index = self.indices[position]
                stride = 2 if self.reduction and index < 2 else 1
                outs.append(build_op(self.op_names[position], self.cell_ops[position], shapes[index], stride))
            shapes.append(outs[0])
        self.drop_path.build(shapes[-1])

    def compute_output_shape(self, s0_shape, s1_shape):
        shape = self.preprocess1.compute_output_shape(s1_shape)
        if self.reduction:
            shape = FactorizedReduce(self.channels).compute_output_shape(shape)
        return tuple(shape[:-1]) + (len(self.concat) * self.channels,)

    def call(self, s0, s1, training=None):
        if training and replicas.synchronized_statistics():
            return self._synchronized_call(s0, s1)
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        per_node = self.genotype.inputs_per_node
        for i in range(len(self.cell_ops) // per_node):
            total = []
            for position in range(per_node * i, per_node * (i + 1)):
                op = self.cell_ops[position]
                h = op(states[self.indices[position]], training=training)
                if not isinstance(op, Identity):
                    h = self.drop_path(h, training=training)
                total.append(h)
            states.append(_node_sum(total))
        return tf.concat([states[i] for i in self.concat], axis=-1)

    def _synchronized_call(self, s0, s1):
        """`call` in training under several replicas: what it computes, with fewer collectives.

        Each op advances BatchNorm stage by stage as soon as its input node exists, and every
        round's BatchNorms of all advancing ops take the global batch's statistics from one
        collective (`synchronized_normalize`): the preprocessing, then as many rounds as the
        cell's longest chain of BatchNorms (DARTS_V2's normal cell: 4 collectives, not 13; its
        reduction cell 1). Ops without `normalization_stages` (pooling, identities, ops of
        yours) run whole once their input exists. The drop-path masks are drawn first, in the
        ops' order, so they are the masks `call` draws.
        """
        states = dict(enumerate(synchronized_apply([self.preprocess0, self.preprocess1], [s0, s1])))
        ops, per_node = self.cell_ops, self.genotype.inputs_per_node
        size, dtype = tf.shape(states[1])[0], states[1].dtype
        masks = {p: self.drop_path.mask(size, dtype) for p, op in enumerate(ops) if not isinstance(op, Identity)}
        stages = [op.normalization_stages(training=True) if hasattr(op, "normalization_stages") else [] for op in ops]
        done, current, stage = {}, {}, [0] * len(ops)
        nodes = len(ops) // per_node
        while len(states) < nodes + 2:
            known = len(states) + len(done)
            # What needs no collective: ops without stages whose input exists, then complete nodes.
            for position, op in enumerate(ops):
                if position not in done and not stages[position] and self.indices[position] in states:
                    done[position] = op(states[self.indices[position]], training=True)
            for node in range(nodes):
                positions = range(per_node * node, per_node * (node + 1))
                if node + 2 not in states and all(p in done for p in positions):
                    states[node + 2] = _node_sum([done[p] * masks[p] if p in masks else done[p] for p in positions])
            # One round: the next stage of every op whose input exists.
            ready = [p for p in range(len(ops)) if p not in done and stages[p] and self.indices[p] in states]
            if not ready:
                if len(states) + len(done) == known:  # (a genotype's checks rule it out)
                    edges = list(zip(self.op_names, self.indices))
                    raise GenotypeError(f"{self.name}: a node's inputs never become available. Received: {edges}")
                continue
            tensors = [stages[p][stage[p]][0](current.get(p, states[self.indices[p]])) for p in ready]
            normalized = synchronized_normalize([stages[p][stage[p]][1] for p in ready], tensors)
            for p, y in zip(ready, normalized):
                stage[p] += 1
                if stage[p] == len(stages[p]):
                    done[p] = y
                else:
                    current[p] = y
        return tf.concat([states[i] for i in self.concat], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "genotype": self.genotype.to_dict(),
                "channels": self.channels,
                "reduction": self.reduction,
                "reduction_prev": self.reduction_prev,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="darts_tf")
class AuxiliaryHead(keras.layers.Layer):
    """The DARTS auxiliary classifier (arXiv:1806.09055, Appendix A.2; from NASNet).

    ReLU, 5x5 average pooling (stride 3 for CIFAR's 8x8 input, 2 for
    ImageNet's 7x7, no padding), 1x1 conv 128 + BN + ReLU, 2x2 conv 768
    (+ BN for CIFAR; the original's ImageNet head omits it) + ReLU, linear.
    `pool_strides=None` picks the stride that pools the features to 2x2
    (size - 5: 3 at 8x8, 2 at 7x7, as the original), so other image sizes
    work (features of at least 6x6: 24-pixel CIFAR-style images).
    """

    def __init__(self, num_classes, pool_strides=None, final_bn=True, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.pool_strides = pool_strides
        self.final_bn = final_bn
        sub = {"dtype": self.dtype_policy}
        self.conv1 = Conv2D(128, 1, name="conv1", **sub)
        self.bn1 = BatchNorm(name="bn1", **sub)
        # PyTorch's default conv init, as every other conv here (fan_in = 128 * 2 * 2).
        self.conv2 = keras.layers.Conv2D(
            768, 2, use_bias=False, kernel_initializer=torch_uniform(128 * 2 * 2), name="conv2", **sub
        )
        self.bn2 = BatchNorm(name="bn2", **sub) if final_bn else None
        self.classifier = keras.layers.Dense(
            num_classes,
            kernel_initializer=torch_uniform(768),
            bias_initializer=torch_uniform(768),
            name="classifier",
            dtype=logits_policy(self.dtype_policy),
        )

    def _strides(self, size):
        if self.pool_strides is not None:
            return self.pool_strides
        return size - 5 if size is not None and size > 5 else 1

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        sizes = [None if n is None else (n - 5) // self._strides(n) + 1 for n in (height, width)]
        if sizes != [2, 2] or height != width:
            raise ConfigError(
                "AuxiliaryHead expected square features that pool to 2x2 (at least 6x6: 24-pixel images or larger). "
                f"Received: {height}x{width} features; build the network with auxiliary=False for this size"
            )
        pooled = (input_shape[0], 2, 2, input_shape[-1])
        self.conv1.build(pooled)
        self.bn1.build(pooled[:-1] + (128,))
        self.conv2.build(pooled[:-1] + (128,))
        if self.bn2 is not None:
            self.bn2.build((input_shape[0], 1, 1, 768))
        self.classifier.build((input_shape[0], 768))

    def call(self, x, training=None):
        x = tf.nn.avg_pool2d(tf.nn.relu(x), 5, self._strides(x.shape[1]), "VALID")
        x = tf.nn.relu(self.bn1(self.conv1(x, training=training), training=training))
        x = self.conv2(x)
        if self.bn2 is not None:
            x = self.bn2(x, training=training)
        x = tf.nn.relu(x)
        return self.classifier(tf.reshape(x, [-1, 768]))

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "pool_strides": self.pool_strides, "final_bn": self.final_bn})
        return config


def logits_policy(policy) -> keras.DTypePolicy:
    """A classifier's policy: float32 under a mixed `policy` (logits feed losses, metrics and the
    served softmax), else `policy`."""
    policy = keras.dtype_policies.get(policy)
    mixed = policy.compute_dtype != policy.variable_dtype
    return keras.DTypePolicy(policy.variable_dtype) if mixed else policy


def _cells(genotype, C, layers, s0, s1, reduction_prev, auxiliary_index, dtype):
    cells, aux_input = [], None
    channels = C
    reductions = reduction_layers(layers)
    for i in range(layers):
        reduction = i in reductions
        if reduction:
            channels *= 2
        cell = EvalCell(genotype, channels, reduction, reduction_prev, name=f"cell_{i}", dtype=dtype)
        s0, s1 = s1, cell(s0, s1)
        cells.append(cell)
        reduction_prev = reduction
        if i == auxiliary_index:
            aux_input = s1
    return cells, s1, aux_input


def _outputs(s1, aux_input, num_classes, auxiliary, aux_pool_strides, aux_final_bn, dtype) -> dict:
    """Global pooling + linear classifier (float32 logits under a mixed policy), and the auxiliary head when asked."""
    pooled = keras.layers.GlobalAveragePooling2D(name="global_pooling", dtype=dtype)(s1)
    fan_in = s1.shape[-1]
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=torch_uniform(fan_in), bias_initializer=torch_uniform(fan_in),
        name="classifier", dtype=logits_policy(dtype),
    )(pooled)  # fmt: skip
    outputs = {"logits": logits}
    if auxiliary:
        head = AuxiliaryHead(num_classes, aux_pool_strides, aux_final_bn, name="auxiliary_head", dtype=dtype)
        outputs["aux_logits"] = head(aux_input)
    return outputs


def _check_genotype(genotype, where: str) -> Genotype:
    if isinstance(genotype, dict):
        genotype = Genotype.from_dict(genotype)
    if not isinstance(genotype, Genotype):
        raise GenotypeError(f"{where} expected a genotype. Received: genotype={genotype!r}")
    return genotype


class _EvaluationNetwork(keras.Model):
    """What NetworkCIFAR and NetworkImageNet share: their arguments, config and `.keras` round trip.

    Functional models built on `keras.Input` inside `__init__`, as KerasHub's
    backbones: `summary()`, `get_layer`, export and `.keras` files work as for
    any functional model, and `from_config` rebuilds the graph from the arguments.
    """

    def _set_arguments(self, C, num_classes, layers, auxiliary, genotype, input_shape, dtype):
        self.network_dtype = dtype  # the layers' policy: Keras's own `dtype` of a functional model is its inputs'
        self.C = C
        self.num_classes = num_classes
        self.num_layers = layers
        self.auxiliary = auxiliary
        self.genotype = genotype
        self.image_shape = tuple(input_shape)

    def get_config(self):
        return {
            "C": self.C,
            "num_classes": self.num_classes,
            "layers": self.num_layers,
            "auxiliary": self.auxiliary,
            "genotype": self.genotype.to_dict(),
            "input_shape": list(self.image_shape),
            "dtype": keras.dtype_policies.serialize(self.network_dtype),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return functional_from_config(cls, config)


def functional_from_config(cls, config: dict):
    """A functional network subclass rebuilt from its arguments (its `dtype` policy deserialised)."""
    config = dict(config)
    if isinstance(config.get("dtype"), dict):
        config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
    return cls(**config)


@keras.saving.register_keras_serializable(package="darts_tf")
class NetworkCIFAR(_EvaluationNetwork):
    """The DARTS CIFAR evaluation network (arXiv:1806.09055, Sec. 3.2 and Appendix A.2).

    A 3x3 conv + BN stem with `3 * C` channels, `layers` cells compiled from
    `genotype` (reduction cells at 1/3 and 2/3 of the depth), the auxiliary
    head after the cell at 2/3 depth when `auxiliary`, global average pooling
    and a linear classifier. Outputs a dict: "logits", and "aux_logits" with
    `auxiliary=True` (a training-time loss only; `inference_model` gives the
    logits-only graph that is exported).

    Args:
        C: channels of the first cells.
        num_classes: number of classes.
        layers: number of cells.
        auxiliary: whether to add the auxiliary head.
        genotype: a `Genotype` (or its dict).
        input_shape: (height, width, channels) of the images.
        dtype: the layers' dtype policy (e.g. "mixed_bfloat16"; None: Keras's global one). Under a
            mixed policy the classifiers compute in float32, so the logits are float32.
    """

    def __init__(self, C=36, num_classes=10, layers=20, auxiliary=True, genotype=None, input_shape=(32, 32, 3),
                 name="network_cifar", dtype=None, **kwargs):  # fmt: skip
        genotype = _check_genotype(genotype, "NetworkCIFAR")
        dtype = keras.dtype_policies.get(dtype)
        inputs = keras.Input(tuple(input_shape), name="images")
        x = Conv2D(3 * C, 3, name="stem_conv", dtype=dtype)(inputs)
        x = BatchNorm(name="stem_bn", dtype=dtype)(x)
        _, s1, aux_input = _cells(genotype, C, layers, x, x, False, 2 * layers // 3, dtype)
        outputs = _outputs(s1, aux_input, num_classes, auxiliary, None, True, dtype)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._set_arguments(C, num_classes, layers, auxiliary, genotype, input_shape, dtype)


@keras.saving.register_keras_serializable(package="darts_tf")
class NetworkImageNet(_EvaluationNetwork):
    """The DARTS ImageNet (mobile setting) evaluation network (arXiv:1806.09055, Sec. 3.3 and A.2).

    As `NetworkCIFAR`, with the original's two-stage stem (three stride-2 3x3
    convs: 224 -> 28 pixels; the first cell takes both stems, so it reduces
    its first input) and an auxiliary head without its last BatchNorm
    (pooling stride 2). Defaults: C=48, 1000 classes, 14 cells, 224x224 images.
    """

    def __init__(self, C=48, num_classes=1000, layers=14, auxiliary=True, genotype=None, input_shape=(224, 224, 3),
                 name="network_imagenet", dtype=None, **kwargs):  # fmt: skip
        genotype = _check_genotype(genotype, "NetworkImageNet")
        dtype = keras.dtype_policies.get(dtype)
        inputs = keras.Input(tuple(input_shape), name="images")
        x = Conv2D(C // 2, 3, 2, name="stem0_conv1", dtype=dtype)(inputs)
        x = keras.layers.ReLU(dtype=dtype)(BatchNorm(name="stem0_bn1", dtype=dtype)(x))
        x = Conv2D(C, 3, 2, name="stem0_conv2", dtype=dtype)(x)
        s0 = BatchNorm(name="stem0_bn2", dtype=dtype)(x)
        x = Conv2D(C, 3, 2, name="stem1_conv", dtype=dtype)(keras.layers.ReLU(dtype=dtype)(s0))
        s1 = BatchNorm(name="stem1_bn", dtype=dtype)(x)
        _, s1, aux_input = _cells(genotype, C, layers, s0, s1, True, 2 * layers // 3, dtype)
        outputs = _outputs(s1, aux_input, num_classes, auxiliary, 2, False, dtype)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._set_arguments(C, num_classes, layers, auxiliary, genotype, input_shape, dtype)


def count_parameters(model: keras.Model, include_auxiliary: bool = False) -> int:
    """Trainable parameters, excluding the auxiliary head unless asked (as the original reports)."""
    total = 0
    for variable in model.trainable_variables:
        if not include_auxiliary and "auxiliary_head" in variable.path:
            continue
        total += int(tf.size(variable))
    return total


def is_eval_network(model) -> bool:
    """True for a NetworkCIFAR or NetworkImageNet (built, or loaded from a `.keras` file)."""
    return isinstance(model, _EvaluationNetwork)


def float32_network(model: keras.Model) -> keras.Model:
    """`model` itself, or for an evaluation network built under a mixed policy a float32 copy with
    the same weights (its variables are float32 already): what exports serve and convert."""
    policy = getattr(model, "network_dtype", None)
    if policy is None or policy.compute_dtype == policy.variable_dtype:
        return model
    copy = model.__class__.from_config({**model.get_config(), "dtype": policy.variable_dtype})
    copy.set_weights(model.get_weights())
    return copy


def inference_model(model: keras.Model) -> keras.Model:
    """The logits-only graph of an evaluation network (same layers and weights, no auxiliary head)."""
    outputs = model.output
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs
    return keras.Model(model.input, logits, name=f"{model.name}_inference")

"""NAS-Bench-201's networks: the search network over its cell, and the network of one found cell.

Both are the benchmark's skeleton (Dong & Yang, ICLR 2020, arXiv:2001.00326, Sec. 2.1, Fig. 1): a 3x3
conv + BN stem with C channels, three stages of N cells (C, 2C, 4C channels) with a residual
reduction block between them, BN + ReLU, global average pooling and a linear classifier.

- `Nb201SearchNetwork`: every edge of the cell is a darts_tf `MixedOp` over the benchmark's five
  ops (`NB201_SPACE`, packed and shared as DARTS's edges), one set of alphas [6, 5] shared by all
  cells (and PC-DARTS's partial channels and edge normalisation). As the benchmark's DARTS code
  (`TinyNetworkDarts` with `affine=False`, `track_running_stats=False`, one of the two settings its
  scripts take), the cells' BatchNorms have no affine parameters and always normalise with the
  batch's statistics; the stem, the reduction blocks and the last BatchNorm are ordinary.
- `Nb201Network`: the network of one `Nb201Genotype`, every op with affine BatchNorms (the
  benchmark's `TinyNetwork` with `InferCell`), a functional Keras model with dict outputs
  (`logits`) as `NetworkCIFAR`, so training, export and serving take it as they take DARTS's.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from darts_tf.cnn.eval_model import functional_from_config, logits_policy
from darts_tf.cnn.genotypes import resolve_space
from darts_tf.cnn.ops import BatchNorm, Conv2D, ReLUConvBN, make_op, torch_uniform
from darts_tf.cnn.search_model import EdgeFunctions, MixedOp, packable
from darts_tf.errors import ConfigError, GenotypeError
from darts_tf.nb201.genotypes import EDGES, NB201_SPACE, NODES, Nb201Genotype, derive_nb201
from darts_tf.precision import to_float32

STAGES = 3


@keras.saving.register_keras_serializable(package="darts_tf")
class ResNetBlock(keras.layers.Layer):
    """NAS-Bench-201's reduction block between stages (its `ResNetBasicblock` at stride 2, arXiv:2001.00326):
    ReLU-conv3x3(stride 2)-BN, ReLU-conv3x3-BN, plus a shortcut of 2x2 average pooling and a 1x1 conv.
    Even input sizes (the shortcut pools without padding)."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        sub = {"dtype": self.dtype_policy}
        self.conv_a = ReLUConvBN(filters, 3, 2, name="conv_a", **sub)
        self.conv_b = ReLUConvBN(filters, 3, 1, name="conv_b", **sub)
        self.shortcut = Conv2D(filters, 1, name="shortcut", **sub)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.conv_a.build(input_shape)
        self.conv_b.build(self.conv_a.compute_output_shape(input_shape))
        half = lambda n: None if n is None else n // 2  # noqa: E731
        self.shortcut.build((input_shape[0], half(input_shape[1]), half(input_shape[2]), input_shape[3]))

    def call(self, x, training=None, update_statistics=True):
        bn = {"training": training, "update_statistics": update_statistics}
        y = self.conv_b(self.conv_a(x, **bn), **bn)
        return y + self.shortcut(tf.nn.avg_pool2d(x, 2, 2, "VALID"), training=training)

    def compute_output_shape(self, input_shape):
        return self.conv_a.compute_output_shape(tuple(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters})
        return config


def nb201_edge_weights(betas) -> tf.Tensor:
    """PC-DARTS edge normalisation in the NAS-Bench-201 cell: softmax of `betas` [6] over each node's edges."""
    return tf.concat([tf.nn.softmax(piece) for piece in tf.split(betas, list(range(1, NODES)))], axis=0)


@keras.saving.register_keras_serializable(package="darts_tf")
class Nb201SearchCell(keras.layers.Layer):
    """The NAS-Bench-201 cell with a `MixedOp` on each of its 6 edges (arXiv:2001.00326, Sec. 2.1):
    node j sums its edges from every earlier node; node 3 is the output."""

    def __init__(self, channels, shared_trace=True, edge_functions=None, partial_channels=1, space=None, **kwargs):
        super().__init__(**kwargs)
        self.space = resolve_space(space, default=NB201_SPACE)
        self.channels = channels
        self.shared_trace = shared_trace
        self.partial_channels = partial_channels
        edge_functions = edge_functions if edge_functions is not None else EdgeFunctions()
        sub = {"dtype": self.dtype_policy}
        self.edges = [
            MixedOp(channels, 1, shared_trace, edge_functions, partial_channels, self.space, name=f"edge_{i}_{j}",
                    **sub)
            for i, j in EDGES
        ]  # fmt: skip

    def build(self, input_shape):
        for edge in self.edges:
            edge.build(tuple(input_shape))

    def call(self, x, weights, edge_weights=None, training=None, update_statistics=True, weight_gradients=True):
        weights = weights if isinstance(weights, (list, tuple)) else tf.unstack(weights)
        if edge_weights is not None and not isinstance(edge_weights, (list, tuple)):
            edge_weights = tf.unstack(edge_weights)
        passes = {"training": training, "update_statistics": update_statistics, "weight_gradients": weight_gradients}
        nodes = [x]
        for j in range(1, NODES):
            terms = []
            for k, (i, target) in enumerate(EDGES):
                if target == j:
                    term = self.edges[k](nodes[i], weights[k], **passes)
                    terms.append(term if edge_weights is None else edge_weights[k] * term)
            nodes.append(tf.add_n(terms))
        return nodes[-1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channels": self.channels,
                "shared_trace": self.shared_trace,
                "partial_channels": self.partial_channels,
                "space": self.space.to_dict(),
            }
        )
        return config


def _stage_channels(C: int) -> list[int]:
    return [C * 2**stage for stage in range(STAGES)]


class Nb201SearchNetwork(keras.Model):
    """The NAS-Bench-201 search network (its DARTS `TinyNetworkDarts`, arXiv:2001.00326): see the module.

    Args:
        C: channels of the first stage (the benchmark's 16).
        num_classes: number of classes.
        cells: cells per stage, N (the benchmark's 5).
        shared_trace: packed, shared edge functions (as `SearchNetwork`).
        partial_channels: PC-DARTS's partial channels (1: off).
        edge_normalization: PC-DARTS's edge weights (`betas` [6]), softmax over each node's edges.
        space: a `SearchSpace` of cell "nb201" (`NB201_SPACE` by default).
    """

    def __init__(
        self, C=16, num_classes=10, cells=5, shared_trace=True, partial_channels=1, edge_normalization=False,
        space=None, **kwargs,
    ):  # fmt: skip
        super().__init__(**kwargs)
        for name, value in (("C", C), ("num_classes", num_classes), ("cells", cells)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"Nb201SearchNetwork expected a positive integer {name}. Received: {name}={value!r}")
        if not isinstance(partial_channels, int) or partial_channels < 1 or C % partial_channels:
            raise ConfigError(
                f"Nb201SearchNetwork expected partial_channels, a positive integer dividing C={C}. "
                f"Received: partial_channels={partial_channels!r}"
            )
        self.space = resolve_space(space, default=NB201_SPACE)
        if self.space.cell != "nb201" or self.space.num_edges != len(EDGES):
            raise ConfigError(f"Nb201SearchNetwork expected a space of cell 'nb201' with 3 nodes. Received: {space}")
        shared_trace = shared_trace and packable(self.space, C // partial_channels, self.dtype_policy)
        self.C = C
        self.num_classes = num_classes
        self.cells_per_stage = cells
        self.shared_trace = shared_trace
        self.partial_channels = partial_channels
        self.edge_normalization = bool(edge_normalization)
        self.edge_functions = EdgeFunctions()
        sub = {"dtype": self.dtype_policy}
        self.stem_conv = Conv2D(C, 3, name="stem_conv", **sub)
        self.stem_bn = BatchNorm(affine=True, name="stem_bn", **sub)
        self.blocks = []  # in order: cells, and a ResNetBlock before stages 2 and 3
        for stage, channels in enumerate(_stage_channels(C)):
            if stage:
                self.blocks.append(ResNetBlock(channels, name=f"reduction_{stage}", **sub))
            for n in range(cells):
                self.blocks.append(
                    Nb201SearchCell(
                        channels,
                        shared_trace,
                        self.edge_functions,
                        partial_channels,
                        self.space,
                        name=f"cell_{stage}_{n}",
                        **sub,
                    )  # fmt: skip
                )
        self.lastact_bn = BatchNorm(affine=True, name="lastact_bn", **sub)
        fan_in = _stage_channels(C)[-1]
        self.classifier = keras.layers.Dense(
            num_classes, kernel_initializer=torch_uniform(fan_in), bias_initializer=torch_uniform(fan_in),
            name="classifier", **sub,
        )  # fmt: skip

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            raise ValueError(f"Nb201SearchNetwork expected NHWC images. Received: input_shape={input_shape}")
        shape = (len(EDGES), self.space.num_ops)
        self.alphas = self.add_weight(  # the benchmark's DARTS: 1e-3 * randn(6, 5)
            name="alphas", shape=shape, initializer=keras.initializers.RandomNormal(stddev=1e-3), autocast=False
        )
        if self.edge_normalization:
            self.betas = self.add_weight(
                name="betas", shape=(len(EDGES),), initializer=keras.initializers.RandomNormal(stddev=1e-3),
                autocast=False,
            )  # fmt: skip
        self.stem_conv.build(input_shape)
        shape = self.stem_conv.compute_output_shape(input_shape)
        self.stem_bn.build(shape)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.lastact_bn.build(shape)
        self.classifier.build((input_shape[0], shape[-1]))

    def call(self, inputs, training=None, update_statistics=True, weight_gradients=True):
        """Logits of `inputs`; `update_statistics` and `weight_gradients` as `SearchNetwork.call`."""
        dtype = self.compute_dtype
        x = tf.cast(inputs, dtype)
        weights = tf.unstack(tf.cast(tf.nn.softmax(self.alphas, axis=-1), dtype))
        edges = tf.unstack(tf.cast(nb201_edge_weights(self.betas), dtype)) if self.edge_normalization else None
        bn = {"training": training, "update_statistics": update_statistics}
        x = self.stem_bn(self.stem_conv(x, training=training), **bn)
        for block in self.blocks:
            if isinstance(block, Nb201SearchCell):
                # The cells' BatchNorms always take the batch's statistics (track_running_stats=False).
                x = block(x, weights, edges, training=True, update_statistics=False, weight_gradients=weight_gradients)
            else:
                x = block(x, **bn)
        x = tf.nn.relu(self.lastact_bn(x, **bn))
        return to_float32(self.classifier(tf.reduce_mean(x, axis=[1, 2]), training=training))

    @property
    def alpha_variables(self) -> list:
        return [self.alphas]

    @property
    def beta_variables(self) -> list:
        return [self.betas] if self.edge_normalization else []

    @property
    def arch_variables(self) -> list:
        return self.alpha_variables + self.beta_variables

    def arch_arrays(self) -> dict:
        """name -> NumPy value of every architecture variable ("alphas", and "betas" with edge normalisation)."""
        names = ["alphas"] + (["betas"] if self.edge_normalization else [])
        return {name: np.asarray(variable.numpy()) for name, variable in zip(names, self.arch_variables)}

    @property
    def weight_variables(self) -> list:
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    def genotype(self, max_skip: int | None = None) -> Nb201Genotype:
        """The derived cell (`derive_nb201`: the argmax op of every edge; the betas do not change it)."""
        return derive_nb201(self.alphas.numpy(), max_skip=max_skip)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "C": self.C,
                "num_classes": self.num_classes,
                "cells": self.cells_per_stage,
                "shared_trace": self.shared_trace,
                "partial_channels": self.partial_channels,
                "edge_normalization": self.edge_normalization,
                "space": self.space.to_dict(),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="darts_tf")
class Nb201Cell(keras.layers.Layer):
    """One NAS-Bench-201 cell (its `InferCell`): one op on each edge, affine BatchNorms; node 3 is the output."""

    def __init__(self, genotype, channels, **kwargs):
        super().__init__(**kwargs)
        if isinstance(genotype, dict):
            genotype = Nb201Genotype.from_dict(genotype)
        self.genotype = genotype
        self.channels = channels
        sub = {"dtype": self.dtype_policy}
        self.cell_ops = [make_op(op, channels, 1, affine=True, name=f"op_{i}_{j}", **sub)
                         for (i, j), op in zip(EDGES, genotype.ops)]  # fmt: skip

    def build(self, input_shape):
        for op in self.cell_ops:
            op.build(tuple(input_shape))

    def call(self, x, training=None):
        nodes = [x]
        for j in range(1, NODES):
            into = [(k, i) for k, (i, target) in enumerate(EDGES) if target == j]
            terms = [self.cell_ops[k](nodes[i], training=training) for k, i in into]
            nodes.append(tf.add_n(terms))  # a `none` edge adds its zeros, as the benchmark's cell
        return nodes[-1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"genotype": self.genotype.to_dict(), "channels": self.channels})
        return config


@keras.saving.register_keras_serializable(package="darts_tf")
class Nb201Network(keras.Model):
    """The network of one NAS-Bench-201 cell (the benchmark's `TinyNetwork`, arXiv:2001.00326, Sec. 2.1).

    A functional model with dict outputs ("logits", float32 under a mixed policy), as `NetworkCIFAR`.

    Args:
        genotype: an `Nb201Genotype` (or its dict, or an arch string).
        C: channels of the first stage (16). cells: cells per stage (5). num_classes: classes (10).
        input_shape: (height, width, channels), even height and width (32, 32, 3).
        dtype: the layers' dtype policy.
    """

    def __init__(self, genotype=None, C=16, cells=5, num_classes=10, input_shape=(32, 32, 3), name="nb201_network",
                 dtype=None, **kwargs):  # fmt: skip
        if isinstance(genotype, str):
            genotype = Nb201Genotype.from_arch(genotype)
        if isinstance(genotype, dict):
            genotype = Nb201Genotype.from_dict(genotype)
        if not isinstance(genotype, Nb201Genotype):
            raise GenotypeError(f"Nb201Network expected a NAS-Bench-201 genotype. Received: genotype={genotype!r}")
        dtype = keras.dtype_policies.get(dtype)
        inputs = keras.Input(tuple(input_shape), name="images")
        x = Conv2D(C, 3, name="stem_conv", dtype=dtype)(inputs)
        x = BatchNorm(name="stem_bn", dtype=dtype)(x)
        for stage, channels in enumerate(_stage_channels(C)):
            if stage:
                x = ResNetBlock(channels, name=f"reduction_{stage}", dtype=dtype)(x)
            for n in range(cells):
                x = Nb201Cell(genotype, channels, name=f"cell_{stage}_{n}", dtype=dtype)(x)
        x = keras.layers.ReLU(dtype=dtype)(BatchNorm(name="lastact_bn", dtype=dtype)(x))
        pooled = keras.layers.GlobalAveragePooling2D(name="global_pooling", dtype=dtype)(x)
        fan_in = _stage_channels(C)[-1]
        logits = keras.layers.Dense(
            num_classes, kernel_initializer=torch_uniform(fan_in), bias_initializer=torch_uniform(fan_in),
            name="classifier", dtype=logits_policy(dtype),
        )(pooled)  # fmt: skip
        super().__init__(inputs=inputs, outputs={"logits": logits}, name=name, **kwargs)
        self.network_dtype = dtype
        self.genotype = genotype
        self.C = C
        self.cells_per_stage = cells
        self.num_classes = num_classes
        self.image_shape = tuple(input_shape)

    def get_config(self):
        return {
            "genotype": self.genotype.to_dict(),
            "C": self.C,
            "cells": self.cells_per_stage,
            "num_classes": self.num_classes,
            "input_shape": list(self.image_shape),
            "dtype": keras.dtype_policies.serialize(self.network_dtype),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return functional_from_config(cls, config)


__all__ = [
    "Nb201Cell",
    "Nb201Network",
    "Nb201SearchCell",
    "Nb201SearchNetwork",
    "ResNetBlock",
    "nb201_edge_weights",
]

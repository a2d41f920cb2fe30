"""The NAS-Bench-201 search network against a PyTorch reference built as the benchmark's code builds it.

The reference follows its `TinyNetworkDarts` (xautodl/models/cell_searchs/search_model_darts.py): the stem,
3N `NAS201SearchCell`s (every edge a ModuleList of the five ops in the benchmark's order, summed as
`sum(op(x) * w)`), a `ResNetBasicblock` before stages 2 and 3, `lastact`, pooling and the classifier;
its `ReLUConvBN` gives the search convolutions a bias (`bias=not affine`), here zero (darts_tf has
none: the BatchNorm after it removes it), and the cells' BatchNorms have `affine=False,
track_running_stats=False`. Weights are copied by the original code's parameter names; logits and the
alpha gradient are compared in float64.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf.architect import cross_entropy
from darts_tf.cnn.pytorch import _to_torch, torch_variables
from darts_tf.nb201.genotypes import EDGES, OPS
from darts_tf.nb201.model import Nb201SearchCell, Nb201SearchNetwork, ResNetBlock

if os.environ.get("DARTS_TF_REQUIRE_TORCH") == "1":
    import torch
else:
    torch = pytest.importorskip("torch")
nn = torch.nn


class ReLUConvBN(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, padding, affine, track):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=not affine),
            nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track),
        )

    def forward(self, x):
        return self.op(x)


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


def _ops(c):  # the benchmark's OPS for its search cells: affine=False, track_running_stats=False
    return nn.ModuleList([
        Zero(), nn.Identity(), ReLUConvBN(c, c, 1, 1, 0, False, False), ReLUConvBN(c, c, 3, 1, 1, False, False),
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
    ])  # fmt: skip


class SearchCell(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.edges = nn.ModuleDict({f"{j}<-{i}": _ops(c) for i, j in EDGES})
        self.edge2index = {key: k for k, key in enumerate(sorted(self.edges.keys()))}

    def forward(self, x, weights):
        nodes = [x]
        for j in range(1, 4):
            terms = []
            for i in range(j):
                key = f"{j}<-{i}"
                w = weights[self.edge2index[key]]
                terms.append(sum(op(nodes[i]) * w[k] for k, op in enumerate(self.edges[key])))
            nodes.append(sum(terms))
        return nodes[-1]


class ResNetBasicblock(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, True, True)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, True, True)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2, 0), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetworkDarts(nn.Module):
    def __init__(self, C, N, classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        channels = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N
        reductions = [False] * N + [True] + [False] * N + [True] + [False] * N
        cells, previous = [], C
        for c, reduction in zip(channels, reductions):
            cells.append(ResNetBasicblock(previous, c) if reduction else SearchCell(c))
            previous = c
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(previous), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(previous, classes)
        self.arch_parameters = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPS)))

    def forward(self, x):
        alphas = nn.functional.softmax(self.arch_parameters, dim=-1)
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, alphas) if isinstance(cell, SearchCell) else cell(x)
        return self.classifier(self.lastact(x).mean(dim=(2, 3)))


def _state_dict(network: Nb201SearchNetwork) -> dict:
    """The reference's state dict from a plain (unpacked) darts_tf network, by the original's names."""

    def named(prefix, layer):
        return {f"{prefix}.{name}": _to_torch(v.numpy(), kind) for name, (v, kind) in torch_variables(layer).items()}

    state = {**named("stem.0", network.stem_conv), **named("stem.1", network.stem_bn)}
    for index, block in enumerate(network.blocks):
        if isinstance(block, ResNetBlock):
            state.update(named(f"cells.{index}.conv_a", block.conv_a))
            state.update(named(f"cells.{index}.conv_b", block.conv_b))
            state.update(named(f"cells.{index}.downsample.1", block.shortcut))
            continue
        assert isinstance(block, Nb201SearchCell)
        for (i, j), edge in zip(EDGES, block.edges):
            for k, op in enumerate(OPS):
                if op.startswith("nor_conv"):  # its BatchNorm keeps no statistics (track_running_stats=False)
                    names = named(f"cells.{index}.edges.{j}<-{i}.{k}", edge.primitive_ops[op])
                    state.update({name: value for name, value in names.items() if "running" not in name})
    state.update(named("lastact.0", network.lastact_bn))
    state["classifier.weight"] = network.classifier.kernel.numpy().T
    state["classifier.bias"] = network.classifier.bias.numpy()
    state["arch_parameters"] = network.alphas.numpy()
    return state


def test_search_network_equals_the_benchmarks_in_float64():
    keras.utils.set_random_seed(0)
    network = Nb201SearchNetwork(4, 5, 1, shared_trace=False, dtype="float64")
    network.build((None, 8, 8, 3))
    network.alphas.assign(np.random.default_rng(0).normal(scale=0.5, size=(6, 5)))
    reference = TinyNetworkDarts(4, 1, 5).double()
    state = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in _state_dict(network).items()}
    missing, unexpected = reference.load_state_dict(state, strict=False)
    # Only the search convolutions' biases are the reference's own (zero here) and BN step counters.
    assert all(name.endswith((".bias", "num_batches_tracked")) for name in missing), missing
    assert not unexpected
    for name, parameter in reference.named_parameters():
        if name in missing:
            torch.nn.init.zeros_(parameter)
    rng = np.random.default_rng(1)
    images = rng.normal(size=(6, 8, 8, 3))
    labels = rng.integers(0, 5, size=6)
    with tf.GradientTape() as tape:
        logits = network(tf.constant(images), training=True)
        loss = cross_entropy(tf.constant(labels, tf.int32), logits)
    alpha_gradient = tape.gradient(loss, network.alphas).numpy()
    reference.train()
    torch_logits = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    torch_loss = nn.functional.cross_entropy(torch_logits, torch.from_numpy(labels))
    torch_loss.backward()
    np.testing.assert_allclose(logits.numpy(), torch_logits.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(alpha_gradient, reference.arch_parameters.grad.numpy(), rtol=1e-7, atol=1e-12)

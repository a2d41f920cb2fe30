"""Whole-network parity with the original PyTorch DARTS (quark0/darts), through the converter.

The PyTorch modules below are written from the original's architecture
description (operations.py / model.py / model_search.py semantics: symmetric
padding, count_include_pad=False average pooling, FactorizedReduce, affine-less
search BN, MixedOp as the weighted sum of all eight ops). Loading our weights
into them with `load_state_dict(strict=True)` checks that the converter's names
and shapes are the original's; the outputs and alpha gradients are then
compared in float64. Torch is installed by .ci/run; elsewhere these tests skip.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf.architect import first_order_arch_gradients
from darts_tf.cnn.eval_model import NetworkCIFAR
from darts_tf.cnn.genotypes import AMOEBANET, DARTS_V1, DARTS_V2, NASNET, PRIMITIVES, derive_genotype
from darts_tf.cnn.pytorch import to_pytorch_state_dict
from helpers import random_batch, tiny_search_network

if os.environ.get("DARTS_TF_REQUIRE_TORCH") == "1":
    import torch
else:
    torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class ReLUConvBN(nn.Module):
    def __init__(self, c_in, c_out, k, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, padding, bias=False), nn.BatchNorm2d(c_out, affine=affine)
        )

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, c, k, stride, padding, dilation, affine):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c, c, k, stride, padding, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, c, k, stride, padding, affine):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c, c, k, stride, padding, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
            nn.ReLU(),
            nn.Conv2d(c, c, k, 1, padding, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class FactorizedReduce(nn.Module):
    def __init__(self, c_in, c_out, affine=True):
        super().__init__()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = F.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


def make_op(name, c, stride, affine):
    if name == "none":
        return Zero(stride)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name == "conv_7x1_1x7":
        return nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c, c, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(c, c, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )
    k = int(name[-1])
    if name.startswith("sep_conv"):
        return SepConv(c, k, stride, k // 2, affine)
    return DilConv(c, k, stride, k - 1, 2, affine)


def _preprocess0(c_pp, c, reduction_prev, affine):
    return FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)


class EvalCell(nn.Module):
    def __init__(self, genotype, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.preprocess0 = _preprocess0(c_pp, c, reduction_prev, True)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.indices = [index for _, index in edges]
        self._ops = nn.ModuleList(make_op(name, c, 2 if reduction and index < 2 else 1, True) for name, index in edges)

    def forward(self, s0, s1):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self._ops) // 2):
            a, b = 2 * i, 2 * i + 1
            states.append(self._ops[a](states[self.indices[a]]) + self._ops[b](states[self.indices[b]]))
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    def __init__(self, c, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class TorchNetworkCIFAR(nn.Module):
    def __init__(self, c, num_classes, layers, genotype):
        super().__init__()
        self.aux_index = 2 * layers // 3
        c_curr = 3 * c
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            c_curr *= 2 if reduction else 1
            cell = EvalCell(genotype, c_pp, c_p, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, len(cell.concat) * c_curr
            if i == self.aux_index:
                c_aux = c_p
        self.auxiliary_head = AuxiliaryHeadCIFAR(c_aux, num_classes)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_index:
                aux = self.auxiliary_head(s1)
        return self.classifier(s1.mean(dim=(2, 3))), aux


class SearchMixedOp(nn.Module):
    def __init__(self, c, stride):
        super().__init__()
        ops = []
        for name in PRIMITIVES:
            op = make_op(name, c, stride, False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
            ops.append(op)
        self._ops = nn.ModuleList(ops)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))  # all eight, `none` included


class SearchCell(nn.Module):
    def __init__(self, steps, multiplier, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        self.preprocess0 = _preprocess0(c_pp, c, reduction_prev, False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self._ops = nn.ModuleList(
            SearchMixedOp(c, 2 if reduction and j < 2 else 1) for i in range(steps) for j in range(2 + i)
        )

    def forward(self, s0, s1, weights):
        states, offset = [self.preprocess0(s0), self.preprocess1(s1)], 0
        for _ in range(self.steps):
            states.append(sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states)))
            offset += len(states) - 1
        return torch.cat(states[-self.multiplier :], dim=1)


class TorchSearchNetwork(nn.Module):
    def __init__(self, c, num_classes, layers, steps=4, multiplier=4, stem_multiplier=3):
        super().__init__()
        c_curr = stem_multiplier * c
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            c_curr *= 2 if reduction else 1
            self.cells.append(SearchCell(steps, multiplier, c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier * c_curr
        self.classifier = nn.Linear(c_p, num_classes)
        edges = sum(2 + i for i in range(steps))
        self.alphas_normal = nn.Parameter(torch.zeros(edges, len(PRIMITIVES), dtype=torch.float64))
        self.alphas_reduce = nn.Parameter(torch.zeros(edges, len(PRIMITIVES), dtype=torch.float64))

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            alphas = self.alphas_reduce if cell.reduction else self.alphas_normal
            s0, s1 = s1, cell(s0, s1, F.softmax(alphas, dim=-1))
        return self.classifier(s1.mean(dim=(2, 3)))


def _load(module, state_dict):
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).double() for k, v in state_dict.items()}
    module.double().load_state_dict(tensors, strict=True)  # the original's names and shapes, nothing left over


def _randomize_statistics(model, rng):
    for v in model.non_trainable_variables:
        if v.path.endswith("moving_mean"):
            v.assign(rng.normal(scale=0.1, size=v.shape).astype(v.dtype))
        elif v.path.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 2.0, size=v.shape).astype(v.dtype))


@pytest.mark.parametrize(
    "genotype", [DARTS_V2, DARTS_V1, NASNET, AMOEBANET], ids=["DARTS_V2", "DARTS_V1", "NASNet", "AmoebaNet"]
)
def test_eval_network_matches_pytorch(genotype):
    keras.utils.set_random_seed(0)
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        model = NetworkCIFAR(6, 10, 5, True, genotype)
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
    _randomize_statistics(model, np.random.default_rng(0))
    reference = TorchNetworkCIFAR(6, 10, 5, genotype)
    _load(reference, to_pytorch_state_dict(model))
    reference.eval()
    images = np.random.default_rng(1).normal(size=(3, 32, 32, 3))
    with torch.no_grad():
        logits, aux = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    out = model(tf.constant(images), training=False)
    np.testing.assert_allclose(out["logits"].numpy(), logits.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(out["aux_logits"].numpy(), aux.numpy(), rtol=1e-9, atol=1e-10)
    # float32 as served: the original's float32 outputs to float32 precision.
    model32 = NetworkCIFAR(6, 10, 5, True, genotype)
    for a, b in zip(model32.variables, model.variables):
        a.assign(b.numpy().astype(a.dtype))
    out32 = model32(tf.constant(images, tf.float32), training=False)["logits"].numpy()
    np.testing.assert_allclose(out32, logits.numpy(), rtol=1e-4, atol=1e-5)


def test_search_network_logits_and_alpha_gradients_match_pytorch():
    model = tiny_search_network(dtype="float64", C=4, num_classes=3, layers=3, size=8)
    reference = TorchSearchNetwork(4, 3, 3)
    _load(reference, to_pytorch_state_dict(model))  # alphas included
    reference.train()  # batch statistics, as during the search
    images, labels = random_batch(n=4, size=8, num_classes=3, dtype="float64")
    x = torch.from_numpy(images.numpy().transpose(0, 3, 1, 2).copy())
    logits = reference(x)
    loss = F.cross_entropy(logits, torch.from_numpy(labels.numpy()).long())
    loss.backward()
    ours = model(images, training=True).numpy()
    np.testing.assert_allclose(ours, logits.detach().numpy(), rtol=1e-9, atol=1e-10)
    grads, arch_loss = first_order_arch_gradients(model, (images, labels))
    assert float(arch_loss) == pytest.approx(loss.item(), rel=1e-10)
    np.testing.assert_allclose(grads[0].numpy(), reference.alphas_normal.grad.numpy(), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(grads[1].numpy(), reference.alphas_reduce.grad.numpy(), rtol=1e-7, atol=1e-12)


# PC-DARTS (Xu et al., ICLR 2020; yuhuixu1993/PC-DARTS model_search.py), written from its description:
# the ops of an edge see the first C // k channels, the rest bypass them (MaxPool2d(2, 2) on a
# stride-2 edge), then channel_shuffle(cat, k); edges into a node weighted by per-node softmax(betas).


def torch_channel_shuffle(x, groups):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class PCMixedOp(nn.Module):
    def __init__(self, c, stride, k):
        super().__init__()
        self.k = k
        self.mp = nn.MaxPool2d(2, 2)
        ops = []
        for name in PRIMITIVES:
            op = make_op(name, c // k, stride, False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(c // k, affine=False))
            ops.append(op)
        self._ops = nn.ModuleList(ops)

    def forward(self, x, weights):
        seen, bypass = x[:, : x.shape[1] // self.k], x[:, x.shape[1] // self.k :]
        mixed = sum(w * op(seen) for w, op in zip(weights, self._ops))
        if mixed.shape[2] != x.shape[2]:
            bypass = self.mp(bypass)
        return torch_channel_shuffle(torch.cat([mixed, bypass], dim=1), self.k)


class PCSearchCell(SearchCell):
    def __init__(self, steps, multiplier, c_pp, c_p, c, reduction, reduction_prev, k):
        super().__init__(steps, multiplier, c_pp, c_p, c, reduction, reduction_prev)
        self._ops = nn.ModuleList(
            PCMixedOp(c, 2 if reduction and j < 2 else 1, k) for i in range(steps) for j in range(2 + i)
        )

    def forward(self, s0, s1, weights, weights2):
        states, offset = [self.preprocess0(s0), self.preprocess1(s1)], 0
        for _ in range(self.steps):
            states.append(
                sum(weights2[offset + j] * self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            )
            offset += len(states) - 1
        return torch.cat(states[-self.multiplier :], dim=1)


def torch_edge_weights(betas, steps):
    pieces, start = [], 0
    for node in range(steps):
        pieces.append(F.softmax(betas[start : start + node + 2], dim=-1))
        start += node + 2
    return torch.cat(pieces)


class TorchPCSearchNetwork(TorchSearchNetwork):
    def __init__(self, c, num_classes, layers, k, steps=4, multiplier=4):
        super().__init__(c, num_classes, layers, steps, multiplier)
        self.steps = steps
        c_curr, cells, reduction_prev = c, [], False
        c_pp = c_p = 3 * c
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            c_curr *= 2 if reduction else 1
            cells.append(PCSearchCell(steps, multiplier, c_pp, c_p, c_curr, reduction, reduction_prev, k))
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier * c_curr
        self.cells = nn.ModuleList(cells)
        edges = sum(2 + i for i in range(steps))
        self.betas_normal = nn.Parameter(torch.zeros(edges, dtype=torch.float64))
        self.betas_reduce = nn.Parameter(torch.zeros(edges, dtype=torch.float64))

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            alphas, betas = (
                (self.alphas_reduce, self.betas_reduce) if cell.reduction else (self.alphas_normal, self.betas_normal)
            )
            s0, s1 = s1, cell(s0, s1, F.softmax(alphas, dim=-1), torch_edge_weights(betas, self.steps))
        return self.classifier(s1.mean(dim=(2, 3)))


@pytest.mark.parametrize("shared_trace", [True, False], ids=["packed", "plain"])
def test_pc_darts_search_network_matches_pytorch(shared_trace):
    """Partial channels (K=4) with edge normalisation: logits and alpha/beta gradients as PC-DARTS's."""
    model = tiny_search_network(
        dtype="float64", C=8, num_classes=3, layers=3, size=8, partial_channels=4, edge_normalization=True,
        shared_trace=shared_trace,
    )  # fmt: skip
    reference = TorchPCSearchNetwork(8, 3, 3, k=4)
    _load(reference, to_pytorch_state_dict(model))  # alphas and betas included
    reference.train()
    images, labels = random_batch(n=4, size=8, num_classes=3, dtype="float64")
    logits = reference(torch.from_numpy(images.numpy().transpose(0, 3, 1, 2).copy()))
    loss = F.cross_entropy(logits, torch.from_numpy(labels.numpy()).long())
    loss.backward()
    np.testing.assert_allclose(model(images, training=True).numpy(), logits.detach().numpy(), rtol=1e-9, atol=1e-10)
    grads, arch_loss = first_order_arch_gradients(model, (images, labels))
    assert float(arch_loss) == pytest.approx(loss.item(), rel=1e-10)
    expected = [reference.alphas_normal, reference.alphas_reduce, reference.betas_normal, reference.betas_reduce]
    assert len(grads) == 4
    for ours, theirs in zip(grads, expected):
        assert np.abs(theirs.grad.numpy()).max() > 1e-6  # every architecture variable gets a gradient
        np.testing.assert_allclose(ours.numpy(), theirs.grad.numpy(), rtol=1e-7, atol=1e-12)


def test_pc_darts_paper_size_parameter_count_is_the_references():
    from darts_tf.cnn.search_model import SearchNetwork

    model = SearchNetwork(16, 10, 8, partial_channels=4, edge_normalization=True)
    model.build((None, 32, 32, 3))
    reference = TorchPCSearchNetwork(16, 10, 8, k=4)
    weights = sum(p.numel() for name, p in reference.named_parameters() if "alphas" not in name and "betas" not in name)
    assert sum(int(np.prod(v.shape)) for v in model.weight_variables) == weights == 299_578


def test_pc_darts_reduction_bypass_on_odd_sizes_rounds_up():
    """At 10 px a reduction edge meets 5 px: the bypass pools to 3 px like the ops (PC-DARTS would fail)."""
    model = tiny_search_network(C=8, size=10, partial_channels=4)
    assert model(tf.zeros((2, 10, 10, 3)), training=False).shape == (2, 3)


def _pc_darts_parse(weights, weights2, steps):
    """PC-DARTS's genotype() _parse, transcribed: op weights scaled by the edge weights, then DARTS's rule."""
    gene, start, none = [], 0, PRIMITIVES.index("none")
    for i in range(steps):
        n = i + 2
        W = weights[start : start + n].copy()
        for j in range(n):
            W[j, :] = W[j, :] * weights2[start + j]
        edges = sorted(range(n), key=lambda x: -max(W[x][k] for k in range(len(W[x])) if k != none))[:2]
        for j in edges:
            k_best = None
            for k in range(len(W[j])):
                if k != none and (k_best is None or W[j][k] > W[j][k_best]):
                    k_best = k
            gene.append((PRIMITIVES[k_best], j))
        start += n
    return gene


def test_pc_darts_genotype_derivation_matches_theirs():
    rng = np.random.default_rng(3)
    for _ in range(20):
        alphas = rng.normal(size=(2, 14, len(PRIMITIVES)))
        betas = rng.normal(scale=2.0, size=(2, 14))
        genotype = derive_genotype(alphas[0], alphas[1], betas_normal=betas[0], betas_reduce=betas[1])
        with torch.no_grad():
            for cell, a, b in ((genotype.normal, alphas[0], betas[0]), (genotype.reduce, alphas[1], betas[1])):
                weights = F.softmax(torch.from_numpy(a), dim=-1).numpy()
                weights2 = torch_edge_weights(torch.from_numpy(b), 4).numpy()
                assert list(cell) == _pc_darts_parse(weights, weights2, 4)

"""Recurrent DARTS against PyTorch modules written as the original's rnn/ code computes (float64).

The reference below follows quark0/darts rnn/model.py, model_search.py and architect.py:
the highway cell, the search cell's shared per-node W and BatchNorm1d(affine=False),
the tied embedding/decoder and log-softmax, and the architect's first- and second-order
steps (unrolled SGD step with clipped gradients, finite-difference Hessian-vector product,
the implicit term scaled by eta * clip_coef). The second-order reference runs the original's
architect on the original's construction of w' (`_construct_model_from_theta`: a state-dict
round trip that, with the tied embedding, keeps w's embedding). Loading our weights with
`load_state_dict(strict=True)` checks the converter's names and shapes.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf.rnn import architect
from darts_tf.rnn.genotypes import DARTS_V1, DARTS_V2, PRIMITIVES, STEPS
from darts_tf.rnn.model import RNNModel
from darts_tf.rnn.pytorch import to_pytorch_state_dict, torch_variables

if os.environ.get("DARTS_TF_REQUIRE_TORCH") == "1":
    import torch
else:
    torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

ACT = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda x: x}


class TorchCell(nn.Module):
    def __init__(self, ninp, nhid, genotype):
        super().__init__()
        self.nhid, self.genotype = nhid, genotype
        steps = len(genotype.recurrent) if genotype is not None else STEPS
        self._W0 = nn.Parameter(torch.zeros(ninp + nhid, 2 * nhid, dtype=torch.float64))
        self._Ws = nn.ParameterList(
            [nn.Parameter(torch.zeros(nhid, 2 * nhid, dtype=torch.float64)) for _ in range(steps)]
        )
        if genotype is None:
            self.bn = nn.BatchNorm1d(nhid, affine=False).double()

    def init_state(self, x, h_prev, x_mask=None, h_mask=None):
        xh_prev = torch.cat([x, h_prev] if x_mask is None else [x * x_mask, h_prev * h_mask], dim=-1)
        c0, h0 = torch.split(xh_prev.mm(self._W0), self.nhid, dim=-1)
        return h_prev + c0.sigmoid() * (h0.tanh() - h_prev)

    def cell(self, x, h_prev, probs, x_mask=None, h_mask=None):
        """With masks: training mode (the original's self.training branches)."""
        s0 = self.init_state(x, h_prev, x_mask, h_mask)
        if self.genotype is not None:
            states = [s0]
            for i, (name, pred) in enumerate(self.genotype.recurrent):
                s_prev = states[pred] if h_mask is None else states[pred] * h_mask
                c, h = torch.split(s_prev.mm(self._Ws[i]), self.nhid, dim=-1)
                states.append(states[pred] + c.sigmoid() * (ACT[name](h) - states[pred]))
            return torch.mean(torch.stack([states[i] for i in self.genotype.concat], -1), -1)
        s0 = self.bn(s0)
        states, offset = s0.unsqueeze(0), 0
        for i in range(STEPS):
            masked = states if h_mask is None else states * h_mask.unsqueeze(0)
            ch = masked.view(-1, self.nhid).mm(self._Ws[i]).view(i + 1, -1, 2 * self.nhid)
            c, h = torch.split(ch, self.nhid, dim=-1)
            c = c.sigmoid()
            s = torch.zeros_like(s0)
            for k, name in enumerate(PRIMITIVES):
                if name == "none":
                    continue
                s = s + torch.sum(
                    probs[offset : offset + i + 1, k].unsqueeze(-1).unsqueeze(-1)
                    * (states + c * (ACT[name](h) - states)),
                    dim=0,
                )
            states = torch.cat([states, self.bn(s).unsqueeze(0)], 0)
            offset += i + 1
        return torch.mean(states[-8:], dim=0)

    def forward(self, inputs, hidden, probs=None, x_mask=None, h_mask=None):
        outputs = []
        for t in range(inputs.size(0)):
            hidden = self.cell(inputs[t], hidden, probs, x_mask, h_mask)
            outputs.append(hidden)
        return torch.stack(outputs), hidden


class TorchRNNModel(nn.Module):
    def __init__(self, ntoken, n, genotype=None):
        super().__init__()
        self.encoder = nn.Embedding(ntoken, n).double()
        self.rnns = nn.ModuleList([TorchCell(n, n, genotype)])
        self.decoder = nn.Linear(n, ntoken).double()
        self.decoder.weight = self.encoder.weight
        self.n, self.ntoken = n, ntoken
        if genotype is None:
            self.weights = nn.Parameter(torch.zeros(sum(range(1, STEPS + 1)), len(PRIMITIVES), dtype=torch.float64))

    def forward(self, tokens, hidden):
        probs = F.softmax(self.weights, dim=-1) if hasattr(self, "weights") else None
        raw, hidden = self.rnns[0](self.encoder(tokens), hidden, probs)
        log_prob = F.log_softmax(self.decoder(raw.view(-1, self.n)), dim=-1)
        return log_prob.view(-1, tokens.size(1), self.ntoken), hidden, raw

    def forward_train(self, tokens, hidden, masks):
        """The original's RNNModel.forward in training mode, its dropout masks given: embedded_dropout (the
        masked encoder weight looked up; the tied decoder keeps the weight), LockedDropout on the embeddings
        and the outputs, the cell's masks. Returns (log_prob, hidden, raw_output, dropped output)."""
        probs = F.softmax(self.weights, dim=-1) if hasattr(self, "weights") else None
        emb = F.embedding(tokens, masks["word"].expand_as(self.encoder.weight) * self.encoder.weight)
        emb = masks["input"].expand_as(emb) * emb
        raw, hidden = self.rnns[0](emb, hidden, probs, masks["x"], masks["h"])
        output = masks["output"].expand_as(raw) * raw
        log_prob = F.log_softmax(self.decoder(output.view(-1, self.n)), dim=-1)
        return log_prob.view(-1, tokens.size(1), self.ntoken), hidden, raw, output


def _model(genotype, ntoken=30, n=8, seed=0):
    keras.utils.set_random_seed(seed)
    model = RNNModel(ntoken, n, n, 0.0, 0.0, 0.0, 0.0, 0.0, genotype=genotype, dtype="float64")
    model.build()
    rng = np.random.default_rng(seed)
    if genotype is None:
        model.alphas.assign(rng.normal(scale=0.5, size=model.alphas.shape))
        model.cell.moving_mean.assign(rng.normal(scale=0.1, size=n))
        model.cell.moving_variance.assign(rng.uniform(0.5, 2.0, size=n))
    for w in [model.cell.W0, *model.cell.Ws]:  # larger than the 0.04 init, so every path matters
        w.assign(rng.uniform(-0.5, 0.5, size=w.shape))
    model.decoder_bias.assign(rng.normal(scale=0.1, size=ntoken))
    return model


def _reference(model, genotype):
    reference = TorchRNNModel(model.ntoken, model.nhid, genotype)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)).double() for k, v in to_pytorch_state_dict(model).items()}
    reference.load_state_dict(state, strict=True)
    return reference


def _tokens(t=5, b=3, ntoken=30, seed=1):
    return np.random.default_rng(seed).integers(0, ntoken, size=(t + 1, b)).astype("int32")


@pytest.mark.parametrize("genotype", [DARTS_V2, DARTS_V1, None], ids=["DARTS_V2", "DARTS_V1", "search"])
def test_eval_log_probabilities_match_pytorch(genotype):
    model = _model(genotype)
    reference = _reference(model, genotype).eval()
    tokens = _tokens()
    hidden = np.random.default_rng(2).normal(scale=0.3, size=(3, 8))
    with torch.no_grad():
        log_prob, h, _ = reference(torch.from_numpy(tokens[:-1]).long(), torch.from_numpy(hidden))
    out = model(tokens[:-1], tf.constant(hidden), training=False)
    np.testing.assert_allclose(out["log_probs"].numpy(), log_prob.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out["hidden"].numpy(), h.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("genotype", [DARTS_V2, DARTS_V1, None], ids=["DARTS_V2", "DARTS_V1", "search"])
def test_training_loss_and_weight_gradients_match_pytorch_with_dropout(genotype, compiled):
    """The weight step's objective (NLL + AR + TAR) and every gradient, with all five dropouts on, against the
    original's training-mode forward given our masks (both cells' backward passes are written out by hand,
    darts_tf.rnn.bptt)."""
    from darts_tf.rnn.lm import lm_training_loss

    keras.utils.set_random_seed(0)
    model = RNNModel(30, 8, 8, 0.4, 0.3, 0.5, 0.2, 0.25, genotype=genotype, dtype="float64")
    model.build()
    rng = np.random.default_rng(0)
    for w in model.trainable_variables:  # larger than the 0.04 init, so every path matters
        w.assign(rng.uniform(-0.5, 0.5, size=w.shape))
    reference = _reference(model, genotype).train() if genotype is not None else _search_reference(model)
    tokens, seed = _tokens(t=11), tf.constant([7, 11], tf.int32)  # 11 steps: two of bptt.py's chunks of 8
    hidden = np.random.default_rng(2).normal(scale=0.3, size=(3, 8))
    masks = model.dropout_masks(seed, 3)
    assert sorted(masks) == ["h", "input", "output", "word", "x"] and all(m is not None for m in masks.values())
    assert 0 < float(tf.reduce_mean(tf.cast(masks["word"] == 0, tf.float64))) < 0.6  # some whole words dropped

    def ours():
        with tf.GradientTape() as tape:
            raw, loss, h = lm_training_loss(model, tokens[:-1], tokens[1:], tf.constant(hidden), seed, 2.0, 1.5)
        return raw, loss, h, tape.gradient(loss, model.trainable_variables)

    raw, loss, h, grads = (tf.function(ours) if compiled else ours)()
    as_torch = {k: torch.from_numpy(np.array(v)) for k, v in masks.items()}
    log_prob, h_ref, raw_out, out = reference.forward_train(
        torch.from_numpy(tokens[:-1]).long(), torch.from_numpy(hidden), as_torch
    )
    raw_ref = F.nll_loss(log_prob.view(-1, reference.ntoken), torch.from_numpy(tokens[1:]).long().reshape(-1))
    loss_ref = raw_ref + 2.0 * out.pow(2).mean() + 1.5 * (raw_out[1:] - raw_out[:-1]).pow(2).mean()
    loss_ref.backward()
    assert float(raw) == pytest.approx(raw_ref.item(), rel=1e-12)
    assert float(loss) == pytest.approx(loss_ref.item(), rel=1e-12)
    np.testing.assert_allclose(h.numpy(), h_ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    expected = {id(v): name for name, v in torch_variables(model).items() if name != "decoder.weight"}
    parameters = dict(reference.named_parameters())
    if genotype is None:
        parameters["weights"] = reference.weights  # the alphas (the search's weight step leaves them)
    for variable, grad in zip(model.trainable_variables, grads):
        torch_grad = parameters[expected[id(variable)]].grad.numpy()
        np.testing.assert_allclose(grad.numpy(), torch_grad, rtol=1e-9, atol=1e-12, err_msg=variable.path)


@pytest.mark.parametrize("length", [1, 7], ids=["one_step", "seven_steps"])
def test_search_cell_written_out_backward_matches_pytorch_in_every_input(length):
    """`darts_tf.rnn.bptt.search_cell_sequence` (the search cell's training pass, backward written out) against
    the original's cell run by PyTorch's autograd (float64): outputs, last state, the BatchNorm's running
    statistics after the sequence, and the gradients of a loss on the outputs and the last state in the
    inputs, the initial hidden state, the op weights and every W (dropout masks on)."""
    from darts_tf.rnn.bptt import search_cell_sequence
    from darts_tf.rnn.model import BN_EPSILON, BN_MOMENTUM

    n, batch = 6, 4
    rng = np.random.default_rng(5)
    inputs = rng.normal(size=(length, batch, n))
    hidden = rng.normal(scale=0.3, size=(batch, n))
    probs = rng.dirichlet(np.ones(len(PRIMITIVES)), size=sum(range(1, STEPS + 1)))
    x_mask = (rng.uniform(size=(batch, n)) > 0.3) / 0.7
    h_mask = (rng.uniform(size=(batch, n)) > 0.2) / 0.8
    W0 = rng.uniform(-0.5, 0.5, size=(2 * n, 2 * n))
    Ws = [rng.uniform(-0.5, 0.5, size=(n, 2 * n)) for _ in range(STEPS)]
    moving = (rng.normal(scale=0.1, size=n), rng.uniform(0.5, 2.0, size=n))
    d_outputs, d_last = rng.normal(size=(length, batch, n)), rng.normal(size=(batch, n))

    variables = [tf.constant(v) for v in (inputs, hidden, probs, W0, *Ws)]
    with tf.GradientTape() as tape:
        tape.watch(variables)
        x, h, p, w0, *ws = variables
        outputs, last, (mean, variance) = search_cell_sequence(
            x, h, p, tf.constant(x_mask), tf.constant(h_mask), w0, ws, tuple(tf.constant(m) for m in moving),
            PRIMITIVES, BN_MOMENTUM, BN_EPSILON,
        )  # fmt: skip
        loss = tf.reduce_sum(outputs * d_outputs) + tf.reduce_sum(last * d_last)
    grads = tape.gradient(loss, variables)

    cell = TorchCell(n, n, None)
    with torch.no_grad():
        cell._W0.copy_(torch.from_numpy(W0))
        for parameter, W in zip(cell._Ws, Ws):
            parameter.copy_(torch.from_numpy(W))
        cell.bn.running_mean.copy_(torch.from_numpy(moving[0]))
        cell.bn.running_var.copy_(torch.from_numpy(moving[1]))
    cell.train()
    leaves = [torch.tensor(v, requires_grad=True) for v in (inputs, hidden, probs)]
    out_ref, last_ref = cell(*leaves, torch.from_numpy(x_mask), torch.from_numpy(h_mask))
    loss_ref = (out_ref * torch.from_numpy(d_outputs)).sum() + (last_ref * torch.from_numpy(d_last)).sum()
    expected = torch.autograd.grad(loss_ref, [*leaves, cell._W0, *cell._Ws])

    np.testing.assert_allclose(outputs.numpy(), out_ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(last.numpy(), last_ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mean.numpy(), cell.bn.running_mean.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(variance.numpy(), cell.bn.running_var.numpy(), rtol=1e-10, atol=1e-12)
    names = ["inputs", "hidden", "probs", "W0", *[f"W{i + 1}" for i in range(STEPS)]]
    for name, ours, theirs in zip(names, grads, expected):
        assert np.abs(theirs.numpy()).max() > 1e-3, name  # every input matters
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)
    assert not np.any(grads[2].numpy()[:, PRIMITIVES.index("none")])  # `none` adds nothing


class TorchSearchModel(TorchRNNModel):
    """The original's RNNModelSearch: the alphas a tensor outside the module's parameters, `new()`, `_loss`."""

    def __init__(self, ntoken, n):
        super().__init__(ntoken, n, None)
        del self.weights
        self._args = (ntoken, n)
        self.weights = torch.zeros(sum(range(1, STEPS + 1)), len(PRIMITIVES), dtype=torch.float64, requires_grad=True)

    def new(self):
        model_new = TorchSearchModel(*self._args)
        model_new.weights.data.copy_(self.weights.data)
        return model_new

    def _loss(self, hidden, tokens, targets):
        log_prob, hidden_next, _ = self(tokens, hidden)
        return F.nll_loss(log_prob.view(-1, self.ntoken), targets.reshape(-1)), hidden_next


def _concat(xs):
    return torch.cat([x.reshape(-1) for x in xs])


def _clip(grads, max_norm):
    """The original architect's `_clip`: scales in place when the coefficient is below 1, returns it always."""
    total_norm = sum(g.data.norm(2) ** 2 for g in grads) ** 0.5
    clip_coef = max_norm / (total_norm + 1e-6)
    if clip_coef < 1:
        for g in grads:
            g.data.mul_(clip_coef)
    return clip_coef


def _construct_model_from_theta(model, theta):
    """As the original: a fresh model, the state dict updated with named_parameters' slices of theta, loaded.

    `named_parameters()` lists the tied embedding once (encoder.weight) while the state dict
    holds it twice; `load_state_dict` copies the stale decoder.weight last, so the new model
    keeps the old embedding.
    """
    model_new = model.new()
    model_dict = model.state_dict()
    params, offset = {}, 0
    for k, v in model.named_parameters():
        length = v.numel()
        params[k] = theta[offset : offset + length].view(v.size())
        offset += length
    assert offset == len(theta)
    model_dict.update(params)
    model_new.load_state_dict(model_dict)
    return model_new.train()


def _original_unrolled_alpha_gradient(model, train, valid, eta, wdecay, clip, r=1e-2):
    """Architect._backward_step_unrolled of the original's rnn/architect.py, step by step."""
    (h_train, x_train, y_train), (h_valid, x_valid, y_valid) = train, valid
    loss, _ = model._loss(h_train, x_train, y_train)
    theta = _concat(model.parameters()).data
    grads = torch.autograd.grad(loss, list(model.parameters()))
    clip_coef = _clip(grads, clip)
    dtheta = _concat(grads).data + wdecay * theta
    unrolled = _construct_model_from_theta(model, theta.sub(eta * dtheta))
    unrolled_loss, _ = unrolled._loss(h_valid, x_valid, y_valid)
    unrolled_loss.backward()
    dalpha = unrolled.weights.grad
    dtheta = [v.grad for v in unrolled.parameters()]
    _clip(dtheta, clip)
    vector = [dt.data for dt in dtheta]
    R = r / _concat(vector).norm()
    for p, v in zip(model.parameters(), vector):
        p.data.add_(R * v)
    loss, _ = model._loss(h_train, x_train, y_train)
    grads_p = torch.autograd.grad(loss, [model.weights])
    for p, v in zip(model.parameters(), vector):
        p.data.sub_(2 * R * v)
    loss, _ = model._loss(h_train, x_train, y_train)
    grads_n = torch.autograd.grad(loss, [model.weights])
    for p, v in zip(model.parameters(), vector):
        p.data.add_(R * v)
    implicit = (grads_p[0] - grads_n[0]) / (2 * R)
    return dalpha - eta * clip_coef * implicit, unrolled


def _search_reference(model):
    reference = TorchSearchModel(model.ntoken, model.nhid)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)).double() for k, v in to_pytorch_state_dict(model).items()}
    with torch.no_grad():
        reference.weights.copy_(state.pop("weights"))
    reference.load_state_dict(state, strict=True)
    return reference.train()  # batch statistics, as in the search


def _search_batches():
    train_tokens, val_tokens = _tokens(seed=1), _tokens(seed=2)
    h_train = np.random.default_rng(3).normal(scale=0.3, size=(3, 8))
    h_val = np.random.default_rng(4).normal(scale=0.3, size=(3, 8))
    ours = [(tokens[:-1], tokens[1:], tf.constant(h)) for tokens, h in ((train_tokens, h_train), (val_tokens, h_val))]
    as_torch = lambda a: torch.from_numpy(np.asarray(a))  # noqa: E731
    theirs = [
        (as_torch(h), as_torch(tokens[:-1]).long(), as_torch(tokens[1:]).long())
        for tokens, h in ((train_tokens, h_train), (val_tokens, h_val))
    ]
    return ours, theirs


def test_search_model_first_order_alpha_gradient_matches_pytorch():
    model = _model(None)
    reference = _search_reference(model)
    (_, val_batch), (_, (h_val, x_val, y_val)) = _search_batches()
    loss, _ = reference._loss(h_val, x_val, y_val)
    (expected,) = torch.autograd.grad(loss, [reference.weights])
    grads, val_loss, _ = architect.first_order_arch_gradients(model, val_batch)
    assert float(val_loss) == pytest.approx(loss.item(), rel=1e-10)
    np.testing.assert_allclose(grads[0].numpy(), expected.numpy(), rtol=1e-7, atol=1e-12)


def test_second_order_alpha_gradient_is_the_originals_own_computation():
    """The default virtual step against the original's architect run on the original's model construction.

    w' comes from `_construct_model_from_theta` (a state-dict round trip with the tied
    embedding), so the embedding of w' is w's; stepping every weight (the paper's
    equation, `virtual_step="paper"`) gives a different gradient here.
    """
    eta, wd, clip = 0.7, 5e-7, 0.25
    model = _model(None)
    reference = _search_reference(model)
    (train_batch, val_batch), (train, valid) = _search_batches()
    embedding, w0 = reference.encoder.weight.detach().clone(), reference.rnns[0]._W0.detach().clone()
    expected, unrolled = _original_unrolled_alpha_gradient(reference, train, valid, eta, wd, clip)
    # The quirk, seen in the reference itself: w' kept the embedding and moved the cell's weights.
    assert torch.equal(unrolled.encoder.weight, embedding) and torch.equal(unrolled.decoder.weight, embedding)
    assert not torch.equal(unrolled.rnns[0]._W0, w0)

    weights_before = [w.numpy().copy() for w in model.weight_variables]
    grads, _, hidden = architect.second_order_arch_gradients(
        model, train_batch, val_batch, eta=eta, weight_decay=wd, clip=clip
    )
    np.testing.assert_allclose(grads[0].numpy(), expected.numpy(), rtol=1e-6, atol=1e-10)
    for before, w in zip(weights_before, model.weight_variables):
        np.testing.assert_array_equal(before, w.numpy())  # weights restored bit for bit
    assert hidden.shape == (3, 8)

    first, _, _ = architect.first_order_arch_gradients(model, val_batch)
    assert np.abs(grads[0].numpy() - first[0].numpy()).max() > 1e-6  # the second-order term is there
    paper, _, _ = architect.second_order_arch_gradients(
        model, train_batch, val_batch, eta=eta, weight_decay=wd, clip=clip, virtual_step="paper"
    )
    difference = np.linalg.norm(paper[0].numpy() - expected.numpy()) / np.linalg.norm(expected.numpy())
    assert difference > 1e-2, difference  # the two virtual steps are not the same computation


def test_second_order_paper_virtual_step_moves_every_weight():
    """`virtual_step="paper"`: w' = w - eta * (clip(g) + wd * w) for every weight, the embedding included."""
    eta, wd, clip = 0.7, 5e-7, 0.25
    model = _model(None)
    reference = _search_reference(model)
    (train_batch, val_batch), (train, valid) = _search_batches()
    params = list(reference.parameters())
    loss, _ = reference._loss(*train)
    g = list(torch.autograd.grad(loss, params))
    clip_coef = _clip(g, clip)
    unrolled = reference.new().train()
    with torch.no_grad():
        for p_new, p, x in zip(unrolled.parameters(), params, g):
            p_new.copy_(p - eta * (x + wd * p))
        unrolled.rnns[0].bn.load_state_dict(reference.rnns[0].bn.state_dict())
    loss, _ = unrolled._loss(*valid)
    grads_all = torch.autograd.grad(loss, [unrolled.weights, *unrolled.parameters()])
    dalpha, vector = grads_all[0], list(grads_all[1:])
    _clip(vector, clip)
    R = 0.01 / _concat(vector).norm()
    results = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, v in zip(params, vector):
                p.add_(sign * R * v)
        loss, _ = reference._loss(*train)
        results.append(torch.autograd.grad(loss, [reference.weights])[0])
        with torch.no_grad():
            for p, v in zip(params, vector):
                p.sub_(sign * R * v)
    expected = dalpha - eta * clip_coef * (results[0] - results[1]) / (2 * R)
    grads, _, _ = architect.second_order_arch_gradients(
        model, train_batch, val_batch, eta=eta, weight_decay=wd, clip=clip, virtual_step="paper"
    )
    np.testing.assert_allclose(grads[0].numpy(), expected.numpy(), rtol=1e-6, atol=1e-10)
    with pytest.raises(ValueError, match="virtual_step"):
        architect.second_order_arch_gradients(model, train_batch, val_batch, eta=eta, virtual_step="bogus")


def test_darts_v2_parameter_count_is_the_originals():
    """emsize = nhid = 850 on the 10,000-word PTB vocabulary: 22,960,000 parameters (about 23M)."""
    model = RNNModel(10_000, 850, 850, genotype=DARTS_V2)
    model.build()
    ours = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    reference = TorchRNNModel(100, 850, DARTS_V2)  # the cell and the tied embedding, at a small vocabulary
    torch_count = sum(p.numel() for p in reference.parameters()) - 100 * 850 - 100 + 10_000 * 850 + 10_000
    assert ours == torch_count == 22_960_000


def test_averaged_sgd_is_torch_asgd_with_the_per_batch_learning_rate():
    """optimizers.AveragedSGD against torch.optim.ASGD(t0=0, lambd=0) with the lr changed before every step."""
    from darts_tf.optimizers import AveragedSGD

    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4))
    ours = tf.Variable(w0)
    theirs = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    asgd = AveragedSGD(20.0, coupled_weight_decay=8e-7)
    asgd.build([ours])
    reference = torch.optim.ASGD([theirs], lr=20.0, t0=0, lambd=0.0, weight_decay=8e-7)
    for step in range(6):
        lr = 20.0 * [35, 17, 40, 30, 35, 22][step] / 35
        gradient = rng.normal(size=(3, 4)) * 1e-2
        asgd.learning_rate.assign(lr)
        asgd.apply([tf.constant(gradient)], [ours])
        reference.param_groups[0]["lr"] = lr
        theirs.grad = torch.from_numpy(gradient.copy())
        reference.step()
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(asgd.averages[0].numpy(), reference.state[theirs]["ax"].numpy(), rtol=1e-12)

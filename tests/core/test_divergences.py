"""Coupling divergences (loss.divergence) against float64 references, and the gradient
facts the README's theory note states."""

import math

import numpy as np
import pytest
import torch

from colearning.errors import ConfigError
from colearning.losses import DIVERGENCES, coupled_loss


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference(name, p_i, p_j):
    """D(p_j, p_i) per sample, by the textbook formulas in float64."""
    if name == "kl":
        return (p_j * np.log(p_j / p_i)).sum(-1)
    if name == "reverse_kl":
        return (p_i * np.log(p_i / p_j)).sum(-1)
    if name == "js":
        m = (p_i + p_j) / 2
        return 0.5 * (p_i * np.log(p_i / m)).sum(-1) + 0.5 * (p_j * np.log(p_j / m)).sum(-1)
    return ((p_i - p_j) ** 2).sum(-1)


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "js", "l2"])
def test_values_and_gradients(name):
    rng = np.random.default_rng(1)
    n, batch, classes = 3, 5, 4
    z = rng.normal(0, 2, (n, batch, classes))
    labels = torch.tensor(rng.integers(0, classes, batch))
    beta = rng.normal(0, 0.3, (n, n))
    logits = torch.tensor(z, requires_grad=True)
    parts = coupled_loss(logits, labels, torch.tensor(beta), divergence=name)
    p = softmax(z)
    want = np.zeros(n)
    for i in range(n):
        for j in range(n):
            if i != j:
                want[i] += beta[i, j] * reference(name, p[i], p[j]).mean()
    np.testing.assert_allclose(parts.coupling.detach().numpy(), want, atol=1e-12)
    # detached peers: member i's gradient comes from its own loss only; checked against
    # central differences of that loss in float64
    parts.total.sum().backward()
    for i in range(n):
        def own(x, i=i):
            full = logits.detach().clone()
            full[i] = x
            return coupled_loss(full, labels, torch.tensor(beta), divergence=name).total[i]

        torch.autograd.gradcheck(own, (logits.detach()[i].clone().requires_grad_(),))
        x = logits.detach()[i].clone().requires_grad_()
        own(x).backward()
        torch.testing.assert_close(logits.grad[i], x.grad)


def test_bounded_divergences_stay_bounded():
    """JS is at most log 2 and squared L2 at most 2 per sample; KL is unbounded."""
    far = torch.tensor([[[60.0, 0.0]], [[0.0, 60.0]]], dtype=torch.float64)
    log_p = torch.log_softmax(far, -1)
    assert float(DIVERGENCES.get("js")(log_p, log_p).max()) <= math.log(2) + 1e-12
    assert float(DIVERGENCES.get("l2")(log_p, log_p).max()) <= 2 + 1e-12
    assert float(DIVERGENCES.get("kl")(log_p, log_p).max()) > 50


def test_the_papers_term_pushes_at_a_constant_rate_where_a_member_is_certain():
    """With detached peers the logit gradient of beta KL(p_j || p_i) is beta (p_i - p_j):
    as member i's class-0 logit goes to -inf (p_i(0) -> 0) while its peer keeps p_j(0) > 0,
    the push stays at beta p_j(0) instead of vanishing. JS's push vanishes there."""
    peer = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)
    grads = {}
    for name in ("kl", "js"):
        for depth in (5.0, 20.0, 40.0):
            member = torch.tensor([[-depth, 2.0, 0.0]], dtype=torch.float64,
                                  requires_grad=True)
            logits = torch.stack([member, peer])
            parts = coupled_loss(logits, torch.tensor([1]), -0.5, divergence=name)
            parts.coupling[0].backward()
            grads[name, depth] = float(member.grad[0, 0])
    p_j = 1 / 3
    for depth in (20.0, 40.0):
        assert grads["kl", depth] == pytest.approx(-0.5 * (0.0 - p_j), abs=1e-6)
        assert abs(grads["js", depth]) < 1e-6


def test_negative_correlation_identity_at_beta_bar_minus_one():
    """beta = -1/N all to all, detached peers: every member's logit gradient is the
    ensemble's residual (p_ens - q) / B, negative correlation learning with lambda = 1."""
    torch.manual_seed(0)
    n, batch = 4, 6
    logits = torch.randn(n, batch, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (batch,))
    coupled_loss(logits, labels, beta_bar=-1.0).total.sum().backward()
    p_ens = logits.detach().softmax(-1).mean(0)
    q = torch.nn.functional.one_hot(labels, 5).double()
    for i in range(n):
        torch.testing.assert_close(logits.grad[i], (p_ens - q) / batch)


def test_peer_chunks_count_every_ensemble_of_a_pack(monkeypatch):
    """The block of one chunk stays bounded with K ensembles too, and chunking changes no
    number: a pack [K, N, B, C] under a tiny block equals it unchunked, for every term."""
    import colearning.losses as losses

    log_p = torch.randn(4, 3, 5, 10, dtype=torch.float64).log_softmax(-1)
    assert losses._peer_chunk(log_p, classes=10) == losses._KL_CHUNK_ELEMENTS // (4 * 3 * 5 * 10)
    whole = {name: losses.DIVERGENCES.get(name)(log_p, log_p) for name in losses.DIVERGENCES}
    monkeypatch.setattr(losses, "_KL_CHUNK_ELEMENTS", 4 * 3 * 5 * 10)  # one peer per chunk
    assert losses._peer_chunk(log_p, classes=10) == 1
    for name, value in whole.items():
        torch.testing.assert_close(losses.DIVERGENCES.get(name)(log_p, log_p), value)


def test_the_loss_module_takes_the_divergence():
    from colearning.losses import CoupledKLLoss, coupled_loss

    logits, labels = torch.randn(3, 6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    module = CoupledKLLoss(beta=-0.5, divergence="js", reduction="none")
    want = coupled_loss(logits, labels, beta=-0.5, divergence="js").total
    torch.testing.assert_close(module(logits, labels), want)
    assert not torch.allclose(want, coupled_loss(logits, labels, beta=-0.5).total)
    assert "divergence='js'" in repr(module)
    with pytest.raises(ConfigError, match="unknown divergence 'emd'"):
        CoupledKLLoss(divergence="emd")

"""coupled_loss against a plain per-member loop, closed-form gradients and Eq. 3."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colearning import ConfigError, beta_matrix, coupled_loss


def loop_loss(logits, q, beta, peers="detached"):
    """Eq. 1 member by member, written independently of the vectorized code."""
    n = logits.shape[0]
    totals = []
    for i in range(n):
        log_pi = F.log_softmax(logits[i], -1)
        task = (torch.special.xlogy(q, q) - q * log_pi).sum(-1).mean()
        coupling = torch.zeros(())
        for j in range(n):
            if j == i:
                continue
            pj = F.softmax(logits[j], -1)
            if peers == "detached":
                pj = pj.detach()
            coupling = coupling + beta[i, j] * (pj * (pj.log() - log_pi)).sum(-1).mean()
        totals.append((task + coupling, task, coupling))
    return [torch.stack(parts) for parts in zip(*totals, strict=True)]


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 5, generator=gen)
    labels = torch.randint(0, 5, (7,), generator=gen)
    return logits, labels


@pytest.mark.parametrize("peers", ["detached", "joint"])
def test_matches_loop_with_matrix_beta(batch, peers):
    logits, labels = batch
    beta = torch.tensor([[9.0, -0.3, 0.2], [0.5, 9.0, -1.0], [-0.1, 0.4, 9.0]])
    q = F.one_hot(labels, 5).float()
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    parts = coupled_loss(a, labels, beta, peers=peers)
    expected = loop_loss(b, q, beta * (1 - torch.eye(3)), peers=peers)
    for got, want in zip(parts, expected, strict=True):
        torch.testing.assert_close(got, want)
    parts.total.sum().backward()
    expected[0].sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_detached_gradient_closed_form(batch):
    logits, labels = batch
    beta = beta_matrix(-0.7, 3)
    q = F.one_hot(labels, 5).float()
    x = logits.clone().requires_grad_(True)
    coupled_loss(x, labels, -0.7).total.sum().backward()
    p = F.softmax(logits, -1)
    batch_size = logits.shape[1]
    for i in range(3):
        want = (p[i] - q) + sum(beta[i, j] * (p[i] - p[j]) for j in range(3))
        torch.testing.assert_close(x.grad[i], want / batch_size)


def test_eq3_form_gives_same_gradients(batch):
    logits, labels = batch
    q = F.one_hot(labels, 5).float()
    beta = -0.4
    x = logits.clone().requires_grad_(True)
    coupled_loss(x, labels, beta).total.sum().backward()
    y = logits.clone().requires_grad_(True)
    log_p = F.log_softmax(y, -1)
    p = log_p.exp().detach()
    eq3 = 0
    for i in range(3):
        peers = sum(p[j] for j in range(3) if j != i)
        entropy = sum(-(p[j] * p[j].log()).sum(-1) for j in range(3) if j != i)
        eq3 = eq3 + (-(q * log_p[i] + beta * peers * log_p[i]).sum(-1) - beta * entropy).mean()
    eq3.backward()
    torch.testing.assert_close(x.grad, y.grad)


def test_beta_zero_is_cross_entropy(batch):
    logits, labels = batch
    parts = coupled_loss(logits, labels, 0.0)
    for i in range(3):
        torch.testing.assert_close(parts.total[i], F.cross_entropy(logits[i], labels))
    assert torch.count_nonzero(parts.coupling) == 0


def test_soft_targets_and_kl_reduction(batch):
    logits, _ = batch
    q = torch.softmax(torch.randn(7, 5), -1)
    batchmean = coupled_loss(logits, q, -0.2)
    mean = coupled_loss(logits, q, -0.2, kl_reduction="mean")
    # "mean" divides only the coupling KLs by C = 5: beta acts C times weaker.
    torch.testing.assert_close(mean.task, batchmean.task)
    torch.testing.assert_close(mean.coupling * 5, batchmean.coupling)
    torch.testing.assert_close(mean.total, coupled_loss(logits, q, -0.2 / 5).total)
    # KL(q||p) for soft q includes q's entropy: it is zero when p == q.
    exact = coupled_loss(q.log().unsqueeze(0), q, 0.0)
    torch.testing.assert_close(exact.task, torch.zeros(1), atol=1e-6, rtol=0)


def test_beta_bar_normalizes_by_size(batch):
    logits, labels = batch
    normalized = coupled_loss(logits, labels, beta_bar=-1.0).total
    torch.testing.assert_close(normalized, coupled_loss(logits, labels, -1 / 3).total)
    with pytest.raises(ConfigError, match="not both"):
        coupled_loss(logits, labels, -0.1, beta_bar=-1.0)


def test_stable_for_confident_members_at_beta_minus_one():
    logits = torch.tensor([[[500.0, -500.0, 0.0]], [[-500.0, 500.0, 0.0]]], requires_grad=True)
    parts = coupled_loss(logits, torch.tensor([0]), -1.0)
    parts.total.sum().backward()
    assert torch.isfinite(parts.total).all() and torch.isfinite(logits.grad).all()
    # member 1 puts ~0 mass on the label: KL(q||p_1) ~ 1000 nats, finite.
    assert parts.task[1].item() == pytest.approx(1000.0, rel=1e-4)


def test_single_member():
    parts = coupled_loss(torch.randn(1, 4, 3), torch.tensor([0, 1, 2, 0]), -0.5)
    assert parts.total.shape == (1,) and parts.coupling.item() == 0.0


def test_frozen_peers_enter_coupling_only(batch):
    logits, labels = batch
    frozen = F.log_softmax(torch.randn(2, 7, 5), -1)
    x = logits[:1].clone().requires_grad_(True)
    parts = coupled_loss(x, labels, -0.3, frozen=frozen)
    full = coupled_loss(torch.cat([logits[:1], frozen]), labels, -0.3)
    torch.testing.assert_close(parts.total, full.total[:1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": np.zeros((2, 2))}, r"shape \[3, 3\]"),
        ({"beta": np.full((3, 3), np.nan)}, "NaN"),
        ({"beta": float("inf")}, "finite"),
        ({"peers": "both"}, "valid: detached, joint"),
        ({"kl_reduction": "sum"}, "valid: batchmean, mean"),
    ],
)
def test_bad_arguments(batch, kwargs, match):
    logits, labels = batch
    with pytest.raises(ConfigError, match=match):
        coupled_loss(logits, labels, **kwargs)


def test_bad_shapes(batch):
    logits, labels = batch
    with pytest.raises(ConfigError, match=r"\[N, B, C\]"):
        coupled_loss(logits[0], labels)
    with pytest.raises(ConfigError, match="7"):
        coupled_loss(logits, labels[:3])

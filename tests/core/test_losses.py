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
    # "mean_all" divides both terms by C: Eq. 1 / C
    both = coupled_loss(logits, q, -0.2, kl_reduction="mean_all")
    torch.testing.assert_close(both.task * 5, batchmean.task)
    torch.testing.assert_close(both.coupling * 5, batchmean.coupling)
    torch.testing.assert_close(both.total * 5, batchmean.total)
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
        ({"kl_reduction": "sum"}, "valid: batchmean, mean, mean_all"),
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


def numpy_reference(logits, q, beta):
    """Eq. 1 in float64 numpy, per member, per peer and per sample (no torch involved)."""
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    p = np.exp(log_p)
    n = logits.shape[0]
    task = np.array([(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0) - q * log_p[i])
                     .sum(-1).mean() for i in range(n)])
    coupling = np.zeros(n)
    for i in range(n):
        for j in range(n):
            if i != j:
                coupling[i] += beta[i, j] * (p[j] * (log_p[j] - log_p[i])).sum(-1).mean()
    return task + coupling, task, coupling


def test_float64_matches_numpy_reference_with_soft_targets():
    rng = np.random.default_rng(3)
    for _ in range(5):
        n, b, c = rng.integers(2, 6), rng.integers(1, 9), rng.integers(2, 12)
        logits = rng.normal(scale=3.0, size=(n, b, c))
        q = rng.dirichlet(np.ones(c), size=b)
        q[0] = np.eye(c)[0]  # a one-hot row among the soft ones (q = 0 entries)
        beta = rng.uniform(-1.5, 1.0, size=(n, n))
        parts = coupled_loss(torch.from_numpy(logits), torch.from_numpy(q), torch.from_numpy(beta))
        assert all(part.dtype == torch.float64 for part in parts)
        for got, want in zip(parts, numpy_reference(logits, q, beta * (1 - np.eye(n))),
                             strict=True):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-14)


def test_precision_follows_the_input():
    logits, labels = torch.randn(2, 4, 3), torch.tensor([0, 1, 2, 0])
    assert coupled_loss(logits.double(), labels, -0.3).total.dtype == torch.float64
    assert coupled_loss(logits.bfloat16(), labels, -0.3).total.dtype == torch.float32
    assert coupled_loss(logits.half(), labels, -0.3).total.dtype == torch.float32


def test_near_equal_members_give_accurate_nonnegative_coupling():
    # Members whose logits differ by ~1e-4 (beta > 0 runs): KL(p_j||p_i) ~ 1e-9, far below
    # float32's resolution of an entropy. Each pair's KL must be >= 0 and within 1e-7 of
    # the value computed in float64 from the same logits.
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(50):
        base = 3 * torch.randn(1, 64, 10, generator=gen)
        logits = base + 1e-4 * torch.randn(2, 64, 10, generator=gen)
        labels = torch.randint(0, 10, (64,), generator=gen)
        single = coupled_loss(logits, labels, 1.0).coupling  # [KL(p_1||p_0), KL(p_0||p_1)]
        double = coupled_loss(logits.double(), labels, 1.0).coupling
        assert single.dtype == torch.float32 and (single >= 0).all()
        worst = max(worst, float((single.double() - double).abs().max()))
    assert worst < 1e-7


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    q = torch.softmax(torch.randn(4, 5, dtype=torch.float64, generator=gen), -1)
    beta = torch.tensor([[0.0, -0.7, 0.3], [0.5, 0.0, -1.2], [-0.2, 0.9, 0.0]],
                        dtype=torch.float64)
    # joint: the loss is one function of all logits.
    assert torch.autograd.gradcheck(lambda x: coupled_loss(x, q, beta, peers="joint").total,
                                    (logits,))
    # detached: member i's loss as a function of its own logits, the peers held fixed.
    for i in range(3):
        def own_loss(x, i=i):
            full = torch.cat([logits[:i].detach(), x, logits[i + 1:].detach()])
            return coupled_loss(full, q, beta).total[i]

        assert torch.autograd.gradcheck(own_loss, (logits[i:i + 1].detach().requires_grad_(),))


@pytest.mark.parametrize("peers", ["detached", "joint"])
def test_a_pack_of_ensembles_equals_each_ensemble_alone(peers):
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 4, 6, 5, generator=gen)  # K=3 ensembles of N=4
    labels = torch.randint(0, 5, (3, 6), generator=gen)
    beta = torch.randn(3, 4, 4, generator=gen)
    x = logits.clone().requires_grad_(True)
    pack = coupled_loss(x, labels, beta, peers=peers)
    assert pack.total.shape == (3, 4)
    pack.total.sum().backward()
    for k in range(3):
        y = logits[k].clone().requires_grad_(True)
        alone = coupled_loss(y, labels[k], beta[k], peers=peers)
        for got, want in zip(pack, alone, strict=True):
            torch.testing.assert_close(got[k], want)
        alone.total.sum().backward()
        torch.testing.assert_close(x.grad[k], y.grad)
    # a scalar beta and soft targets broadcast over the pack
    q = torch.softmax(torch.randn(3, 6, 5, generator=gen), -1)
    scalar = coupled_loss(logits, q, -0.3)
    torch.testing.assert_close(scalar.total[1], coupled_loss(logits[1], q[1], -0.3).total)


def test_per_member_targets():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 6, 5, generator=gen)
    labels = torch.randint(0, 5, (3, 6), generator=gen)  # member i on its own batch
    parts = coupled_loss(logits, labels, 0.0)
    for i in range(3):
        torch.testing.assert_close(parts.total[i], F.cross_entropy(logits[i], labels[i]))
    with pytest.raises(ConfigError, match="target must be"):
        coupled_loss(logits, labels[:2], 0.0)


def test_loss_module_form(batch):
    from colearning import CoupledKLLoss

    logits, labels = batch
    parts = coupled_loss(logits, labels, -0.3, kl_reduction="mean")
    loss_fn = CoupledKLLoss(beta=-0.3, kl_reduction="mean")
    torch.testing.assert_close(loss_fn(logits, labels), parts.total.sum())
    torch.testing.assert_close(loss_fn.last.coupling, parts.coupling)
    torch.testing.assert_close(CoupledKLLoss(-0.3, kl_reduction="mean", reduction="none")(
        logits, labels), parts.total)
    torch.testing.assert_close(CoupledKLLoss(beta_bar=-0.9, reduction="mean")(logits, labels),
                               coupled_loss(logits, labels, -0.3).total.mean())
    assert "beta=-0.3" in repr(loss_fn)
    with pytest.raises(ConfigError, match="valid: sum, mean, none"):
        CoupledKLLoss(reduction="max")

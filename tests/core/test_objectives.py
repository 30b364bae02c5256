"""The ensemble objectives (loss.objective) against hand-computed float64 gradients."""

import numpy as np
import pytest
import torch

from colearning import ConfigError
from colearning.losses import OBJECTIVES, coupled_loss, interpolated_loss, objective_loss


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def hand_gradient(logits, q, weight):
    """d/dz of sum_i total_i = N * [w KL(q||p_ens) + (1 - w) mean_i KL(q||p_i)], batch-mean.

    KL(q||p_ens) depends on z_i through p_ens = mean_j p_j: with h = -q / p_ens,
    d/dz_ik [N KL(q||p_ens)] = p_ik (h_k - sum_c h_c p_ic); the member's own term gives the
    familiar p_i - q.
    """
    p = softmax(logits)  # [N, B, C]
    ens = p.mean(0)  # [B, C]
    h = -q / ens
    joint = p * (h - (h * p).sum(-1, keepdims=True))
    own = p - q
    return (weight * joint + (1 - weight) * own) / logits.shape[1]


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("soft", [False, True])
def test_gradient_matches_hand_computation(weight, soft):
    rng = np.random.default_rng(0)
    n, batch, classes = 4, 6, 5
    z = rng.normal(0, 2, (n, batch, classes))
    if soft:
        q = softmax(rng.normal(0, 1, (batch, classes)))
        target = torch.tensor(q)
    else:
        labels = rng.integers(0, classes, batch)
        q = np.eye(classes)[labels]
        target = torch.tensor(labels)
    logits = torch.tensor(z, requires_grad=True)
    parts = interpolated_loss(logits, target, weight)
    parts.total.sum().backward()
    np.testing.assert_allclose(logits.grad.numpy(), hand_gradient(z, q, weight), atol=1e-12)
    # the values: the member's own KL, the ensemble's KL, and their interpolation
    p = softmax(z)
    entropy = (q * np.log(np.where(q > 0, q, 1))).sum(-1)
    own = (entropy - (q * np.log(p)).sum(-1)).mean(-1)
    ensemble = (entropy - (q * np.log(p.mean(0))).sum(-1)).mean()
    np.testing.assert_allclose(parts.task.detach().numpy(), own, atol=1e-12)
    np.testing.assert_allclose(parts.total.detach().numpy(),
                               weight * ensemble + (1 - weight) * own, atol=1e-12)
    np.testing.assert_allclose((parts.total - parts.task).detach().numpy(),
                               parts.coupling.detach().numpy(), atol=1e-15)


def test_lambda_zero_is_independent_training_and_joint_is_lambda_one():
    torch.manual_seed(0)
    logits = torch.randn(3, 8, 4, dtype=torch.float64)
    labels = torch.randint(0, 4, (8,))
    independent = coupled_loss(logits, labels, 0.0)
    zero = objective_loss("interpolated", logits, labels, joint_weight=0.0)
    torch.testing.assert_close(zero.total, independent.total)
    torch.testing.assert_close(zero.coupling, torch.zeros(3, dtype=torch.float64))
    joint = objective_loss("joint", logits, labels)
    one = interpolated_loss(logits, labels, 1.0)
    torch.testing.assert_close(joint.total, one.total)
    # joint: every member carries the ensemble's cross-entropy -log p_ens(y)
    p_ens = logits.softmax(-1).mean(0)
    want = -p_ens[torch.arange(8), labels].log().mean()
    torch.testing.assert_close(joint.total, want.expand(3))


def test_colearning_objective_is_the_coupled_loss():
    torch.manual_seed(1)
    logits = torch.randn(3, 8, 4, dtype=torch.float64)
    labels = torch.randint(0, 4, (8,))
    got = objective_loss("colearning", logits, labels, beta=-0.2, kl_reduction="mean")
    want = coupled_loss(logits, labels, -0.2, kl_reduction="mean")
    torch.testing.assert_close(got.total, want.total)


def test_pack_of_ensembles_with_one_lambda_each():
    torch.manual_seed(2)
    logits = torch.randn(3, 2, 5, 4, dtype=torch.float64)  # K=3 ensembles of N=2
    labels = torch.randint(0, 4, (3, 5))
    weights = torch.tensor([[0.0], [0.5], [1.0]], dtype=torch.float64)
    parts = interpolated_loss(logits, labels, weights)
    assert parts.total.shape == (3, 2)
    for k in range(3):
        alone = interpolated_loss(logits[k], labels[k], float(weights[k]))
        torch.testing.assert_close(parts.total[k], alone.total)
        torch.testing.assert_close(parts.task[k], alone.task)


def test_bad_objective_inputs():
    with pytest.raises(ConfigError, match="valid: colearning, distill, interpolated, joint"):
        objective_loss("ncl", torch.zeros(2, 3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        interpolated_loss(torch.zeros(2, 3, 4), torch.zeros(3, dtype=torch.long), 1.5)
    with pytest.raises(ConfigError, match="member axis first"):
        interpolated_loss(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), 0.5)
    assert OBJECTIVES.names() == ["colearning", "distill", "interpolated", "joint"]

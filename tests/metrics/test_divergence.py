"""Tests for colearning.metrics.divergence against hand values and numpy loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colearning.errors import ConfigError
from colearning.metrics import (
    js_divergence,
    js_matrix,
    js_matrix_with_ensemble,
    js_mean,
    kl_divergence,
    kl_to_target,
)

LN2 = math.log(2.0)


def ref_kl(p, q):
    """Plain-python KL(p||q) in nats, 0 ln 0 = 0 (q > 0 where p > 0)."""
    return sum(pc * math.log(pc / qc) for pc, qc in zip(p, q, strict=True) if pc > 0)


def ref_js(p, q):
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    return 0.5 * ref_kl(p, m) + 0.5 * ref_kl(q, m)


def random_probs(shape, seed, zeros=True):
    rng = np.random.default_rng(seed)
    a = rng.random(shape) ** 3
    if zeros:
        a[a < 0.05] = 0.0  # exact zeros
    a[..., 0] += 1e-3  # no all-zero rows
    return torch.tensor(a / a.sum(-1, keepdims=True), dtype=torch.float64)


def test_kl_known_pair():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(kl_divergence(p, q)) == pytest.approx(expected, abs=1e-6)
    # asymmetric: KL(q||p) is a different hand value
    expected_rev = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert float(kl_divergence(q, p)) == pytest.approx(expected_rev, abs=1e-6)
    assert expected != pytest.approx(expected_rev, abs=1e-3)


def test_kl_zeros_in_p_and_q_are_finite():
    assert float(kl_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]))) == (
        pytest.approx(LN2, abs=1e-6)
    )
    big = float(kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])))
    assert math.isfinite(big) and big > 10.0  # q=0 < p clamped to 1e-12 inside the log
    assert float(kl_divergence(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]))) == 0.0


def test_kl_batched_and_broadcast_matches_loop():
    p = random_probs((3, 4, 5), seed=0)
    q = random_probs((4, 5), seed=1, zeros=False)
    out = kl_divergence(p, q)
    assert out.shape == (3, 4)
    for i in range(3):
        for b in range(4):
            assert float(out[i, b]) == pytest.approx(ref_kl(p[i, b].tolist(), q[b].tolist()))


def test_js_disjoint_is_ln2_and_identical_is_zero():
    assert float(js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))) == (
        pytest.approx(LN2, abs=1e-6)
    )
    p = torch.tensor([0.2, 0.3, 0.5])
    assert float(js_divergence(p, p)) == pytest.approx(0.0, abs=1e-7)


def test_js_hand_value_onehot_vs_uniform():
    # m = [.75, .25]: JS = .5 ln(1/.75) + .5 (.5 ln(.5/.75) + .5 ln(.5/.25))
    expected = 0.5 * math.log(1 / 0.75) + 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * LN2)
    got = float(js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])))
    assert got == pytest.approx(expected, abs=1e-6)


def test_js_random_matches_loop_symmetric_bounded():
    p = random_probs((6, 4), seed=2)
    q = random_probs((6, 4), seed=3)
    out = js_divergence(p, q)
    assert torch.allclose(out, js_divergence(q, p))
    assert bool((out >= 0).all()) and bool((out <= LN2 + 1e-12).all())
    for b in range(6):
        assert float(out[b]) == pytest.approx(ref_js(p[b].tolist(), q[b].tolist()))


def test_js_matrix_matches_double_loop():
    probs = random_probs((4, 5, 3), seed=4)
    d = js_matrix(probs)
    assert d.shape == (4, 4)
    for i in range(4):
        for j in range(4):
            ref = np.mean([ref_js(probs[i, b].tolist(), probs[j, b].tolist()) for b in range(5)])
            assert float(d[i, j]) == pytest.approx(ref, abs=1e-12)
    assert torch.equal(d, d.T)
    assert torch.equal(torch.diagonal(d), torch.zeros(4, dtype=d.dtype))


def test_js_matrix_onehot_members_and_n1():
    probs = torch.eye(3)[torch.tensor([[0, 1], [0, 2], [1, 1]])]  # [3, 2, 3] one-hot
    d = js_matrix(probs)
    assert torch.isfinite(d).all()
    # members 0,1 disagree on 1 of 2 samples; 0,2 on 1 of 2; 1,2 on 2 of 2
    expected = torch.tensor([[0, 0.5, 0.5], [0.5, 0, 1.0], [0.5, 1.0, 0]]) * LN2
    assert torch.allclose(d, expected, atol=1e-6)
    assert js_matrix(probs[:1]).tolist() == [[0.0]]


def test_js_mean_off_diagonal_and_n1():
    m = np.array([[0.0, 0.1, 0.2], [0.1, 0.0, 0.6], [0.2, 0.6, 0.0]])
    assert js_mean(m) == pytest.approx((0.1 + 0.2 + 0.6) / 3)
    assert js_mean(torch.tensor([[0.0]])) == 0.0
    assert js_mean(torch.tensor([[5.0, 1.0], [1.0, 5.0]])) == pytest.approx(1.0)  # ignores diag


def test_js_matrix_with_ensemble_default_and_explicit():
    probs = random_probs((3, 4, 5), seed=5)
    full = js_matrix_with_ensemble(probs)
    assert full.shape == (4, 4)
    assert torch.allclose(full[:3, :3], js_matrix(probs))
    ens = probs.mean(0)
    for i in range(3):
        ref = np.mean([ref_js(probs[i, b].tolist(), ens[b].tolist()) for b in range(4)])
        assert float(full[i, 3]) == pytest.approx(ref) and float(full[3, i]) == pytest.approx(ref)
    other = torch.full((4, 5), 0.2, dtype=torch.float64)  # uniform "ensemble"
    explicit = js_matrix_with_ensemble(probs, other)
    ref0 = np.mean([ref_js(probs[0, b].tolist(), [0.2] * 5) for b in range(4)])
    assert float(explicit[0, 3]) == pytest.approx(ref0)
    assert not torch.allclose(explicit[:, 3], full[:, 3])


def test_kl_to_target_labels_is_nll_and_soft_targets():
    probs = torch.tensor([[[0.5, 0.5], [0.25, 0.75]], [[1.0, 0.0], [0.0, 1.0]]])  # N=2,B=2
    labels = torch.tensor([0, 1])
    out = kl_to_target(probs, labels)
    assert out.shape == (2,)
    assert float(out[0]) == pytest.approx((LN2 + math.log(4 / 3)) / 2, abs=1e-6)
    assert float(out[1]) == pytest.approx(0.0, abs=1e-7)
    onehot = torch.eye(2)[labels]
    assert torch.allclose(kl_to_target(probs, onehot), out, atol=1e-6)
    soft = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    got = kl_to_target(probs[:1], soft)
    ref = (ref_kl([0.8, 0.2], [0.5, 0.5]) + ref_kl([0.3, 0.7], [0.25, 0.75])) / 2
    assert float(got[0]) == pytest.approx(ref, abs=1e-6)
    wrong = kl_to_target(probs, torch.tensor([1, 0]))  # member 1 certain and wrong
    assert torch.isfinite(wrong).all() and float(wrong[1]) > 20.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: kl_divergence(torch.ones(3) / 3, torch.ones(2) / 2),
        lambda: js_divergence(torch.ones(2, 3) / 3, torch.ones(4, 3) / 3),
        lambda: js_matrix(torch.ones(2, 3) / 3),
        lambda: js_matrix(torch.ones(2, 0, 3)),
        lambda: js_mean(torch.zeros(2, 3)),
        lambda: js_matrix_with_ensemble(torch.ones(2, 4, 3) / 3, torch.ones(4, 2) / 2),
        lambda: kl_to_target(torch.ones(2, 4, 3) / 3, torch.ones(4, 2) / 2),
        lambda: kl_to_target(torch.ones(2, 4, 3) / 3, torch.tensor([0, 1, 2])),
        lambda: kl_to_target(torch.ones(2, 4, 3) / 3, torch.tensor([0, 1, 2, 3])),
        lambda: kl_to_target(torch.ones(2, 4, 3) / 3, torch.tensor([0.0, 1.0, 2.0, 0.0])),
    ],
)
def test_shape_errors_raise_config_error(call):
    with pytest.raises(ConfigError):
        call()

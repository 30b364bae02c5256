"""Tests for colearning.metrics.calibration (NLL, Brier, ECE)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colearning.errors import ConfigError
from colearning.metrics import brier, expected_calibration_error, nll


def ref_ece(probs, labels, n_bins):
    """Straightforward loop ECE with bins (k/n, (k+1)/n] (0 in the first bin)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        in_bin = (conf > lo) & (conf <= hi) if k > 0 else conf <= hi
        if in_bin.any():
            acc = np.mean(pred[in_bin] == labels[in_bin])
            total += in_bin.mean() * abs(acc - conf[in_bin].mean())
    return total


def test_nll_hand_value_and_zero_prob_is_finite():
    probs = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    assert float(nll(probs, torch.tensor([0, 1]))) == pytest.approx(
        (math.log(2) + math.log(4 / 3)) / 2, abs=1e-6
    )
    zero = nll(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert float(zero) == pytest.approx(-math.log(1e-12), rel=1e-4)
    stacked = nll(torch.stack([probs, probs.flip(-1)]), torch.tensor([0, 1]))
    assert stacked.shape == (2,)
    assert float(stacked[1]) == pytest.approx((math.log(2) + math.log(4)) / 2, abs=1e-6)


def test_brier_perfect_uniform_and_hand():
    labels = torch.tensor([0, 2, 1])
    assert float(brier(torch.eye(3)[labels], labels)) == 0.0
    assert float(brier(torch.full((3, 3), 1 / 3), labels)) == pytest.approx(2 / 3)  # 1 - 1/C
    # [0.7, 0.3] with label 0: 0.3^2 + 0.3^2 = 0.18; [0, 1] with label 0: 1 + 1 = 2
    got = brier(torch.tensor([[0.7, 0.3], [0.0, 1.0]]), torch.tensor([0, 0]))
    assert float(got) == pytest.approx((0.18 + 2.0) / 2)
    per_member = brier(torch.stack([torch.eye(3)[labels], torch.full((3, 3), 1 / 3)]), labels)
    assert per_member.tolist() == pytest.approx([0.0, 2 / 3])


def test_ece_constructed_examples():
    # 5 samples at confidence 0.8, 4 correct: perfectly calibrated -> 0
    probs = torch.tensor([[0.8, 0.2]] * 5)
    assert float(expected_calibration_error(probs, torch.tensor([0, 0, 0, 0, 1]))) == (
        pytest.approx(0.0, abs=1e-6)
    )
    # all wrong at confidence 0.8 -> ECE = 0.8
    assert float(expected_calibration_error(probs, torch.ones(5, dtype=torch.long))) == (
        pytest.approx(0.8, abs=1e-6)
    )
    # two bins: (0.9-bin) acc 1/2 vs 0.9, (0.6-bin) acc 1/2 vs 0.6 -> (0.8 + 0.2) / 4
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    got = expected_calibration_error(probs, torch.tensor([0, 1, 0, 1]))
    assert float(got) == pytest.approx(0.25, abs=1e-6)


def test_ece_right_closed_bins():
    # n_bins=2: conf 0.5 (correct) belongs to (0, 0.5], conf 0.75 (wrong) to (0.5, 1]
    # -> 0.5 * |1 - 0.5| + 0.5 * |0 - 0.75| = 0.625 (would be 0.125 if 0.5 joined bin 2)
    probs = torch.tensor([[0.5, 0.5], [0.75, 0.25]], dtype=torch.float64)
    got = expected_calibration_error(probs, torch.tensor([0, 1]), n_bins=2)
    assert float(got) == pytest.approx(0.625)


def test_ece_matches_loop_and_member_axis():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 200, 5)) * 2
    probs = torch.softmax(torch.tensor(logits), -1)
    labels = torch.tensor(rng.integers(0, 5, size=200))
    out = expected_calibration_error(probs, labels, n_bins=10)
    assert out.shape == (3,)
    for i in range(3):
        ref = ref_ece(probs[i].numpy(), labels.numpy(), 10)
        assert float(out[i]) == pytest.approx(ref, abs=1e-12)
        assert float(expected_calibration_error(probs[i], labels, n_bins=10)) == pytest.approx(ref)
    default = expected_calibration_error(probs[0], labels)
    assert float(default) == pytest.approx(ref_ece(probs[0].numpy(), labels.numpy(), 15))


@pytest.mark.parametrize(
    "call",
    [
        lambda: nll(torch.ones(3, 2) / 2, torch.tensor([0, 1])),
        lambda: nll(torch.ones(2) / 2, torch.tensor([0])),
        lambda: brier(torch.ones(3, 2) / 2, torch.tensor([0, 1, 2])),
        lambda: expected_calibration_error(torch.ones(3, 2) / 2, torch.tensor([0, 1, 1]), 0),
        lambda: expected_calibration_error(torch.ones(3, 2) / 2, torch.tensor([[0, 1, 1]])),
    ],
)
def test_errors_raise_config_error(call):
    with pytest.raises(ConfigError):
        call()

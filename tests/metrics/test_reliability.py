"""Tests for colearning.metrics.reliability."""

from __future__ import annotations

import math

import pytest
import torch

from colearning.errors import ConfigError
from colearning.metrics import expected_calibration_error, reliability_bins


def test_reliability_bins_hand_example():
    # confidences 0.9, 0.9, 0.6, 0.6, 0.35 (C=3); correct: yes, no, yes, yes, no
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.4, 0.6, 0.0],
                          [0.35, 0.33, 0.32]])
    labels = torch.tensor([0, 1, 0, 1, 2])
    bins = reliability_bins(probs, labels, n_bins=5)  # (0,.2], (.2,.4], (.4,.6], (.6,.8], (.8,1]
    assert bins.counts.tolist() == [0, 1, 2, 0, 2]
    assert bins.accuracy[1].item() == 0.0 and bins.accuracy[2].item() == 1.0
    assert bins.accuracy[4].item() == pytest.approx(0.5)
    assert bins.confidence[4].item() == pytest.approx(0.9)
    assert bins.confidence[1].item() == pytest.approx(0.35)
    assert math.isnan(bins.accuracy[0].item()) and math.isnan(bins.confidence[3].item())


def test_reliability_bins_reproduce_ece():
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(3, 200, 6, generator=generator), -1)
    labels = torch.randint(0, 6, (200,), generator=generator)
    bins = reliability_bins(probs, labels)  # [3, 15] each
    assert bins.counts.shape == (3, 15) and bins.counts.sum(-1).tolist() == [200] * 3
    gap = (bins.accuracy - bins.confidence).abs().nan_to_num(0.0)
    ece = (bins.counts / 200 * gap).sum(-1)
    torch.testing.assert_close(ece, expected_calibration_error(probs, labels))


def test_reliability_bins_argument_errors():
    with pytest.raises(ConfigError):
        reliability_bins(torch.ones(2, 2) / 2, torch.tensor([0, 1]), n_bins=0)
    with pytest.raises(ConfigError):
        reliability_bins(torch.ones(2, 2) / 2, torch.tensor([0, 1, 1]))

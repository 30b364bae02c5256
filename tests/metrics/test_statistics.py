"""Tests for colearning.metrics.statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colearning.errors import ConfigError
from colearning.metrics import accuracy_change, rescued_count, spearman


def test_spearman_hand_ranks():
    # rank differences d = [-1, 1, -1, 1, 0]: rho = 1 - 6 * 4 / (5 * 24) = 0.8
    rho, p = spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert rho == pytest.approx(0.8)
    assert 0.0 < p < 1.0
    rho, p = spearman(torch.tensor([1.0, 2.0, 3.0, 4.0]), np.array([9.0, 7.0, 4.0, 0.0]))
    assert rho == pytest.approx(-1.0) and p == pytest.approx(0.0, abs=1e-6)


def test_spearman_constant_is_nan_and_shape_errors():
    rho, p = spearman([1, 1, 1], [1, 2, 3])
    assert math.isnan(rho) and math.isnan(p)
    with pytest.raises(ConfigError):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ConfigError):
        spearman([1], [1])
    with pytest.raises(ConfigError):
        spearman([[1, 2], [3, 4]], [[1, 2], [3, 4]])


def test_rescued_count_hand_example():
    # N=2, B=3, C=3, labels [1, 0, 2]
    probs = torch.tensor(
        [
            [[0.6, 0.4, 0.0], [0.9, 0.1, 0.0], [0.5, 0.0, 0.5]],
            [[0.0, 0.4, 0.6], [0.1, 0.9, 0.0], [0.5, 0.5, 0.0]],
        ]
    )
    labels = torch.tensor([1, 0, 2])
    # sample 0: no member right, ensemble [.3, .4, .3] right -> rescued
    # sample 1: member 0 right -> not counted; sample 2: none right, ensemble [.5,.25,.25] wrong
    assert rescued_count(probs, probs.mean(0), labels) == 1
    assert rescued_count(probs, torch.eye(3)[labels], labels) == 2  # a perfect "ensemble"
    assert rescued_count(probs[:1], probs[0], labels) == 0  # N=1: ensemble == member


def test_rescued_count_shape_errors():
    probs = torch.ones(2, 3, 4) / 4
    with pytest.raises(ConfigError):
        rescued_count(probs, torch.ones(3, 3) / 3, torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError):
        rescued_count(probs[0], torch.ones(3, 4) / 4, torch.tensor([0, 1, 2]))


def test_accuracy_change_values_and_shapes():
    out = accuracy_change([0.5, 0.6, 0.55, 0.55])
    assert out.shape == (3,)
    assert out.tolist() == pytest.approx([0.1, 0.05, 0.0])
    per_member = accuracy_change(torch.tensor([[0.1, 0.4, 0.2], [0.9, 0.8, 0.8]]))
    assert per_member.shape == (2, 2)
    assert per_member.tolist() == [pytest.approx([0.3, 0.2]), pytest.approx([0.1, 0.0])]
    assert accuracy_change([0.7]).shape == (0,)
    with pytest.raises(ConfigError):
        accuracy_change(torch.tensor(0.5))

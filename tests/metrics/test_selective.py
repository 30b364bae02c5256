"""colearning.metrics.selective against brute force over every tie-breaking order."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest
import torch

from colearning.errors import ConfigError
from colearning.metrics import accuracy_at_coverage, aurc, risk_coverage, selective


def brute_risks(confidence, correct):
    """Risk at k = 1..B averaged over all orders sorting confidence high to low."""
    orders = [p for p in itertools.permutations(range(len(confidence)))
              if all(confidence[a] >= confidence[b] for a, b in itertools.pairwise(p))]
    risks = np.zeros(len(confidence))
    for order in orders:
        errors = np.cumsum([0.0 if correct[i] else 1.0 for i in order])
        risks += errors / np.arange(1, len(confidence) + 1)
    return risks / len(orders)


@pytest.mark.parametrize("seed", range(8))
def test_curve_is_the_mean_over_tie_breaks(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 8))
    confidence = rng.integers(0, 3, size) / 2.0  # many ties
    correct = rng.random(size) < 0.6
    coverage, risk = risk_coverage(torch.from_numpy(confidence), torch.from_numpy(correct))
    want = brute_risks(confidence, correct)
    np.testing.assert_allclose(coverage, np.arange(1, size + 1) / size)
    np.testing.assert_allclose(risk, want, atol=1e-12)
    assert aurc(confidence, correct) == pytest.approx(want.mean(), abs=1e-12)
    for cover in (0.5, 0.9, 0.95, 1.0):
        k = max(1, math.ceil(cover * size - 1e-9))
        assert accuracy_at_coverage(confidence, correct, cover) == pytest.approx(
            1 - want[k - 1], abs=1e-12)


def test_without_ties_and_hand_values():
    rng = np.random.default_rng(0)
    confidence, correct = rng.random(50), rng.random(50) < 0.7
    order = np.argsort(-confidence)
    errors = np.cumsum(~correct[order])
    _, risk = risk_coverage(confidence, correct.astype(int))
    np.testing.assert_allclose(risk, errors / np.arange(1, 51))
    # 20 samples, the least confident is the only error: 95% coverage drops exactly it
    confidence, correct = np.arange(20.0), np.arange(20) > 0
    assert accuracy_at_coverage(confidence, correct, 0.95) == 1.0
    assert accuracy_at_coverage(confidence, correct, 1.0) == 0.95
    assert aurc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # (1/2 + 1/2) / 2


def test_refusals():
    for conf, correct, match in (([], [], "non-empty"), ([1.0, math.nan], [1, 0], "finite"),
                                 ([1.0, 0.5], [1], "shape"), ([1.0, 0.5], [1, 2], "0/1")):
        with pytest.raises(ConfigError, match=match):
            risk_coverage(conf, correct)
    for bad in (0.0, 1.5, True, "0.9"):
        with pytest.raises(ConfigError, match=r"coverage must be a number in \(0, 1\]"):
            accuracy_at_coverage([0.5], [True], bad)


def test_docstring_examples():
    assert doctest.testmod(selective).failed == 0

"""colearning.metrics.temperature: the fitted T against a brute-force NLL grid and scipy."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from colearning.errors import ConfigError
from colearning.metrics import (
    apply_temperature,
    fit_temperature,
    fit_temperatures,
    nll,
    temperature,
)


def nll_at(z, labels, t):
    """NLL of softmax(z / t) in float64 numpy, written out (max-shifted log-sum-exp)."""
    scaled = np.asarray(z, dtype=np.float64) / t
    top = scaled.max(1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(scaled - top).sum(1))
    return float(np.mean(log_norm - scaled[np.arange(len(labels)), np.asarray(labels)]))


def problem(seed, sharpness):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (200,), generator=gen)
    logits = torch.randn(200, 5, generator=gen, dtype=torch.float64)
    logits[torch.arange(200), labels] += 1.0  # informative but not separable
    return torch.log_softmax(logits * sharpness, -1), labels


@pytest.mark.parametrize("sharpness", [0.3, 1.0, 4.0])
def test_fit_is_the_nll_minimum(sharpness):
    z, labels = problem(int(sharpness * 10), sharpness)
    got = fit_temperature(z, labels)
    grid = np.exp(np.linspace(math.log(1e-2), math.log(1e2), 2001))
    losses = [nll_at(z, labels, t) for t in grid]
    best = grid[int(np.argmin(losses))]
    assert got == pytest.approx(best, rel=0.01)  # grid step 0.46%
    assert nll_at(z, labels, got) <= min(losses) + 1e-12
    scipy_t = math.exp(minimize_scalar(lambda u: nll_at(z, labels, math.exp(u)),
                                       bounds=(math.log(1e-2), math.log(1e2)),
                                       method="bounded", options={"xatol": 1e-10}).x)
    assert got == pytest.approx(scipy_t, rel=1e-5)
    assert (got > 1) == (sharpness > 1)  # over-confident logits are softened


def test_members_separately_and_apply():
    a, labels = problem(1, 0.5)
    b, _ = problem(1, 3.0)
    stacked = torch.stack([a, b])
    both = fit_temperatures(stacked, labels)
    assert both.tolist() == pytest.approx([fit_temperature(a, labels),
                                           fit_temperature(b, labels)], rel=1e-9)
    calibrated = apply_temperature(stacked.float(), both)
    assert calibrated.dtype == torch.float32 and calibrated.shape == stacked.shape
    torch.testing.assert_close(calibrated[1].double(),
                               torch.log_softmax(b / both[1], -1), atol=1e-5, rtol=0)
    assert torch.equal(calibrated.argmax(-1), stacked.argmax(-1))  # accuracy unchanged
    assert (nll(calibrated, labels, log=True) <= nll(stacked, labels, log=True) + 1e-6).all()


def test_bounds_and_zero_probabilities():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])  # all right: sharper is always better
    assert fit_temperature(logits, torch.tensor([0, 1])) == pytest.approx(1e-2, rel=1e-6)
    assert fit_temperature(logits, torch.tensor([1, 0])) == pytest.approx(1e2, rel=1e-6)
    z = torch.tensor([[0.0, -math.inf], [-0.1, -2.4]])  # a zero probability off the label
    assert math.isfinite(fit_temperature(z, torch.tensor([0, 1])))
    with pytest.raises(ConfigError, match="probability 0"):
        fit_temperature(z, torch.tensor([1, 1]))


def test_refusals():
    z = torch.zeros(4, 3)
    with pytest.raises(ConfigError, match="NaN"):
        fit_temperature(torch.full((4, 3), math.nan), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"\[B, C\]"):
        fit_temperature(z[None], torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="labels"):
        fit_temperature(z, torch.zeros(3, dtype=torch.long))
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ConfigError, match="positive and finite"):
            apply_temperature(z, bad)
    with pytest.raises(ConfigError, match="one per member"):
        apply_temperature(torch.zeros(2, 4, 3), torch.ones(3))


def test_docstring_examples():
    assert doctest.testmod(temperature).failed == 0

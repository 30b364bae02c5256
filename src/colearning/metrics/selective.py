"""Selective prediction (beyond the paper): answer only the most confident samples.

Samples are ranked by confidence (e.g. the ensemble's max probability, or any
:func:`~colearning.metrics.ood.ood_scores` entry), highest first; covering the top ``k``
of ``B`` gives coverage ``k / B`` and risk = the error rate among them. Tied confidences
are broken at random, and the curve is its expectation over those tie-breaks (errors
spread evenly within a tie), so it does not depend on the input order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from colearning.errors import ConfigError

from ._checks import to_numpy

__all__ = ["risk_coverage", "aurc", "accuracy_at_coverage"]


def _inputs(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    conf = to_numpy(confidence, "confidence")
    if conf.ndim != 1 or conf.size == 0:
        raise ConfigError(f"confidence must be a non-empty 1-D array, got shape "
                          f"{tuple(conf.shape)}")
    if not np.all(np.isfinite(conf)):
        raise ConfigError("confidence must be finite, got NaN or inf entries")
    right = to_numpy(correct, "correct")
    if right.shape != conf.shape or not np.all((right == 0) | (right == 1)):
        raise ConfigError(f"correct must be booleans (or 0/1) of shape {tuple(conf.shape)} "
                          f"like confidence, got shape {tuple(right.shape)}")
    return conf, right


def risk_coverage(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve: ``confidence [B]``, ``correct [B]`` (bool) -> ``(coverage,
    risk)``, each float64 ``[B]``: ``coverage[k-1] = k / B`` and ``risk[k-1]`` the expected
    error rate of the ``k`` most confident samples.

    >>> coverage, risk = risk_coverage([0.9, 0.8, 0.8, 0.6], [True, True, False, False])
    >>> coverage.tolist(), risk.tolist()  # the tie at 0.8: half an error at k = 2
    ([0.25, 0.5, 0.75, 1.0], [0.0, 0.25, 0.3333333333333333, 0.5])
    """
    conf, right = _inputs(confidence, correct)
    order = np.argsort(-conf, kind="mergesort")
    conf, errors = conf[order], 1.0 - right[order]
    starts = np.flatnonzero(np.r_[True, conf[1:] != conf[:-1]])
    sizes = np.diff(np.r_[starts, conf.size])
    before = np.r_[0.0, np.cumsum(errors)][starts]  # errors ranked above each tie group
    rate = np.add.reduceat(errors, starts) / sizes  # error rate within each tie group
    k = np.arange(1, conf.size + 1)
    group = np.repeat(np.arange(starts.size), sizes)
    expected = before[group] + (k - starts[group]) * rate[group]
    return k / conf.size, expected / k


def aurc(confidence: Any, correct: Any) -> float:
    """Area under the risk-coverage curve (Geifman et al., 2019): the mean of ``risk`` over
    ``k = 1..B``; lower is better. Perfect ranking of a model with error rate ``e`` gives
    about ``e + (1 - e) ln(1 - e)``, and random ranking about ``e``.

    >>> aurc([0.9, 0.8, 0.7], [True, True, False])  # risks 0, 0, 1/3
    0.1111111111111111
    """
    return float(risk_coverage(confidence, correct)[1].mean())


def accuracy_at_coverage(confidence: Any, correct: Any, coverage: float) -> float:
    """Accuracy on the most confident ``ceil(coverage * B)`` samples (at least 1);
    ``coverage`` in ``(0, 1]``, e.g. 0.9 or 0.95.

    >>> accuracy_at_coverage([0.9, 0.8, 0.7, 0.6], [True, True, False, True], 0.5)
    1.0
    """
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not (
            0 < coverage <= 1):
        raise ConfigError(f"coverage must be a number in (0, 1], got {coverage!r}")
    risk = risk_coverage(confidence, correct)[1]
    k = max(1, math.ceil(round(coverage * risk.size, 9)))  # 0.95 * 20 is 19, not 19.000...1
    return float(1.0 - risk[k - 1])

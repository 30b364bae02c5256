"""Calibration / uncertainty metrics (beyond the paper): NLL, Brier score, ECE.

NLL uses natural logs (nats). From log-probabilities (``log=True``) it is exact; a
true-class probability of exactly 0 given as a probability is clamped to ``1e-12`` inside
the log, so that result is finite (at most ``-ln 1e-12 ~= 27.6``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from colearning.errors import ConfigError

from ._checks import labels_tensor, probs_tensor

__all__ = ["nll", "brier", "expected_calibration_error"]

_EPS = 1e-12


def nll(probs: Any, labels: Any, *, log: bool = False) -> Tensor:
    """Mean negative log-likelihood in nats: ``probs [..., B, C] -> [...]``
    (``[N, B, C] -> [N]``, ``[B, C] -> []``); ``labels [B]`` int; ``log=True``: ``probs``
    are log-probabilities.

    >>> import torch
    >>> probs = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    >>> round(float(nll(probs, torch.tensor([0, 1]))), 4)  # (ln 2 + ln 4/3) / 2
    0.4904
    """
    probs = probs_tensor(probs, "probs", min_ndim=2, layout="[..., B, C]", need_samples=True)
    log_p = probs if log else torch.log(probs.clamp_min(_EPS))
    y = labels_tensor(labels, log_p)
    return -log_p.gather(-1, y.expand(*log_p.shape[:-1]).unsqueeze(-1)).squeeze(-1).mean(-1)


def brier(probs: Any, labels: Any) -> Tensor:
    """Brier score ``mean_b sum_c (p_bc - onehot_bc)^2``: ``probs [..., B, C] -> [...]``;
    ``labels [B]`` int. 0 for perfect one-hot predictions, ``1 - 1/C`` for uniform ones,
    at most 2.

    >>> import torch
    >>> float(brier(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([0, 1])))
    0.25
    """
    probs = probs_tensor(probs, "probs", min_ndim=2, layout="[..., B, C]", need_samples=True)
    y = labels_tensor(labels, probs)
    onehot = torch.nn.functional.one_hot(y, probs.shape[-1]).to(probs.dtype)
    return ((probs - onehot) ** 2).sum(-1).mean(-1)


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> Tensor:
    """Expected calibration error: ``probs [B, C] -> []`` or ``[N, B, C] -> [N]``
    (any ``[..., B, C] -> [...]``); ``labels [B]`` int.

    Confidence is the max probability, correct means ``argmax == label``. Samples are put
    in ``n_bins`` equal-width bins ``[0, 1/n], (1/n, 2/n], ..., ((n-1)/n, 1]`` and
    ``ECE = sum_bins (n_bin / B) * |acc_bin - conf_bin|`` (empty bins contribute 0).

    >>> import torch
    >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    >>> # bin (0.8, 0.9]: acc 1/2 vs conf 0.9; bin (0.533, 0.6]: acc 1/2 vs conf 0.6
    >>> round(float(expected_calibration_error(probs, torch.tensor([0, 1, 0, 1]))), 4)
    0.25
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive int, got {n_bins!r}")
    probs = probs_tensor(
        probs, "probs", min_ndim=2, layout="[B, C] or [N, B, C]", need_samples=True
    )
    y = labels_tensor(labels, probs)
    conf, pred = probs.max(-1)  # [..., B]
    gap = (pred == y).to(probs.dtype) - conf  # correct - confidence, per sample
    upper = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)[1:]
    upper = upper.to(device=probs.device, dtype=probs.dtype)
    # bucketize(right=False): index i with upper[i-1] < conf <= upper[i] -> bins (lo, hi].
    idx = torch.bucketize(conf.contiguous(), upper).clamp_max(n_bins - 1)
    lead, b = conf.shape[:-1], conf.shape[-1]
    sums = gap.new_zeros((*lead, n_bins)).scatter_add_(-1, idx, gap)
    return sums.abs().sum(-1) / b

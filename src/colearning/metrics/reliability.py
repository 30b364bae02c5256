"""Reliability diagrams (beyond the paper): per-bin confidence, accuracy and counts.

Binning matches :func:`colearning.metrics.expected_calibration_error` (equal-width bins
``[0, 1/n], (1/n, 2/n], ..., ((n-1)/n, 1]`` over the max probability), so
``ECE = sum_bins counts / B * |accuracy - confidence|`` over the non-empty bins.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from colearning.errors import ConfigError

from ._checks import labels_tensor, probs_tensor

__all__ = ["ReliabilityBins", "reliability_bins"]


class ReliabilityBins(NamedTuple):
    """Per bin, each ``[..., n_bins]``: mean confidence and accuracy (NaN when the bin is
    empty) and the number of samples."""

    confidence: Tensor
    accuracy: Tensor
    counts: Tensor


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> ReliabilityBins:
    """Reliability-diagram bins: ``probs [..., B, C]`` (e.g. ``[N, B, C]`` or ``[B, C]``),
    ``labels [B]`` int -> :class:`ReliabilityBins` of ``[..., n_bins]`` tensors.

    >>> import torch
    >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    >>> bins = reliability_bins(probs, torch.tensor([0, 1, 0, 1]), n_bins=10)
    >>> bins.counts.tolist()
    [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    >>> bins.accuracy[5].item(), round(bins.confidence[8].item(), 4)
    (0.5, 0.9)
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive int, got {n_bins!r}")
    probs = probs_tensor(probs, "probs", min_ndim=2, layout="[..., B, C]", need_samples=True)
    y = labels_tensor(labels, probs)
    conf, pred = probs.max(-1)  # [..., B]
    correct = (pred == y).to(probs.dtype)
    upper = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)[1:]
    upper = upper.to(device=probs.device, dtype=probs.dtype)
    idx = torch.bucketize(conf.contiguous(), upper).clamp_max(n_bins - 1)  # bins (lo, hi]
    zeros = conf.new_zeros((*conf.shape[:-1], n_bins))
    counts = zeros.scatter_add(-1, idx, torch.ones_like(conf))
    conf_sum = zeros.scatter_add(-1, idx, conf)
    correct_sum = zeros.scatter_add(-1, idx, correct)
    empty = counts == 0
    safe = counts.clamp_min(1)
    nan = torch.tensor(float("nan"), dtype=probs.dtype, device=probs.device)
    return ReliabilityBins(
        confidence=torch.where(empty, nan, conf_sum / safe),
        accuracy=torch.where(empty, nan, correct_sum / safe),
        counts=counts.long(),
    )

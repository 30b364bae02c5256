"""Statistics over samples and epochs (paper Fig. 5c and Fig. S2b)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from colearning.errors import ConfigError

from ._checks import as_float, correlation, labels_tensor, probs_tensor, shape_str, to_numpy

__all__ = ["spearman", "rescued_count", "accuracy_change"]


def spearman(x: Any, y: Any) -> tuple[float, float]:
    """Spearman rank correlation ``x [B]``, ``y [B]`` -> ``(rho, p)`` floats.

    Wraps :func:`scipy.stats.spearmanr` (two-sided p-value). Used for paper Fig. 5c:
    ``votes_correct`` vs the ensemble's true-class probability. Needs ``B >= 2``; if
    either input is constant the correlation is undefined and ``(nan, nan)`` is
    returned (without scipy's warning).

    >>> rho, p = spearman([1, 2, 3, 4], [10, 20, 30, 45])
    >>> rho
    1.0
    """
    a = to_numpy(x, "x")
    b = to_numpy(y, "y")
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ConfigError(
            f"x and y must be 1-D of the same length [B], got {shape_str(a)} and {shape_str(b)}"
        )
    if a.shape[0] < 2:
        raise ConfigError(f"spearman needs at least 2 samples, got {a.shape[0]}")
    return correlation(a, b, "spearman")


def rescued_count(probs: Any, ens_probs: Any, labels: Any) -> int:
    """Samples no member classified correctly but the ensemble did: ``probs [N, B, C]``,
    ``ens_probs [B, C]``, ``labels [B]`` int -> int (paper Sec. 3.2, end).

    >>> import torch
    >>> probs = torch.tensor([[[0.6, 0.4, 0.0]], [[0.0, 0.4, 0.6]]])  # both wrong on y=1
    >>> rescued_count(probs, probs.mean(0), torch.tensor([1]))  # mean = [.3, .4, .3]
    1
    """
    probs = probs_tensor(probs, "probs", ndims=(3,), layout="[N, B, C]")
    ens = as_float(ens_probs, "ens_probs")
    if tuple(ens.shape) != tuple(probs.shape[1:]):
        raise ConfigError(
            f"ens_probs must have shape [B, C] = {shape_str(probs[0])}, got {shape_str(ens)}"
        )
    y = labels_tensor(labels, probs)
    none_right = ~(probs.argmax(-1) == y).any(0)
    ens_right = ens.to(probs.device).argmax(-1) == y
    return int((none_right & ens_right).sum())


def accuracy_change(acc_per_epoch: Any) -> Tensor:
    """Absolute accuracy change between consecutive epochs: ``[T] -> [T - 1]``
    (any ``[..., T] -> [..., T - 1]``, e.g. per member ``[N, T] -> [N, T - 1]``).

    ``out[t] = |acc[t + 1] - acc[t]|``, the fluctuation measure of paper Fig. S2b.

    >>> accuracy_change([0.5, 0.6, 0.55]).round(decimals=4)
    tensor([0.1000, 0.0500], dtype=torch.float64)
    """
    acc = as_float(acc_per_epoch, "acc_per_epoch")
    if acc.ndim < 1 or acc.shape[-1] < 1:
        raise ConfigError(
            f"acc_per_epoch must have shape [T] (T >= 1) or [..., T], got {shape_str(acc)}"
        )
    return torch.diff(acc, dim=-1).abs()


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1) of ``values``: the one spread over
    seeds or members this library reports. NaN for the std of one value; both NaN for none.
    """
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))

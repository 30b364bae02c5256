"""Shape and dtype checks shared by the metric modules (private).

Every public metric calls these at its boundary so a wrong shape raises
:class:`colearning.errors.ConfigError` with a one-line message instead of a
broadcasting surprise deep inside torch.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from colearning.errors import ConfigError


def shape_str(t: Tensor | np.ndarray) -> str:
    """Render a shape as ``(3, 4)`` for error messages."""
    return str(tuple(int(s) for s in t.shape))


def to_tensor(x: Any, name: str) -> Tensor:
    """Convert array-like ``x`` to a tensor, raising ConfigError if it is not numeric."""
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{name} must be a numeric array, got {type(x).__name__}") from exc


def as_float(x: Any, name: str) -> Tensor:
    """Tensor of a floating dtype (integers/bools are cast to the default float dtype)."""
    t = to_tensor(x, name)
    if t.is_complex():
        raise ConfigError(f"{name} must be real-valued, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


def probs_tensor(
    x: Any,
    name: str,
    *,
    ndims: tuple[int, ...] | None = None,
    min_ndim: int = 1,
    layout: str = "[..., C]",
    need_samples: bool = False,
) -> Tensor:
    """Float tensor of probabilities with the class axis last.

    ``ndims`` restricts the allowed number of dimensions; ``need_samples`` requires a
    non-empty sample axis (``shape[-2] >= 1``) because the caller averages over it.
    """
    t = as_float(x, name)
    if (ndims is not None and t.ndim not in ndims) or t.ndim < min_ndim:
        raise ConfigError(f"{name} must have shape {layout}, got {shape_str(t)}")
    if t.shape[-1] == 0:
        raise ConfigError(f"{name} must have at least one class (C >= 1), got {shape_str(t)}")
    if need_samples and t.shape[-2] == 0:
        raise ConfigError(f"{name} must have at least one sample (B >= 1), got {shape_str(t)}")
    return t


def log_probs_tensor(x: Any, name: str, log: bool, **checks: Any) -> Tensor:
    """Log-probabilities from probabilities (``log=False``; 0 -> -inf) or as given (``log=True``).

    The metrics compute in log space: from stored float32 log-probabilities (log_softmax)
    an entropy near 0 or an NLL above 27.6 nats keeps its precision, which probabilities
    rounded to float32 or float16 would lose. ``checks`` go to :func:`probs_tensor`.
    """
    t = probs_tensor(x, name, **checks)
    return t if log else torch.log(t)


def masked_product(log_p: Tensor, values: Tensor) -> Tensor:
    """``p * values`` with ``p = exp(log_p)``, and exactly 0 where p = 0 (``0 * log 0 = 0``)."""
    return torch.where(log_p == float("-inf"), torch.zeros_like(values),
                       torch.exp(log_p) * values)


def labels_tensor(labels: Any, probs: Tensor, name: str = "labels") -> Tensor:
    """Integer labels ``[B]`` matching ``probs [..., B, C]``, values in ``[0, C)``; int64."""
    y = to_tensor(labels, name)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ConfigError(f"{name} must be integer class indices, got dtype {y.dtype}")
    n_samples, n_classes = probs.shape[-2], probs.shape[-1]
    if y.ndim != 1 or y.shape[0] != n_samples:
        raise ConfigError(
            f"{name} must have shape [B] = ({n_samples},) to match probs {shape_str(probs)}, "
            f"got {shape_str(y)}"
        )
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ConfigError(
            f"{name} must lie in [0, {n_classes}), got values in [{int(y.min())}, {int(y.max())}]"
        )
    return y.to(device=probs.device, dtype=torch.long)


def square_matrix(x: Any, name: str, layout: str = "[M, M]") -> np.ndarray:
    """A finite float64 numpy matrix of shape ``[M, M]`` (M >= 1)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a numeric matrix, got {type(x).__name__}") from exc
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ConfigError(f"{name} must have shape {layout}, got {shape_str(a)}")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{name} must be finite, got NaN or inf entries")
    return a


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A float64 numpy array from a tensor or array-like."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a numeric array, got {type(x).__name__}") from exc


def correlation(a: np.ndarray, b: np.ndarray, method: str) -> tuple[float, float]:
    """(statistic, p) of scipy's ``pearsonr``/``spearmanr`` on 1-D a, b; (nan, nan) if constant.

    A constant input has no defined correlation: return NaN quietly rather than scipy's
    warning.
    """
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan"), float("nan")
    from scipy import stats  # here, not at import: scipy.stats slows every start-up
    test = {"pearson": stats.pearsonr, "spearman": stats.spearmanr}[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        res = test(a, b)
    return float(res.statistic), float(res.pvalue)

"""Temperature scaling (Guo et al., 2017): one scalar T > 0 per model, fitted on held-out
data by minimizing the NLL of ``softmax(z / T)``; the argmax (accuracy) is unchanged.

The inputs are logits or log-probabilities ``z``: ``log_softmax(z / T)`` does not change when
a constant is added to a row, so a member's log_softmax output serves as its logits, and
for the ensemble ``log p_ens`` (log of the members' mean probability) does too. Fit on a
validation split, apply to the test split:

    t_ens = fit_temperature(log_p_ens_val, y_val)              # [B, C] -> float
    t_members = fit_temperatures(log_probs_val, y_val)         # [N, B, C] -> [N]
    calibrated = apply_temperature(log_probs_test, t_members)  # [N, B, C]

The NLL is convex in ``1 / T`` (a log-sum-exp of linear functions minus a linear one), so
it is unimodal in ``log T`` and a golden-section search on ``log T`` over
``[1e-2, 1e2]`` finds the minimum deterministically (a minimum beyond the bounds gives the
bound). Each step evaluates the NLL of all samples at once, in float64.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from colearning.errors import ConfigError

from ._checks import as_float, labels_tensor, probs_tensor, shape_str

__all__ = ["fit_temperature", "fit_temperatures", "apply_temperature"]

BOUNDS = (1e-2, 1e2)  # the range of T searched
_STEPS = 80  # golden-section steps: the bracket on log T shrinks to 9.2 * 0.618^80 ~ 1e-16
_INVERSE_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def _checked(log_probs: Any, labels: Any, ndims: tuple[int, ...], layout: str
             ) -> tuple[Tensor, Tensor]:
    z = probs_tensor(log_probs, "log_probs", ndims=ndims, layout=layout, need_samples=True)
    if torch.isnan(z).any() or (z == float("inf")).any():
        raise ConfigError("log_probs must not contain NaN or +inf (-inf, probability 0, is "
                          "allowed)")
    return z.detach().to(torch.float64), labels_tensor(labels, z)


def _nll(z: Tensor, labels: Tensor, log_t: Tensor) -> Tensor:
    """Mean NLL of ``softmax(z / T)``: ``z [..., B, C]``, ``log_t [...]`` -> ``[...]``."""
    scaled = z / log_t.exp()[..., None, None]
    true = scaled.gather(-1, labels.expand(*scaled.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return (torch.logsumexp(scaled, -1) - true).mean(-1)


def _golden(z: Tensor, labels: Tensor) -> Tensor:
    """T minimizing the NLL for each leading index of ``z [..., B, C]`` -> ``[...]``."""
    lead = z.shape[:-2]
    low = torch.full(lead, math.log(BOUNDS[0]), dtype=torch.float64, device=z.device)
    high = torch.full(lead, math.log(BOUNDS[1]), dtype=torch.float64, device=z.device)
    left, right = high - _INVERSE_PHI * (high - low), low + _INVERSE_PHI * (high - low)
    f_left, f_right = _nll(z, labels, left), _nll(z, labels, right)
    if not torch.isfinite(f_left).all():
        raise ConfigError("a label has probability 0 (log_probs -inf): its NLL is infinite "
                          "at every temperature")
    for _ in range(_STEPS):
        go_left = f_left <= f_right  # the minimum lies in [low, right]
        high = torch.where(go_left, right, high)
        low = torch.where(go_left, low, left)
        new = torch.where(go_left, high - _INVERSE_PHI * (high - low),
                          low + _INVERSE_PHI * (high - low))
        f_new = _nll(z, labels, new)
        # left: [low, old right] keeps old left as its right point; right: the reverse
        left, right = torch.where(go_left, new, right), torch.where(go_left, left, new)
        f_left, f_right = (torch.where(go_left, f_new, f_right),
                           torch.where(go_left, f_left, f_new))
    return ((low + high) / 2).exp()


def fit_temperature(log_probs: Any, labels: Any) -> float:
    """The temperature minimizing the NLL of ``softmax(log_probs / T)``:
    ``log_probs [B, C]`` (logits or log-probabilities, e.g. ``log p_ens``), ``labels [B]``
    int -> T in ``[1e-2, 1e2]``. T > 1 softens over-confident predictions.

    >>> import torch
    >>> logits = torch.tensor([[4.0, 0.0], [4.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    >>> round(fit_temperature(logits, torch.tensor([0, 0, 1, 1])), 3)  # 3 of 4 right
    3.641
    """
    z, y = _checked(log_probs, labels, (2,), "[B, C]")
    return float(_golden(z, y))


def fit_temperatures(log_probs: Any, labels: Any) -> Tensor:
    """One temperature per member, fitted separately: ``log_probs [N, B, C]``,
    ``labels [B]`` -> float64 ``[N]`` (see :func:`fit_temperature`)."""
    z, y = _checked(log_probs, labels, (3,), "[N, B, C]")
    return _golden(z, y)


def apply_temperature(log_probs: Any, temperature: Any) -> Tensor:
    """``log_softmax(log_probs / T)``: ``log_probs [..., C]`` -> the same shape and dtype.

    ``temperature`` is a number, or one per member (shape ``log_probs.shape[:-2]``, e.g.
    ``[N]`` for ``[N, B, C]``); every T must be positive and finite.

    >>> import torch
    >>> apply_temperature(torch.tensor([2.0, 0.0]), 2.0).exp()
    tensor([0.7311, 0.2689])
    """
    z = probs_tensor(log_probs, "log_probs", layout="[..., C]")
    t = as_float(temperature, "temperature").to(device=z.device, dtype=z.dtype)
    if t.ndim and tuple(t.shape) != tuple(z.shape[:-2]):
        raise ConfigError(f"temperature must be a number or have shape log_probs.shape[:-2] "
                          f"= {tuple(z.shape[:-2])} (one per member), got {shape_str(t)}")
    if not (torch.isfinite(t).all() and (t > 0).all()):
        raise ConfigError(f"temperature must be positive and finite, got {t.tolist()}")
    if t.ndim:
        t = t[..., None, None]
    return torch.log_softmax(z / t, dim=-1)

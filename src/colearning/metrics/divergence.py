"""Divergences between member predictions (paper Eq. 1 and Eq. 5), in nats.

All logarithms are natural, so divergences are in nats and the Jensen-Shannon
divergence is bounded by ``ln 2 ~= 0.6931``. Every function takes probabilities, or
log-probabilities with ``log=True`` (e.g. the log_softmax outputs a run saves), and
computes in log space, so near-certain predictions keep their precision. Probabilities may
contain exact zeros: ``0 * log 0`` is taken as 0 and a zero in the *second* argument of a
KL given as a probability is clamped to ``1e-12`` inside the log, so every result is
finite (never NaN/inf).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from colearning.errors import ConfigError

from ._checks import (
    as_float,
    labels_tensor,
    log_probs_tensor,
    masked_product,
    probs_tensor,
    shape_str,
    square_matrix,
    to_tensor,
)

__all__ = [
    "kl_divergence",
    "js_divergence",
    "js_matrix",
    "js_mean",
    "js_matrix_with_ensemble",
    "kl_to_target",
]

_EPS = 1e-12
_LN2 = math.log(2.0)


def _pair(p: Any, q: Any, log: bool) -> tuple[Tensor, Tensor]:
    """Log-probabilities of p and q (same class count, broadcastable shapes, one dtype)."""
    p = log_probs_tensor(p, "p", log)
    q = log_probs_tensor(q, "q", log)
    if p.shape[-1] != q.shape[-1]:
        raise ConfigError(
            f"p and q must have the same number of classes, got {shape_str(p)} and {shape_str(q)}"
        )
    try:
        torch.broadcast_shapes(p.shape, q.shape)
    except RuntimeError as exc:
        raise ConfigError(
            f"p and q shapes must broadcast, got {shape_str(p)} and {shape_str(q)}"
        ) from exc
    dtype = torch.promote_types(p.dtype, q.dtype)
    return p.to(dtype), q.to(dtype)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """sum_c p (log p - log q) from log-probabilities (p = 0 terms are 0)."""
    return masked_product(log_p, log_p - log_q).sum(-1)


def _js(log_p: Tensor, log_q: Tensor) -> Tensor:
    """JS(p, q) from log-probabilities; log m = logaddexp(log p, log q) - ln 2 > -inf
    wherever p > 0 or q > 0, so no clamp is needed."""
    log_m = torch.logaddexp(log_p, log_q) - _LN2
    js = 0.5 * (_kl(log_p, log_m) + _kl(log_q, log_m))
    return js.clamp(0.0, _LN2)


def kl_divergence(p: Any, q: Any, *, log: bool = False) -> Tensor:
    """KL(p || q) in nats: ``p [..., C]``, ``q [..., C]`` (broadcastable) -> ``[...]``.

    ``sum_c p_c (ln p_c - ln q_c)`` with ``0 ln 0 = 0``; a probability ``q`` is clamped to
    ``1e-12`` inside the log, so ``q_c = 0 < p_c`` gives a large finite value instead of
    inf. ``log=True``: p and q are log-probabilities.

    >>> import torch
    >>> round(float(kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75]))), 4)
    0.1438
    >>> kl_divergence(torch.ones(3, 4) / 4, torch.ones(3, 4) / 4).shape
    torch.Size([3])
    """
    if not log:  # a zero probability in q would give inf
        q = probs_tensor(q, "q").clamp_min(_EPS)
    log_p, log_q = _pair(p, q, log)
    return _kl(log_p, log_q).clamp_min(0.0)


def js_divergence(p: Any, q: Any, *, log: bool = False) -> Tensor:
    """Jensen-Shannon divergence in nats: ``p [..., C]``, ``q [..., C]`` -> ``[...]``.

    ``JS(p, q) = KL(p || m)/2 + KL(q || m)/2`` with ``m = (p + q)/2``; symmetric and
    bounded by ``ln 2`` (reached for disjoint supports). Shapes broadcast. ``log=True``:
    p and q are log-probabilities.

    >>> import torch
    >>> round(float(js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))), 4)
    0.6931
    >>> float(js_divergence(torch.tensor([0.3, 0.7]), torch.tensor([0.3, 0.7])))
    0.0
    """
    return _js(*_pair(p, q, log))


def js_matrix(probs: Any, *, log: bool = False) -> Tensor:
    """Pairwise functional distances ``probs [N, B, C] -> [N, N]`` (paper Eq. 5, nats).

    ``d[i, j] = mean_b JS(probs[i, b] || probs[j, b])``. The result is exactly
    symmetric with a zero diagonal. Memory is ``O(N * B * C)`` (one member against
    all later members at a time), never ``O(N^2 * B * C)``. ``log=True``: ``probs`` are
    log-probabilities.

    >>> import torch
    >>> probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]]])  # N=3, B=1, C=2
    >>> js_matrix(probs).round(decimals=4)
    tensor([[0.0000, 0.6931, 0.0000],
            [0.6931, 0.0000, 0.6931],
            [0.0000, 0.6931, 0.0000]])
    """
    log_p = log_probs_tensor(probs, "probs", log, ndims=(3,), layout="[N, B, C]",
                             need_samples=True)
    n = log_p.shape[0]
    out = log_p.new_zeros((n, n))
    for i in range(n - 1):
        d = _js(log_p[i].unsqueeze(0), log_p[i + 1 :]).mean(-1)  # [N - i - 1]
        out[i, i + 1 :] = d
        out[i + 1 :, i] = d
    return out


def js_mean(matrix: Any) -> float:
    """Mean of the off-diagonal entries of a distance matrix ``[N, N] -> float``.

    Returns ``0.0`` for ``N = 1`` (no pairs).

    >>> import torch
    >>> m = torch.tensor([[0.0, 0.2, 0.4], [0.2, 0.0, 0.6], [0.4, 0.6, 0.0]])
    >>> round(js_mean(m), 6)
    0.4
    >>> js_mean([[0.0]])
    0.0
    """
    m = square_matrix(matrix, "matrix", layout="[N, N]")
    n = m.shape[0]
    if n == 1:
        return 0.0
    return float((m.sum() - m.trace()) / (n * (n - 1)))


def js_matrix_with_ensemble(probs: Any, ens_probs: Any = None, *, log: bool = False) -> Tensor:
    """Distances among members and the ensemble: ``probs [N, B, C]``, ``ens_probs [B, C]``
    -> ``[N + 1, N + 1]`` (nats).

    Rows/cols ``0..N-1`` are the members (same as :func:`js_matrix`), the last row/col is
    the ensemble. ``ens_probs=None`` uses the uniform mean of the members (paper Eq. 4).
    Used as input to the MDS embedding of paper Fig. 4b. ``log=True``: both arguments are
    log-probabilities.

    >>> import torch
    >>> probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # N=2, B=1, C=2
    >>> js_matrix_with_ensemble(probs).shape
    torch.Size([3, 3])
    >>> round(float(js_matrix_with_ensemble(probs)[0, 2]), 4)  # JS([1,0] || [.5,.5])
    0.2158
    """
    log_p = log_probs_tensor(probs, "probs", log, ndims=(3,), layout="[N, B, C]",
                             need_samples=True)
    if ens_probs is None:
        ens = torch.logsumexp(log_p, 0) - math.log(log_p.shape[0])
    else:
        ens = as_float(ens_probs, "ens_probs").to(log_p.dtype)
        ens = ens if log else torch.log(ens)
        if tuple(ens.shape) != tuple(log_p.shape[1:]):
            raise ConfigError(
                f"ens_probs must have shape [B, C] = {shape_str(log_p[0])}, got {shape_str(ens)}"
            )
    return js_matrix(torch.cat([log_p, ens.unsqueeze(0)], dim=0), log=True)


def kl_to_target(probs: Any, target: Any, *, log: bool = False) -> Tensor:
    """Per-member mean KL(q || p_i) in nats: ``probs [N, B, C]`` -> ``[N]``.

    ``target`` is either integer labels ``[B]`` (one-hot ``q``; the result is then the
    mean negative log-likelihood, i.e. cross-entropy) or target probabilities ``[B, C]``.
    Any leading shape works: ``probs [..., B, C] -> [...]``. This is the x-axis
    ``D_KL[q || p_i]`` of paper Fig. 2b. ``log=True``: ``probs`` are log-probabilities, and
    the NLL is exact however small p_i(y) is; probabilities are clamped to ``1e-12``.

    >>> import torch
    >>> probs = torch.tensor([[[0.5, 0.5], [1.0, 0.0]]])  # N=1, B=2, C=2
    >>> round(float(kl_to_target(probs, torch.tensor([0, 0]))[0]), 4)  # (ln 2 + 0) / 2
    0.3466
    >>> round(float(kl_to_target(probs, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))[0]), 4)
    0.3466
    """
    probs = probs_tensor(
        probs, "probs", min_ndim=2, layout="[N, B, C] (or [..., B, C])", need_samples=True
    )
    log_p = probs if log else torch.log(probs.clamp_min(_EPS))
    t = to_tensor(target, "target")
    if t.is_floating_point():
        q = t.to(log_p.dtype)
        if tuple(q.shape) != tuple(log_p.shape[-2:]):
            raise ConfigError(
                f"target probabilities must have shape [B, C] = {tuple(log_p.shape[-2:])}, "
                f"got {shape_str(q)}"
            )
        return _kl(torch.log(q), log_p).clamp_min(0.0).mean(-1)
    y = labels_tensor(t, log_p, name="target")
    return -log_p.gather(-1, y.expand(*log_p.shape[:-1]).unsqueeze(-1)).squeeze(-1).mean(-1)

"""Per-sample and per-member classification metrics (paper Sec. 2, Fig. 5).

Predictions are ``argmax`` over the class axis (ties go to the lowest class index,
as in :func:`torch.argmax`), so the argmax-based metrics take probabilities or
log-probabilities alike. Entropies are in nats (natural log).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._checks import labels_tensor, log_probs_tensor, masked_product, probs_tensor

__all__ = ["accuracy", "true_class_prob", "votes_correct", "entropy", "disagreement"]


def accuracy(probs: Any, labels: Any) -> Tensor:
    """Fraction of samples whose argmax equals the label: ``probs [N, B, C] -> [N]``,
    ``[B, C] -> []`` (scalar tensor); ``labels [B]`` int.

    Any leading shape works (``[..., B, C] -> [...]``).

    >>> import torch
    >>> probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.7, 0.3]]])
    >>> accuracy(probs, torch.tensor([0, 1]))  # member 0: 2/2, member 1: 1/2
    tensor([1.0000, 0.5000])
    >>> accuracy(probs[0], torch.tensor([0, 0]))
    tensor(0.5000)
    """
    probs = probs_tensor(
        probs, "probs", min_ndim=2, layout="[N, B, C] or [B, C]", need_samples=True
    )
    y = labels_tensor(labels, probs)
    return (probs.argmax(-1) == y).to(probs.dtype).mean(-1)


def true_class_prob(probs: Any, labels: Any) -> Tensor:
    """Probability given to the true class, ``p(y_true | x)``: ``probs [..., B, C]`` ->
    ``[..., B]`` (e.g. ``[N, B, C] -> [N, B]``); ``labels [B]`` int. Paper Fig. 5a.

    >>> import torch
    >>> true_class_prob(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([1, 1]))
    tensor([0.1000, 0.8000])
    """
    probs = probs_tensor(probs, "probs", min_ndim=2, layout="[..., B, C]")
    y = labels_tensor(labels, probs)
    return probs.gather(-1, y.expand(*probs.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def votes_correct(probs: Any, labels: Any) -> Tensor:
    """Number of members whose argmax is correct, per sample: ``probs [N, B, C]`` ->
    int64 ``[B]`` with values in ``0..N``; ``labels [B]`` int. Paper Fig. 5c.

    >>> import torch
    >>> probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.7, 0.3]]])
    >>> votes_correct(probs, torch.tensor([0, 1]))
    tensor([2, 1])
    """
    probs = probs_tensor(probs, "probs", ndims=(3,), layout="[N, B, C]")
    y = labels_tensor(labels, probs)
    return (probs.argmax(-1) == y).sum(0)


def entropy(probs: Any, *, log: bool = False) -> Tensor:
    """Shannon entropy in nats of each distribution: ``probs [..., C] -> [...]``.

    ``0 ln 0 = 0``, so one-hot rows give exactly 0; uniform rows give ``ln C``.
    Per-sample values feed the histograms of paper Fig. 5b / Fig. S5. ``log=True``: ``probs``
    are log-probabilities, which resolve entropies far below float32's ~1e-7 step near p = 1
    (the sharp peak at 0 of confident members).

    >>> import torch
    >>> entropy(torch.tensor([[1.0, 0.0], [0.5, 0.5]])).round(decimals=4)
    tensor([0.0000, 0.6931])
    """
    log_p = log_probs_tensor(probs, "probs", log, layout="[..., C]")
    return 0.0 - masked_product(log_p, log_p).sum(-1)  # 0.0 - x avoids a -0.0


def disagreement(probs: Any) -> float:
    """Mean pairwise disagreement ``probs [N, B, C] -> float`` in ``[0, 1]``.

    Average over all member pairs ``i < j`` of the fraction of samples on which their
    argmax differs; ``0.0`` for ``N = 1``. Computed from per-sample vote counts
    (``O(N B + B C)`` memory), not by looping over pairs.

    >>> import torch
    >>> probs = torch.eye(2)[torch.tensor([[0, 0], [0, 1], [1, 1]])]  # argmaxes per member
    >>> round(disagreement(probs), 4)  # pairs: (0,1)=1/2, (0,2)=1, (1,2)=1/2
    0.6667
    """
    probs = probs_tensor(probs, "probs", ndims=(3,), layout="[N, B, C]", need_samples=True)
    n, b, c = probs.shape
    if n == 1:
        return 0.0
    preds = probs.argmax(-1).T  # [B, N]
    counts = torch.zeros(b, c, dtype=torch.float64, device=probs.device)
    counts.scatter_add_(1, preds, torch.ones(b, n, dtype=torch.float64, device=probs.device))
    agree = (counts * (counts - 1)).sum(1) / (n * (n - 1))  # fraction of agreeing pairs
    return float(1.0 - agree.mean())

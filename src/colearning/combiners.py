"""Ensemble combiners: member probabilities [N, B, C] -> ensemble probabilities [B, C].

- ``mean``: the arithmetic mean of the members' probabilities (paper Eq. 4).
- ``geometric``: the normalized product prod_i p_i / Z, computed in log space (Supp.).
- ``vote``: majority vote of the members' argmax labels, returned as the vote fractions
  [B, C]. Ties: ``argmax`` of the fractions picks the lowest class index among the tied
  classes (torch.argmax returns the first maximum); :func:`ensemble_predict` applies it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from colearning.errors import ConfigError
from colearning.registry import Registry

COMBINERS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("combiner")


def _check(probs: torch.Tensor) -> None:
    if probs.dim() != 3:
        raise ConfigError(f"probs must be [N, B, C] (member axis first), got {list(probs.shape)}")


@COMBINERS.register("mean")
def mean_combiner(probs: torch.Tensor) -> torch.Tensor:
    """Arithmetic mean [B, C] of member probabilities [N, B, C] (paper Eq. 4)."""
    return probs.mean(0)


@COMBINERS.register("geometric")
def geometric_combiner(probs: torch.Tensor) -> torch.Tensor:
    """Normalized geometric mean [B, C] of member probabilities [N, B, C], in log space.

    Zero probabilities are clamped to the smallest normal float so that one member's
    hard zero does not veto a class outright when all members are that confident.
    """
    log_probs = probs.clamp_min(torch.finfo(probs.dtype).tiny).log().mean(0)
    return torch.softmax(log_probs, dim=-1)


@COMBINERS.register("vote")
def vote_combiner(probs: torch.Tensor) -> torch.Tensor:
    """Fraction of members voting for each class [B, C] from member probabilities [N, B, C]."""
    n_members, _, classes = probs.shape
    votes = torch.nn.functional.one_hot(probs.argmax(-1), classes).to(probs.dtype)
    return votes.sum(0) / n_members


def combine(probs: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """Ensemble distribution [B, C] from member probabilities [N, B, C] by ``method``.

    >>> p = torch.tensor([[[0.9, 0.1]], [[0.2, 0.8]], [[0.6, 0.4]]])
    >>> combine(p, "mean"), combine(p, "vote")
    (tensor([[0.5667, 0.4333]]), tensor([[0.6667, 0.3333]]))
    """
    _check(probs)
    return COMBINERS.get(method)(probs)


def ensemble_predict(probs: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """Predicted labels [B] of the ensemble (ties go to the lowest class index)."""
    return combine(probs, method).argmax(-1)

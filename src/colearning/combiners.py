"""Ensemble combiners: member predictions [N, B, C] -> the ensemble's distribution [B, C].

- ``mean``: the arithmetic mean of the members' probabilities (paper Eq. 4).
- ``geometric``: the normalized geometric mean, (prod_i p_i)^(1/N) / Z. Its argmax is the
  argmax of the normalized product prod_i p_i / Z of the paper's Supplementary (the two
  differ only in sharpness: the product is the geometric mean to the power N).
- ``vote``: majority vote of the members' argmax labels, returned as the vote fractions
  [B, C]. Ties: :func:`ensemble_predict` breaks them by the mean probability of the tied
  classes (then by the lowest class index), so with N = 2 a disagreement goes to the class
  the two members together find more likely, not to the lower class number.

Every combiner works in log space (registered functions map log-probabilities [N, B, C]
to log-probabilities [B, C]), so an ensemble of near-certain members keeps its precision;
:func:`combine` takes probabilities, or log-probabilities with ``log=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from colearning.errors import ConfigError
from colearning.registry import Registry

COMBINERS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("combiner")


def _check(probs: torch.Tensor) -> None:
    if probs.dim() != 3:
        raise ConfigError(f"probs must be [N, B, C] (member axis first), got {list(probs.shape)}")


@COMBINERS.register("mean")
def mean_combiner(log_probs: torch.Tensor) -> torch.Tensor:
    """log of the mean member probability [B, C] from log-probabilities [N, B, C] (Eq. 4)."""
    return torch.logsumexp(log_probs, 0) - math.log(log_probs.shape[0])


@COMBINERS.register("geometric")
def geometric_combiner(log_probs: torch.Tensor) -> torch.Tensor:
    """log of the normalized geometric mean [B, C] from log-probabilities [N, B, C]."""
    return torch.log_softmax(log_probs.mean(0), dim=-1)


@COMBINERS.register("vote")
def vote_combiner(log_probs: torch.Tensor) -> torch.Tensor:
    """log of the fraction of members voting for each class [B, C] (-inf: no vote)."""
    return torch.log(_vote_counts(log_probs) / log_probs.shape[0])


def _vote_counts(log_probs: torch.Tensor) -> torch.Tensor:
    classes = log_probs.shape[-1]
    return torch.nn.functional.one_hot(log_probs.argmax(-1), classes).to(log_probs.dtype).sum(0)


def _as_log(probs: torch.Tensor, log: bool) -> torch.Tensor:
    _check(probs)
    if log:
        return probs
    # A hard zero becomes the smallest normal float, not -inf: one member's zero then does
    # not veto a class outright in the geometric mean when all members are that confident.
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def combine(probs: torch.Tensor, method: str = "mean", *, log: bool = False) -> torch.Tensor:
    """Ensemble distribution [B, C] from member probabilities [N, B, C] by ``method``.

    ``log=True``: ``probs`` are log-probabilities (e.g. log_softmax outputs) and the result
    is the ensemble's log-probabilities.

    >>> p = torch.tensor([[[0.9, 0.1]], [[0.2, 0.8]], [[0.6, 0.4]]])
    >>> combine(p, "mean"), combine(p, "vote")
    (tensor([[0.5667, 0.4333]]), tensor([[0.6667, 0.3333]]))
    """
    combiner = COMBINERS.get(method)
    out = combiner(_as_log(probs, log))
    return out if log else out.exp()


def ensemble_predict(probs: torch.Tensor, method: str = "mean", *,
                     log: bool = False) -> torch.Tensor:
    """Predicted labels [B] of the ensemble from member predictions [N, B, C].

    ``mean`` and ``geometric``: the argmax of the combined distribution (exact ties, which
    need equal floats, go to the lowest class index). ``vote``: the class with the most
    votes; a tie goes to the tied class with the highest mean probability, then to the
    lowest class index.

    >>> p = torch.tensor([[[0.6, 0.4, 0.0]], [[0.0, 0.3, 0.7]]])  # one vote each for 0 and 2
    >>> ensemble_predict(p, "vote")  # mean probabilities 0.3 vs 0.35: class 2
    tensor([2])
    """
    log_probs = _as_log(probs, log)
    if method != "vote":
        return COMBINERS.get(method)(log_probs).argmax(-1)
    # Counts are integers and mean probabilities lie in [0, 1]: adding half the mean
    # probability orders classes by votes first and breaks only exact ties.
    mean = torch.exp(mean_combiner(log_probs))
    return (_vote_counts(log_probs) + 0.5 * mean).argmax(-1)

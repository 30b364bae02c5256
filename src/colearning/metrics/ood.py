"""Out-of-distribution detection (beyond the paper): per-sample scores from the members'
predictions and the detection metrics of a score.

Sign convention: every score is **higher = more in-distribution** (confident, members
agreeing), so one threshold rule serves them all and AUROC > 0.5 means the score ranks
in-distribution samples above shifted ones. Uncertainties (entropy, mutual information,
members' spread) enter negated.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from colearning.errors import ConfigError

from ._checks import log_probs_tensor, to_numpy
from .classification import entropy
from .divergence import js_divergence

__all__ = ["ood_metrics", "ood_scores"]


def ood_scores(probs: Any, *, log: bool = False) -> dict[str, Tensor]:
    """Per-sample scores ``probs [N, B, C] -> {name: [B]}``, higher = more in-distribution
    (nats; ``log=True``: ``probs`` are log-probabilities).

    With ``p_ens`` the mean of the members (paper Eq. 4) and ``H`` the entropy:

    - ``max_probability``: ``max_c p_ens`` (the baseline of Hendrycks & Gimpel, 2017);
    - ``entropy``: ``-H(p_ens)`` (total predictive uncertainty, negated);
    - ``mutual_information``: ``-(H(p_ens) - mean_i H(p_i))``, the members' disagreement
      (the generalized Jensen-Shannon divergence of the members with equal weights),
      negated; 0 when the members agree, at most ``ln N``;
    - ``js_spread``: minus the mean pairwise Jensen-Shannon divergence
      ``JS(p_i, p_j)`` over member pairs ``i < j`` (paper Eq. 5 per sample); 0 for N = 1.

    >>> import torch
    >>> probs = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])
    >>> scores = ood_scores(probs)  # sample 0: members disagree; sample 1: both uniform
    >>> scores["max_probability"], scores["mutual_information"].round(decimals=4)
    (tensor([0.5000, 0.5000]), tensor([-0.6931,  0.0000]))
    """
    log_p = log_probs_tensor(probs, "probs", log, ndims=(3,), layout="[N, B, C]",
                             need_samples=True)
    n = log_p.shape[0]
    log_ens = torch.logsumexp(log_p, 0) - math.log(n)
    total = entropy(log_ens, log=True)
    disagreement = (total - entropy(log_p, log=True).mean(0)).clamp_min(0.0)
    spread = log_p.new_zeros(log_p.shape[1])
    for i in range(n - 1):  # one member against the later ones: O(N B C) memory
        spread += js_divergence(log_p[i], log_p[i + 1:], log=True).sum(0)
    pairs = n * (n - 1) // 2
    return {
        "max_probability": log_ens.exp().amax(-1),
        "entropy": 0.0 - total,  # 0.0 - x: no -0.0 for a certain prediction
        "mutual_information": 0.0 - disagreement,
        "js_spread": 0.0 - spread / max(pairs, 1),
    }


def _scores(values: Any, name: str) -> np.ndarray:
    a = to_numpy(values, name)
    if a.ndim != 1 or a.size == 0:
        raise ConfigError(f"{name} must be a non-empty 1-D array of scores, got shape "
                          f"{tuple(a.shape)}")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{name} must be finite, got NaN or inf entries")
    return a


def _auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score_pos > score_neg) + P(equal) / 2: the Mann-Whitney statistic with average
    ranks for ties, which is the trapezoidal area under the ROC curve (scikit-learn's)."""
    scores = np.concatenate([positive, negative])
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    ranks = np.empty(ordered.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # 1-based average
    n_pos, n_neg = positive.size, negative.size
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _thresholds(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true positives [K], samples at or above [K]) at each distinct score threshold, high
    to low, tied scores entering together: the one sweep behind the ROC and PR curves."""
    scores = np.concatenate([positive, negative])
    is_positive = np.r_[np.ones(positive.size), np.zeros(negative.size)]
    order = np.argsort(-scores, kind="mergesort")
    scores, is_positive = scores[order], is_positive[order]
    last = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), scores.size - 1]
    return np.cumsum(is_positive)[last], last + 1


def _average_precision(positive: np.ndarray, negative: np.ndarray) -> float:
    """``sum_k (R_k - R_{k-1}) P_k`` over the distinct thresholds, high to low, with tied
    scores entering together (scikit-learn's average_precision_score, no interpolation)."""
    true_pos, above = _thresholds(positive, negative)
    precision = true_pos / above
    recall = true_pos / positive.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve(score_in: np.ndarray, score_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr [K], tpr [K]) from (0, 0) to (1, 1), one point per distinct threshold, with the
    in-distribution scores [B_in] the positives (higher = more in-distribution) and
    ``score_out`` [B_out]. Its trapezoidal area is the AUROC, ties counting 1/2."""
    true_pos, above = _thresholds(score_in, score_out)
    false_pos = above - true_pos
    return np.r_[0.0, false_pos / score_out.size], np.r_[0.0, true_pos / score_in.size]


def ood_metrics(score_in: Any, score_out: Any) -> dict[str, float]:
    """Detection of shifted samples by a score (higher = more in-distribution):
    ``score_in [B_in]``, ``score_out [B_out]`` (numpy or torch, 1-D) -> floats.

    - ``auroc``: P(in scored above out), ties counting 1/2 (0.5: chance, 1: perfect);
    - ``aupr_in``: average precision with the in-distribution samples as positives;
    - ``aupr_out``: average precision with the shifted samples as positives, ranked by
      ``-score``;
    - ``fpr95``: the fraction of shifted samples scored at or above the threshold that
      keeps 95% of the in-distribution samples (the ``ceil(0.95 B_in)``-th highest
      in-distribution score); lower is better.

    Ties are handled as scikit-learn's ``roc_auc_score`` and ``average_precision_score``.

    >>> metrics = ood_metrics([0.9, 0.8, 0.7], [0.75, 0.1])
    >>> round(metrics["auroc"], 4), metrics["fpr95"]  # 5 of 6 pairs ordered right
    (0.8333, 0.5)
    """
    inside, outside = _scores(score_in, "score_in"), _scores(score_out, "score_out")
    keep = (95 * inside.size + 99) // 100  # ceil(0.95 B_in) in integers
    threshold = np.sort(inside)[::-1][keep - 1]
    return {
        "auroc": _auroc(inside, outside),
        "aupr_in": _average_precision(inside, outside),
        "aupr_out": _average_precision(-outside, -inside),
        "fpr95": float(np.mean(outside >= threshold)),
    }

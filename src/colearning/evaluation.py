"""Per-epoch evaluation: member probabilities [N, B, C] -> the flat metric dict of a run.

Keys follow ``split/metric``; lists are per member. These are the keys written to
metrics.jsonl and summary.json (see the README for the full table).
"""

from __future__ import annotations

from typing import Any

import torch

from colearning import metrics
from colearning.combiners import COMBINERS, combine
from colearning.errors import ConfigError

# A member whose outputs move less than this (mean L1 distance of p_i(.|x) from the member's
# average output, out of a maximum of 2) ignores its input: it has collapsed. Healthy members
# sit near 1; the collapsed LeNet-5s seen here (beta = -0.4, Eq. 1) sat near 0.01.
COLLAPSE_SPREAD = 0.05


def output_spread(probs: torch.Tensor) -> torch.Tensor:
    """Per member of probs [N, B, C]: mean over samples of |p_i(.|x) - mean_x p_i(.|x)|_1, [N]."""
    probs = probs.float()
    return (probs - probs.mean(1, keepdim=True)).abs().sum(-1).mean(-1)


def collapsed_members(probs: torch.Tensor) -> list[bool]:
    """Per member of probs [N, B, C]: True when its output (nearly) ignores the input.

    That is the end state of a member pushed too hard by a negative coupling: near-constant,
    often near-uniform outputs and accuracy at chance. Dead ReLU layers are a second sign,
    added by the trainer from the activation statistics.
    """
    if probs.shape[1] < 2:
        return [False] * probs.shape[0]
    return (output_spread(probs) < COLLAPSE_SPREAD).tolist()


def evaluate_probs(
    probs: torch.Tensor, labels: torch.Tensor, prefix: str = "test"
) -> dict[str, Any]:
    """Flat metrics for member probabilities [N, B, C] and labels [B].

    >>> p = torch.tensor([[[0.9, 0.1], [0.3, 0.7]], [[0.6, 0.4], [0.8, 0.2]]])
    >>> evaluate_probs(p, torch.tensor([0, 1]))["test/ensemble_accuracy_mean"]
    0.5
    """
    if probs.dim() != 3 or labels.shape != probs.shape[1:2]:
        raise ConfigError(
            f"evaluate_probs needs probs [N, B, C] and labels [B], got {list(probs.shape)} "
            f"and {list(labels.shape)}"
        )
    probs = probs.float()
    labels = labels.long()
    out: dict[str, Any] = {
        f"{prefix}/member_accuracy": metrics.accuracy(probs, labels).tolist(),
        # KL(q||p_i) with one-hot q, i.e. the member's test NLL (paper Fig. 2b x-axis)
        f"{prefix}/member_kl": metrics.kl_to_target(probs, labels).tolist(),
        f"{prefix}/member_brier": metrics.brier(probs, labels).tolist(),
        f"{prefix}/member_ece": metrics.expected_calibration_error(probs, labels).tolist(),
        f"{prefix}/member_entropy": metrics.entropy(probs).mean(-1).tolist(),
    }
    for method in COMBINERS:
        ensemble = combine(probs, method)
        out[f"{prefix}/ensemble_accuracy_{method}"] = metrics.accuracy(ensemble, labels).item()
    ensemble = combine(probs, "mean")
    out[f"{prefix}/ensemble_nll"] = metrics.nll(ensemble, labels).item()
    out[f"{prefix}/ensemble_brier"] = metrics.brier(ensemble, labels).item()
    out[f"{prefix}/ensemble_ece"] = metrics.expected_calibration_error(ensemble, labels).item()
    out[f"{prefix}/ensemble_entropy"] = metrics.entropy(ensemble).mean().item()
    js = metrics.js_matrix_with_ensemble(probs, ensemble)  # [N+1, N+1], ensemble last
    n = probs.shape[0]
    out[f"{prefix}/js_matrix"] = js[:n, :n].tolist()
    out[f"{prefix}/js_mean"] = metrics.js_mean(js[:n, :n])
    out[f"{prefix}/js_to_ensemble"] = js[:n, n].tolist()
    out[f"{prefix}/disagreement"] = metrics.disagreement(probs)
    out[f"{prefix}/member_collapsed"] = collapsed_members(probs)
    return out

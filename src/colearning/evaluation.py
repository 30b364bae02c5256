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

# Below this spread of a member's output probabilities across samples the member is
# treated as constant, i.e. collapsed (it ignores its input).
CONSTANT_OUTPUT_STD = 1e-4


def collapsed_members(probs: torch.Tensor) -> list[bool]:
    """Per member of probs [N, B, C]: True when its output ignores the input.

    A member is collapsed when it predicts one class for every sample and its output
    distribution barely varies across samples (max over classes of the std over samples
    below ``CONSTANT_OUTPUT_STD``), e.g. the uniform output of a member whose ReLUs died.
    """
    if probs.shape[1] < 2:
        return [False] * probs.shape[0]
    single_class = (probs.argmax(-1) == probs.argmax(-1)[:, :1]).all(-1)
    constant = probs.float().std(1).amax(-1) < CONSTANT_OUTPUT_STD
    return (single_class & constant).tolist()


def evaluate_probs(
    probs: torch.Tensor, labels: torch.Tensor, prefix: str = "test"
) -> dict[str, Any]:
    """Flat metrics for member probabilities [N, B, C] and labels [B].

    >>> p = torch.tensor([[[0.9, 0.1], [0.3, 0.7]], [[0.6, 0.4], [0.8, 0.2]]])
    >>> evaluate_probs(p, torch.tensor([0, 1]))["test/ensemble_accuracy_mean"]
    1.0
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

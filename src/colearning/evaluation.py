"""Per-epoch evaluation: member probabilities [N, B, C] -> the flat metric dict of a run.

Keys follow ``split/metric``; lists are per member. These are the keys written to
metrics.jsonl and summary.json (see the README for the full table).
"""

from __future__ import annotations

from typing import Any

import torch

from colearning import metrics
from colearning.combiners import COMBINERS, combine, ensemble_predict
from colearning.errors import ConfigError

# A member ignores its input when its outputs barely move (mean L1 distance of p_i(.|x) from
# the member's average output below COLLAPSE_SPREAD, out of a maximum of 2; healthy members
# sit near 1, the collapsed LeNet-5s of Eq. 1 at beta = -0.4 near 0.01) and it names one class
# for at least ONE_CLASS_SHARE of the samples.
COLLAPSE_SPREAD = 0.05
ONE_CLASS_SHARE = 0.9
# A member has learned once its accuracy beat the best constant guess (the share of the most
# frequent label) by LEARNED_MARGIN at some epoch; before that, near-constant outputs are an
# untrained member's, not a collapse.
LEARNED_MARGIN = 0.1


def output_spread(probs: torch.Tensor) -> torch.Tensor:
    """Per member of probs [N, B, C]: mean over samples of |p_i(.|x) - mean_x p_i(.|x)|_1, [N]."""
    probs = probs.float()
    return (probs - probs.mean(1, keepdim=True)).abs().sum(-1).mean(-1)


def ignores_input(probs: torch.Tensor) -> list[bool]:
    """Per member of probs [N, B, C]: True when its output (nearly) ignores the input: one
    class for almost every sample (>= ONE_CLASS_SHARE) and near-constant probabilities
    (output spread < COLLAPSE_SPREAD). An untrained member looks like this too."""
    if probs.shape[1] < 2:
        return [False] * probs.shape[0]
    predicted = probs.argmax(-1)  # [N, B]
    share = torch.stack([row.bincount(minlength=probs.shape[-1]).max() for row in predicted])
    one_class = share.float() / probs.shape[1] >= ONE_CLASS_SHARE
    return ((output_spread(probs) < COLLAPSE_SPREAD) & one_class).tolist()


def learned_members(accuracy: list[float], labels: torch.Tensor,
                    before: list[bool] | None = None) -> list[bool]:
    """Per member: has it learned (now, or ``before``: at an earlier epoch)? Learned means
    an accuracy at least LEARNED_MARGIN above the best constant guess on these labels."""
    labels = labels.long()
    guess = labels.bincount().max().item() / max(len(labels), 1) if len(labels) else 0.0
    before = before if before is not None and len(before) == len(accuracy) \
        else [False] * len(accuracy)
    return [bool(b) or a >= guess + LEARNED_MARGIN for a, b in zip(accuracy, before, strict=True)]


def member_states(ignoring: list[bool], learned: list[bool],
                  dead: list[list[str]] | None = None) -> dict[str, list[bool]]:
    """Collapsed (ignores its input, or has a dead ReLU layer, after it had learned) and not
    learned (the same signs in a member that never learned) members, per member."""
    dead = dead or [[] for _ in ignoring]
    broken = [bool(i or d) for i, d in zip(ignoring, dead, strict=True)]
    return {"collapsed": [b and k for b, k in zip(broken, learned, strict=True)],
            "not_learned": [b and not k for b, k in zip(broken, learned, strict=True)]}


def logit_norm(log_probs: torch.Tensor) -> torch.Tensor:
    """Per member of log_probs [N, B, C]: the mean over samples of the L2 norm of its centered
    logits, [N]. Softmax ignores a shift of the logits, so z - mean_c z is all a member's
    output scale is, and log_softmax keeps it exactly: z - mean_c z = log p - mean_c log p.
    Under a negative coupling this grows without bound before a member collapses."""
    centered = log_probs.double() - log_probs.double().mean(-1, keepdim=True)
    return centered.norm(dim=-1).mean(-1).float()


def evaluate_log_probs(
    log_probs: torch.Tensor, labels: torch.Tensor, prefix: str = "test",
    learned_before: list[bool] | None = None,
) -> dict[str, Any]:
    """Flat metrics for member log-probabilities [N, B, C] (log_softmax) and labels [B].

    ``learned_before``: per member, whether it had learned at an earlier epoch (the previous
    record's ``member_learned``); a member that ignores its input is collapsed only if it
    had learned, else not learned yet.

    Every metric is computed from the log-probabilities, so entropies near 0 and NLLs of
    confidently wrong members keep their precision (a run saves these, not probabilities).

    >>> p = torch.tensor([[[0.9, 0.1], [0.3, 0.7]], [[0.6, 0.4], [0.8, 0.2]]])
    >>> evaluate_log_probs(p.log(), torch.tensor([0, 1]))["test/ensemble_accuracy_mean"]
    0.5
    """
    if log_probs.dim() != 3 or labels.shape != log_probs.shape[1:2]:
        raise ConfigError(
            f"evaluate_log_probs needs log_probs [N, B, C] and labels [B], got "
            f"{list(log_probs.shape)} and {list(labels.shape)}"
        )
    log_probs = log_probs.float()
    probs = log_probs.exp()
    labels = labels.long()
    out: dict[str, Any] = {
        f"{prefix}/member_accuracy": metrics.accuracy(log_probs, labels).tolist(),
        # KL(q||p_i) with one-hot q, i.e. the member's test NLL (paper Fig. 2b x-axis)
        f"{prefix}/member_kl": metrics.kl_to_target(log_probs, labels, log=True).tolist(),
        f"{prefix}/member_brier": metrics.brier(probs, labels).tolist(),
        f"{prefix}/member_ece": metrics.expected_calibration_error(probs, labels).tolist(),
        f"{prefix}/member_entropy": metrics.entropy(log_probs, log=True).mean(-1).tolist(),
        f"{prefix}/member_logit_norm": logit_norm(log_probs).tolist(),
    }
    for method in COMBINERS:
        predicted = ensemble_predict(log_probs, method, log=True)
        out[f"{prefix}/ensemble_accuracy_{method}"] = (predicted == labels).float().mean().item()
    ensemble = combine(log_probs, "mean", log=True)  # log p_ens [B, C]
    out[f"{prefix}/ensemble_nll"] = metrics.nll(ensemble, labels, log=True).item()
    out[f"{prefix}/ensemble_brier"] = metrics.brier(ensemble.exp(), labels).item()
    out[f"{prefix}/ensemble_ece"] = metrics.expected_calibration_error(ensemble.exp(),
                                                                      labels).item()
    out[f"{prefix}/ensemble_entropy"] = metrics.entropy(ensemble, log=True).mean().item()
    js = metrics.js_matrix_with_ensemble(log_probs, ensemble, log=True)  # [N+1, N+1]
    n = log_probs.shape[0]
    out[f"{prefix}/js_matrix"] = js[:n, :n].tolist()
    out[f"{prefix}/js_mean"] = metrics.js_mean(js[:n, :n])
    out[f"{prefix}/js_to_ensemble"] = js[:n, n].tolist()
    out[f"{prefix}/disagreement"] = metrics.disagreement(log_probs)
    learned = learned_members(out[f"{prefix}/member_accuracy"], labels, learned_before)
    out[f"{prefix}/member_learned"] = learned
    out[f"{prefix}/member_ignores_input"] = ignores_input(probs)
    states = member_states(out[f"{prefix}/member_ignores_input"], learned)
    out[f"{prefix}/member_collapsed"] = states["collapsed"]
    out[f"{prefix}/member_not_learned"] = states["not_learned"]
    return out

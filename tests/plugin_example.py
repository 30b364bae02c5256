"""A plugin as a researcher would write one (tests/test_extending.py): a new coupling, a new
objective and a new metric, each registered in one place. A config names it in
``plugins: [tests.plugin_example]``; every process the library starts imports it."""

import torch
import torch.nn.functional as F

from colearning.couplings import COUPLINGS
from colearning.evaluation import register_metric
from colearning.losses import OBJECTIVES, CoupledLoss


@COUPLINGS.register("pairs", strength="beta")
def pairs(n: int, beta: float | None, beta_bar: float | None, options: dict) -> torch.Tensor:
    """Members 2k and 2k + 1 coupled at beta (or beta_bar / 2); no other pairs."""
    strength = beta if beta is not None else (beta_bar or 0.0) / 2
    matrix = torch.zeros(n, n, dtype=torch.float64)
    for i in range(0, n - 1, 2):
        matrix[i, i + 1] = matrix[i + 1, i] = strength
    return matrix


@OBJECTIVES.register("smoothed")
def smoothed(logits: torch.Tensor, target: torch.Tensor, **options: object) -> CoupledLoss:
    """Each member on its own, against label-smoothed targets (0.1): no coupling."""
    log_p = logits.float().log_softmax(-1)  # [..., N, B, C]
    classes = logits.shape[-1]
    q = F.one_hot(target.long(), classes).float() * 0.9 + 0.1 / classes  # [..., B, C]
    task = -(q.unsqueeze(-3) * log_p).sum(-1).mean(-1)  # [..., N]
    return CoupledLoss(task, task, torch.zeros_like(task))


@register_metric("ensemble_top2", scope="ensemble", direction="max",
                 title="top-2 accuracy (%)", percent=True, table=("test",), summary="top-2")
def top2(out) -> torch.Tensor:
    """Whether the label is among the ensemble's two most probable classes."""
    return (out.ensemble.topk(2, -1).indices == out.labels[:, None]).any(-1).float().mean()

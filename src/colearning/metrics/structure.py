"""Structural statistics of one member network (paper Sec. 3.3, Tables S3/S4, Fig. 6).

Layers are named by kind and order of appearance, as in the paper's tables: ``ReLU1``,
``ReLU2``, ... for activations and ``Conv1``, ``FC1``, ... for weights.
"""

from __future__ import annotations

import torch
from torch import nn


def _relu_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    relus = [m for m in module.modules() if isinstance(m, nn.ReLU)]
    return [(f"ReLU{k + 1}", m) for k, m in enumerate(relus)]


def weight_layers(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, weight) of every conv and linear layer, named Conv1.., FC1.. in order."""
    layers, counts = [], {"Conv": 0, "FC": 0}
    for layer in module.modules():
        kind = "Conv" if isinstance(layer, nn.Conv2d) else "FC" if isinstance(
            layer, nn.Linear) else None
        if kind is not None:
            counts[kind] += 1
            layers.append((f"{kind}{counts[kind]}", layer.weight))
    return layers


@torch.no_grad()
def activation_stats(module: nn.Module, x: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per ReLU layer of ``module`` on inputs x [B, ...]: sparsity, mean activation, dead.

    - ``sparsity``: fraction of units with zero output, per sample, averaged over samples
      (Table S3 "non-active neurons", Fig. 6a);
    - ``mean``: mean activation of a unit per sample, averaged (Table S3, Fig. 6b);
    - ``dead``: 1.0 when every unit is zero on every sample (a collapsed layer), else 0.0.

    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> sorted(activation_stats(net, torch.randn(4, 2))["ReLU1"])
    ['dead', 'mean', 'sparsity']
    """
    stats: dict[str, dict[str, float]] = {}
    hooks = []

    def record(name: str):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            flat = output.detach().flatten(1).float()  # [B, units]
            zero = flat <= 0
            stats[name] = {
                "sparsity": zero.float().mean(1).mean().item(),
                "mean": flat.mean(1).mean().item(),
                "dead": float(bool(zero.all())),
            }

        return hook

    for name, layer in _relu_layers(module):
        hooks.append(layer.register_forward_hook(record(name)))
    was_training = module.training
    module.eval()
    try:
        module(x)
    finally:
        module.train(was_training)
        for handle in hooks:
            handle.remove()
    return stats


def weight_stats(module: nn.Module) -> dict[str, float]:
    """Standard deviation of the weights of each conv/linear layer (Table S4, Fig. 6c)."""
    return {name: weight.detach().float().std().item() for name, weight in weight_layers(module)}

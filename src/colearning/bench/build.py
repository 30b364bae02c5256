"""How a workload is built for timing: its run config (the paper's optimizer, beta_bar = -1),
its ensemble, a member's SGD and whether images go channels-last."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from colearning.bench.records import BASELINE, BETA_BAR, SGD_IMPLEMENTATIONS, Settings, Workload
from colearning.config import Config, config_from_dict
from colearning.engine import Ensemble
from colearning.errors import ConfigError
from colearning.models import build_model


def bench_config(workload: Workload, settings: Settings) -> Config:
    """The run config a workload corresponds to (paper optimizer, beta_bar = -1); bench's
    ``--bf16`` and ``--compile`` are the trainer's train.precision and train.compile."""
    strategy = "loop" if workload.strategy == BASELINE else workload.strategy
    return config_from_dict({
        "seed": settings.seed,
        "model": {"name": workload.model},
        "ensemble": {"n_members": workload.n_members, "strategy": strategy},
        "loss": {"beta_bar": BETA_BAR},
        "train": {"batch_size": workload.batch_size, "progress": False,
                  "precision": "bf16" if settings.bf16 else "fp32",
                  "compile": settings.compile or "off"},
    })


def build_ensemble(workload: Workload, settings: Settings, device: torch.device) -> Ensemble:
    """The workload's members as one :class:`Ensemble` (the baseline's as ``loop``)."""
    strategy = "loop" if workload.strategy == BASELINE else workload.strategy

    def factory() -> nn.Module:
        return build_model(workload.model, num_classes=settings.num_classes,
                           image_size=settings.image_size)

    return Ensemble(factory, workload.n_members, strategy, seed=settings.seed).to(device)


def make_sgd(params: Any, config: Config, implementation: str) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` with the config's optimizer and ``implementation``'s kernels."""
    options = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    if implementation not in options:
        raise ConfigError(f"unknown SGD implementation {implementation!r}; valid: "
                          f"{', '.join(SGD_IMPLEMENTATIONS)}")
    optim = config.optim
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum,
                           weight_decay=optim.weight_decay, **options[implementation])


def uses_channels_last(settings: Settings, device: torch.device) -> bool:
    """Whether images go channels-last: as set, else on CPUs only."""
    return device.type == "cpu" if settings.channels_last is None else settings.channels_last

"""SGD over stacked member parameters, each member with its own learning rate and weight decay.

    optimizer = StackedSGD(ensemble.parameters(), lr=[0.01, 0.01, 0.05], weight_decay=5e-4,
                           momentum=0.9)
    loss.sum().backward()
    optimizer.step(active)        # active: bool [M]; an inactive member is left untouched

SGD is elementwise, so one optimizer over parameters stacked [M, ...] is M per-member
optimizers (tested against torch.optim.SGD per member). Per-member learning rates and weight
decays are what let the cells of a sweep with different ``optim.lr`` train as one pack; the
``active`` mask is how a member whose step was not finite (or whose cell diverged) gets no
update, without the host reading anything back from the device.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from colearning.errors import ConfigError


class StackedSGD:
    """SGD with momentum (dampening 0, no Nesterov, as the paper) on parameters [M, ...].

    Args:
        params: the stacked parameters, each [M, ...] (member axis first).
        lr: one learning rate for all members, or one per member ([M]).
        weight_decay: the same, an L2 coefficient added to the gradient.
        momentum: shared by all members.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float | Sequence[float],
                 weight_decay: float | Sequence[float] = 0.0, momentum: float = 0.0) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ConfigError("StackedSGD needs at least one parameter that requires grad")
        self.n_members = self.params[0].shape[0]
        device = self.params[0].device
        self.lr = self._per_member(lr, "lr", device)
        self.weight_decay = self._per_member(weight_decay, "weight_decay", device)
        if momentum < 0:
            raise ConfigError(f"momentum must be >= 0, got {momentum}")
        self.momentum = float(momentum)
        # Zero buffers: momentum * 0 + d is exactly d, torch.optim.SGD's first-step buffer.
        self.buffers = [torch.zeros_like(p) for p in self.params] if momentum else []

    def _per_member(self, value: float | Sequence[float], name: str,
                    device: torch.device) -> torch.Tensor:
        values = torch.as_tensor(value, dtype=torch.float64).flatten()
        if values.numel() == 1:
            values = values.expand(self.n_members)
        if values.shape != (self.n_members,) or not torch.isfinite(values).all() \
                or (values < 0).any():
            raise ConfigError(f"{name} must be one non-negative number or one per member "
                              f"({self.n_members}), got {value!r}")
        return values.to(device=device, dtype=self.params[0].dtype)

    def set_lr(self, lr: float | Sequence[float]) -> None:
        """New learning rates (one, or one per member), e.g. from a schedule at each epoch."""
        self.lr.copy_(self._per_member(lr, "lr", self.lr.device))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """One SGD step of every member, or only of the members where ``active`` [M] is True
        (the others keep their parameters and momentum buffers exactly)."""
        for k, p in enumerate(self.params):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            direction = torch.addcmul(p.grad, self.weight_decay.view(shape), p)
            if self.momentum:
                buffer = self.buffers[k] * self.momentum + direction
                direction = buffer
            updated = torch.addcmul(p, self.lr.view(shape), direction, value=-1.0)
            if active is not None:
                mask = active.view(shape)
                updated = torch.where(mask, updated, p)
                if self.momentum:
                    buffer = torch.where(mask, buffer, self.buffers[k])
            p.copy_(updated)
            if self.momentum:
                self.buffers[k] = buffer

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "buffers": [b.clone() for b in self.buffers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        buffers = state.get("buffers") or []
        if self.momentum and len(buffers) != len(self.params):
            raise ConfigError(f"the optimizer state holds {len(buffers)} momentum buffers, "
                              f"this ensemble has {len(self.params)} parameters")
        for target, value in zip(self.buffers, buffers, strict=False):
            target.copy_(value)

    def member_state(self, rows: slice) -> dict[str, Any]:
        """The optimizer state of members ``rows`` (a cell of a pack), for its checkpoint."""
        return {"momentum": self.momentum, "buffers": [b[rows].clone() for b in self.buffers]}

    def load_member_state(self, rows: slice, state: dict[str, Any]) -> None:
        buffers = state.get("buffers") or []
        if self.momentum and len(buffers) != len(self.buffers):
            raise ConfigError(f"the optimizer state holds {len(buffers)} momentum buffers, "
                              f"this ensemble has {len(self.buffers)} parameters")
        for target, value in zip(self.buffers, buffers, strict=False):
            target[rows].copy_(value)

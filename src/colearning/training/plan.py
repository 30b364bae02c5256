"""Member plans: which members of a cell train, which are frozen peers, on which samples.

The training loop does not know about growing an ensemble: it receives, per cell, a
:class:`MemberPlan`. A plain run's plan trains all its members on the whole training
split; a grown run's plan (:mod:`colearning.training.growth`) trains the new members (or
all, add-retrain), keeps the old ones frozen as coupling peers, and for boost restricts the
samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from colearning.config import Config
from colearning.couplings import coupling_matrix
from colearning.engine import Ensemble


class GrownEnsemble(nn.Module):
    """All members of an add-freeze/boost run, old first: forward [B, ...] -> [N+M, B, C].

    Used for evaluation, analysis and checkpoints; training sees only ``trained``. The old
    members (``frozen``) stay in eval mode and out of every optimizer. ``state_dict`` is the
    stacked state of an N+M-member :class:`Ensemble` (rows 0..N-1 the old members), so a
    grown checkpoint loads into an N+M-member ensemble like any run's.
    """

    def __init__(self, frozen: Ensemble, trained: Ensemble) -> None:
        super().__init__()
        self.frozen = frozen.eval().requires_grad_(False)
        self.trained = trained

    @property
    def n_members(self) -> int:
        return self.frozen.n_members + self.trained.n_members

    def train(self, mode: bool = True) -> GrownEnsemble:
        super().train(mode)
        self.frozen.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            old = self.frozen(x)
        return torch.cat([old, self.trained(x)])

    def member(self, index: int) -> nn.Module:
        n_old = self.frozen.n_members
        return self.frozen.member(index) if index < n_old else self.trained.member(index - n_old)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        old, new = self.frozen.state_dict(), self.trained.state_dict()
        return {key: torch.cat([old[key], new[key]]) for key in new}

    def load_state_dict(self, state: Any, strict: bool = True, assign: bool = False) -> Any:
        n_old = self.frozen.n_members
        self.frozen.load_state_dict({k: v[:n_old] for k, v in state.items()}, strict=strict)
        return self.trained.load_state_dict({k: v[n_old:] for k, v in state.items()},
                                            strict=strict)


@dataclass
class MemberPlan:
    """What the loop trains for one cell.

    ``trained`` members go into the optimizer; ``members`` are all of the cell's members,
    for evaluation, analysis and checkpoints (the same module for a plain run). ``beta`` is
    the coupling of the trained members, [T, T], or [T, T+F] with ``coupled`` frozen peers
    whose log-probabilities enter the coupling term. ``subset``: training-set positions the
    cell trains on (boost), None for all.
    """

    trained: Ensemble
    members: nn.Module
    beta: torch.Tensor
    subset: torch.Tensor | None = None
    coupled: Ensemble | None = None

    def peers(self, images: torch.Tensor) -> torch.Tensor | None:
        """Log-probabilities [F, B, C] of the coupled frozen members on ``images``, or None."""
        if self.coupled is None:
            return None
        with torch.no_grad():
            return F.log_softmax(self.coupled(images).float(), dim=-1)

    def member_modules(self) -> list[nn.Module]:
        """Every member of the cell as a standalone module (analysis statistics)."""
        if hasattr(self.members, "members"):  # an Ensemble or a sharded one: all at once
            return self.members.members()
        return [self.members.member(i) for i in range(self.members.n_members)]


def plain_plan(config: Config, trained: Ensemble) -> MemberPlan:
    """A plain run: every member trains, coupled as loss.coupling says (all to all by
    loss.beta / loss.beta_bar by default); the matrix before any beta schedule."""
    beta = coupling_matrix(config.loss, trained.n_members).to(
        device=next(trained.parameters()).device, dtype=torch.float32)
    return MemberPlan(trained, trained, beta)

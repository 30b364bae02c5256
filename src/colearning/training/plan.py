"""Member plans: which members of a cell train, which are frozen peers, on which samples.

The training loop does not know about growing an ensemble: it receives, per cell, a
:class:`MemberPlan`. A plain run's plan trains all its members on the whole training
split; a grown run's plan (:mod:`colearning.training.growth`) trains the new members (or
all, add-retrain), keeps the old ones frozen (evaluated first, coupling peers when coupled),
and for boost restricts the samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from colearning.config import Config
from colearning.couplings import coupling_matrix
from colearning.engine import Ensemble, Members


@dataclass
class MemberPlan:
    """What the loop trains for one cell.

    ``trained`` members go into the optimizer (the loop stacks them with the other cells'
    into one engine). ``frozen``: members that never train (a grown run's old ones, add-freeze
    and boost), which come first in the cell's evaluation, analysis and checkpoint; None for
    a plain run. ``beta`` is the coupling of the trained members, [T, T], or [T, T+F] when
    the frozen members are coupling peers (``coupled``: their log-probabilities enter the
    coupling term). ``subset``: training-set positions the cell trains on (boost), None for
    all.
    """

    trained: Members
    beta: torch.Tensor
    frozen: Ensemble | None = None
    subset: torch.Tensor | None = None
    coupled: bool = False

    def __post_init__(self) -> None:
        if self.frozen is not None:
            self.frozen.eval().requires_grad_(False)

    @property
    def n_frozen(self) -> int:
        return 0 if self.frozen is None else self.frozen.n_members

    def peers(self, images: torch.Tensor) -> torch.Tensor | None:
        """Log-probabilities [F, B, C] of the coupled frozen members on ``images``, or None."""
        if not self.coupled or self.frozen is None:
            return None
        with torch.no_grad():
            return F.log_softmax(self.frozen(images).float(), dim=-1)


def plain_plan(config: Config, trained: Ensemble) -> MemberPlan:
    """A plain run: every member trains, coupled as loss.coupling says (all to all by
    loss.beta / loss.beta_bar by default); the matrix before any beta schedule."""
    beta = coupling_matrix(config.loss, trained.n_members).to(
        device=next(trained.parameters()).device, dtype=torch.float32)
    return MemberPlan(trained, beta)

"""Members across processes: a run's members split over the ranks of torch.distributed.

Under ``torchrun --nproc-per-node K -m colearning train ...`` (or ``colearn train --nproc
K``) rank r holds a contiguous slice of the N members (:func:`member_slice`) in its own
:class:`~colearning.engine.Ensemble` (any strategy). Every rank draws the same batches from
the run seed, runs its members forward, and all-gathers their detached logits, so each rank
sees all N members' logits on the batch with its own slice live in autograd
(:class:`ShardedEnsemble`). Each rank then computes the loss of all N members (arithmetic
on [N, B, C] logits, small next to the members' forward and backward) and back-propagates
the sum: the gradient reaches its own members only and equals what one process computes,
for every objective and peers mode, because the other members enter every loss as
constants of the local logits (detached peers) or through values the gathered logits hold
(``peers=joint`` and the ensemble objectives differentiate sum_i L_i with respect to the
local logits alone, which needs the other members' values, not their graphs). No DDP:
gradients are never averaged. One all-gather of N x B x C x 4 bytes per step (float32
logits) plus a K-flag all-reduce (the cells' divergence) and, between steps, one int
all-reduce of the stop flag.

:class:`Shard` is the plan the loop receives: in one process every collective is the
identity (it returns its input), so a training step is the same code alone and across
processes. What does differ asks :attr:`Shard.distributed`: building only this rank's
members (``colearning.training.run``, ``colearning.training.step.Pack``) and gathering
every rank's members and optimizer state for a checkpoint (``Pack``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from colearning.engine import Ensemble
from colearning.environment import env_number
from colearning.errors import ConfigError, RankFailed


def member_slice(n_members: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s members of ``n_members``: contiguous, sizes differing by at most one,
    the larger slices first: (5, 0, 2) -> 0:3, (5, 1, 2) -> 3:5."""
    if n_members < world:
        raise ConfigError(f"{n_members} members cannot be split over {world} processes; "
                          f"use at most {n_members} processes")
    size, extra = divmod(n_members, world)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (rank < extra))


@dataclass
class Shard:
    """Which members this process trains, and the collectives that join the processes
    (over torch.distributed's default process group)."""

    rank: int = 0
    world: int = 1
    n_members: int = 1  # members split over the processes

    def for_members(self, n_members: int) -> Shard:
        """This process's shard of ``n_members`` members (refused when fewer than ranks)."""
        shard = Shard(self.rank, self.world, n_members)
        shard.local  # noqa: B018 - raises when n_members < world
        return shard

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def writer(self) -> bool:
        """Whether this process writes the run directory (rank 0)."""
        return self.rank == 0

    @property
    def local(self) -> slice:
        return member_slice(self.n_members, self.rank, self.world)

    def slices(self) -> list[slice]:
        return [member_slice(self.n_members, r, self.world) for r in range(self.world)]

    # ------------------------------------------------------------------ collectives
    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """[n_local, ...] of every rank -> [N, ...] in member order (an identity alone)."""
        if not self.distributed:
            return local
        slices = self.slices()
        widest = max(s.stop - s.start for s in slices)
        padded = local.new_zeros((widest, *local.shape[1:]))
        padded[:local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        _collective(dist.all_gather, parts, padded.contiguous())
        return torch.cat([part[:s.stop - s.start] for part, s in zip(parts, slices,
                                                                     strict=True)])

    def any(self, flags: torch.Tensor) -> torch.Tensor:
        """Elementwise OR of boolean ``flags`` over the ranks (on the device, no host read)."""
        if not self.distributed:
            return flags
        values = flags.to(torch.int32)
        _collective(dist.all_reduce, values, op=dist.ReduceOp.MAX)
        return values.bool()

    def any_host(self, flag: bool) -> bool:
        """Whether any rank says True (a host value, e.g. "a stop signal arrived")."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)], device=self.device())
        _collective(dist.all_reduce, value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.distributed:
            return value
        box = [value]
        _collective(dist.broadcast_object_list, box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank got here (a no-op alone)."""
        self.any_host(False)

    def gather_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A stacked state dict (tensors [n_local, ...]) of every rank -> [N, ...]."""
        return {key: self.gather_rows(value) if isinstance(value, torch.Tensor) else value
                for key, value in state.items()}

    def local_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A stacked state dict [N, ...] -> this rank's rows."""
        return {key: value[self.local] if isinstance(value, torch.Tensor) else value
                for key, value in state.items()}

    def device(self) -> torch.device:
        backend = dist.get_backend() if self.distributed else "gloo"
        return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" \
            else torch.device("cpu")


def _collective(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, dist.DistError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RankFailed(f"another process of this distributed run failed or stopped "
                         f"answering ({first[:200]}); the run directory keeps its last "
                         "checkpoint: resume it with colearn train --resume RUN_DIR "
                         "[--nproc K]") from None


def current_shard() -> Shard:
    """This process's place among the processes of torch.distributed (rank 0 of 1 unless
    a process group of several is initialized); :meth:`Shard.for_members` splits members."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return Shard()
    return Shard(dist.get_rank(), dist.get_world_size(), dist.get_world_size())


def init_from_environment(device: str) -> bool:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...) when
    there is one: NCCL for CUDA runs (one GPU per local rank), else gloo. Returns whether
    this process is one of several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return world > 1
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # COLEARNING_DIST_TIMEOUT: seconds a collective waits for a silent rank before the
    # whole job fails (a rank killed without its process closing the connection, a hung
    # machine). A dead process is noticed at once: its sockets close.
    dist.init_process_group("nccl" if cuda else "gloo",
                            timeout=datetime.timedelta(seconds=env_number(
                                "COLEARNING_DIST_TIMEOUT", 300, minimum=1)))
    return True


def finish_distributed() -> None:
    """Leave the process group (after the run, so no rank exits while others still talk)."""
    if dist.is_initialized():
        with contextlib.suppress(RuntimeError, dist.DistError):
            dist.barrier()
        dist.destroy_process_group()


@dataclass
class MembersPart:
    """One cell's members in a process of a sharded run or pack, as it builds them: all N
    counted (``n_members``), only those in this process's rows held (``held``, None when
    none). :class:`colearning.training.step.Pack` stacks every cell's held members into
    this process's :class:`ShardedEnsemble`: one way for every run, pack or not."""

    n_members: int
    held: Ensemble | None

    def members(self) -> list[nn.Module]:
        return self.held.members() if self.held is not None else []


class ShardedEnsemble(nn.Module):
    """This rank's members of an N-member ensemble, seen as the whole ensemble.

    ``forward(x)`` -> logits [N, B, C]: the local members' rows live in autograd, the other
    ranks' rows gathered and constant. ``state_dict`` gathers all N members (a collective:
    every rank calls it); ``load_state_dict`` takes this rank's rows of an N-member state.
    ``parameters()`` are the local members' ([n_local, ...]), what this rank's optimizer
    steps.
    """

    def __init__(self, local: Ensemble, shard: Shard) -> None:
        super().__init__()
        self.local = local
        self.shard = shard

    @property
    def n_members(self) -> int:
        return self.shard.n_members

    @property
    def grouped_problem(self) -> str:
        return self.local.grouped_problem

    def resolved_strategy(self, device: torch.device | None = None) -> str:
        return self.local.resolved_strategy(device)

    def stacked_parameters(self) -> dict[str, torch.Tensor]:
        return self.local.stacked_parameters()

    def forward(self, x: torch.Tensor, member_inputs: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Logits [N, B, C]; ``member_inputs`` [N] as :meth:`Ensemble.forward` (a pack)."""
        rows = self.shard.local
        mine = self.local(x) if member_inputs is None else self.local(x, member_inputs[rows])
        every = self.shard.gather_rows(mine.detach())
        return torch.cat([every[:rows.start], mine, every[rows.stop:]])

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.shard.gather_state(self.local.state_dict())

    def load_state_dict(self, state: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.local.load_state_dict(self.shard.local_state(dict(state)), strict=strict)

    def members(self) -> list[nn.Module]:
        """All N members as standalone modules (gathered: every rank calls it)."""
        state = self.state_dict()
        whole = Ensemble.from_members([self.local.member(0)] * self.n_members, "loop")
        whole.load_state_dict(state)
        whole.train(self.training)
        return whole.members()

    def member(self, index: int) -> nn.Module:
        return self.members()[index]

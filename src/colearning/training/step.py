"""One step of a pack: the stacked engine, optimizer and device-side state of the cells that
train together (:class:`Pack`), and one cell of it (:class:`Cell`).

A cell is one experiment (one run directory: its own seed, split, batch order, members,
coupling, learning rate and weight decay). The cells of a pack share everything else
(architecture, data, sizes, epochs, schedule, ...: :mod:`colearning.training.pack`), so
their members are stacked into one engine and take every step together: each member on its
own cell's batch (``Ensemble.forward(x, member_inputs)``), each cell coupled within itself,
each member stepped with its own learning rate. A cell whose step is not finite is masked
on the device (no update for its members) and, at the epoch's end, recorded as diverged at
that (epoch, step) exactly as it would be alone; the other cells go on untouched. The epoch
driver is :mod:`colearning.training.loop`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearning.config import Config
from colearning.couplings import beta_factor
from colearning.data import augment_batch
from colearning.engine import Ensemble
from colearning.environment import retain_freed_memory
from colearning.errors import RunDirError
from colearning.losses import OBJECTIVES, CoupledLoss
from colearning.optim import build_optimizer, map_tensors
from colearning.seeding import generator
from colearning.training.data import CellData, Pool, gather
from colearning.training.lifecycle import optimizer_state
from colearning.training.plan import MemberPlan
from colearning.training.precision import resolve_precision
from colearning.training.process import restore_rng
from colearning.training.setup import (
    autocast,
    clip_member_gradients,
    compiled,
    learning_rate,
    predict_split,
    use_augmentation,
)
from colearning.training.shard import Shard, ShardedEnsemble


@dataclass
class Cell:
    """One cell of a pack: its run directory, config, data, member plan and checkpoint."""

    config: Config
    path: Path
    data: CellData
    plan: MemberPlan
    checkpoint: dict[str, Any] | None = None
    # filled in by the loop
    records: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"
    detail: str | None = None
    log_probs: torch.Tensor | None = None  # the last evaluation, [members, n_test, C]

    @property
    def n_trained(self) -> int:
        return self.plan.trained.n_members


@dataclass
class _Block:
    """Cells of one ensemble size N and objective: their trained members are rows ``rows``
    of the pack, cell by cell, so the loss of all of them is one [K_n, N, B, C] call."""

    cells: torch.Tensor  # [K_n] cell positions in the pack
    rows: slice
    n: int
    objective: str
    beta: torch.Tensor  # [K_n, N, N], before the beta schedule
    divisor: torch.Tensor  # [K_n, 1]: C for kl_reduction=mean(_all) cells (coupling / C)
    task_divisor: torch.Tensor  # [K_n, 1]: C for kl_reduction=mean_all cells (task / C)
    weight: torch.Tensor  # [K_n, 1]: the interpolated objective's lambda (joint: 1)
    beta_now: torch.Tensor | None = None  # beta at this epoch (Pack.start_epoch)
    positions: tuple[int, ...] = ()  # ``cells`` on the host
    frozen_peers: bool = False  # its one cell is coupled to frozen members (a grown run)


def joint_weight(config: Config) -> float:
    """The interpolated objective's lambda of a run (joint: 1; unused by colearning)."""
    if config.loss.objective == "joint":
        return 1.0
    return float(config.loss.joint_weight or 0.0)


def stacking_order(n_trained: int, config: Config) -> tuple[int, str]:
    """Where a cell's members go in a pack's stack: by size, then objective (contiguous
    blocks, one loss call each); stable, so equal cells keep their order. The processes of a
    sharded pack build their rows in this order too (training.run)."""
    return n_trained, config.loss.objective


class Pack:
    """The engine, optimizer and device-side state of cells that train together."""

    def __init__(self, cells: list[Cell], pool: Pool, device: torch.device,
                 shard: Shard | None = None) -> None:
        # ensemble sizes and objectives contiguous: one loss call per (N, objective)
        cells = sorted(cells, key=lambda cell: stacking_order(cell.n_trained, cell.config))
        self.cells = cells
        self.pool = pool
        self.device = device
        self.config = cells[0].config  # everything but the per-cell keys is shared
        if device.type == "cpu":  # a step's large activations reused, not faulted in again
            retain_freed_memory()
        distributed = shard is not None and shard.distributed
        if len(cells) == 1 and not distributed:  # one cell's trained members are the stack
            self.trained = cells[0].plan.trained
        else:
            modules = [m for cell in cells for m in cell.plan.trained.members()]
            if distributed:  # each cell built only its members in this process's rows
                local = Ensemble.from_members(modules, self.config.ensemble.strategy)
                self.trained = ShardedEnsemble(local.to(device), shard)
            else:
                self.trained = Ensemble.from_members(modules, self.config.ensemble.strategy)
                self.trained.to(device)
        # The members this process trains (all of them unless the run is sharded over
        # processes: colearning.training.shard); every other method of Shard is then an
        # identity.
        self.shard = shard if shard is not None and shard.distributed else Shard(
            0, 1, self.trained.n_members)
        self.local = self.shard.local
        self.engine = self.trained.local  # this process's members (engine.Members)
        mode = self.config.train.compile
        self.forward = compiled(self.trained, mode, "the members' forward")
        # train.precision, auto resolved once for the pack (rank 0's choice on every rank)
        self.precision_name, note = self.shard.broadcast(
            resolve_precision(self.config, self.engine, pool, device)
            if self.shard.writer else None)
        if note and self.shard.writer and self.config.train.progress:
            print(f"colearn: {note}", file=sys.stderr, flush=True)
        self.loss_fns = {name: compiled(OBJECTIVES.get(name), mode, f"the {name} loss")
                         for name in {cell.config.loss.objective for cell in cells}}
        sizes = [cell.n_trained for cell in cells]
        starts = np.cumsum([0, *sizes])
        self.rows = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)]
        cell_of = torch.repeat_interleave(torch.arange(len(cells)), torch.tensor(sizes))
        # which cell's batch each member reads (on the CPU: no sync in the engine); one cell:
        # the engine's shared-input form
        self.member_inputs = None if len(cells) == 1 else cell_of
        self.cell_of = cell_of.to(device)
        self.optimizer = build_optimizer(  # optim.name and its options: shared by the cells
            self.config.optim, self.trained.parameters(),
            lr=self._per_member(lambda config: config.optim.lr),
            weight_decay=self._per_member(lambda config: config.optim.weight_decay))
        self.blocks = self._blocks()
        self.augment = use_augmentation(self.config)
        k = len(cells)
        self.alive = torch.ones(k, dtype=torch.bool, device=device)
        self.bad_step = torch.full((k,), -1, dtype=torch.long, device=device)
        self.test_index = torch.stack([cell.data.test for cell in cells])
        self.val_index = (torch.stack([cell.data.val for cell in cells])
                          if cells[0].data.val is not None else None)
        self.sums: dict[str, torch.Tensor] = {}
        self.scales = [1.0] * len(cells)  # adaptive couplings (loss.target_js): beta scale

    def _per_member(self, value: Any) -> list[float]:
        """``value(config)`` of each trained member's cell, for the members of this process."""
        return [value(cell.config) for cell in self.cells
                for _ in range(cell.n_trained)][self.local]

    def _blocks(self) -> list[_Block]:
        blocks, start = [], 0
        classes = self.pool.num_classes
        for n, objective in sorted({(cell.n_trained, cell.config.loss.objective)
                                    for cell in self.cells}):
            members = [k for k, cell in enumerate(self.cells)
                       if (cell.n_trained, cell.config.loss.objective) == (n, objective)]
            if self.rows[members[0]].start != start or any(
                    self.rows[a].stop != self.rows[b].start
                    for a, b in zip(members[:-1], members[1:], strict=True)):
                raise AssertionError("the pack's cells are ordered by size and objective")
            stop = self.rows[members[-1]].stop
            beta = torch.stack([self.cells[k].plan.beta for k in members])
            reductions = [self.cells[k].config.loss.kl_reduction for k in members]
            divisor = torch.tensor([[classes if r in ("mean", "mean_all") else 1.0]
                                    for r in reductions], device=self.device)
            task_divisor = torch.tensor([[classes if r == "mean_all" else 1.0]
                                         for r in reductions], device=self.device)
            weight = torch.tensor([[joint_weight(self.cells[k].config)] for k in members],
                                  device=self.device)
            frozen_peers = any(self.cells[k].plan.coupled for k in members)
            if frozen_peers and len(members) > 1:
                raise AssertionError("a grown run trains alone, not in a pack")
            blocks.append(_Block(torch.tensor(members, device=self.device), slice(start, stop),
                                 n, objective, beta, divisor, task_divisor, weight,
                                 positions=tuple(members), frozen_peers=frozen_peers))
            start = stop
        return blocks

    def precision(self) -> Any:
        """The members' autocast context under train.precision (a fresh one per use)."""
        return autocast(self.precision_name, self.device)

    def predict(self, index: torch.Tensor) -> list[torch.Tensor]:
        """Per cell, the log-probabilities [members, n, C] on the host of its members on its
        images at pooled ``index`` [K, n]: its frozen members (if any) first, then its rows
        of the trained engine (all cells in one batched pass)."""
        data = [cell.data for cell in self.cells]
        trained = predict_split(self.trained, self.pool, index, data,
                                self.config.train.eval_batch_size, self.member_inputs,
                                self.precision())
        out = []
        for k, cell in enumerate(self.cells):
            mine = trained[self.rows[k]]
            if cell.plan.frozen is not None:
                frozen = predict_split(cell.plan.frozen, self.pool, index[k:k + 1], [data[k]],
                                       self.config.train.eval_batch_size, None,
                                       self.precision())
                mine = torch.cat([frozen, mine])
            out.append(mine)
        return out

    # ----------------------------------------------------------------- state
    def load(self) -> None:
        """Members, optimizer state, sums and RNG states from the cells' checkpoints (if any); a
        checkpoint that does not fit its cell (another N or architecture) is a one-line
        RunDirError."""
        for cell, rows in zip(self.cells, self.rows, strict=True):
            if cell.checkpoint is None:
                continue
            try:
                self._load_cell(cell, rows)
            except (RuntimeError, KeyError, IndexError, TypeError, ValueError) as error:
                detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
                raise RunDirError(
                    f"the checkpoint in {cell.path} does not fit its run ({type(error).__name__}"
                    f"{': ' + detail if detail else ''}); restore the run's own checkpoint.pt "
                    "and config.yaml") from None
        first = self.cells[0].checkpoint
        if first is not None:
            restore_rng(first["rng"])

    def _load_cell(self, cell: Cell, rows: slice) -> None:
        """One cell's members and optimizer state rows from its checkpoint: its frozen
        members first, then its trained ones, of which this process takes the rows it holds."""
        checkpoint = cell.checkpoint
        model, n_frozen = checkpoint["model"], cell.plan.n_frozen
        state = self.engine.state_dict()
        if set(model) != set(state):
            raise KeyError("its parameters are not the model's")
        if any(value.shape[0] != n_frozen + rows.stop - rows.start for value in model.values()):
            raise ValueError(f"it holds another number of members than the run's "
                             f"{n_frozen + rows.stop - rows.start}")
        if cell.plan.frozen is not None:
            cell.plan.frozen.load_state_dict({k: v[:n_frozen] for k, v in model.items()})
        start, stop = max(rows.start, self.local.start), min(rows.stop, self.local.stop)
        if start >= stop:
            return
        mine = slice(start - self.local.start, stop - self.local.start)
        theirs = slice(n_frozen + start - rows.start, n_frozen + stop - rows.start)
        with torch.no_grad():
            for key, value in model.items():
                state[key][mine].copy_(value[theirs])
        saved = optimizer_state(checkpoint, list(self.trained.stacked_parameters()))
        theirs = slice(start - rows.start, stop - rows.start)  # optimizer: trained rows only
        self.optimizer.load_member_state(mine, map_tensors(saved, lambda t: t[theirs]))

    def cell_model(self, k: int) -> dict[str, torch.Tensor]:
        """Cell k's stacked member state for its checkpoint: frozen members first."""
        rows = self.rows[k]
        model = {key: value[rows].clone() for key, value in self.trained.state_dict().items()}
        frozen = self.cells[k].plan.frozen
        if frozen is None:
            return model
        old = frozen.state_dict()
        return {key: torch.cat([old[key].to(value), value]) for key, value in model.items()}

    def cell_optimizer(self, k: int) -> dict[str, Any]:
        rows = self.rows[k]
        if not self.shard.distributed:
            return self.optimizer.member_state(rows)
        state = self.optimizer.member_state(slice(None))  # this process's rows, then all
        return map_tensors(state, lambda t: self.shard.gather_rows(t)[rows])

    def cell_members(self, k: int) -> list[torch.nn.Module]:
        """Cell k's members as standalone modules (analysis statistics), frozen first."""
        frozen = self.cells[k].plan.frozen
        old = frozen.members() if frozen is not None else []
        if self.shard.distributed:  # one gather of the pack's members
            return old + self.trained.members()[self.rows[k]]
        return old + [self.trained.member(i)
                      for i in range(self.rows[k].start, self.rows[k].stop)]

    def inputs(self, k: int) -> dict[str, Any]:
        """What cell k's members take: classes, channels, image size and the per-channel
        normalization of its training split (None without data.normalize)."""
        data = self.cells[k].data
        return {"num_classes": self.pool.num_classes, "in_channels": self.pool.in_channels,
                "image_size": self.pool.image_size,
                "mean": None if data.mean is None else data.mean.tolist(),
                "std": None if data.std is None else data.std.tolist()}

    # ----------------------------------------------------------------- one epoch
    def start_epoch(self, epoch: int, first_step: int) -> None:
        """Learning rates, couplings, batch orders and augmentation streams of ``epoch``;
        the loss sums (restored from the checkpoints when resuming mid-epoch)."""
        self.optimizer.set_lr(self._per_member(lambda config: learning_rate(config, epoch)))
        epochs = self.config.train.epochs
        self.beta_factors = [beta_factor(cell.config.loss, epoch, epochs) * self.scales[k]
                             for k, cell in enumerate(self.cells)]
        for block in self.blocks:  # each cell's matrix times its factor
            scale = torch.tensor([self.beta_factors[k] for k in block.positions],
                                 device=self.device)
            block.beta_now = block.beta * scale.view(-1, 1, 1)
        orders = []
        for cell in self.cells:
            subset = cell.plan.subset
            n_train = len(subset) if subset is not None else len(cell.data.train)
            order = torch.randperm(n_train, generator=generator(cell.config.seed, "order", epoch))
            order = order.to(self.device)
            orders.append(cell.data.train[order if subset is None else subset[order]])
        self.epoch_index = torch.stack(orders)  # [K, n_train]: pooled indices in step order
        self.steps = math.ceil(self.epoch_index.shape[1] / self.config.train.batch_size)
        self.aug = [generator(cell.config.seed, "augment", epoch, device=self.device)
                    for cell in self.cells] if self.augment else []
        m, k = self.trained.n_members, len(self.cells)
        zeros = {"total": torch.zeros(m, device=self.device),
                 "task": torch.zeros(m, device=self.device),
                 "coupling": torch.zeros(m, device=self.device),
                 "count": torch.zeros(k, dtype=torch.long, device=self.device),
                 "skipped": torch.zeros(k, dtype=torch.long, device=self.device)}
        if first_step:
            for j, cell in enumerate(self.cells):
                saved = (cell.checkpoint or {}).get("sums")
                if saved:
                    for key in ("total", "task", "coupling"):
                        zeros[key][self.rows[j]] = saved[key].to(self.device)
                    zeros["count"][j], zeros["skipped"][j] = saved["count"], saved["skipped"]
                state = (cell.checkpoint or {}).get("rng", {}).get("augment")
                if self.aug and state is not None:
                    self.aug[j].set_state(state)
        self.sums = zeros
        self.bad_step.fill_(-1)

    def step(self, step: int) -> CoupledLoss:
        """One optimizer step of every cell still training, on its own batch; nothing is read
        back."""
        batch = self.config.train.batch_size
        index = self.epoch_index[:, step * batch:(step + 1) * batch]  # [K, B]
        images = gather(self.pool, index, [cell.data for cell in self.cells])
        if self.aug:
            images = torch.stack([augment_batch(images[k], self.aug[k])
                                  for k in range(len(self.cells))])
        labels = self.pool.labels[index]
        soft = None if self.pool.soft is None else self.pool.soft[index]  # [K, B, C]
        with self.precision():
            logits = (self.forward(images[0]) if self.member_inputs is None
                      else self.forward(images, self.member_inputs))
        parts = self._loss(logits, labels, images, soft)
        self.optimizer.zero_grad()
        parts.total.sum().backward()
        params = self.optimizer.params
        if self.config.optim.grad_clip is not None:
            clip_member_gradients(params, self.config.optim.grad_clip)
        member_bad = ~torch.isfinite(parts.total.detach())
        for p in params:  # this process's members: rows self.local
            if p.grad is not None:
                member_bad[self.local] |= ~torch.isfinite(p.grad).flatten(1).all(1)
        cell_bad = self.shard.any(self._any_member(member_bad))
        if self.config.train.on_nonfinite == "stop":
            self.bad_step.masked_fill_(cell_bad & self.alive, step)
            self.alive &= ~cell_bad
            cell_ok = self.alive.clone()
        else:  # skip: the cell drops this step and goes on
            self.sums["skipped"] += (cell_bad & self.alive).long()
            cell_ok = self.alive & ~cell_bad
        member_ok = cell_ok[self.cell_of]
        self.optimizer.step(member_ok[self.local])
        count = labels.shape[1]
        for key in ("total", "task", "coupling"):
            value = getattr(parts, key).detach()
            self.sums[key] += torch.where(member_ok, value * count, torch.zeros_like(value))
        self.sums["count"] += cell_ok.long() * count
        return parts

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor,
              soft: torch.Tensor | None = None) -> CoupledLoss:
        """Every cell's per-member loss parts: one call per block of cells of one size and
        objective, each coupled within itself (and with its frozen peers, if coupled).
        ``soft``: a distilled run's soft targets of the batch [1, B, C]."""
        loss = self.config.loss
        totals, tasks, couplings = [], [], []
        for block in self.blocks:
            chunk = logits[block.rows].unflatten(0, (len(block.cells), block.n))
            target = labels[block.cells]
            fn = self.loss_fns[block.objective]
            if block.objective != "colearning":
                options: dict[str, Any] = {"joint_weight": block.weight}
                if soft is not None:  # a distilled run: it trains alone (a block of one)
                    distill = self.cells[block.positions[0]].config.distill
                    options.update(soft=soft[block.cells], temperature=distill.temperature,
                                   weight=distill.weight)
                parts = fn(chunk, target, **options)
            elif block.frozen_peers:  # a grown run coupled to its old members: K = 1
                peers = self.cells[block.positions[0]].plan.peers(images[block.positions[0]])
                parts = CoupledLoss(*(part.unsqueeze(0) for part in fn(
                    chunk[0], target[0], beta=block.beta_now[0], peers=loss.peers,
                    frozen=peers, divergence=loss.divergence)))
            else:
                parts = fn(chunk, target, beta=block.beta_now, peers=loss.peers,
                           divergence=loss.divergence)
            coupling, task = parts.coupling, parts.task
            if block.objective == "colearning":  # loss.kl_reduction, per cell
                coupling, task = coupling / block.divisor, task / block.task_divisor
            totals.append((task + coupling).flatten())
            tasks.append(task.flatten())
            couplings.append(coupling.flatten())
        return CoupledLoss(torch.cat(totals), torch.cat(tasks), torch.cat(couplings))

    def _any_member(self, flags: torch.Tensor) -> torch.Tensor:
        """Per cell [K]: whether any of its members' ``flags`` [M] is set (on the device)."""
        counts = torch.zeros(len(self.cells), device=self.device)
        return counts.index_add_(0, self.cell_of, flags.float()) > 0

    def settle(self, epoch: int) -> None:
        """Read the epoch's bad steps back (one sync) and mark those cells diverged; check
        that every training cell's parameters are still finite."""
        bad = self.bad_step.tolist()
        finite = torch.ones(self.trained.n_members, dtype=torch.bool, device=self.device)
        for p in self.optimizer.params:
            finite[self.local] &= torch.isfinite(p.detach()).flatten(1).all(1)
        cell_finite = (~self.shard.any(self._any_member(~finite))).tolist()
        for k, cell in enumerate(self.cells):
            if cell.status != "running":
                continue
            if bad[k] >= 0:
                cell.status = "diverged"
                cell.detail = (f"diverged at epoch {epoch + 1}, step {bad[k] + 1}: non-finite "
                               "loss or gradient")
            elif not cell_finite[k]:
                cell.status = "diverged"
                cell.detail = f"diverged at epoch {epoch + 1}: non-finite parameters"
            if cell.status == "diverged":
                self.alive[k] = False

    def weight_norms(self) -> list[float]:
        """The L2 norm of every trained member's parameters (all of them together), in pack
        row order; one gather when sharded. The slow growth of these under a negative
        coupling is how a collapse starts (metric ``train/member_weight_norm``)."""
        squares = sum(value.detach().float().pow(2).flatten(1).sum(1)
                      for value in self.trained.stacked_parameters().values())
        return self.shard.gather_rows(squares).sqrt().tolist()

    def beta_mean(self, k: int) -> float:
        """Cell k's mean off-diagonal coupling this epoch (its plan's matrix, scheduled)."""
        beta = self.cells[k].plan.beta
        rows, cols = beta.shape[-2:]
        pairs = rows * cols - min(rows, cols)
        return float(beta.sum()) * self.beta_factors[k] / max(1, pairs)

    def cell_sums(self, k: int) -> dict[str, Any]:
        """Cell k's loss sums on the host, as a checkpoint holds them."""
        rows = self.rows[k]
        out: dict[str, Any] = {key: self.sums[key][rows].cpu()
                               for key in ("total", "task", "coupling")}
        out["count"] = int(self.sums["count"][k])
        out["skipped"] = int(self.sums["skipped"][k])
        return out

    def running(self) -> list[int]:
        return [k for k, cell in enumerate(self.cells) if cell.status == "running"]

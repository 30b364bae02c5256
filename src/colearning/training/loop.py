"""The one training loop: the epoch driver. It trains a pack of cells; a plain run is a pack
of one. The step and its state are :mod:`colearning.training.step`, the end of an epoch
(evaluation, records, checkpoints) :mod:`colearning.training.records`.

Per epoch, for every cell still training: SGD steps on its shuffled training split, then
evaluation on its test (and validation) split, one line in metrics.jsonl and a checkpoint.
A cell whose early stopping runs out of patience ends there: it is finished at once and its
members stop stepping (the pack's ``alive`` mask, as for a diverged cell) while the others
go on.
Every random stream comes from (cell seed, purpose, epoch), so a resumed cell draws what an
uninterrupted one draws, packed or alone.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from colearning import rundir
from colearning.couplings import adapt_scale
from colearning.seeding import derive_seed
from colearning.training.data import Pool
from colearning.training.lifecycle import (
    Run,
    checkpoint_position,
    finish,
    restart_records,
    save_checkpoint,
)
from colearning.training.metric_log import MetricLog
from colearning.training.process import Interrupted, stop_signals
from colearning.training.records import cell_structure, evaluate_epoch
from colearning.training.selection import Watch
from colearning.training.setup import device_settings
from colearning.training.shard import Shard
from colearning.training.step import Cell, Pack

# Steps between host reads of "is any cell still training?" (one device sync each): a pack
# whose every cell diverged stops within this many steps instead of at the epoch's end.
CHECK_ALIVE_EVERY = 64
# Steps between progress-bar loss updates (copied to the host without waiting).
PROGRESS_EVERY = 10


# ------------------------------------------------------------------------- the loop
def fit(cells: list[Cell], pool: Pool, device: torch.device,
        shard: Shard | None = None) -> list[Run]:
    """Train ``cells`` (all at the same checkpoint position) to their last epoch or a clean
    stop; every cell's run directory ends with its summary. Raises Interrupted after
    writing when SIGINT/SIGTERM arrived."""
    config = cells[0].config
    # Re-setting the thread count also turns off MKL's dynamic threading, which would pick
    # fewer threads on a busy machine and so change float summation order between runs.
    torch.set_num_threads(torch.get_num_threads())
    started = time.perf_counter()
    pack = Pack(cells, pool, device, shard)
    cells = pack.cells  # in the pack's order
    start_epoch, start_step = checkpoint_position(cells[0].checkpoint)
    elapsed = [(cell.checkpoint or {}).get("elapsed", 0.0) for cell in cells]
    if cells[0].checkpoint is None:
        torch.manual_seed(derive_seed(config.seed, "torch"))  # CPU and every CUDA device
    pack.load()
    writes = pack.shard.writer  # only rank 0 of a sharded run writes (the others compute)
    analysis_every = config.train.analysis_every
    for k, cell in enumerate(cells):
        cell.records = restart_records(cell.path, start_epoch, cell.checkpoint is None,
                                       write=writes)
        if cell.records and "train/coupling_scale" in cell.records[-1]:  # resuming: the
            pack.scales[k] = adapt_scale(  # adaptive coupling goes on where it was
                cell.records[-1]["train/coupling_scale"], cell.records[-1].get("val/js_mean"),
                cell.config.loss.target_js)
        if cell.checkpoint is None and analysis_every:
            structure = cell_structure(pack, k, 0)  # gathered when sharded: every process
            if writes:
                rundir.append_jsonl(cell.path / rundir.ANALYSIS, structure)
    labels = [pool.labels[cell.data.test].cpu() for cell in cells]
    # the best epoch and early stopping so far, from the records (a resumed cell goes on)
    watches = [None if (w := Watch.of(cell.config)) is None else w.replay(cell.records)
               for cell in cells]
    ended: dict[int, Run] = {}  # cells that stopped early, finished when they stopped
    logs = [MetricLog(cell.config if writes else None, cell.path) for cell in cells]
    epochs = config.train.epochs
    # Progress bars on a terminal; one plain line per epoch where stderr is a file or a pipe
    # (a batch job's log: no redraws); nothing with train.progress=false.
    progress = config.train.progress and sys.stderr.isatty()
    lines = config.train.progress and not progress
    epoch_bar = tqdm(range(start_epoch, epochs), desc="epochs", initial=start_epoch,
                     total=epochs, disable=not progress, dynamic_ncols=True)
    interrupted = None

    def wall(k: int) -> float:
        return elapsed[k] + time.perf_counter() - started

    def end(k: int) -> None:
        """Cell k's early stopping ran out of patience: it is finished, its members stop."""
        cell = cells[k]
        cell.status, cell.detail = "finished", watches[k].detail()
        pack.alive[k] = False
        if cell.log_probs is None:  # stopped before this session trained (a resume)
            cell.log_probs = pack.predict(pack.test_index)[k]
        ended[k] = finish(cell.path, cell.config, cell.records, cell.status, cell.detail,
                          wall(k), cell.log_probs, labels[k], cell.data.test_indices,
                          write=writes, selection=watches[k].summary())

    with stop_signals() as stop, device_settings(config, device):
        try:
            for k in [k for k, watch in enumerate(watches) if watch and watch.stopped]:
                end(k)  # killed after its last checkpoint, before its summary
            for epoch in epoch_bar:
                if not pack.running():
                    break
                epoch_start = time.perf_counter()
                first_step = start_step if epoch == start_epoch else 0
                pack.start_epoch(epoch, first_step)
                stopped_at = _train_epoch(pack, epoch, first_step, stop, progress)
                if stopped_at is not None:  # a signal mid-epoch: checkpoint there, stop
                    pack.settle(epoch)
                    for k in pack.running():
                        model, optimizer = pack.cell_model(k), pack.cell_optimizer(k)
                        if writes:
                            save_checkpoint(cells[k].path, cells[k].config, model, optimizer,
                                            epoch, stopped_at, pack.cell_sums(k),
                                            pack.aug[k].get_state() if pack.aug else None,
                                            wall(k), inputs=pack.inputs(k))
                    raise Interrupted(stop["signal"])
                pack.settle(epoch)
                train_seconds = time.perf_counter() - epoch_start
                for k in evaluate_epoch(pack, epoch, labels, train_seconds, epoch_start, wall,
                                        logs, watches):
                    end(k)
                _show(epoch_bar, pack)
                if lines:
                    _log_epoch(pack, epoch, time.perf_counter() - epoch_start)
                if pack.shard.any_host(stop["signal"] is not None):
                    raise Interrupted(stop["signal"] or signal.SIGTERM)
            for cell in cells:
                if cell.status == "running":
                    cell.status = "finished"
        except Interrupted as stopped:
            interrupted = stopped
            for cell in cells:
                if cell.status == "running":
                    cell.status, cell.detail = "interrupted", f"stopped by {stopped}"
        finally:
            epoch_bar.close()
            for log in logs:
                log.close()
        # Still under the stop handlers: more signals (a burst of Ctrl-C) cannot cut the
        # summaries and predictions short.
        runs = []
        for k, cell in enumerate(cells):
            if k in ended:
                runs.append(ended[k])
                continue
            if cell.log_probs is None and cell.status == "finished":  # killed after the last
                cell.log_probs = pack.predict(pack.test_index)[k]
            runs.append(finish(cell.path, cell.config, cell.records, cell.status, cell.detail,
                               wall(k), cell.log_probs, labels[k], cell.data.test_indices,
                               write=writes, selection=watches[k] and watches[k].summary()))
    if interrupted is not None:
        raise Interrupted(interrupted.signum, tuple(cell.path for cell in cells))
    return runs


def _train_epoch(pack: Pack, epoch: int, first_step: int, stop: dict[str, Any],
                 progress: bool) -> int | None:
    """The steps of one epoch. Returns the position of the next step when a signal stopped
    it (None otherwise); also stops early when no cell is training any more."""
    bar = tqdm(range(first_step, pack.steps), desc=f"epoch {epoch + 1}", leave=False,
               disable=not progress, dynamic_ncols=True)
    shown, stopped_at = None, None
    for step in bar:
        parts = pack.step(step)
        if progress and step % PROGRESS_EVERY == 0:
            if shown is not None:
                bar.set_postfix(loss=f"{float(shown):.3f}")
            shown = parts.total.detach().mean().to("cpu", non_blocking=True)
        if pack.shard.any_host(stop["signal"] is not None):  # every process stops here
            stop["signal"] = stop["signal"] or signal.SIGTERM
            stopped_at = step + 1
            break
        if (step + 1) % CHECK_ALIVE_EVERY == 0 and not bool(pack.alive.any()):
            break  # every cell diverged: settle() records where
    bar.close()
    return stopped_at


def epoch_line(record: dict[str, Any], epochs: int, seconds: float) -> str:
    """One plain log line for an epoch's record: loss, ensemble and mean member accuracy,
    mean JS distance, seconds."""
    def mean(values: Any) -> float:
        values = [v for v in values or [] if isinstance(v, (int, float)) and math.isfinite(v)]
        return sum(values) / len(values) if values else math.nan

    return (f"epoch {record['epoch']}/{epochs}  loss {mean(record.get('train/loss_total')):.4f}"
            f"  ensemble {100 * record.get('test/ensemble_accuracy_mean', math.nan):.2f}%"
            f"  members {100 * mean(record.get('test/member_accuracy')):.2f}%"
            f"  JS {record.get('test/js_mean', math.nan):.4f}  {seconds:.1f} s")


def _log_epoch(pack: Pack, epoch: int, seconds: float) -> None:
    """The epoch's line for each cell that recorded it (prefixed by the cell in a pack)."""
    for cell in pack.cells:
        if cell.records and cell.records[-1]["epoch"] == epoch + 1:
            where = f"{cell.path.name}: " if len(pack.cells) > 1 else ""
            line = epoch_line(cell.records[-1], pack.config.train.epochs, seconds)
            print(f"colearn: {where}{line}", file=sys.stderr, flush=True)


def _show(bar: tqdm, pack: Pack) -> None:
    running = [pack.cells[k] for k in pack.running()]
    if not running or not running[0].records:
        return
    record = running[0].records[-1]
    losses = [v for v in record["train/loss_total"] if v is not None and math.isfinite(v)]
    postfix = {"acc": f"{record['test/ensemble_accuracy_mean']:.3f}"}
    if losses:
        postfix["loss"] = f"{sum(losses) / len(losses):.3f}"
    if len(pack.cells) > 1:
        postfix = {"cells": f"{len(running)}/{len(pack.cells)}"}
    bar.set_postfix(postfix)

"""The end of an epoch: evaluate every cell still training and write what it produced
(its metrics.jsonl line, analysis statistics, saved probabilities, best weights and
checkpoint); say which cells stopped early."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from colearning import rundir
from colearning.couplings import adapt_scale
from colearning.evaluation import evaluate_log_probs, member_states
from colearning.training.data import gather
from colearning.training.lifecycle import save_best, save_checkpoint
from colearning.training.metric_log import MetricLog
from colearning.training.selection import Watch
from colearning.training.setup import learning_rate, structure_record
from colearning.training.step import Pack


def evaluate_epoch(pack: Pack, epoch: int, labels: list[torch.Tensor], train_seconds: float,
                   epoch_start: float, wall: Any, logs: list[MetricLog],
                   watches: list[Watch | None]) -> list[int]:
    """Evaluate every cell still training, write its metrics line, analysis, best weights
    (train.keep_best, at an epoch that improved its validation metric) and checkpoint.
    Returns the cells whose early stopping ran out of patience at this epoch (their last).
    Every process of a sharded run evaluates (the gathers are collectives) and decides
    alike; only the one that writes (rank 0) writes."""
    running = pack.running()
    writes = pack.shard.writer
    stopped: list[int] = []
    if not running:
        return stopped
    config = pack.config
    log_probs = pack.predict(pack.test_index)
    val = None
    if pack.val_index is not None:
        val = pack.predict(pack.val_index)
        val_labels = pack.pool.labels[pack.val_index].cpu()
    sums = {k: pack.cell_sums(k) for k in running}
    norms = pack.weight_norms()
    epochs = config.train.epochs
    for k in running:
        cell = pack.cells[k]
        cell.log_probs = log_probs[k]
        lr = learning_rate(cell.config, epoch)
        previous = cell.records[-1] if cell.records else None
        record = epoch_record(epoch, lr, sums[k], cell.log_probs, labels[k], train_seconds,
                              previous)
        record["train/beta_mean"] = pack.beta_mean(k)
        mine = norms[pack.rows[k]]
        frozen = [None] * (cell.log_probs.shape[0] - len(mine))  # frozen members come first
        record["train/member_weight_norm"] = frozen + mine
        if val is not None:  # for selection (best epoch, beta*): never the test set
            record.update(evaluate_log_probs(
                val[k], val_labels[k], prefix="val",
                learned_before=(previous or {}).get("val/member_learned")))
        watch = watches[k]
        improved = watch is not None and watch.update(record)
        if watch is not None and watch.stopped:
            stopped.append(k)
        target = cell.config.loss.target_js
        if target is not None:  # the adaptive coupling: this epoch's scale, then the next
            record["train/coupling_scale"] = pack.scales[k]
            pack.scales[k] = adapt_scale(pack.scales[k], record.get("val/js_mean"), target)
        every = config.train.analysis_every
        if (every and (epoch + 1) % every == 0) or epoch + 1 == epochs or k in stopped:
            structure = cell_structure(pack, k, epoch + 1)
            mark_dead_layers(record, structure)
            if writes:
                rundir.append_jsonl(cell.path / rundir.ANALYSIS, structure)
        record["time/epoch_seconds"] = time.perf_counter() - epoch_start
        record["time/pack_cells"] = len(pack.cells)
        cell.records.append(record)
        model, optimizer = pack.cell_model(k), pack.cell_optimizer(k)  # gathered: collectives
        if not writes:
            continue
        rundir.append_jsonl(cell.path / rundir.METRICS, record)
        logs[k].write(record)
        every = config.train.save_probs_every
        if every and (epoch + 1) % every == 0:
            (cell.path / "probs").mkdir(exist_ok=True)
            rundir.atomic_savez(cell.path / "probs" / f"epoch_{epoch + 1}.npz",
                                log_probs=cell.log_probs.numpy())
        if improved and cell.config.train.keep_best:  # before the checkpoint: a kill between
            # the two resumes before this epoch, which then writes best.pt again
            save_best(cell.path, model, epoch + 1, watch.metric, watch.best_value,
                      pack.inputs(k))
        save_checkpoint(cell.path, cell.config, model, optimizer, epoch + 1, 0, None, None,
                        wall(k), inputs=pack.inputs(k))
    return stopped


def cell_structure(pack: Pack, k: int, epoch: int) -> dict[str, Any]:
    cell = pack.cells[k]
    samples = cell.data.test[:cell.config.train.analysis_samples]
    x = gather(pack.pool, samples.unsqueeze(0), [cell.data])[0]
    return structure_record(pack.cell_members(k), x, epoch)


def epoch_record(epoch: int, lr: float, sums: dict[str, Any], log_probs: torch.Tensor,
                 labels: torch.Tensor, train_seconds: float,
                 previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """One metrics.jsonl line: the epoch's mean training losses and the test metrics
    (``previous``: the last epoch's record, which says which members had learned)."""
    record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
    untrained = [None] * (log_probs.shape[0] - len(sums["total"]))  # frozen come first
    for key in ("total", "task", "coupling"):
        # No step taken (all skipped as non-finite): the loss is unknown, NaN (null in
        # metrics.jsonl), never a made-up 0.
        mean = (sums[key] / sums["count"] if sums["count"]
                else torch.full_like(sums[key], math.nan))
        record[f"train/loss_{key}"] = untrained + mean.tolist()
    record["train/skipped_steps"] = sums["skipped"]
    if not sums["count"]:
        record["train/note"] = (f"every step of epoch {epoch + 1} was skipped (non-finite loss "
                                "or gradient): no training loss, weights unchanged")
        tqdm.write(f"colearn: warning: {record['train/note']}", file=sys.stderr)
    record.update(evaluate_log_probs(log_probs, labels,
                                     learned_before=(previous or {}).get("test/member_learned")))
    record["time/train_seconds"] = train_seconds
    return record


def mark_dead_layers(record: dict[str, Any], structure: dict[str, Any]) -> None:
    """Add each member's all-zero ReLU layers to the record; such a member is collapsed (or,
    if it never learned, not learned yet)."""
    dead = [[layer for layer, stats in member["activation"].items() if stats["dead"]]
            for member in structure["members"]]
    record["test/member_dead_layers"] = dead
    states = member_states(record["test/member_ignores_input"], record["test/member_learned"],
                           dead)
    record["test/member_collapsed"] = states["collapsed"]
    record["test/member_not_learned"] = states["not_learned"]

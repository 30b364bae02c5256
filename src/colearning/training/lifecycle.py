"""The run directory over a run's life: created, locked, checkpointed, resumed, summarized.

Everything the training loop writes goes through here, one cell (run directory) at a time;
a pack of cells writes each cell's directory exactly as a run trained alone would.
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearning import __version__, rundir
from colearning.config import (
    DISPLAY_KEYS,
    Config,
    config_diff,
    config_from_dict,
    dump_yaml,
    merge,
    read_yaml,
    without_display,
)
from colearning.couplings import coupling_label, strength_in_options
from colearning.errors import ConfigError, RunDirError
from colearning.schedules import uses_length

PACKS = "packs.jsonl"  # one line per training session: the cells trained together
CONFIG_HISTORY = "config_history.jsonl"  # one line per change of a run's config (extension)


@dataclass
class Run:
    """A finished (or stopped) run: its directory, config, per-epoch metrics and summary."""

    run_dir: Path
    config: Config
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")


# ------------------------------------------------------------------------- creating
def git_commit() -> str | None:
    """The commit of the source tree the package runs from, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def new_run_dir(config: Config, root: str | Path = "runs") -> Path:
    """A fresh directory under ``root`` named after the time, model and coupling:
    ``...-lenet5-N2-b-0.1`` (loss.beta), ``...-N4-bb-0.5`` (loss.beta_bar) or ``-bmatrix``,
    then the coupling's label unless uniform (``...-N10-bb-0.5-ring-k2+warmup``)."""
    loss = config.loss
    if isinstance(loss.beta, list):
        tag = "bmatrix"
    elif loss.beta_bar is not None:
        tag = f"bb{loss.beta_bar:g}"
    elif loss.beta is not None or not strength_in_options(loss):
        tag = f"b{0.0 if loss.beta is None else loss.beta:g}"
    else:
        tag = ""
    label = coupling_label(loss)
    if label not in ("uniform", "matrix"):
        tag += "-" + re.sub(r"[(,]", "-", label).replace("=", "").replace(")", "")
    tag = tag.strip("-")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{config.model.name}-N{config.ensemble.n_members}-{tag}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def check_new_run_dir(path: Path) -> None:
    """A fresh run may go into ``path``: absent, empty, or holding only the lock file a
    failed start left behind."""
    if path.exists() and any(p.name != rundir.LOCK for p in path.iterdir()):
        if rundir.is_run_dir(path):
            raise RunDirError(
                f"{path} already holds a run; resume it with --resume {path} or pick another "
                "--run-dir"
            )
        raise RunDirError(f"{path} exists and is not empty; pick another --run-dir")


def write_new_run(path: Path, config: Config) -> None:
    """config.yaml and meta.json of a fresh run (the directory is locked by the caller)."""
    rundir.atomic_write_text(path / rundir.CONFIG, dump_yaml(config))
    rundir.atomic_write_json(path / rundir.META, {
        "colearning_version": __version__, "git_commit": git_commit(),
        "torch_version": torch.__version__, "python": platform.python_version(),
        "host": platform.node(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def record_pack(paths: list[Path], device: torch.device) -> None:
    """Append to every cell's packs.jsonl which cells this session trains together."""
    line = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(device),
            "cells": [str(p) for p in paths]}
    for path in paths:
        rundir.append_jsonl(path / PACKS, line)


# ------------------------------------------------------------------------- resuming
def resume_state(path: Path, overrides: dict[str, Any] | None = None, *, write: bool = True
                 ) -> tuple[Config, dict[str, Any] | None, Run | None]:
    """(config, checkpoint or None, the finished Run or None) of the run in ``path``.

    ``overrides`` (a nested dict) may repeat the saved config, change display-only keys
    (``train.progress``: for this session, not saved) or raise ``train.epochs`` to extend
    the run (see :func:`_extension`); any other change is an error, because the resumed
    numbers would no longer match one uninterrupted run. Call with the directory locked.
    ``write=False`` decides without writing (a sweep's dry run): an extension is checked
    and returned, not saved.
    """
    saved = read_yaml(path / rundir.CONFIG)
    config = config_from_dict(saved)
    display: dict[str, Any] = {}
    extended: Config | None = None  # written once the run directory checked out
    if overrides:
        changed = config_from_dict(merge(saved, overrides))
        display = changed.to_dict()
        diff = config_diff(without_display(config.to_dict()), without_display(changed.to_dict()))
        if diff == ["train.epochs"] and changed.train.epochs > config.train.epochs:
            extended = changed
        elif diff:
            details = config_diff(config.to_dict(), changed.to_dict(), show=True)
            raise RunDirError(
                f"cannot resume {path} with a changed config ({', '.join(details)}); only "
                "train.epochs may grow (and display keys like train.progress change); start a "
                "new run instead"
            )
    summary_path = path / rundir.SUMMARY
    checkpoint = None
    if summary_path.exists():
        summary = read_json(summary_path)
        # an early-stopped run has ended for good: a straight run of any train.epochs stops
        # at the same epoch (the stop depends on the metric's history alone)
        if summary.get("status") == "finished" and (summary.get("stopped_early") or summary.get(
                "epochs_completed", 0) >= (extended or config).train.epochs):
            shown = _with_display(config, display)  # e.g. train.evaluate_shift asked now
            return (shown, None,
                    Run(path, shown, rundir.read_metrics(path / rundir.METRICS), summary))
    if (path / rundir.CHECKPOINT).exists():
        checkpoint = rundir.load_checkpoint(path / rundir.CHECKPOINT)
        # compared as Configs, so a config section added since then takes its default; an
        # extended run's checkpoint holds the shorter train.epochs
        # compared, never a reason to import a plugin: the checkpoint is data
        try:
            written = config_from_dict(checkpoint.get("config") or {}, plugins=False)
        except ConfigError as error:
            raise RunDirError(f"the checkpoint in {path} holds a config this version cannot "
                              f"read ({error}); restore the run's own checkpoint.pt") from None
        if config_diff(without_display(written.to_dict()), without_display(config.to_dict())) \
                not in ([], ["train.epochs"]):
            raise RunDirError(
                f"the checkpoint in {path} was written with another config.yaml; restore "
                "the original config.yaml or start a new run"
            )
        covered = len(rundir.read_metrics(path / rundir.METRICS))
        if covered < checkpoint["epoch"]:
            missing = (f"epoch {checkpoint['epoch']}" if covered + 1 == checkpoint["epoch"]
                       else f"epochs {covered + 1}-{checkpoint['epoch']}")
            raise RunDirError(
                f"{path / rundir.METRICS} holds {covered} epoch(s) but the checkpoint is at "
                f"epoch {checkpoint['epoch']}: the metrics of {missing} are gone, and a resumed "
                "run would have a gap; restore metrics.jsonl or start a new run")
    if extended is not None:
        config = _extension(path, config, extended, write=write)
    return _with_display(config, display), checkpoint, None


def _with_display(config: Config, changed: dict[str, Any]) -> Config:
    """``config`` with the display-only keys of ``changed`` (for this session only)."""
    if not changed:
        return config
    values = config.to_dict()
    for dotted in DISPLAY_KEYS:
        section, _, key = dotted.rpartition(".")
        values[section][key] = changed[section][key]
    return config_from_dict(values)


def _extension(path: Path, config: Config, extended: Config, write: bool = True) -> Config:
    """Raise a run's train.epochs: allowed when neither schedule depends on the total
    (:func:`colearning.schedules.uses_length`), so the continued run equals a straight run
    of the new length; saved in config.yaml and recorded in config_history.jsonl."""
    for key, what in (("optim.schedule", "learning-rate"), ("loss.beta_schedule", "beta")):
        name, options = config.get(key), config.get(f"{key}_options")
        if uses_length(name, options):
            raise RunDirError(
                f"cannot extend {path} from {config.train.epochs} to {extended.train.epochs} "
                f"epochs: its {name} {what} schedule ({key}) depends on train.epochs, so the "
                "extension would not equal a straight run; start a new run with the longer "
                f"train.epochs (or give the schedule its length in {key}_options)")
    values = config.to_dict()
    values["train"]["epochs"] = extended.train.epochs
    longer = config_from_dict(values)
    if write:
        rundir.atomic_write_text(path / rundir.CONFIG, dump_yaml(longer))
        rundir.append_jsonl(path / CONFIG_HISTORY, {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "changed": {"train.epochs": [config.train.epochs, extended.train.epochs]},
        })
    return longer


def check_extension(path: Path, config: Config, extended: Config) -> None:
    """Refuse, as :func:`_extension` does, to extend ``config`` to ``extended``'s
    train.epochs (a schedule set by train.epochs); writes nothing. A sweep checks every
    cell before it extends any."""
    _extension(path, config, extended, write=False)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise RunDirError(f"{path} is corrupt; delete it and resume the run") from None


def checkpoint_position(checkpoint: dict[str, Any] | None) -> tuple[int, int]:
    """(epoch, step) of the next step a checkpoint resumes at; (0, 0) from scratch."""
    return (0, 0) if checkpoint is None else (checkpoint["epoch"], checkpoint["step"])


def optimizer_state(checkpoint: dict[str, Any], param_names: list[str]) -> dict[str, Any]:
    """The checkpoint's stacked optimizer state (format 1 held torch's SGD: its momentum
    buffers become StackedSGD's)."""
    state = checkpoint["optimizer"]
    if checkpoint.get("format", 1) >= 2:
        return state
    buffers = [state["state"].get(k, {}).get("momentum_buffer") for k in range(len(param_names))]
    return {"buffers": [b for b in buffers if b is not None]}


def restart_records(path: Path, start_epoch: int, fresh: bool,
                    write: bool = True) -> list[dict[str, Any]]:
    """The metric records the checkpoint covers; later lines and torn tails are cut.

    Keep exactly what the checkpoint covers: lines written after it (a kill between the two
    writes) and a torn last line (a kill mid-append) go, or the next append would be glued
    to the torn tail. From scratch, even the epoch-0 statistics are rewritten.
    """
    records = rundir.read_metrics(path / rundir.METRICS)[:start_epoch]
    if not write:  # another process of a sharded run: rank 0 cuts the files
        return records
    kept = rundir.truncate_jsonl(path / rundir.METRICS, len(records))
    if kept is not None:
        print(f"colearn: note: {path / rundir.METRICS} held more than the checkpoint covers "
              f"(epochs after {start_epoch} or a torn line); continuing from the checkpoint, "
              f"the original file is kept as {kept}", file=sys.stderr)
    analysis = [] if fresh else rundir.read_jsonl(path / rundir.ANALYSIS)
    rundir.truncate_jsonl(path / rundir.ANALYSIS, sum(
        type(r.get("epoch")) is int and r["epoch"] <= start_epoch for r in analysis))
    return records


# ------------------------------------------------------------------------- writing
def save_checkpoint(path: Path, config: Config, model: dict[str, torch.Tensor],
                    optimizer: dict[str, Any], epoch: int, step: int,
                    sums: dict[str, Any] | None, aug_state: torch.Tensor | None,
                    elapsed: float, inputs: dict[str, Any] | None = None) -> None:
    """Write checkpoint.pt atomically. ``inputs``: what the members take (classes,
    channels, image size, normalization), so the checkpoint alone rebuilds them."""
    rundir.atomic_torch_save(path / rundir.CHECKPOINT, {
        "format": rundir.CHECKPOINT_FORMAT,
        "epoch": epoch,  # position of the next step to run: (epoch, step), 0-based
        "step": step,
        "model": model,
        "optimizer": optimizer,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "augment": None if aug_state is None else aug_state.cpu()},
        "sums": sums,
        "elapsed": elapsed,
        "config": config.to_dict(),
        "inputs": inputs,
    })


def save_best(path: Path, model: dict[str, torch.Tensor], epoch: int, metric: str,
              value: float, inputs: dict[str, Any] | None) -> None:
    """Write best.pt atomically: the members' weights after ``epoch`` (1-based), the epoch
    whose validation ``metric`` was best so far, with its ``value`` and the members'
    ``inputs`` (as in checkpoint.pt). Weights only: nothing to resume from."""
    rundir.atomic_torch_save(path / rundir.BEST, {
        "format": rundir.BEST_FORMAT, "epoch": epoch, "metric": metric, "value": value,
        "model": model, "inputs": inputs,
    })


def finish(path: Path, config: Config, records: list[dict[str, Any]], status: str,
           detail: str | None, wall: float, log_probs: torch.Tensor | None,
           labels: torch.Tensor, test_indices: np.ndarray, write: bool = True,
           selection: dict[str, Any] | None = None) -> Run:
    """Write predictions.npz (when there are predictions) and summary.json; the Run
    (``write=False``: the Run only, in a process of a sharded run other than rank 0).
    ``selection``: the best epoch and early stop (selection.Watch.summary), into the summary."""
    summary = {**summarize(records, status, detail, wall), **(selection or {})}
    if not write:
        return Run(path, config, records, summary)
    if log_probs is not None:
        rundir.atomic_savez(path / rundir.PREDICTIONS, log_probs=log_probs.numpy(),
                            labels=labels.cpu().numpy(), test_indices=test_indices)
    rundir.atomic_write_json(path / rundir.SUMMARY, summary)
    return Run(path, config, records, summary)


def summarize(records: list[dict[str, Any]], status: str, detail: str | None,
              wall: float) -> dict[str, Any]:
    summary: dict[str, Any] = dict(records[-1]) if records else {}
    summary["status"] = status
    if detail:
        summary["status_detail"] = detail
    summary["epochs_completed"] = len(records)
    summary["wall_seconds"] = wall
    collapsed = summary.get("test/member_collapsed", [])
    summary["collapsed_members"] = [i for i, c in enumerate(collapsed) if c]
    unlearned = summary.get("test/member_not_learned", [])
    summary["not_learned_members"] = [i for i, c in enumerate(unlearned) if c]
    return summary


def load_run(run_dir: str | Path) -> Run:
    """A run directory's config, metrics and summary (for analysis; never retrains)."""
    path = rundir.require_run_dir(run_dir)
    config = config_from_dict(read_yaml(path / rundir.CONFIG))
    summary_path = path / rundir.SUMMARY
    summary = read_json(summary_path) if summary_path.exists() else {"status": "running"}
    return Run(path, config, rundir.read_metrics(path / rundir.METRICS), summary)


@contextlib.contextmanager
def locked_all(paths: list[Path]) -> Iterator[None]:
    """Hold the lock of every run directory in ``paths`` (a pack's cells)."""
    with contextlib.ExitStack() as stack:
        for path in paths:
            stack.enter_context(rundir.locked(path))
        yield

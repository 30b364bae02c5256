"""Training a co-learning ensemble into a resumable run directory.

    run = colearning.train(load_config("configs/quickstart.yaml"), run_dir="runs/demo")
    run.summary["test/ensemble_accuracy_mean"]

One flat loop (:func:`_fit`) with pure helpers. Every epoch: all members take SGD steps on
the same minibatches, the ensemble is evaluated on the held-out split, one line goes to
metrics.jsonl and a checkpoint is written atomically. ``resume(run_dir)`` continues from
the last checkpoint and ends with the numbers of an uninterrupted run, because every random
stream is derived from (seed, purpose, epoch) rather than carried along.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from colearning import __version__, rundir
from colearning.config import Config, config_from_dict, dump_yaml, merge, read_yaml
from colearning.data import (
    DATASETS,
    augment_batch,
    channel_stats,
    load_dataset,
    make_split,
    to_tensors,
)
from colearning.engine import Ensemble
from colearning.errors import ConfigError, DivergedError, RunDirError
from colearning.evaluation import evaluate_log_probs
from colearning.losses import CoupledLoss, beta_matrix, coupled_loss
from colearning.metrics.structure import activation_stats, weight_stats
from colearning.models import MODELS, build_model
from colearning.seeding import derive_seed, generator

if TYPE_CHECKING:
    from colearning.expand.grow import Growth

CHECKPOINT_FORMAT = 1


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


@dataclass
class TensorData:
    """A split on the training device: images float [n, C, H, W], labels int64 [n]."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_indices: np.ndarray
    num_classes: int
    in_channels: int
    image_size: int
    val_x: torch.Tensor | None = None  # validation split (data.val_size > 0), else None
    val_y: torch.Tensor | None = None


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; the run was checkpointed mid-epoch and stopped cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; a cuda request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:K") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use device=cpu")
    return device


def preflight(config: Config) -> None:
    """Fail fast, before any directory or data is touched, on names that cannot resolve."""
    MODELS.get(config.model.name)
    DATASETS.get(config.data.name)
    resolve_device(config.device)
    if config.expand.source is not None:
        from colearning.expand.grow import check_source  # expand builds on this module

        check_source(config)


def learning_rate(config: Config, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based) under the configured per-epoch schedule."""
    optim = config.optim
    if optim.schedule == "constant":
        return optim.lr
    if optim.schedule == "step":
        return optim.lr * optim.gamma ** (epoch // optim.step_size)
    # cosine annealing, paper Supp.: eta_t = eta_0 / 2 * (1 + cos(pi * t / t_max))
    return 0.5 * optim.lr * (1 + math.cos(math.pi * epoch / config.train.epochs))


def use_augmentation(config: Config) -> bool:
    """Crop+flip for VGG-9 and off for LeNet-5, as the paper, unless data.augment says."""
    if config.data.augment is not None:
        return config.data.augment
    return config.model.name == "vgg9"


def load_data(config: Config, device: torch.device) -> TensorData:
    """The configured split as tensors on ``device`` (pixels in [0, 1], optionally standardized)."""
    data = config.data
    raw = load_dataset(data.name, data.path, cache_dir=data.cache_dir,
                       progress=config.train.progress)
    split = make_split(raw, data.split, train_size=data.train_size, test_size=data.test_size,
                       val_size=data.val_size, seed=config.seed)
    if config.train.batch_size > len(split.train_y):
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} is larger than the training set "
            f"({len(split.train_y)} images); lower it"
        )
    mean, std = channel_stats(split.train_x) if data.normalize else (None, None)
    return TensorData(
        train_x=to_tensors(split.train_x, device, mean=mean, std=std),
        train_y=torch.from_numpy(split.train_y).to(device),
        test_x=to_tensors(split.test_x, device, mean=mean, std=std),
        test_y=torch.from_numpy(split.test_y).to(device),
        test_indices=split.test_indices,
        num_classes=raw.num_classes,
        in_channels=raw.in_channels,
        image_size=raw.image_size,
        val_x=None if split.val_x is None else to_tensors(split.val_x, device, mean=mean, std=std),
        val_y=None if split.val_y is None else torch.from_numpy(split.val_y).to(device),
    )


def build_ensemble(config: Config, data: TensorData, device: torch.device, *,
                   n_members: int | None = None, first_index: int = 0) -> Ensemble:
    """The run's members (or ``n_members`` of them numbered from ``first_index``) on ``device``."""

    def factory() -> torch.nn.Module:
        return build_model(config.model.name, num_classes=data.num_classes,
                           in_channels=data.in_channels, image_size=data.image_size,
                           **config.model.options)

    ens = Ensemble(factory, n_members or config.ensemble.n_members, config.ensemble.strategy,
                   seed=config.seed, first_index=first_index)
    return ens.to(device)


def build_optimizer(config: Config, ens: Ensemble) -> torch.optim.Optimizer:
    # SGD is elementwise, so one optimizer over stacked [N, ...] parameters is exactly N
    # per-member optimizers, in a handful of large foreach kernels.
    return torch.optim.SGD(ens.parameters(), lr=config.optim.lr, momentum=config.optim.momentum,
                           weight_decay=config.optim.weight_decay)


@torch.no_grad()
def predict(ens: Ensemble, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Member log-probabilities [N, n, C] (float32 log_softmax) on the CPU for images x [n, ...].

    Log-probabilities, not probabilities: near-certain predictions (p within 1e-7 of 1, or
    below 1e-38) keep their entropy and NLL, which rounded probabilities would lose.
    """
    was_training = ens.training
    ens.eval()
    chunks = [torch.log_softmax(ens(x[i:i + batch_size]).float(), -1).cpu()
              for i in range(0, len(x), batch_size)]
    ens.train(was_training)
    return torch.cat(chunks, dim=1)


def structure_record(ens: Ensemble, x: torch.Tensor, epoch: int) -> dict[str, Any]:
    """Activation and weight statistics of every member on images x (analysis.jsonl)."""
    members = []
    for i in range(ens.n_members):
        member = ens.member(i)
        members.append({"activation": activation_stats(member, x),
                        "weight_std": weight_stats(member)})
    return {"epoch": epoch, "members": members}


def clip_member_gradients(ens: Ensemble, max_norm: float) -> None:
    """Scale each member's gradient to norm <= max_norm (norms are per member, not global)."""
    grads = [p.grad for p in ens.parameters() if p.grad is not None]
    squared = sum(g.float().pow(2).flatten(1).sum(1) for g in grads)  # [N]
    scale = (max_norm / (squared.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))


def all_finite(tensors: list[torch.Tensor]) -> bool:
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def train_step(config: Config, ens: Ensemble, optimizer: torch.optim.Optimizer,
               images: torch.Tensor, labels: torch.Tensor, beta: torch.Tensor,
               frozen: torch.Tensor | None = None) -> CoupledLoss | None:
    """One SGD step of every member on one batch images [B, ...], labels [B].

    Returns the loss parts (each [N]), or None when the loss or a gradient is not finite;
    the step is then not taken. ``frozen``: log-probabilities [M, B, C] of untrained peers.
    (The training loop and ``colearn bench`` share this step.)
    """
    parts = coupled_loss(ens(images), labels, beta, peers=config.loss.peers,
                         kl_reduction=config.loss.kl_reduction, frozen=frozen)
    optimizer.zero_grad(set_to_none=True)
    parts.total.sum().backward()
    if config.optim.grad_clip is not None:
        clip_member_gradients(ens, config.optim.grad_clip)
    grads = [p.grad for p in ens.parameters() if p.grad is not None]
    if not all_finite([parts.total.detach(), *grads]):
        return None
    optimizer.step()
    return parts


def git_commit() -> str | None:
    """The commit of the source tree the package runs from, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def new_run_dir(config: Config, root: str | Path = "runs") -> Path:
    """A fresh directory under ``root`` named after the time, model and coupling."""
    beta = config.loss.beta_bar if config.loss.beta_bar is not None else config.loss.beta
    tag = "matrix" if isinstance(beta, list) else f"{0.0 if beta is None else beta:g}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{config.model.name}-N{config.ensemble.n_members}-b{tag}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


# ------------------------------------------------------------------------- entry points
def train(config: Config | dict[str, Any], run_dir: str | Path | None = None) -> Run:
    """Train a new run of ``config`` into ``run_dir`` (default: a new folder under ./runs)."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    preflight(config)
    path = Path(run_dir) if run_dir is not None else new_run_dir(config)
    if path.exists() and any(path.iterdir()):
        if rundir.is_run_dir(path):
            raise RunDirError(
                f"{path} already holds a run; resume it with --resume {path} or pick another "
                "--run-dir"
            )
        raise RunDirError(f"{path} exists and is not empty; pick another --run-dir")
    path.mkdir(parents=True, exist_ok=True)
    with rundir.locked(path):
        rundir.atomic_write_text(path / rundir.CONFIG, dump_yaml(config))
        rundir.atomic_write_json(path / rundir.META, {
            "colearning_version": __version__, "git_commit": git_commit(),
            "torch_version": torch.__version__, "python": platform.python_version(),
            "host": platform.node(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        with _isolated_rng(config):
            return _fit(config, path, checkpoint=None)


def resume(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> Run:
    """Continue the run in ``run_dir`` from its last checkpoint.

    ``overrides`` (a nested dict) may only repeat the saved config; a changed value is an
    error, because the resumed numbers would no longer match one uninterrupted run.
    """
    path = rundir.require_run_dir(run_dir)
    saved = read_yaml(path / rundir.CONFIG)
    config = config_from_dict(saved)
    if overrides:
        changed = config_from_dict(merge(saved, overrides))
        if changed != config:
            diff = _diff(config.to_dict(), changed.to_dict())
            raise RunDirError(
                f"cannot resume {path} with a changed config ({', '.join(diff)}); start a new "
                "run instead"
            )
    with rundir.locked(path):
        summary_path = path / rundir.SUMMARY
        if summary_path.exists():
            summary = _read_json(summary_path)
            if summary.get("status") == "finished":
                return Run(path, config, rundir.read_jsonl(path / rundir.METRICS), summary)
        checkpoint = None
        if (path / rundir.CHECKPOINT).exists():
            checkpoint = rundir.load_checkpoint(path / rundir.CHECKPOINT)
            # compared as Configs, so a config section added since then takes its default
            if config_from_dict(checkpoint.get("config") or {}) != config:
                raise RunDirError(
                    f"the checkpoint in {path} was written with another config.yaml; restore "
                    "the original config.yaml or start a new run"
                )
        with _isolated_rng(config):
            return _fit(config, path, checkpoint)


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in old:
        if isinstance(old[key], dict) and isinstance(new.get(key), dict):
            keys += _diff(old[key], new[key], f"{prefix}{key}.")
        elif old[key] != new.get(key):
            keys.append(f"{prefix}{key}: {old[key]!r} -> {new.get(key)!r}")
    return keys


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise RunDirError(f"{path} is corrupt; delete it and resume the run") from None


# ------------------------------------------------------------------------- the loop
def _grow(config: Config, data: TensorData, device: torch.device, path: Path) -> Growth | None:
    """A grown run's members and coupling (colearning.expand.grow) or None for a plain run."""
    if config.expand.source is None:
        return None
    from colearning.expand.grow import prepare_growth  # expand builds on this module

    return prepare_growth(config, data, device, path)


@contextlib.contextmanager
def _isolated_rng(config: Config) -> Iterator[None]:
    """The run owns the global torch RNGs (CPU and its CUDA device) and gives them back.

    Dropout draws from them; the run seeds them itself, so its numbers do not depend on
    what ran before in the same process (sweep workers, notebooks), and the caller's
    streams are as they were afterwards.
    """
    device = resolve_device(config.device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def _restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _fit(config: Config, path: Path, checkpoint: dict[str, Any] | None) -> Run:
    """Train from ``checkpoint`` (None: from scratch) to the last epoch or a clean stop."""
    device = resolve_device(config.device)
    # Re-setting the thread count also turns off MKL's dynamic threading, which would pick
    # fewer threads on a busy machine and so change float summation order between runs.
    torch.set_num_threads(torch.get_num_threads())
    started = time.perf_counter()
    data = load_data(config, device)
    growth = _grow(config, data, device, path)
    ens = growth.trained if growth else build_ensemble(config, data, device)  # trained members
    members = growth.members if growth else ens  # all members: evaluation and checkpoints
    optimizer = build_optimizer(config, ens)
    n, epochs, batch_size = ens.n_members, config.train.epochs, config.train.batch_size
    beta = growth.beta if growth else beta_matrix(config.loss.beta, n,
                                                  beta_bar=config.loss.beta_bar, device=device)
    augment = use_augmentation(config)
    subset = growth.subset if growth else None  # boost: train on these samples only
    n_train = len(subset) if subset is not None else len(data.train_y)
    steps_per_epoch = math.ceil(n_train / batch_size)
    analysis_x = data.test_x[: config.train.analysis_samples]

    start_epoch, start_step, sums = 0, 0, None
    aug_state, elapsed = None, 0.0
    if checkpoint is None:
        torch.manual_seed(derive_seed(config.seed, "torch"))  # CPU and every CUDA device
    else:
        members.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        _restore_rng(checkpoint["rng"])
        start_epoch, start_step = checkpoint["epoch"], checkpoint["step"]
        sums, aug_state = checkpoint.get("sums"), checkpoint["rng"].get("augment")
        elapsed = checkpoint.get("elapsed", 0.0)
    # Drop metric lines written after the checkpoint (a kill between the two writes).
    # Keep exactly what the checkpoint covers: lines written after it (a kill between the two
    # writes) and a torn last line (a kill mid-append) go, or the next append would be glued
    # to the torn tail. From scratch, even the epoch-0 statistics are rewritten.
    records = rundir.read_jsonl(path / rundir.METRICS)[:start_epoch]
    rundir.truncate_jsonl(path / rundir.METRICS, len(records))
    analysis = rundir.read_jsonl(path / rundir.ANALYSIS) if checkpoint is not None else []
    rundir.truncate_jsonl(path / rundir.ANALYSIS,
                          sum(r["epoch"] <= start_epoch for r in analysis))
    if checkpoint is None and config.train.analysis_every:
        rundir.append_jsonl(path / rundir.ANALYSIS, structure_record(members, analysis_x, 0))

    stop = {"signal": None}
    previous = _install_signal_handlers(stop)
    status, detail, log_probs = "running", None, None
    epoch_bar = tqdm(range(start_epoch, epochs), desc="epochs", initial=start_epoch, total=epochs,
                     disable=not config.train.progress, dynamic_ncols=True)
    try:
        for epoch in epoch_bar:
            epoch_start = time.perf_counter()
            lr = learning_rate(config, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            ens.train()
            order = torch.randperm(n_train, generator=generator(config.seed, "order", epoch))
            order = order.to(device)
            aug_gen = generator(config.seed, "augment", epoch, device=device)
            first_step = start_step if epoch == start_epoch else 0
            if first_step and aug_state is not None:
                aug_gen.set_state(aug_state)
            if first_step == 0 or sums is None:
                sums = {"total": torch.zeros(n), "task": torch.zeros(n),
                        "coupling": torch.zeros(n), "count": 0, "skipped": 0}
            step_bar = tqdm(range(first_step, steps_per_epoch), desc=f"epoch {epoch + 1}",
                            leave=False, disable=not config.train.progress, dynamic_ncols=True)
            for step in step_bar:
                index = order[step * batch_size:(step + 1) * batch_size]
                index = index if subset is None else subset[index]
                images, labels = data.train_x[index], data.train_y[index]
                if augment:
                    images = augment_batch(images, aug_gen)
                parts = train_step(config, ens, optimizer, images, labels, beta,
                                   frozen=growth.peers(images) if growth else None)
                if parts is None:
                    if config.train.on_nonfinite == "skip":
                        sums["skipped"] += 1
                        continue
                    raise DivergedError(f"diverged at epoch {epoch + 1}, step {step + 1}: "
                                        "non-finite loss or gradient")
                count = len(labels)
                for key in ("total", "task", "coupling"):
                    sums[key] += getattr(parts, key).detach().cpu() * count
                sums["count"] += count
                if step % 10 == 0:
                    step_bar.set_postfix(loss=f"{float(parts.total.detach().mean()):.3f}")
                if stop["signal"] is not None:
                    _save_checkpoint(path, config, members, optimizer, epoch, step + 1, sums,
                                     aug_gen.get_state(), elapsed + time.perf_counter() - started)
                    raise Interrupted(stop["signal"])
            step_bar.close()
            if not all_finite(list(ens.parameters())):
                raise DivergedError(f"diverged at epoch {epoch + 1}: non-finite parameters")

            train_seconds = time.perf_counter() - epoch_start
            log_probs = predict(members, data.test_x, config.train.eval_batch_size)
            record = _epoch_record(epoch, lr, sums, log_probs, data.test_y.cpu(), train_seconds)
            if data.val_x is not None:  # for selection (best epoch, beta*): never the test set
                record.update(evaluate_log_probs(
                    predict(members, data.val_x, config.train.eval_batch_size),
                    data.val_y.cpu(), prefix="val"))
            every = config.train.analysis_every
            if (every and (epoch + 1) % every == 0) or epoch + 1 == epochs:
                structure = structure_record(members, analysis_x, epoch + 1)
                _mark_dead_layers(record, structure)
                rundir.append_jsonl(path / rundir.ANALYSIS, structure)
            record["time/epoch_seconds"] = time.perf_counter() - epoch_start
            records.append(record)
            rundir.append_jsonl(path / rundir.METRICS, record)
            every = config.train.save_probs_every
            if every and (epoch + 1) % every == 0:
                (path / "probs").mkdir(exist_ok=True)
                rundir.atomic_savez(path / "probs" / f"epoch_{epoch + 1}.npz",
                                    log_probs=log_probs.numpy())
            _save_checkpoint(path, config, members, optimizer, epoch + 1, 0, None, None,
                             elapsed + time.perf_counter() - started)
            epoch_bar.set_postfix(loss=f"{sum(record['train/loss_total'][-n:]) / n:.3f}",
                                  acc=f"{record['test/ensemble_accuracy_mean']:.3f}")
            if stop["signal"] is not None:
                raise Interrupted(stop["signal"])
        status = "finished"
    except DivergedError as error:
        status, detail = "diverged", str(error)
    except Interrupted as error:
        status, detail = "interrupted", f"stopped by {error}"
    finally:
        epoch_bar.close()
        _restore_signal_handlers(previous)

    if log_probs is None and status == "finished":  # killed after the last checkpoint
        log_probs = predict(members, data.test_x, config.train.eval_batch_size)
    if log_probs is not None:
        rundir.atomic_savez(path / rundir.PREDICTIONS, log_probs=log_probs.numpy(),
                            labels=data.test_y.cpu().numpy(), test_indices=data.test_indices)
    wall = elapsed + time.perf_counter() - started
    summary = _summary(records, status, detail, wall)
    rundir.atomic_write_json(path / rundir.SUMMARY, summary)
    run = Run(path, config, records, summary)
    if status == "interrupted":
        raise Interrupted(stop["signal"])
    return run


def _epoch_record(epoch: int, lr: float, sums: dict[str, Any], log_probs: torch.Tensor,
                  labels: torch.Tensor, train_seconds: float) -> dict[str, Any]:
    record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
    untrained = [None] * (log_probs.shape[0] - len(sums["total"]))  # frozen come first
    for key in ("total", "task", "coupling"):
        # No step taken (all skipped as non-finite): the loss is unknown, NaN (null in
        # metrics.jsonl), never a made-up 0.
        mean = sums[key] / sums["count"] if sums["count"] else torch.full_like(sums[key], math.nan)
        record[f"train/loss_{key}"] = untrained + mean.tolist()
    record["train/skipped_steps"] = sums["skipped"]
    if not sums["count"]:
        record["train/note"] = (f"every step of epoch {epoch + 1} was skipped (non-finite loss "
                                "or gradient): no training loss, weights unchanged")
        tqdm.write(f"colearn: warning: {record['train/note']}", file=sys.stderr)
    record.update(evaluate_log_probs(log_probs, labels))
    record["time/train_seconds"] = train_seconds
    return record


def _mark_dead_layers(record: dict[str, Any], structure: dict[str, Any]) -> None:
    """Add each member's all-zero ReLU layers to the record; such a member is collapsed."""
    dead = [[layer for layer, stats in member["activation"].items() if stats["dead"]]
            for member in structure["members"]]
    record["test/member_dead_layers"] = dead
    record["test/member_collapsed"] = [
        bool(collapsed or layers)
        for collapsed, layers in zip(record["test/member_collapsed"], dead, strict=True)
    ]


def _summary(records: list[dict[str, Any]], status: str, detail: str | None,
             wall: float) -> dict[str, Any]:
    summary: dict[str, Any] = dict(records[-1]) if records else {}
    summary["status"] = status
    if detail:
        summary["status_detail"] = detail
    summary["epochs_completed"] = len(records)
    summary["wall_seconds"] = wall
    collapsed = summary.get("test/member_collapsed", [])
    summary["collapsed_members"] = [i for i, c in enumerate(collapsed) if c]
    return summary


def _save_checkpoint(path: Path, config: Config, ens: torch.nn.Module,
                     optimizer: torch.optim.Optimizer,
                     epoch: int, step: int, sums: dict[str, Any] | None,
                     aug_state: torch.Tensor | None, elapsed: float) -> None:
    rundir.atomic_torch_save(path / rundir.CHECKPOINT, {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,  # position of the next step to run: (epoch, step), 0-based
        "step": step,
        "model": ens.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "augment": None if aug_state is None else aug_state.cpu()},
        "sums": sums,
        "elapsed": elapsed,
        "config": config.to_dict(),
    })


def _install_signal_handlers(stop: dict[str, Any]) -> dict[int, Any]:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and stops."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            def handler(received: int, _frame: object) -> None:
                stop["signal"] = received

            previous[signum] = signal.signal(signum, handler)
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def load_run(run_dir: str | Path) -> Run:
    """A run directory's config, metrics and summary (for analysis; never retrains)."""
    path = rundir.require_run_dir(run_dir)
    config = config_from_dict(read_yaml(path / rundir.CONFIG))
    summary_path = path / rundir.SUMMARY
    summary = _read_json(summary_path) if summary_path.exists() else {"status": "running"}
    return Run(path, config, rundir.read_jsonl(path / rundir.METRICS), summary)

"""What is timed: one training step per strategy (the trainer's own step for the engine's
strategies, a loop over separate modules for the baseline) and one epoch of the trainer, on
random CIFAR-shaped data."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from colearning.bench.build import bench_config, build_ensemble, make_sgd, uses_channels_last
from colearning.bench.device import peak_memory_mib, reset_peak_memory, synchronize
from colearning.bench.records import (
    BASELINE,
    BATCH_SIZES,
    BETA_BAR,
    CIFAR_TEST,
    CIFAR_TRAIN,
    EpochResult,
    Settings,
    Workload,
)
from colearning.config import Config, LossConfig
from colearning.couplings import coupling_matrix
from colearning.evaluation import evaluate_log_probs
from colearning.losses import coupled_loss


# ------------------------------------------------------------------------- one step
def make_step(workload: Workload, settings: Settings, device: torch.device
              ) -> tuple[Callable[[], torch.Tensor], str]:
    """A zero-argument training step for ``workload`` and the strategy it resolves to.

    The step returns the per-member loss [N] (not synchronized). Its batch is fixed random
    images in [0, 1] and labels, already on the device.
    """
    config = bench_config(workload, settings)
    n, batch = workload.n_members, workload.batch_size
    gen = torch.Generator().manual_seed(settings.seed)
    images = torch.rand(batch, 3, settings.image_size, settings.image_size, generator=gen)
    labels = torch.randint(0, settings.num_classes, (batch,), generator=gen)
    images, labels = images.to(device), labels.to(device)
    channels_last = uses_channels_last(settings, device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    beta = coupling_matrix(LossConfig(beta_bar=BETA_BAR), n).to(device=device,
                                                               dtype=torch.float32)
    autocast = _autocast(settings, device)

    if workload.strategy == BASELINE:
        # Built on the CPU so that only the members' copies count in the device's memory.
        ens = build_ensemble(workload, settings, torch.device("cpu"))
        members = [ens.member(i).train().to(device) for i in range(n)]
        del ens
        if channels_last:
            members = [m.to(memory_format=torch.channels_last) for m in members]
        optimizers = [make_sgd(m.parameters(), config, settings.sgd) for m in members]
        runs = [_compiled(m, settings) for m in members]

        def step() -> torch.Tensor:
            with autocast:
                logits = torch.stack([run(images) for run in runs])
            loss = coupled_loss(logits, labels, beta).total
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            for optimizer in optimizers:
                optimizer.step()
            return loss.detach()

        return step, BASELINE

    # The engine: the trainer's own step (colearning.training.step.Pack.step: forward, the
    # coupled loss, backward, the on-device finiteness mask and StackedSGD) on one batch.
    pack = _one_cell_pack(config, settings, device, train_size=batch, test_size=batch)
    pack.start_epoch(0, 0)

    def engine_step() -> torch.Tensor:
        return pack.step(0).total.detach()

    return engine_step, pack.trained.resolved_strategy(device)


def _autocast(settings: Settings, device: torch.device) -> contextlib.AbstractContextManager:
    if not settings.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _compiled(module: nn.Module, settings: Settings) -> Callable[[torch.Tensor], torch.Tensor]:
    if settings.compile is None:
        return module
    return torch.compile(module, mode=None if settings.compile == "default" else settings.compile)


# ------------------------------------------------------------------------- the trainer's pack
def _one_cell_pack(config: Config, settings: Settings, device: torch.device, *,
                   train_size: int, test_size: int) -> Any:
    """The trainer's pack of one cell on random CIFAR-shaped data (see measure_epoch)."""
    from colearning.data import RawDataset
    from colearning.training.data import cell_data, make_pool
    from colearning.training.loop import Cell, Pack
    from colearning.training.plan import plain_plan
    from colearning.training.setup import build_members

    train_x, train_y, test_x, test_y = synthetic_cifar(train_size, test_size, settings.seed,
                                                       settings.image_size, settings.num_classes)
    raw = RawDataset(train_x, train_y, test_x, test_y,
                     [str(c) for c in range(settings.num_classes)])
    pool = make_pool(raw, device)
    plan = plain_plan(config, build_members(config, pool, device))
    return Pack([Cell(config, Path("."), cell_data(config, raw, device), plan)], pool, device)


def synthetic_cifar(train_size: int = CIFAR_TRAIN, test_size: int = CIFAR_TEST,
                    seed: int = 0, image_size: int = 32, num_classes: int = 10
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random uint8 images [n, 3, S, S] and labels [n], CIFAR-10's shapes and types."""
    rng = np.random.default_rng(seed)
    shape = (3, image_size, image_size)
    train_x = rng.integers(0, 256, (train_size, *shape), dtype=np.uint8)
    test_x = rng.integers(0, 256, (test_size, *shape), dtype=np.uint8)
    return (train_x, rng.integers(0, num_classes, train_size),
            test_x, rng.integers(0, num_classes, test_size))


# ------------------------------------------------------------------------- one epoch
def measure_epoch(model: str, n_members: int, device: torch.device, settings: Settings, *,
                  strategy: str = "auto", batch_size: int | None = None,
                  train_size: int = CIFAR_TRAIN, test_size: int = CIFAR_TEST,
                  eval_batch_size: int | None = None, warmup_steps: int = 2) -> EpochResult:
    """One epoch of the trainer itself (its pack of one cell, its step, its evaluation),
    timed end to end.

    ``warmup_steps`` training steps and one evaluation run first, untimed (they allocate,
    autotune and compile); the timed epoch then starts from the images as uint8 arrays in
    host memory, as a loaded dataset would be. ``settings.bf16`` and ``settings.compile``
    are the trainer's train.precision and train.compile.
    """
    from colearning.training.loop import Pack

    batch_size = batch_size or BATCH_SIZES.get(model, 128)
    workload = Workload(model, n_members, batch_size, strategy)
    config = bench_config(workload, settings)
    config.train.eval_batch_size = eval_batch_size or config.train.eval_batch_size

    def epoch_pack() -> Pack:
        pack = _one_cell_pack(config, settings, device, train_size=train_size,
                              test_size=test_size)
        pack.start_epoch(0, 0)
        return pack

    warm = epoch_pack()  # warm-up: allocations, autotuning, compilation
    for step in range(min(warmup_steps, warm.steps)):
        warm.step(step)
    warm.predict(warm.test_index)
    del warm
    synchronize(device)
    reset_peak_memory(device)

    started = time.perf_counter()
    pack = epoch_pack()
    synchronize(device)
    data_done = time.perf_counter()
    for step in range(pack.steps):
        pack.step(step)
    skipped = int(pack.sums["skipped"].sum())
    synchronize(device)
    train_done = time.perf_counter()
    log_probs = pack.predict(pack.test_index)[0]  # its one cell
    metrics = evaluate_log_probs(log_probs, pack.pool.labels[pack.test_index[0]].cpu())
    eval_done = time.perf_counter()

    train_seconds, eval_seconds = train_done - data_done, eval_done - train_done
    return EpochResult(
        model=model, n_members=n_members, batch_size=batch_size, strategy=strategy,
        resolved_strategy=pack.trained.resolved_strategy(device), train_images=train_size,
        test_images=test_size, steps=pack.steps, augment=pack.augment,
        data_seconds=data_done - started, train_seconds=train_seconds,
        eval_seconds=eval_seconds, epoch_seconds=train_seconds + eval_seconds,
        total_seconds=eval_done - started,
        member_images_per_second=n_members * train_size / train_seconds,
        skipped_steps=skipped, test_accuracy=metrics["test/ensemble_accuracy_mean"],
        peak_memory_mib=round(peak_memory_mib(device), 1),
    )

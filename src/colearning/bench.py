"""Training throughput of co-learning ensembles, and one timed epoch: ``colearn bench``.

    rows = measure_group([Workload("lenet5", 10, 512, s) for s in ("baseline", "grouped")],
                         device, settings)
    print(format_table(report(rows, [], device, settings)))

A *step* is one forward of all N members on one shared batch, the coupled loss (beta_bar=-1,
beta = beta_bar / N), its backward and one SGD step (lr 0.01, momentum 0.9, weight decay
5e-4): for the engine strategies the trainer's own step (``colearning.training.loop.Pack``,
with its on-device finiteness mask and ``StackedSGD``). Strategies:

- ``baseline``: N separate nn.Modules (each a ``build_model`` with the same weights as the
  engine's members, channels-last on CPU), each with its own ``torch.optim.SGD``, run one
  after another in a Python loop, logits stacked into the same ``coupled_loss``: what
  ensemble libraries that loop over members do.
- ``loop``, ``grouped``, ``vmap``, ``auto``: the :class:`~colearning.engine.Ensemble`
  strategies, one SGD over the stacked parameters.

Timing is made to be repeatable: the strategies of one (model, N) are timed interleaved, a
step of each in turn, until each has ``--steps`` steps and ``--min-time`` seconds of them;
rows give the median with min and max, and a row whose spread (max - min) / median exceeds
25% is marked unsteady. ``auto`` is not timed again when it resolves to a timed strategy.
GFLOP/s are also given as a fraction of this device's matmul peak, measured at the start
(fp32 and bf16).

Units: ``images_per_second`` = B / t, training images per second (every member sees each
image); ``member_images_per_second`` = N * B / t, the images summed over members (the work
done); ``gflops_per_second`` = FLOPs counted with ``torch.utils.flop_counter`` (matmuls and
convolutions of one member's forward and backward, times N) / t. Medians over timed steps
after warm-up steps; on CUDA each step is timed with CUDA events.
Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and the process's peak resident
set on CPU (Linux VmHWM, reset before each configuration).

The epoch (:func:`measure_epoch`) runs the trainer itself end to end on synthetic
CIFAR-shaped uint8 data (no dataset file needed): the data pool uploaded to the device, one
epoch of the trainer's steps on shuffled batches (augmented when the trainer would augment,
VGG-9), then its batched evaluation on the test images and ``evaluate_log_probs``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from colearning import __version__
from colearning.config import Config, config_from_dict
from colearning.engine import Ensemble
from colearning.errors import ConfigError
from colearning.evaluation import evaluate_log_probs
from colearning.losses import beta_matrix, coupled_loss
from colearning.models import MODELS, build_model

BASELINE = "baseline"
STRATEGIES = (BASELINE, "loop", "grouped", "vmap", "auto")
DEFAULT_STRATEGIES = (BASELINE, "loop", "grouped", "vmap")
BATCH_SIZES = {"lenet5": 512, "vgg9": 256}  # the paper's batch sizes (Supplementary)
BETA_BAR = -1.0  # the paper's best size-normalized coupling; beta = beta_bar / N
SGD_IMPLEMENTATIONS = ("default", "foreach", "fused")
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000  # images in one CIFAR-10 epoch and test set
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Workload:
    """One timed configuration: ``n_members`` copies of ``model`` at ``batch_size``."""

    model: str
    n_members: int
    batch_size: int
    strategy: str


@dataclass(frozen=True)
class Settings:
    """How every configuration is timed (the same for all rows of one report)."""

    steps: int = 10  # timed steps per configuration (median reported)
    warmup: int = 2  # untimed steps first (allocator, autotuning, compilation)
    min_time: float = 2.0  # seconds of timed steps per configuration at least
    time_limit: float = 60.0  # seconds of timed steps per configuration before stopping early
    bf16: bool = False  # torch.autocast(bfloat16) around the forward
    compile: str | None = None  # torch.compile mode ("default", "reduce-overhead", ...)
    channels_last: bool | None = None  # channels-last images; None: on CPU only
    sgd: str = "default"  # SGD implementation: default, foreach, fused
    image_size: int = 32
    num_classes: int = 10
    seed: int = 0


@dataclass
class StepResult:
    """Throughput of one :class:`Workload` (None where the configuration failed)."""

    model: str
    n_members: int
    batch_size: int
    strategy: str
    resolved_strategy: str  # what ran: auto resolved, baseline as is
    default: bool  # True when this is the strategy ``auto`` picks on this device
    steps_timed: int = 0
    step_seconds: list[float] = field(default_factory=list)
    median_step_seconds: float | None = None
    min_step_seconds: float | None = None
    max_step_seconds: float | None = None
    spread: float | None = None  # (max - min) / median of the timed steps
    unsteady: bool = False  # spread > UNSTEADY_SPREAD: too noisy to trust
    steps_per_second: float | None = None
    images_per_second: float | None = None  # B / t
    member_images_per_second: float | None = None  # N * B / t
    speedup_vs_baseline: float | None = None  # baseline median step time / this one's
    flops_per_step: float | None = None  # counted, forward + backward of N members
    gflops_per_second: float | None = None
    fraction_of_peak: float | None = None  # GFLOP/s / the device's measured matmul peak
    peak_memory_mib: float | None = None
    final_loss: float | None = None  # mean member loss after the last step (a sanity check)
    error: str | None = None


@dataclass
class EpochResult:
    """One CIFAR-sized epoch end to end: data upload, training, evaluation."""

    model: str
    n_members: int
    batch_size: int
    strategy: str
    resolved_strategy: str
    train_images: int
    test_images: int
    steps: int
    augment: bool
    data_seconds: float  # uint8 -> float images on the device
    train_seconds: float  # all training steps, including batching and augmentation
    eval_seconds: float  # predict on the test images + evaluate_log_probs
    epoch_seconds: float  # train + eval (the figure to compare with the targets)
    total_seconds: float  # data + train + eval
    member_images_per_second: float  # N * train_images / train_seconds
    skipped_steps: int
    test_accuracy: float  # ensemble (mean) accuracy on the random labels: ~1/C, a sanity check
    peak_memory_mib: float | None = None


# ------------------------------------------------------------------------- device
def device_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: processor/GPU name, threads, versions."""
    info: dict[str, Any] = {
        "type": device.type,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "colearning_version": __version__,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda_version=torch.version.cuda,
                    cudnn_version=torch.backends.cudnn.version())
    return info


def device_name(info: dict[str, Any]) -> str:
    """One line: 'cuda: NVIDIA H100 80GB HBM3' or 'cpu: Intel Xeon (2 threads)'."""
    if info["type"] == "cuda":
        return f"cuda: {info['gpu']} ({info['gpu_memory_gib']} GiB)"
    return f"cpu: {info['cpu']} ({info['torch_threads']} threads)"


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------- memory
def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA allocator statistics, or the process's VmHWM on Linux."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def peak_memory_mib(device: torch.device) -> float:
    """Peak since :func:`reset_peak_memory`: CUDA max allocated, or peak resident set (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    # ru_maxrss (KiB on Linux) cannot be reset: the process's peak so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------- FLOPs
@functools.lru_cache(maxsize=64)
def count_flops(model: str, batch_size: int = 1, *, train: bool = True, image_size: int = 32,
                num_classes: int = 10) -> int:
    """Matmul/convolution FLOPs of one member on a batch [B, 3, S, S]: forward (+ backward).

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (shapes only,
    nothing is computed), 2 FLOPs per multiply-add; elementwise ops are not counted. The
    backward computes no gradient for the input images, as in training.

    >>> count_flops("lenet5", train=False)  # conv 705,600 + 480,000 + 96,000; FC 21,840
    1303440
    """
    member = build_model(model, num_classes=num_classes, image_size=image_size).to("meta")
    x = torch.empty(batch_size, 3, image_size, image_size, device="meta")
    with FlopCounterMode(display=False) as counter:
        out = member(x)
        if train:
            out.sum().backward()
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------- configurations
def bench_config(workload: Workload, settings: Settings) -> Config:
    """The run config a workload corresponds to (paper optimizer, beta_bar = -1); bench's
    ``--bf16`` and ``--compile`` are the trainer's train.precision and train.compile."""
    strategy = "loop" if workload.strategy == BASELINE else workload.strategy
    return config_from_dict({
        "seed": settings.seed,
        "model": {"name": workload.model},
        "ensemble": {"n_members": workload.n_members, "strategy": strategy},
        "loss": {"beta_bar": BETA_BAR},
        "train": {"batch_size": workload.batch_size, "progress": False,
                  "precision": "bf16" if settings.bf16 else "fp32",
                  "compile": settings.compile or "off"},
    })


def _build_ensemble(workload: Workload, settings: Settings, device: torch.device) -> Ensemble:
    strategy = "loop" if workload.strategy == BASELINE else workload.strategy

    def factory() -> nn.Module:
        return build_model(workload.model, num_classes=settings.num_classes,
                           image_size=settings.image_size)

    return Ensemble(factory, workload.n_members, strategy, seed=settings.seed).to(device)


def _sgd(params: Any, config: Config, implementation: str) -> torch.optim.Optimizer:
    options = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    if implementation not in options:
        raise ConfigError(f"unknown SGD implementation {implementation!r}; valid: "
                          f"{', '.join(SGD_IMPLEMENTATIONS)}")
    optim = config.optim
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum,
                           weight_decay=optim.weight_decay, **options[implementation])


def _channels_last(settings: Settings, device: torch.device) -> bool:
    return device.type == "cpu" if settings.channels_last is None else settings.channels_last


def _autocast(settings: Settings, device: torch.device) -> contextlib.AbstractContextManager:
    if not settings.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


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
    channels_last = _channels_last(settings, device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    beta = beta_matrix(None, n, beta_bar=BETA_BAR, device=device)
    autocast = _autocast(settings, device)

    if workload.strategy == BASELINE:
        # Built on the CPU so that only the members' copies count in the device's memory.
        ens = _build_ensemble(workload, settings, torch.device("cpu"))
        members = [ens.member(i).train().to(device) for i in range(n)]
        del ens
        if channels_last:
            members = [m.to(memory_format=torch.channels_last) for m in members]
        optimizers = [_sgd(m.parameters(), config, settings.sgd) for m in members]
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

    # The engine: the trainer's own step (colearning.training.loop.Pack.step: forward, the
    # coupled loss, backward, the on-device finiteness mask and StackedSGD) on one batch.
    pack = _one_cell_pack(config, settings, device, train_size=batch, test_size=batch)
    pack.start_epoch(0, 0)

    def engine_step() -> torch.Tensor:
        return pack.step(0).total.detach()

    return engine_step, pack.trained.resolved_strategy(device)


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


def _compiled(module: nn.Module, settings: Settings) -> Callable[[torch.Tensor], torch.Tensor]:
    if settings.compile is None:
        return module
    return torch.compile(module, mode=None if settings.compile == "default" else settings.compile)


# ------------------------------------------------------------------------- timing
def _out_of_memory(error: BaseException) -> str | None:
    """The one-line message when ``error`` is an allocation failure, else None."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, torch.cuda.OutOfMemoryError) or any(
            text in message for text in ("out of memory", "can't allocate memory")):
        return f"out of memory: {message[:120]}"
    return None


def measure_group(items: Sequence[Workload], device: torch.device, settings: Settings,
                  default_strategy: str | None = None,
                  peak: dict[str, float] | None = None) -> list[StepResult]:
    """Time the strategies of one (model, N) interleaved: one step of each in turn, until
    each has ``settings.steps`` timed steps and ``settings.min_time`` seconds of them (or
    ``settings.time_limit`` seconds). Interleaving spreads a busy neighbour or a clock
    change over all strategies instead of one. ``auto`` is timed only when it resolves to a
    strategy not in ``items`` (else its row repeats that strategy's timings). A failure
    (out of memory) is recorded in its row, not raised."""
    results = {w: StepResult(w.model, w.n_members, w.batch_size, w.strategy, w.strategy,
                             default=False) for w in items}
    steps: dict[Workload, Callable[[], torch.Tensor]] = {}
    for workload in items:
        result = results[workload]
        reset_peak_memory(device)
        try:
            step, resolved = make_step(workload, settings, device)
            result.resolved_strategy = resolved
            result.default = resolved == default_strategy and workload.strategy != BASELINE
            for _ in range(max(settings.warmup, 3 if settings.compile else 0)):
                step()
            synchronize(device)
            steps[workload] = step
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            result.error = _out_of_memory(error)
            if result.error is None:
                raise
        result.peak_memory_mib = round(peak_memory_mib(device), 1)
    timed = {w: s for w, s in steps.items()
             if not (w.strategy == "auto" and any(o.strategy == results[w].resolved_strategy
                                                   for o in steps if o is not w))}
    times: dict[Workload, list[float]] = {w: [] for w in timed}
    losses: dict[Workload, torch.Tensor] = {}

    def wanted(w: Workload) -> bool:
        done = times[w]
        return (len(done) < settings.steps or sum(done) < settings.min_time) \
            and sum(done) < settings.time_limit

    while any(wanted(w) for w in timed):
        for workload, step in timed.items():
            if wanted(workload):
                seconds, losses[workload] = _timed_call(step, device)
                times[workload].append(seconds)
    for workload, result in results.items():
        source = workload if workload in times else next(
            (w for w in times if w.strategy == result.resolved_strategy), None)
        if source is None or not times[source]:
            continue
        _fill(result, times[source], losses[source], settings, peak)
    return [results[w] for w in items]


def _timed_call(step: Callable[[], torch.Tensor], device: torch.device
                ) -> tuple[float, torch.Tensor]:
    """Seconds of one call of ``step`` (CUDA events on a GPU) and its loss."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loss = step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000, loss
    started = time.perf_counter()
    loss = step()
    return time.perf_counter() - started, loss


# A configuration whose slowest timed step is this much slower than its fastest, relative to
# the median, is marked unsteady (``~`` in the table): its figures are not to be trusted.
UNSTEADY_SPREAD = 0.25


def _fill(result: StepResult, times: list[float], loss: torch.Tensor, settings: Settings,
          peak: dict[str, float] | None) -> None:
    median = statistics.median(times)
    flops = result.n_members * count_flops(result.model, result.batch_size,
                                           image_size=settings.image_size,
                                           num_classes=settings.num_classes)
    result.steps_timed = len(times)
    result.step_seconds = [round(t, 6) for t in times]
    result.median_step_seconds = median
    result.min_step_seconds, result.max_step_seconds = min(times), max(times)
    result.spread = (max(times) - min(times)) / median
    result.unsteady = result.spread > UNSTEADY_SPREAD
    result.steps_per_second = 1 / median
    result.images_per_second = result.batch_size / median
    result.member_images_per_second = result.n_members * result.batch_size / median
    result.flops_per_step = float(flops)
    result.gflops_per_second = flops / median / 1e9
    reference = (peak or {}).get("bf16" if settings.bf16 else "fp32")
    if reference:
        result.fraction_of_peak = result.gflops_per_second / reference
    result.final_loss = float(loss.float().mean())


def measure_peak(device: torch.device, seconds: float = 0.5) -> dict[str, float]:
    """The device's matmul peak in GFLOP/s, fp32 and bf16, from square matmuls timed for
    about ``seconds`` each: what the steps' GFLOP/s are compared with (a fraction of what
    this device does at its best, not of a datasheet number). The size grows from 256 while
    one product takes under a tenth of the budget (to 2048 on CPUs, 8192 on GPUs), so a
    device without native bf16 (hundreds of times slower) is measured quickly too."""
    largest = 2048 if device.type == "cpu" else 8192
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        size = 256
        while True:
            a = torch.randn(size, size, device=device).to(dtype)
            b = torch.randn(size, size, device=device).to(dtype)
            synchronize(device)
            started = time.perf_counter()
            a @ b
            synchronize(device)
            once = time.perf_counter() - started
            if once > seconds / 10 or size >= largest:
                break
            size *= 2
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or count == 0:
            a @ b
            count += 1
            if device.type == "cuda" and count % 8 == 0:
                synchronize(device)
        synchronize(device)
        out[name] = 2 * size ** 3 * count / (time.perf_counter() - started) / 1e9
    return out


def fill_speedups(results: Sequence[StepResult]) -> None:
    """Set ``speedup_vs_baseline`` of every row that has a baseline row of the same size."""
    baselines = {(r.model, r.n_members, r.batch_size): r.median_step_seconds
                 for r in results if r.strategy == BASELINE and r.median_step_seconds}
    for r in results:
        base = baselines.get((r.model, r.n_members, r.batch_size))
        if base and r.median_step_seconds:
            r.speedup_vs_baseline = base / r.median_step_seconds


# ------------------------------------------------------------------------- one epoch
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
    log_probs = pack.predict(pack.test_index)
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


# ------------------------------------------------------------------------- equivalence
def compare_with_baseline(workload: Workload, device: torch.device, settings: Settings
                          ) -> dict[str, float]:
    """Largest differences between one training step of ``workload`` and of the baseline.

    Both start from the same weights and see the same batch. Returns the largest absolute
    difference of the per-member losses, of the gradients and of the parameters after the
    SGD step, and the largest gradient magnitude for scale.
    """
    config = bench_config(workload, settings)
    n = workload.n_members
    gen = torch.Generator().manual_seed(settings.seed)
    images = torch.rand(workload.batch_size, 3, settings.image_size, settings.image_size,
                        generator=gen).to(device)
    labels = torch.randint(0, settings.num_classes, (workload.batch_size,),
                           generator=gen).to(device)
    beta = beta_matrix(None, n, beta_bar=BETA_BAR, device=device)
    ens = _build_ensemble(workload, settings, device)
    members = [ens.member(i).train() for i in range(n)]
    member_images = images
    if device.type == "cpu" and ens.resolved_strategy(device) in ("loop", "grouped"):
        # The engine's CPU layout: max-pooling can break near-ties differently in another.
        member_images = images.contiguous(memory_format=torch.channels_last)

    optimizer = _sgd(ens.parameters(), config, settings.sgd)
    loss = coupled_loss(ens(images), labels, beta).total
    optimizer.zero_grad()
    loss.sum().backward()
    grads = {name: p.grad.clone() for name, p in ens.stacked_parameters().items()}
    optimizer.step()

    optimizers = [_sgd(m.parameters(), config, settings.sgd) for m in members]
    want_loss = coupled_loss(torch.stack([m(member_images) for m in members]), labels,
                             beta).total
    want_loss.sum().backward()
    for o in optimizers:
        o.step()
    differences = {"loss": float((loss - want_loss).detach().abs().max()), "gradient": 0.0,
                   "parameter": 0.0, "gradient_scale": 0.0}
    for name, stacked in ens.stacked_parameters().items():
        want_grad = torch.stack([dict(m.named_parameters())[name].grad for m in members])
        want_param = torch.stack([dict(m.named_parameters())[name].detach() for m in members])
        differences["gradient"] = max(differences["gradient"],
                                      float((grads[name] - want_grad).abs().max()))
        differences["parameter"] = max(differences["parameter"],
                                       float((stacked.detach() - want_param).abs().max()))
        differences["gradient_scale"] = max(differences["gradient_scale"],
                                            float(want_grad.abs().max()))
    return differences


# ------------------------------------------------------------------------- a whole run
def workloads(models: Sequence[str], members: Sequence[int], strategies: Sequence[str], *,
              batch_size: int | None = None, skip: Sequence[tuple[str, int]] = ()
              ) -> list[Workload]:
    """Every (model, N, strategy) to time, baseline first within each (model, N)."""
    for model in models:
        MODELS.get(model)  # an unknown name lists the valid ones
    for strategy in strategies:
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown bench strategy {strategy!r}; valid: "
                              f"{', '.join(STRATEGIES)}")
    for n in members:
        if n < 1:
            raise ConfigError(f"ensemble sizes must be >= 1, got {n}")
    ordered = sorted(dict.fromkeys(strategies), key=lambda s: s != BASELINE)
    skipped = set(skip)
    return [Workload(model, n, batch_size or BATCH_SIZES.get(model, 128), strategy)
            for model in models for n in members if (model, n) not in skipped
            for strategy in ordered]


def run(items: Sequence[Workload], device: torch.device, settings: Settings, *,
        epochs: Sequence[tuple[str, int]] = (),
        epoch_sizes: tuple[int, int] = (CIFAR_TRAIN, CIFAR_TEST),
        epoch_batch_size: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Time every workload, then one epoch per (model, N) in ``epochs``; the JSON report."""
    from tqdm.auto import tqdm

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # conv algorithms autotuned in the warm-up
    # Re-setting the thread count turns off MKL's dynamic threading (as the trainer does).
    torch.set_num_threads(torch.get_num_threads())
    rows: list[StepResult] = []
    epoch_rows: list[EpochResult] = []
    peak = measure_peak(device)
    groups: dict[tuple[str, int, int], list[Workload]] = {}
    for item in items:
        groups.setdefault((item.model, item.n_members, item.batch_size), []).append(item)
    jobs = [("step", group) for group in groups.values()] + [("epoch", e) for e in epochs]
    bar = tqdm(jobs, desc="bench", disable=not progress, dynamic_ncols=True)
    for kind, job in bar:
        if kind == "step":
            first = job[0]  # type: ignore[index]
            bar.set_postfix_str(f"{first.model} N={first.n_members}")
            default = _default_strategy(first.model, settings.num_classes,
                                        settings.image_size, device.type)
            rows.extend(measure_group(job, device, settings, default, peak))  # type: ignore
        else:
            model, n = job  # type: ignore[misc]
            bar.set_postfix_str(f"epoch {model} N={n}")
            epoch_rows.append(measure_epoch(model, n, device, settings,
                                            batch_size=epoch_batch_size,
                                            train_size=epoch_sizes[0],
                                            test_size=epoch_sizes[1]))
    fill_speedups(rows)
    return report(rows, epoch_rows, device, settings, peak)


@functools.lru_cache(maxsize=16)
def _default_strategy(model: str, num_classes: int, image_size: int, device_type: str) -> str:
    with torch.device("meta"):
        probe = Ensemble(lambda: build_model(model, num_classes=num_classes,
                                             image_size=image_size), 1)
    return probe.resolved_strategy(torch.device(device_type))


def report(rows: Sequence[StepResult], epoch_rows: Sequence[EpochResult],
           device: torch.device, settings: Settings,
           peak: dict[str, float] | None = None) -> dict[str, Any]:
    """The JSON-ready report: device (with its measured matmul peak), settings, one dict per
    step row and per epoch."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": {**device_info(device), "peak_gflops": peak or {}},
        "settings": {**asdict(settings), "beta_bar": BETA_BAR,
                     "channels_last": _channels_last(settings, device),
                     "cudnn_benchmark": device.type == "cuda"},
        "units": {
            "images_per_second": "training images per second (B / step time); every member "
                                 "sees each image",
            "member_images_per_second": "N * B / step time: images summed over members",
            "gflops_per_second": "counted matmul/conv FLOPs of forward + backward / step time",
            "fraction_of_peak": "gflops_per_second / the device's measured matmul peak "
                                "(fp32, or bf16 with --bf16)",
            "peak_memory_mib": "cuda: max allocated; cpu: peak resident set of the process",
        },
        "steps": [asdict(r) for r in rows],
        "epochs": [asdict(r) for r in epoch_rows],
    }


def output_path(out: str | Path) -> Path:
    """Where ``--out`` writes the JSON, checked before any timing: a directory (an existing
    one, or a path ending in /) gets ``bench.json`` inside; the folder must be writable."""
    path = Path(out)
    if str(out).endswith(("/", os.sep)) or path.is_dir():
        path = path / "bench.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot create {path.parent} ({error.strerror}); "
                          "give a writable path") from None
    if path.is_dir() or not os.access(path.parent, os.W_OK):
        raise ConfigError(f"--out {out}: cannot write {path}; give a writable file path")
    return path


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


# ------------------------------------------------------------------------- the table
def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_table(data: dict[str, Any]) -> str:
    """The report as a plain-text table (``*`` marks the strategy ``auto`` picks)."""
    info, settings = data["device"], data["settings"]
    extras = [name for name, on in (("bf16", settings["bf16"]),
                                    (f"compile={settings['compile']}", settings["compile"]),
                                    ("channels-last", settings["channels_last"]),
                                    (f"sgd={settings['sgd']}", settings["sgd"] != "default"))
              if on]
    lines = [f"colearn bench on {device_name(info)}, torch {info['torch_version']}"
             + (f" [{', '.join(extras)}]" if extras else "")]
    header = ("model", "N", "batch", "strategy", "ms/step", "min-max ms", "img/s",
              "member-img/s", "vs base", "GFLOP/s", "of peak", "peak MiB")
    widths = (7, 3, 5, 10, 9, 13, 8, 12, 8, 8, 7, 9)
    lines.append("  ".join(h.rjust(w) if i > 3 or i == 1 else h.ljust(w)
                           for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    for r in data["steps"]:
        name = r["strategy"] + ("*" if r["default"] else "")
        if r["strategy"] == "auto":
            name = f"auto={r['resolved_strategy']}"
        if r["error"]:
            cells = [r["error"]]
        else:
            speedup = r["speedup_vs_baseline"]
            fraction = r.get("fraction_of_peak")
            low, high = 1000 * r["min_step_seconds"], 1000 * r["max_step_seconds"]
            cells = [("~" if r.get("unsteady") else "")
                     + _number(1000 * r["median_step_seconds"], 1), f"{low:.1f}-{high:.1f}",
                     _number(r["images_per_second"]), _number(r["member_images_per_second"]),
                     "-" if speedup is None else f"{speedup:.2f}x",
                     _number(r["gflops_per_second"], 1),
                     "-" if fraction is None else f"{100 * fraction:.0f}%",
                     _number(r["peak_memory_mib"])]
        row = [r["model"].ljust(widths[0]), str(r["n_members"]).rjust(widths[1]),
               str(r["batch_size"]).ljust(widths[2]), name.ljust(widths[3])]
        row += cells if r["error"] else [c.rjust(w) for c, w in zip(cells, widths[4:],
                                                                     strict=True)]
        lines.append("  ".join(row))
    lines.append("* the strategy auto picks here. img/s: training images per second (each seen "
                 "by all N members); member-img/s = N x img/s;")
    lines.append(f"  medians over at least {settings['steps']} timed steps and "
                 f"{settings['min_time']:g} s per row after {settings['warmup']} warm-up, "
                 "strategies interleaved; ~ marks a row whose (max - min) / median exceeds "
                 f"{100 * UNSTEADY_SPREAD:.0f}%;")
    peak = info.get("peak_gflops") or {}
    lines.append("  GFLOP/s from counted matmul/conv FLOPs of forward + backward; 'of peak' "
                 "against this device's measured matmul peak"
                 + (f" ({peak['fp32']:,.1f} GFLOP/s fp32, {peak['bf16']:,.1f} bf16)."
                    if peak else "."))
    for e in data["epochs"]:
        lines.append(
            f"epoch {e['model']} N={e['n_members']} ({e['resolved_strategy']}, batch "
            f"{e['batch_size']}, {e['train_images']:,} + {e['test_images']:,} images"
            f"{', augmented' if e['augment'] else ''}): train {e['train_seconds']:.2f} s + "
            f"eval {e['eval_seconds']:.2f} s = {e['epoch_seconds']:.2f} s "
            f"(+ data upload {e['data_seconds']:.2f} s); "
            f"{_number(e['member_images_per_second'])} member-img/s; peak "
            f"{_number(e['peak_memory_mib'])} MiB")
    return "\n".join(lines)


# ------------------------------------------------------------------------- CLI parsing
def parse_list(text: str, kind: type = str) -> list[Any]:
    """'1,2,10' -> [1, 2, 10]; empty items are dropped."""
    try:
        return [kind(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"expected a comma-separated list of {kind.__name__}, got "
                          f"{text!r}") from None


def parse_pairs(text: str) -> list[tuple[str, int]]:
    """'lenet5:50,vgg9:10' -> [('lenet5', 50), ('vgg9', 10)]."""
    pairs = []
    for item in parse_list(text):
        model, _, n = item.partition(":")
        if not n.isdigit():
            raise ConfigError(f"expected MODEL:N (e.g. lenet5:50), got {item!r}")
        pairs.append((model, int(n)))
    return pairs


QUICK = {"models": ["lenet5"], "members": [1, 2], "batch_size": 32, "steps": 2, "warmup": 1,
         "epochs": [("lenet5", 2)], "epoch_sizes": (256, 128), "time_limit": 10.0,
         "min_time": 0.0}
# Lighter defaults on CPUs, so that a plain `colearn bench --device cpu` takes minutes: a
# VGG-9 step of N=50 members at batch 256 would take minutes and ~25 GB there.
CPU_DEFAULTS = {"steps": 5, "warmup": 1, "time_limit": 10.0, "skip": [("vgg9", 50)]}


def bench(*, models: str | None = None, members: str | None = None,
          strategies: str | None = None, steps: int | None = None, warmup: int | None = None,
          device: str = "auto", epoch: str | None = None, epoch_size: str | None = None,
          skip: str | None = None, batch_size: int | None = None, quick: bool = False,
          time_limit: float | None = None, min_time: float | None = None,
          bf16: bool = False, compile: str | None = None,
          channels_last: bool | None = None, sgd: str = "default", seed: int = 0,
          progress: bool = True) -> dict[str, Any]:
    """``colearn bench`` with its options as given on the command line; returns the report.

    Lists are comma-separated strings ("1,2,10,50"); ``epoch`` and ``skip`` are MODEL:N
    pairs ("lenet5:50"). ``quick`` shrinks everything to a seconds-long smoke run (LeNet-5,
    N in {1, 2}, batch 32, 2 timed steps, a 256 + 128 image epoch) unless given explicitly;
    on CPUs, unset options take ``CPU_DEFAULTS``.
    """
    from colearning.training.setup import resolve_device

    for flag, value, low in (("--steps", steps, 1), ("--warmup", warmup, 0),
                             ("--batch-size", batch_size, 1), ("--time-limit", time_limit, None),
                             ("--min-time", min_time, 0)):
        if value is None:
            continue
        bad = not math.isfinite(value) or (value <= 0 if low is None else value < low)
        if bad:
            limit = "> 0" if low is None else f">= {low}"
            raise ConfigError(f"{flag} must be {limit}, got {value}")
    target = resolve_device(device)
    preset: dict[str, Any] = QUICK if quick else CPU_DEFAULTS if target.type == "cpu" else {}
    model_list = parse_list(models) if models else preset.get("models", list(BATCH_SIZES))
    member_list = parse_list(members, int) if members else preset.get("members", [1, 2, 10, 50])
    strategy_list = parse_list(strategies) if strategies else list(DEFAULT_STRATEGIES)
    epochs = parse_pairs(epoch) if epoch else preset.get("epochs", [])
    sizes = tuple(parse_list(epoch_size, int)) if epoch_size else preset.get(
        "epoch_sizes", (CIFAR_TRAIN, CIFAR_TEST))
    if len(sizes) != 2 or min(sizes) < 1:
        raise ConfigError(f"epoch size must be TRAIN,TEST image counts, got {epoch_size!r}")
    if sgd not in SGD_IMPLEMENTATIONS:
        raise ConfigError(f"unknown SGD implementation {sgd!r}; valid: "
                          f"{', '.join(SGD_IMPLEMENTATIONS)}")
    settings = Settings(
        steps=preset.get("steps", 10) if steps is None else steps,
        warmup=preset.get("warmup", 2) if warmup is None else warmup,
        time_limit=preset.get("time_limit", 60.0) if time_limit is None else time_limit,
        min_time=preset.get("min_time", 2.0) if min_time is None else min_time,
        bf16=bf16, compile=compile, channels_last=channels_last, sgd=sgd, seed=seed)
    batch_size = preset.get("batch_size") if batch_size is None else batch_size
    items = workloads(model_list, member_list, strategy_list, batch_size=batch_size,
                      skip=parse_pairs(skip) if skip is not None else preset.get("skip", ()))
    for model, _ in epochs:
        MODELS.get(model)
    return run(items, target, settings, epochs=epochs,
               epoch_sizes=(int(sizes[0]), int(sizes[1])), epoch_batch_size=batch_size,
               progress=progress)

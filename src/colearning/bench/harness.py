"""The timing harness: the strategies of one (model, N) timed interleaved, their times turned
into rows (median, spread, images/s, GFLOP/s, speedups), and a whole run: which workloads,
every group timed, then the epochs, into one report."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from colearning.bench.device import (
    PeakProbe,
    measure_peak,
    peak_memory_mib,
    reset_peak_memory,
    synchronize,
)
from colearning.bench.output import report
from colearning.bench.probes import make_step, measure_epoch
from colearning.bench.records import (
    BASELINE,
    BATCH_SIZES,
    CIFAR_TEST,
    CIFAR_TRAIN,
    STRATEGIES,
    UNSTEADY_SPREAD,
    EpochResult,
    Settings,
    StepResult,
    Workload,
)
from colearning.engine import Ensemble
from colearning.environment import retain_freed_memory
from colearning.errors import ConfigError
from colearning.models import MODELS, build_model


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


# ------------------------------------------------------------------------- timing
def measure_group(items: Sequence[Workload], device: torch.device, settings: Settings,
                  default_strategy: str | None = None,
                  probe: Callable[[], float] | None = None) -> list[StepResult]:
    """Time the strategies of one (model, N) interleaved: one step of each in turn, until
    each has ``settings.steps`` timed steps and ``settings.min_time`` seconds of them (or
    ``settings.time_limit`` seconds). Interleaving spreads a busy neighbour or a clock
    change over all strategies instead of one. ``auto`` is timed only when it resolves to a
    strategy not in ``items`` (else its row repeats that strategy's timings). A failure
    (out of memory) is recorded in its row, not raised.

    ``probe`` (a :class:`~colearning.bench.device.PeakProbe`: GFLOP/s of one matmul burst)
    runs once per round, between the steps, so each step is compared with the peak
    measured beside it: a row's ``fraction_of_peak`` is the median over rounds of (its
    GFLOP/s in that round) / (the probe's in that round)."""
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
    beside: dict[Workload, list[float]] = {w: [] for w in timed}  # the probe, per round
    losses: dict[Workload, torch.Tensor] = {}

    def wanted(w: Workload) -> bool:
        done = times[w]
        return (len(done) < settings.steps or sum(done) < settings.min_time) \
            and sum(done) < settings.time_limit

    while any(wanted(w) for w in timed):
        stepped = [w for w in timed if wanted(w)]
        for workload in stepped:
            seconds, losses[workload] = _timed_call(timed[workload], device)
            times[workload].append(seconds)
        if probe is not None:
            rate = probe()
            for workload in stepped:
                beside[workload].append(rate)
    for workload, result in results.items():
        source = workload if workload in times else next(
            (w for w in times if w.strategy == result.resolved_strategy), None)
        if source is None or not times[source]:
            continue
        _fill(result, times[source], losses[source], settings, beside[source])
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


def _out_of_memory(error: BaseException) -> str | None:
    """The one-line message when ``error`` is an allocation failure, else None."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, torch.cuda.OutOfMemoryError) or any(
            text in message for text in ("out of memory", "can't allocate memory")):
        return f"out of memory: {message[:120]}"
    return None


def _fill(result: StepResult, times: list[float], loss: torch.Tensor, settings: Settings,
          peaks: list[float]) -> None:
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
    if peaks:  # each step against the peak probed in its own round
        result.fraction_of_peak = statistics.median(
            flops / t / 1e9 / rate for t, rate in zip(times, peaks, strict=True))
        result.peak_gflops = statistics.median(peaks)
        result.peak_spread = (max(peaks) - min(peaks)) / result.peak_gflops
        result.peak_unsteady = result.peak_spread > UNSTEADY_SPREAD
    result.final_loss = float(loss.float().mean())


def fill_speedups(results: Sequence[StepResult]) -> None:
    """Set ``speedup_vs_baseline`` of every row that has a baseline row of the same size."""
    baselines = {(r.model, r.n_members, r.batch_size): r.median_step_seconds
                 for r in results if r.strategy == BASELINE and r.median_step_seconds}
    for r in results:
        base = baselines.get((r.model, r.n_members, r.batch_size))
        if base and r.median_step_seconds:
            r.speedup_vs_baseline = base / r.median_step_seconds


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
    # every strategy, the baseline too, with the allocator the trainer runs with on CPU
    kept = device.type == "cpu" and retain_freed_memory()
    rows: list[StepResult] = []
    epoch_rows: list[EpochResult] = []
    peak = measure_peak(device)
    probe = PeakProbe(device, torch.bfloat16 if settings.bf16 else torch.float32)
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
            rows.extend(measure_group(job, device, settings, default, probe))  # type: ignore
        else:
            model, n = job  # type: ignore[misc]
            bar.set_postfix_str(f"epoch {model} N={n}")
            epoch_rows.append(measure_epoch(model, n, device, settings,
                                            batch_size=epoch_batch_size,
                                            train_size=epoch_sizes[0],
                                            test_size=epoch_sizes[1]))
    fill_speedups(rows)
    return report(rows, epoch_rows, device, settings, peak, keep_freed_memory=kept)


@functools.lru_cache(maxsize=16)
def _default_strategy(model: str, num_classes: int, image_size: int, device_type: str) -> str:
    with torch.device("meta"):
        probe = Ensemble(lambda: build_model(model, num_classes=num_classes,
                                             image_size=image_size), 1)
    return probe.resolved_strategy(torch.device(device_type))

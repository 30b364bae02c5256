"""``train.precision=auto``: bf16 autocast only where this device has native bf16 and a short
timing of the run's own step shows it faster; said in the start-up status line.

    precision, note = resolve_precision(config, members, pool, device)

On a CPU without AVX512-BF16 or AMX, bf16 matrix products are emulated (several times slower
than fp32): auto is fp32 there without timing. Elsewhere the members' forward and backward
are timed on one random batch at the run's batch size, fp32 and bf16 interleaved (one
warm-up each, then three each; medians) on the members themselves, with their buffers
(BatchNorm statistics) put back, their gradients cleared and the RNG forked: no optimizer step
runs, so the run's weights, statistics and random streams are exactly what they would be.
bf16 is picked when its median is at least 10% below fp32's. The decision is cached per
(device, torch version, model, options, N, batch, image shape, strategy, threads) in
``<decoded-data cache>/precision.json``, so a sweep times once. The loss, softmax/KL, metrics,
optimizer and master weights stay fp32 in either case (``setup.autocast``).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from typing import Any

import torch

from colearning.config import Config
from colearning.data.cache import default_cache_dir
from colearning.environment import cpu_name
from colearning.rundir import atomic_write_json
from colearning.training.data import Pool

# bf16 must beat fp32 by this fraction of fp32's step time to be picked.
MARGIN = 0.10


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 products natively (CUDA with bf16; a CPU with
    AVX512-BF16 or AMX tiles)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(getattr(cpu, probe, lambda: False)() for probe in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_precision(config: Config, members: torch.nn.Module, pool: Pool,
                      device: torch.device) -> tuple[str, str | None]:
    """(``fp32`` or ``bf16``, a status note for ``auto``, else None)."""
    asked = config.train.precision
    if asked != "auto":
        return asked, None
    if not native_bf16(device):
        return "fp32", "precision auto: fp32 (this device has no native bf16)"
    key = _key(config, pool, device)
    cache = default_cache_dir() / "precision.json"
    known = _read(cache)
    if key not in known:
        fp32, bf16 = _time(members, pool, config.train.batch_size, device)
        known[key] = {"fp32_seconds": fp32, "bf16_seconds": bf16,
                      "measured": time.strftime("%Y-%m-%d")}
        with contextlib.suppress(OSError):  # a read-only cache only costs the next timing
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(cache, known)
    entry = known[key]
    ratio = entry["fp32_seconds"] / entry["bf16_seconds"]
    choice = "bf16" if entry["bf16_seconds"] < (1 - MARGIN) * entry["fp32_seconds"] else "fp32"
    return choice, (f"precision auto: {choice} (bf16 step {ratio:.2f}x the speed of fp32 here, "
                    f"measured {entry['measured']})")


def _key(config: Config, pool: Pool, device: torch.device) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return json.dumps([where, torch.__version__, torch.get_num_threads(), config.model.name,
                       config.model.options, config.ensemble.n_members,
                       config.ensemble.strategy, config.train.batch_size,
                       pool.in_channels, pool.image_size, pool.num_classes], sort_keys=True,
                      default=str)


def _read(path: Any) -> dict[str, Any]:
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _time(members: torch.nn.Module, pool: Pool, batch: int,
          device: torch.device) -> tuple[float, float]:
    """Median seconds of the members' forward + backward in fp32 and under bf16 autocast."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        was_training = members.training
        saved = [buffer.clone() for buffer in members.buffers()]
        probe = members.train()
        torch.manual_seed(0)
        x = torch.rand(batch, pool.in_channels, pool.image_size, pool.image_size,
                       device=device)
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for round_ in range(4):
            for name in times:
                context = (torch.autocast(device.type, dtype=torch.bfloat16)
                           if name == "bf16" else contextlib.nullcontext())
                _sync(device)
                started = time.perf_counter()
                with context:
                    logits = probe(x)
                logits.float().square().mean().backward()
                _sync(device)
                if round_:  # the first round warms up
                    times[name].append(time.perf_counter() - started)
                probe.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, value in zip(members.buffers(), saved, strict=True):
                buffer.copy_(value)
        members.train(was_training)
    return statistics.median(times["fp32"]), statistics.median(times["bf16"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

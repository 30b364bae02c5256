"""The device the numbers are measured on: what it is, waiting for it, its peak memory and
its measured matmul peak."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import torch

from colearning import __version__
from colearning.environment import cpu_name


def device_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: processor/GPU name, threads, versions."""
    info: dict[str, Any] = {
        "type": device.type,
        "cpu": cpu_name(),
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


# ------------------------------------------------------------------------- matmul peak
class PeakProbe:
    """The device's matmul rate (GFLOP/s) in one short burst, to be measured beside the
    steps it is compared with, not once at the start: on a shared machine a neighbour's
    load, a clock change or thermal throttling moves the peak, and a ratio to a peak
    measured under other conditions means nothing (it read 124-193% on a busy machine).

    The size is chosen once: it grows from 256 while one product takes under ``burst``
    seconds (to 2048 on CPUs, 8192 on GPUs), so a device without native bf16 (hundreds of
    times slower) is probed quickly too. Each call repeats the product for ``burst`` s."""

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32,
                 burst: float = 0.05) -> None:
        self.device, self.burst = device, burst
        largest = 2048 if device.type == "cpu" else 8192
        size = 256
        while True:
            self.a = torch.randn(size, size, device=device).to(dtype)
            self.b = torch.randn(size, size, device=device).to(dtype)
            self.size = size
            if self._products(1)[1] > burst or size >= largest:
                break
            size *= 2

    def _products(self, count: int) -> tuple[int, float]:
        synchronize(self.device)
        started = time.perf_counter()
        for _ in range(count):
            self.a @ self.b
        synchronize(self.device)
        return count, time.perf_counter() - started

    def __call__(self, seconds: float | None = None) -> float:
        """GFLOP/s of products repeated for ``seconds`` (default: the burst)."""
        budget = self.burst if seconds is None else seconds
        count, elapsed = 0, 0.0
        while elapsed < budget or count == 0:
            done, took = self._products(1 if self.device.type == "cpu" else 8)
            count, elapsed = count + done, elapsed + took
        return 2 * self.size ** 3 * count / elapsed / 1e9


def measure_peak(device: torch.device, seconds: float = 0.5) -> dict[str, float]:
    """The device's matmul peak in GFLOP/s, fp32 and bf16, each from about ``seconds`` of
    products (:class:`PeakProbe`): the figure a report's header states. The rows' ratios
    are to the peak probed beside each of them (``colearning.bench.harness``)."""
    return {name: PeakProbe(device, dtype)(seconds)
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}

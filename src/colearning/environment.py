"""The COLEARNING_* environment variables a command reads, checked at its start, the name of
the processor the numbers come from, and the C allocator setting CPU training runs with."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import sys
from pathlib import Path

from colearning.errors import ConfigError


def env_number(name: str, default: float, *, minimum: float = 0.0, integer: bool = False
               ) -> float:
    """The number in environment variable ``name`` (``default`` when unset or empty); a value
    that is not a finite number >= ``minimum`` is a one-line ConfigError naming it."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"environment variable {name}={raw!r} must be {kind} >= {minimum:g}; "
                          f"fix or unset it")
    return value


def check_environment() -> None:
    """Refuse malformed COLEARNING_* variables at a command's start, in one line each, before
    anything is written (each is read again where it is used)."""
    env_number("COLEARNING_DIST_TIMEOUT", 300, minimum=1)
    env_number("COLEARNING_SLEEP_BEFORE_DATA", 0)
    env_number("COLEARNING_KEEP_FREED_MEMORY", 1, integer=True)
    spec = os.environ.get("COLEARNING_KILL_DURING_WRITE", "")
    name, _, count = spec.rpartition(":")
    if spec and not (name and count.strip().isdigit() and int(count) >= 1):
        raise ConfigError(f"environment variable COLEARNING_KILL_DURING_WRITE={spec!r} must "
                          "look like FILE:K (K >= 1, a testing hook); fix or unset it")


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo), else what the platform says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_kept: bool | None = None  # retain_freed_memory's result, once per process


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the kernel;
    True when it does (Linux with glibc, unless COLEARNING_KEEP_FREED_MEMORY=0).

    By default glibc serves every allocation above 32 MiB (a CPU step's activations: a
    LeNet-5 feature map of 5 members at batch 512 is 48 MiB) with its own mmap and unmaps
    it when freed, so every step faults in its pages again, zeroed by the kernel: measured
    as 16% of a LeNet-5 N=10 step on one core of an EPYC (docs/performance.md). With mmap
    off and the trim threshold at 2 GiB, freed blocks stay in the heap and the next step
    reuses them; the process keeps its peak heap. Set once per process (the first call);
    later calls return the first result.
    """
    global _kept
    if _kept is None:
        _kept = False
        if sys.platform.startswith("linux") and env_number(
                "COLEARNING_KEEP_FREED_MEMORY", 1, integer=True) != 0:
            with contextlib.suppress(OSError, AttributeError):
                mallopt = ctypes.CDLL(None).mallopt  # the process's C library
                mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(
                    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _kept

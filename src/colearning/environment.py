"""The COLEARNING_* environment variables a command reads, checked at its start, and the
name of the processor the numbers come from."""

from __future__ import annotations

import contextlib
import math
import os
import platform
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

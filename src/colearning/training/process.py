"""What a run owns of its process while it trains: the global RNG streams (seeded by the
run, given back afterwards, restored from a checkpoint) and the stop signals (SIGINT,
SIGTERM, SIGHUP: finish the step, checkpoint, stop)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from colearning.config import Config
from colearning.training.setup import resolve_device

# Signals that stop a run cleanly (checkpoint, summary, exit 128 + signal).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived; the run was checkpointed mid-epoch and stopped cleanly.

    ``paths``: the run directories that stopped (each resumes with
    ``colearn train --resume PATH``)."""

    def __init__(self, signum: int, paths: tuple[Path, ...] = ()) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.paths = paths


@contextlib.contextmanager
def isolated_rng(config: Config) -> Iterator[None]:
    """The run owns the global torch RNGs (CPU and its CUDA device) and gives them back.

    Dropout draws from them; the run seeds them itself, so its numbers do not depend on
    what ran before in the same process (sweep workers, notebooks), and the caller's
    streams are as they were afterwards.
    """
    device = resolve_device(config.device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextlib.contextmanager
def stop_signals() -> Iterator[dict[str, Any]]:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal) set ``stop["signal"]`` (the first
    one; a burst of them changes nothing); the loop finishes its step, checkpoints and
    stops. The previous handlers are back afterwards."""
    stop: dict[str, Any] = {"signal": None}
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            def handler(received: int, _frame: object) -> None:
                stop["signal"] = stop["signal"] or received

            previous[signum] = signal.signal(signum, handler)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

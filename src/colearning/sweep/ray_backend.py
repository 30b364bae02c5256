"""Sweep packs as Ray tasks: the same cells, packs and run directories as the local backend.

    run_sweep(spec, "/shared/sweeps/fig3", backend="ray", address="ray://head:10001",
              gpus_per_cell=1)

Each pack of cells (one cell with ``--pack off``) is one task asking ``cpus_per_cell`` CPUs
(its torch thread count) and ``gpus_per_cell`` GPUs (a fraction shares one GPU between
tasks). With an
``address`` the tasks go to that cluster, whose nodes must see the sweep directory (shared
storage) and have colearning installed; without one a local Ray is started with
``workers`` CPUs. Ray is optional: ``pip install colearning[ray]``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from colearning.errors import ConfigError
from colearning.sweep.cell import CellOutcome, available_cores, run_pack
from colearning.sweep.layout import CELLS
from colearning.sweep.spec import SweepCell


def import_ray() -> Any:
    """The ray module, or a one-line ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the ray backend needs Ray: pip install 'colearning[ray]' (or use --backend local)"
        ) from None
    return ray


def run_ray(groups: list[list[SweepCell]], path: Path, *, address: str | None, workers: int | None,
            cpus_per_cell: float, gpus_per_cell: float,
            record: Callable[[list[CellOutcome]], None]) -> None:
    """Submit every pack as a task and record its cells' outcomes as it finishes."""
    ray = import_ray()
    if cpus_per_cell <= 0 or gpus_per_cell < 0:
        raise ConfigError("--cpus-per-cell must be > 0 and --gpus-per-cell >= 0")
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(num_cpus=workers or available_cores(), include_dashboard=False,
                     log_to_driver=True)
    threads = max(1, int(cpus_per_cell))
    task = ray.remote(run_pack).options(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell,
                                        max_retries=0)
    pending = {task.remote([c.config for c in group],
                           [str(path / CELLS / c.name) for c in group], threads): group
               for group in groups}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            group = pending.pop(done[0])
            try:
                outcomes = ray.get(done[0])
            except Exception as exc:  # the task's process died: record it, go on
                outcomes = [CellOutcome(c.name, "failed", error=f"{type(exc).__name__}: {exc}")
                            for c in group]
            record(outcomes)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        raise
    finally:
        if started_here:
            ray.shutdown()

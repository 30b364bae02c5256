"""Run a sweep's cells into ordinary run directories, locally in parallel or on Ray.

    spec = load_spec("configs/sweeps/fig2c_cpu_jpeg.yaml")
    result = run_sweep(spec, "sweeps/fig2c", workers=2)      # local processes
    result = run_sweep(spec, "sweeps/fig2c", backend="ray")  # Ray tasks: colearning[ray]

Layout of a sweep directory::

    sweep.yaml            the resolved sweep (base run config + grid)
    cells/<name>/         one run directory per cell (config.yaml, metrics.jsonl, ...)
    cells/<name>/cell_error.json   a cell that raised: error type, message, traceback
    results.csv/.parquet  one row per cell;  summary.csv/.parquet  mean/std/count over seeds
    epochs.csv            per-cell, per-epoch accuracies (the gain-over-epochs curves)

Rerunning is resuming: a finished (or diverged) cell is skipped without being opened for
writing, a cell with a run directory is continued from its checkpoint, a failed cell is
retried. A cell that raises is recorded and never stops the others.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import json
import multiprocessing
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from colearning import rundir
from colearning.errors import ConfigError, RunDirError
from colearning.sweep.spec import Cell, SweepSpec, dump_spec

SPEC_FILE = "sweep.yaml"
CELLS = "cells"
CELL_ERROR = "cell_error.json"
DONE = ("finished", "diverged")  # a result exists: never retrained


@dataclass
class CellOutcome:
    """What happened to one cell in this invocation (``skipped`` = already had a result)."""

    name: str
    status: str  # finished, diverged, interrupted, failed
    skipped: bool = False
    error: str | None = None
    seconds: float = 0.0


@dataclass
class SweepResult:
    sweep_dir: Path
    outcomes: list[CellOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return all(o.status in DONE for o in self.outcomes)


# ------------------------------------------------------------------------- one cell
def cell_status(cell_dir: str | Path) -> str:
    """``finished``/``diverged``/``interrupted``/``failed``/``started``/``pending`` from disk.

    ``started``: a run directory without a final summary (running now, or killed hard).
    """
    path = Path(cell_dir)
    if (path / CELL_ERROR).exists():
        return "failed"
    summary = path / rundir.SUMMARY
    if summary.exists():
        try:
            return json.loads(summary.read_text()).get("status", "unknown")
        except json.JSONDecodeError:
            return "interrupted"
    return "started" if rundir.is_run_dir(path) else "pending"


def run_cell(config: dict[str, Any], cell_dir: str, threads: int | None = None) -> CellOutcome:
    """Train, resume or skip one cell in its own directory; never raises for a cell's error.

    Top-level so that worker processes and Ray tasks can import it by name.
    """
    import torch

    from colearning.training import Interrupted, resume, train

    path = Path(cell_dir)
    name = path.name
    status = cell_status(path)
    if status in DONE:
        return CellOutcome(name, status, skipped=True)
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    (path / CELL_ERROR).unlink(missing_ok=True)  # a failed cell is retried
    try:
        run = resume(path) if rundir.is_run_dir(path) else train(config, path)
        status, error = run.status, None
    except Interrupted as stop:
        status, error = "interrupted", f"stopped by {stop}"
    except Exception as exc:  # a cell's error is data, not a sweep crash
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        path.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_json(path / CELL_ERROR, {
            "cell": name, "error_type": type(exc).__name__, "message": str(exc),
            "traceback": traceback.format_exc(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
    return CellOutcome(name, status, error=error, seconds=time.perf_counter() - started)


class SweepStop(BaseException):
    """SIGINT/SIGTERM reached a worker outside a training loop (which checkpoints itself)."""


_STOP: Any = None  # in a worker process: the sweep's "start no new cell" event
_IN_CELL = False  # in a worker process: a cell is running (a signal must stop it)


def _on_signal(signum: int, _frame: object) -> None:
    if _STOP is not None:
        _STOP.set()
    if _IN_CELL:
        raise SweepStop(signal.Signals(signum).name)


def _worker_init(threads: int, stop: Any) -> None:
    global _STOP
    _STOP = stop
    # Inside a cell's training loop its own handlers take over (checkpoint, then stop);
    # elsewhere a signal must stop the cell, or just the worker's next cells, and never
    # kill the worker (that breaks the whole pool).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    import torch

    import colearning.training  # noqa: F401 - imported once here, not inside the first cell

    torch.set_num_threads(threads)


def _run_cell_in_worker(config: dict[str, Any], cell_dir: str, threads: int) -> CellOutcome:
    global _IN_CELL
    name = Path(cell_dir).name
    if _STOP is not None and _STOP.is_set():  # queued before a stop: leave it pending
        return CellOutcome(name, "interrupted", error="sweep stopped")
    _IN_CELL = True
    try:
        return run_cell(config, cell_dir, threads)
    except SweepStop as stop:
        return CellOutcome(name, "interrupted", error=f"stopped by {stop}")
    finally:
        _IN_CELL = False


# ------------------------------------------------------------------------- the sweep
def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def prepare(spec: SweepSpec, sweep_dir: str | Path) -> tuple[Path, list[Cell]]:
    """Create (or check) the sweep directory and return it with the spec's cells.

    An existing sweep directory must hold the same base run config: its cells would
    otherwise mix two experiments. The grid may grow (new cells are added).
    """
    path = Path(sweep_dir)
    spec_path = path / SPEC_FILE
    cells = spec.cells()
    if spec_path.exists():
        import yaml

        from colearning.config import config_from_dict

        saved = yaml.safe_load(spec_path.read_text()) or {}
        # resolved again, so a config section added since then takes its default
        if config_from_dict(saved.get("base") or {}).to_dict() != spec.base:
            raise RunDirError(
                f"{path} holds a sweep with another base config; resume it with "
                f"colearn sweep --resume {path} or pick another --out"
            )
    elif path.exists() and any(path.iterdir()):
        raise RunDirError(f"{path} exists, is not empty and is not a sweep directory; "
                          "pick another --out")
    (path / CELLS).mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_text(spec_path, dump_spec(spec))
    return path, cells


def _prewarm_data(cells: list[Cell]) -> None:
    """Decode each dataset once here, so parallel workers read the cache, not the archive."""
    from colearning.data import load_dataset

    seen = set()
    for cell in cells:
        data = cell.config["data"]
        key = (data["name"], data["path"], data["cache_dir"])
        if key not in seen:
            seen.add(key)
            # a bad dataset is reported by its cells, each in its own record
            with contextlib.suppress(Exception):
                load_dataset(data["name"], data["path"], cache_dir=data["cache_dir"],
                             progress=False)


def run_sweep(spec: SweepSpec, sweep_dir: str | Path, *, backend: str = "local",
              workers: int | None = None, address: str | None = None,
              cpus_per_cell: float = 1.0, gpus_per_cell: float = 0.0,
              progress: bool = True, aggregate: bool = True) -> SweepResult:
    """Run every cell of ``spec`` under ``sweep_dir`` and write the tables.

    local: ``workers`` processes (default: one per core on CPU, 1 with CUDA), each using
    ``cores // workers`` torch threads. ray: Ray tasks asking ``cpus_per_cell`` CPUs and
    ``gpus_per_cell`` GPUs each, on ``address`` (an existing cluster) or a local Ray with
    ``workers`` CPUs.
    """
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown sweep backend {backend!r}; valid: local, ray")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    path, cells = prepare(spec, sweep_dir)
    status = {c.name: cell_status(path / CELLS / c.name) for c in cells}
    todo = [c for c in cells if status[c.name] not in DONE]
    result = SweepResult(path)
    result.outcomes = [CellOutcome(c.name, status[c.name], skipped=True)
                       for c in cells if status[c.name] in DONE]
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc=f"sweep {spec.name}",
               unit="cell", disable=not progress, dynamic_ncols=True)

    def record(outcome: CellOutcome) -> None:
        result.outcomes.append(outcome)
        bar.update(1)
        failed = sum(o.status not in DONE for o in result.outcomes)
        bar.set_postfix(last=outcome.name, failed=failed)

    try:
        if todo and backend == "local":
            _run_local(todo, path, workers, record)
        elif todo:
            from colearning.sweep.ray_backend import run_ray

            run_ray(todo, path, address=address, workers=workers, cpus_per_cell=cpus_per_cell,
                    gpus_per_cell=gpus_per_cell, record=record)
    finally:
        bar.close()
        if aggregate:
            from colearning.sweep.table import write_tables

            write_tables(path)
    order = {c.name: i for i, c in enumerate(cells)}
    result.outcomes.sort(key=lambda o: order[o.name])
    return result


def _run_local(cells: list[Cell], path: Path, workers: int | None, record: Any) -> None:
    import torch

    if workers is None:
        workers = 1 if torch.cuda.is_available() else available_cores()
    workers = min(workers, len(cells))
    threads = max(1, available_cores() // workers)
    _prewarm_data(cells)
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                     initargs=(threads, stop)) as pool:
        pending = {pool.submit(_run_cell_in_worker, c.config, str(path / CELLS / c.name),
                               threads): c for c in cells}
        previous = signal.getsignal(signal.SIGTERM)

        def forward(signum: int, _frame: object) -> None:
            # SIGTERM to the sweep alone: pass it on so every running cell checkpoints.
            stop.set()
            for process in list(getattr(pool, "_processes", {}).values()):
                if process.is_alive():
                    os.kill(process.pid, signum)

        in_main = _is_main_thread()
        if in_main:
            signal.signal(signal.SIGTERM, forward)
        try:
            _collect(pending, record)
        except KeyboardInterrupt:
            # Ctrl-C reached every worker too: running cells checkpoint and return.
            stop.set()
            for future in pending:
                future.cancel()
            _collect(pending, record)
            raise
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)


def _collect(pending: dict[futures.Future, Cell], record: Any) -> None:
    """Record each future's outcome as it completes; recorded futures leave ``pending``."""
    for future in futures.as_completed(list(pending)):
        cell = pending.pop(future)
        try:
            outcome = future.result()
        except futures.CancelledError:
            continue
        except Exception as exc:  # a worker died (OOM kill, segfault): record it, go on
            outcome = CellOutcome(cell.name, "failed", error=f"{type(exc).__name__}: {exc}")
        record(outcome)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def load_sweep_spec(sweep_dir: str | Path) -> SweepSpec:
    """The resolved spec stored in a sweep directory (for resume and reports)."""
    from colearning.sweep.spec import spec_from_dict

    path = Path(sweep_dir)
    if not (path / SPEC_FILE).is_file():
        raise RunDirError(f"{path} is not a sweep directory (it has no {SPEC_FILE})")
    import yaml

    values = yaml.safe_load((path / SPEC_FILE).read_text()) or {}
    grid = dict(values.get("grid") or {})
    return spec_from_dict({"name": values.get("name"), "base": values.get("base"),
                           "grid": grid})


def describe_cells(spec: SweepSpec, sweep_dir: str | Path) -> str:
    """One line per cell: its name and state on disk (for --dry-run)."""
    path = Path(sweep_dir) / CELLS
    cells = spec.cells()
    lines = [f"sweep {spec.name}: {len(cells)} cells in {sweep_dir}"]
    lines += [f"  {cell.name:<40} {cell_status(path / cell.name)}" for cell in cells]
    return "\n".join(lines)


def format_result(result: SweepResult) -> str:
    """The end-of-sweep lines: counts per status, failed cells, where the tables are."""
    counts: dict[str, int] = {}
    for outcome in result.outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    skipped = sum(o.skipped for o in result.outcomes)
    lines = [f"sweep {result.sweep_dir}: " + ", ".join(f"{v} {k}" for k, v in counts.items())
             + f" ({skipped} already done before this run)"]
    for outcome in result.outcomes:
        if outcome.status not in DONE:
            lines.append(f"  {outcome.status}: {outcome.name}"
                         + (f": {outcome.error}" if outcome.error else ""))
    if result.count("interrupted"):
        lines.append(f"continue with: colearn sweep --resume {result.sweep_dir}")
    lines.append(f"tables: {result.sweep_dir}/results.csv, summary.csv, epochs.csv; "
                 f"figures: colearn report {result.sweep_dir}")
    return "\n".join(lines)

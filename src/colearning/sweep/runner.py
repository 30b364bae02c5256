"""Run a sweep's cells into ordinary run directories, locally in parallel or on Ray.

    spec = load_spec("configs/sweeps/fig2c_cpu_jpeg.yaml")
    result = run_sweep(spec, "sweeps/fig2c", workers=2)      # local processes
    result = run_sweep(spec, "sweeps/fig2c", backend="ray")  # Ray tasks: colearning[ray]
    result = run_sweep(spec, "sweeps/fig2c", pack=8)         # up to 8 cells per pack
    result = run_cells(cells, "sweeps/s5")                   # cells planned elsewhere

Cells that may share a pack (:mod:`colearning.training.pack`) are trained together, their
members stacked into one engine; each still writes its own run directory. Rerunning is
resuming: a finished (or diverged) cell is skipped without being opened for writing (a
finished one is extended when the sweep's train.epochs grew), a cell with a run directory is
continued from its checkpoint, a failed cell is retried. A cell that
raises is recorded and never stops the others. The directory layout is in
:mod:`colearning.sweep.layout`.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import json
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from colearning import rundir
from colearning.config import config_diff, config_from_dict, read_yaml
from colearning.errors import ConfigError, RunDirError
from colearning.sweep.cell import CellOutcome, available_cores, cell_plan, run_pack
from colearning.sweep.layout import (
    CELLS,
    DONE,
    SPEC_FILE,
    check_out_dir,
    done_status,
    load_sweep_spec,
)
from colearning.sweep.spec import SweepCell, SweepSpec, dump_spec
from colearning.sweep.table import write_tables
from colearning.training.launch import watch_parent
from colearning.training.lifecycle import CONFIG_HISTORY, check_extension
from colearning.training.pack import plan_packs
from colearning.training.process import STOP_SIGNALS

# --pack auto: members per pack, by device (None: do not pack). On a GPU one pack holds what
# the device computes in parallel (memory stays small for LeNet-5-sized cells). On CPUs
# packing measured no gain (scripts/pack_throughput.py, docs/performance.md): the engine
# already runs a
# cell of two LeNet-5s at its per-member CPU efficiency, and a pack only saves start-up.
AUTO_PACK_MEMBERS: dict[str, int | None] = {"cpu": None, "cuda": 400}


@dataclass
class SweepResult:
    sweep_dir: Path
    outcomes: list[CellOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return all(o.status in DONE for o in self.outcomes)


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
    # A sweep whose parent died (SIGKILL, a closed terminal) must not go on training and
    # starting cells: the running cell checkpoints and the worker exits.
    watch_parent(busy=lambda: _IN_CELL)
    # Inside a cell's training loop its own handlers take over (checkpoint, then stop);
    # elsewhere a signal must stop the cell, or just the worker's next cells, and never
    # kill the worker (that breaks the whole pool).
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_signal)
    import torch

    import colearning.training  # noqa: F401 - imported once here, not inside the first cell

    torch.set_num_threads(threads)


def _run_pack_in_worker(configs: list[dict[str, Any]], cell_dirs: list[str],
                        threads: int) -> list[CellOutcome]:
    global _IN_CELL
    names = [Path(d).name for d in cell_dirs]
    if _STOP is not None and _STOP.is_set():  # queued before a stop: leave it pending
        return [CellOutcome(name, "interrupted", error="sweep stopped") for name in names]
    _IN_CELL = True
    try:
        return run_pack(configs, cell_dirs, threads)
    except SweepStop as stop:
        return [CellOutcome(name, "interrupted", error=f"stopped by {stop}") for name in names]
    finally:
        _IN_CELL = False


# ------------------------------------------------------------------------- the sweep
def check_sweep_dir(spec: SweepSpec, sweep_dir: str | Path) -> int | None:
    """Whether ``spec`` may run in ``sweep_dir``, decided without writing anything (the
    real run and ``--dry-run`` both ask here). None: a new sweep directory, or one holding
    the same base run config (the grid may grow: new cells are added). An int: the saved
    train.epochs, which ``spec`` raises: every cell is extended, each cell checked first
    as ``colearn train --resume RUN train.epochs=M`` checks a run (refused where a schedule
    is set by train.epochs). Any other change of the base run config is a RunDirError: the
    cells would otherwise mix two experiments.
    """
    path = Path(sweep_dir)
    spec_path = path / SPEC_FILE
    if not check_out_dir(path, SPEC_FILE, "sweep directory"):
        return None
    # resolved again, so a config section added since then takes its default
    saved = config_from_dict(read_yaml(spec_path).get("base") or {}).to_dict()
    if saved == spec.base:
        return None
    before, after = saved["train"]["epochs"], spec.base["train"]["epochs"]
    if config_diff(saved, spec.base) != ["train.epochs"] or after < before:
        details = config_diff(saved, spec.base, show=True)
        shown = ", ".join(details[:3]) + (f" and {len(details) - 3} more" if len(details) > 3
                                          else "")
        raise RunDirError(
            f"{path} holds a sweep with another base config ({shown}); only train.epochs "
            f"may grow (colearn sweep --resume {path} train.epochs=M); resume it with "
            f"colearn sweep --resume {path} or pick another --out")
    old = {cell.name: cell.config for cell in load_sweep_spec(path).cells()}
    seen = set()
    for cell in spec.cells():
        was = old.get(cell.name)
        if was is None or cell.config["train"]["epochs"] <= was["train"]["epochs"]:
            continue  # a new cell, or one whose length the grid sets
        key = json.dumps({**cell.config, "seed": None}, sort_keys=True, default=str)
        if key not in seen:  # the schedules do not depend on the seed
            seen.add(key)
            check_extension(path / CELLS / cell.name, config_from_dict(was),
                            config_from_dict(cell.config))
    return before


def prepare(spec: SweepSpec, sweep_dir: str | Path) -> tuple[Path, list[SweepCell]]:
    """Create (or check, see :func:`check_sweep_dir`) the sweep directory, save ``spec`` in
    it and return it with the spec's cells. A longer train.epochs is recorded in the
    sweep's config_history.jsonl; the cells are extended as they run."""
    path = Path(sweep_dir)
    extended_from = check_sweep_dir(spec, path)
    cells = spec.cells()
    (path / CELLS).mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_text(path / SPEC_FILE, dump_spec(spec))
    if extended_from is not None:
        rundir.append_jsonl(path / CONFIG_HISTORY, {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "changed": {"train.epochs": [extended_from, spec.base["train"]["epochs"]]}})
    return path, cells


def _prewarm_data(cells: list[SweepCell]) -> None:
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


def packs(cells: list[SweepCell], pack: str | int = "auto", pack_members: int | None = None,
          device: str = "cpu") -> list[list[SweepCell]]:
    """The cells grouped into packs: ``pack`` ``off`` (one cell each), an int K (at most K
    cells a pack) or ``auto`` (at most ``pack_members`` members a pack, by default
    :data:`AUTO_PACK_MEMBERS` for the cells' device; on CPUs no packing)."""
    budget = pack_members or AUTO_PACK_MEMBERS["cuda" if device == "cuda" else "cpu"]
    if pack == "off" or pack == 1 or (pack == "auto" and budget is None):
        return [[cell] for cell in cells]
    configs = [config_from_dict(cell.config) for cell in cells]
    if pack == "auto":
        groups = plan_packs(configs, max_members=budget)
    elif isinstance(pack, int) and pack >= 1:
        groups = plan_packs(configs, max_cells=pack, max_members=pack_members)
    else:
        raise ConfigError(f"--pack must be auto, off or a number of cells >= 1, got {pack!r}")
    return [[cells[k] for k in group] for group in groups]


def _device_kind(cells: list[SweepCell]) -> str:
    from colearning.training.setup import resolve_device

    return resolve_device(cells[0].config["device"]).type if cells else "cpu"


def check_backend(backend: str, workers: int | None) -> None:
    """Refuse an unknown backend or a worker count < 1 (before any directory is made)."""
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown sweep backend {backend!r}; valid: local, ray")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")


def run_sweep(spec: SweepSpec, sweep_dir: str | Path, *, backend: str = "local",
              workers: int | None = None, address: str | None = None,
              cpus_per_cell: float = 1.0, gpus_per_cell: float = 0.0,
              pack: str | int = "auto", pack_members: int | None = None,
              progress: bool = True, aggregate: bool = True) -> SweepResult:
    """Run every cell of ``spec`` under ``sweep_dir`` and write the tables.

    Cells are trained by :func:`run_cells` (in packs, see :func:`packs`). local:
    ``workers`` processes (default: one per core on CPU, 1 with CUDA), each running one pack
    at a time with ``cores // workers`` torch threads. ray: one Ray task per pack asking
    ``cpus_per_cell`` CPUs and ``gpus_per_cell`` GPUs, on ``address`` (an existing cluster)
    or a local Ray with ``workers`` CPUs.
    """
    check_backend(backend, workers)
    path = Path(sweep_dir)
    check_sweep_dir(spec, path)  # refused before anything is made
    with rundir.os_errors(path, "create the sweep directory"):
        path.mkdir(parents=True, exist_ok=True)
    # locked before sweep.yaml changes: a sweep running there keeps the spec it runs
    with rundir.locked(path, "sweep directory", "let it finish (colearn sweep --resume DIR "
                                                "continues a stopped one)"):
        path, cells = prepare(spec, path)
        try:
            return run_cells(cells, path, desc=f"sweep {spec.name}", backend=backend,
                             workers=workers, address=address, cpus_per_cell=cpus_per_cell,
                             gpus_per_cell=gpus_per_cell, pack=pack, pack_members=pack_members,
                             progress=progress)
        finally:
            if aggregate:
                write_tables(path)


def run_cells(cells: list[SweepCell], sweep_dir: str | Path, *, desc: str = "cells",
              backend: str = "local", workers: int | None = None, address: str | None = None,
              cpus_per_cell: float = 1.0, gpus_per_cell: float = 0.0,
              pack: str | int = "auto", pack_members: int | None = None,
              progress: bool = True) -> SweepResult:
    """Train ``cells``, each into ``sweep_dir``/cells/<name>/, as :func:`run_sweep` does
    (the same packs, worker processes or Ray tasks, skipping, resuming and failure
    records; options as there), with one progress bar ``desc``. The caller holds
    ``sweep_dir`` (created and locked): :func:`run_sweep`, and ``colearn expand-table``
    for each of its two stages (:mod:`colearning.expand.table_run`). Returns the cells'
    outcomes in the order of ``cells``.
    """
    check_backend(backend, workers)
    path = Path(sweep_dir)
    status = {c.name: done_status(path / CELLS / c.name, c.config) for c in cells}
    todo = [c for c in cells if status[c.name] is None]
    groups = packs(todo, pack, pack_members, _device_kind(todo))
    result = SweepResult(path)
    result.outcomes = [CellOutcome(c.name, status[c.name], skipped=True)
                       for c in cells if status[c.name] is not None]
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc=desc,
               unit="cell", disable=not progress, dynamic_ncols=True)

    def record(outcomes: list[CellOutcome]) -> None:
        result.outcomes.extend(outcomes)
        bar.update(len(outcomes))
        failed = sum(o.status not in DONE for o in result.outcomes)
        bar.set_postfix(last=outcomes[-1].name, failed=failed)

    try:
        if groups and backend == "local":
            _run_local(groups, path, workers, record)
        elif groups:
            from colearning.sweep.ray_backend import run_ray

            run_ray(groups, path, address=address, workers=workers,
                    cpus_per_cell=cpus_per_cell, gpus_per_cell=gpus_per_cell, record=record)
    finally:
        bar.close()
    order = {c.name: i for i, c in enumerate(cells)}
    result.outcomes.sort(key=lambda o: order[o.name])
    return result


def _run_local(groups: list[list[SweepCell]], path: Path, workers: int | None, record: Any) -> None:
    import torch

    if workers is None:
        workers = 1 if torch.cuda.is_available() else available_cores()
    workers = min(workers, len(groups))
    threads = max(1, available_cores() // workers)
    _prewarm_data([cell for group in groups for cell in group])
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                     initargs=(threads, stop)) as pool:
        pending = {pool.submit(_run_pack_in_worker, [c.config for c in group],
                               [str(path / CELLS / c.name) for c in group], threads): group
                   for group in groups}
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
        except KeyboardInterrupt as interrupt:
            # Ctrl-C reached every worker too: running cells checkpoint and return.
            stop.set()
            for future in pending:
                future.cancel()
            _collect(pending, record)
            interrupt.cells_checkpointed = True  # for the CLI's one line
            raise
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)


def _collect(pending: dict[futures.Future, list[SweepCell]], record: Any) -> None:
    """Record each future's outcomes as it completes; recorded futures leave ``pending``."""
    for future in futures.as_completed(list(pending)):
        group = pending.pop(future)
        try:
            outcomes = future.result()
        except futures.CancelledError:
            continue
        except Exception as exc:  # a worker died (OOM kill, segfault): record it, go on
            outcomes = [CellOutcome(c.name, "failed", error=f"{type(exc).__name__}: {exc}")
                        for c in group]
        record(outcomes)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def describe_cells(spec: SweepSpec, sweep_dir: str | Path) -> str:
    """What running ``spec`` in ``sweep_dir`` will do (for --dry-run), decided as the run
    decides and writing nothing: the sweep directory's refusal (raised, as the run raises
    it, :func:`check_sweep_dir`), else one line per cell with its name and
    :func:`colearning.sweep.cell.cell_plan` (left as it is, new, resumed, extended or
    refused), and for cells still to run whether their data path exists."""
    extended_from = check_sweep_dir(spec, sweep_dir)
    path = Path(sweep_dir) / CELLS
    cells = spec.cells()
    head = f"sweep {spec.name}: {len(cells)} cells in {sweep_dir}"
    if extended_from is not None:
        head += (f"; train.epochs {extended_from} -> {spec.base['train']['epochs']}: "
                 "finished cells are extended")
    lines = [head]
    for cell in cells:
        plan = cell_plan(cell.config, path / cell.name)
        data_path = cell.config["data"]["path"]
        if plan not in DONE and "refused:" not in plan and data_path and \
                not Path(data_path).exists():
            plan += f" (cannot run: data.path {data_path} does not exist)"
        lines.append(f"  {cell.name:<40} {plan}")
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

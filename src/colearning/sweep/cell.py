"""Running sweep cells where they are sent: one cell, or a pack of cells, in this process.

Top-level functions, so that local worker processes and Ray tasks import them by name.
A cell's error is data: it is written to the cell's ``cell_error.json`` and returned as an
outcome, never raised, so one failing cell does not stop the others.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colearning import rundir
from colearning.errors import ColearningError
from colearning.sweep.layout import CELL_ERROR, cell_status, done_status


@dataclass
class CellOutcome:
    """What happened to one cell in this invocation (``skipped`` = already had a result)."""

    name: str
    status: str  # finished, diverged, interrupted, failed
    skipped: bool = False
    error: str | None = None
    seconds: float = 0.0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _record_failure(path: Path, exc: BaseException) -> str:
    path.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_json(path / CELL_ERROR, {
        "cell": path.name, "error_type": type(exc).__name__, "message": str(exc),
        "traceback": traceback.format_exc(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return f"{type(exc).__name__}: {exc}"


def run_cell(config: dict[str, Any], cell_dir: str, threads: int | None = None) -> CellOutcome:
    """Train, resume or skip one cell in its own directory; never raises for a cell's error."""
    return run_pack([config], [cell_dir], threads)[0]


def run_pack(configs: list[dict[str, Any]], cell_dirs: list[str],
             threads: int | None = None) -> list[CellOutcome]:
    """Train, resume or skip the cells ``cell_dirs`` together as one pack.

    Cells that already have a result are skipped (:func:`done_status`; a finished cell
    whose config asks for more epochs is extended). When the pack as a whole raises (a bad
    dataset, a bug), each of its cells is run alone, so only the cells that fail by
    themselves are recorded as failed.
    """
    import torch

    from colearning.training import Interrupted, train_pack

    paths = [Path(d) for d in cell_dirs]
    outcomes: dict[int, CellOutcome] = {}
    todo = []
    for k, path in enumerate(paths):
        status = done_status(path, configs[k])
        if status is not None:
            outcomes[k] = CellOutcome(path.name, status, skipped=True)
        else:
            todo.append(k)
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    for k in todo:
        (paths[k] / CELL_ERROR).unlink(missing_ok=True)  # a failed cell is retried
    try:
        runs = train_pack([(configs[k], paths[k]) for k in todo]) if todo else []
        for k, run in zip(todo, runs, strict=True):
            outcomes[k] = CellOutcome(paths[k].name, run.status,
                                      seconds=time.perf_counter() - started)
    except Interrupted as stop:
        for k in todo:  # cells of an earlier pack group may have finished before the signal
            status = done_status(paths[k], configs[k])
            outcomes[k] = (CellOutcome(paths[k].name, status) if status is not None else
                           CellOutcome(paths[k].name, "interrupted", error=f"stopped by {stop}"))
    except Exception as exc:  # a cell's error is data, not a sweep crash
        if len(todo) == 1:
            k = todo[0]
            outcomes[k] = CellOutcome(paths[k].name, "failed",
                                      error=_record_failure(paths[k], exc),
                                      seconds=time.perf_counter() - started)
        else:
            for k in todo:  # find the culprit(s): each cell alone
                outcomes[k] = run_pack([configs[k]], [cell_dirs[k]])[0]
    _evaluate_finished(configs, paths, outcomes)
    return [outcomes[k] for k in range(len(paths))]


def _evaluate_finished(configs: list[dict[str, Any]], paths: list[Path],
                       outcomes: dict[int, CellOutcome]) -> None:
    """train.evaluate_shift of the finished cells (trained now or before, unless their
    evaluation is complete); an evaluation's error fails its cell, which a rerun retries."""
    from colearning.inference import finish_with_evaluation
    from colearning.training import load_run

    for k, path in enumerate(paths):
        if outcomes[k].status != "finished" or \
                not (configs[k].get("train") or {}).get("evaluate_shift"):
            continue
        try:
            finish_with_evaluation(load_run(path))
            (path / CELL_ERROR).unlink(missing_ok=True)  # an earlier evaluation's failure
        except Exception as exc:  # a cell's error is data, not a sweep crash
            outcomes[k] = CellOutcome(path.name, "failed", error=_record_failure(path, exc))


def cell_plan(config: dict[str, Any], cell_dir: str | Path) -> str:
    """What running one cell of a sweep will do, decided as :func:`run_pack` and
    :func:`colearning.training.train_pack` decide, writing nothing (``colearn sweep
    --dry-run``): ``finished`` / ``diverged`` (left as it is), ``pending`` (a new run),
    ``STATUS: resumes in epoch k``, ``STATUS: extended from E to M epochs (...)`` or
    ``STATUS: refused: WHY``, the error the real run records for the cell."""
    from colearning.config import config_from_dict, read_yaml
    from colearning.training.lifecycle import checkpoint_position, resume_state
    from colearning.training.run import preflight

    path = Path(cell_dir)
    done = done_status(path, config)
    if done is not None:
        return done
    status = cell_status(path)
    try:
        resolved = config_from_dict(config)
        preflight(resolved)
        if not rundir.is_run_dir(path):
            return status if status == "pending" else f"{status}: retried from scratch"
        before = config_from_dict(read_yaml(path / rundir.CONFIG)).train.epochs
        after, checkpoint, finished = resume_state(path, resolved.to_dict(), write=False)
    except ColearningError as error:
        return f"{status}: refused: {error}"
    except Exception as error:  # what the real run records as the cell's failure
        return f"{status}: refused: {type(error).__name__}: {error}"
    if finished is not None:
        return finished.status
    if checkpoint is None:
        where = "restarts from epoch 1 (no checkpoint)"
    else:
        epoch, step = checkpoint_position(checkpoint)
        where = f"resumes in epoch {epoch + 1}" + (f" at step {step}" if step else "")
    if after.train.epochs > before:
        return f"{status}: extended from {before} to {after.train.epochs} epochs ({where})"
    return f"{status}: {where}"

"""The sweep directory: where a sweep's spec and cells live, and a cell's state on disk.

Layout of a sweep directory::

    sweep.yaml            the resolved sweep (base run config + grid)
    cells/<name>/         one run directory per cell (config.yaml, metrics.jsonl, ...)
    cells/<name>/cell_error.json   a cell that raised: error type, message, traceback
    results.csv/.parquet  one row per cell;  summary.csv/.parquet  per (N, beta)
    epochs.csv            per-cell, per-epoch accuracies (the gain-over-epochs curves)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from colearning import rundir
from colearning.config import read_yaml
from colearning.errors import RunDirError
from colearning.sweep.spec import SweepSpec, spec_from_dict

SPEC_FILE = "sweep.yaml"
CELLS = "cells"
CELL_ERROR = "cell_error.json"
DONE = ("finished", "diverged")  # a result exists: never retrained


def cell_status(cell_dir: str | Path) -> str:
    """``finished``/``diverged``/``interrupted``/``failed``/``started``/``pending`` from disk.

    ``started``: a run directory without a final summary (running now, or killed hard).
    """
    path = Path(cell_dir)
    status = None
    summary = path / rundir.SUMMARY
    if summary.exists():
        try:
            status = json.loads(summary.read_text()).get("status", "unknown")
        except (json.JSONDecodeError, OSError):
            status = "interrupted"
    if status in DONE:  # a result on disk wins over an error file left by an older attempt
        return status
    if (path / CELL_ERROR).exists():
        return "failed"
    return status or ("started" if rundir.is_run_dir(path) else "pending")


def done_status(cell_dir: str | Path, config: dict[str, Any]) -> str | None:
    """The status of a cell that running the sweep leaves as it is: ``diverged``, or
    ``finished`` with at least ``config``'s train.epochs (one with fewer, after the sweep's
    train.epochs grew, is extended) or stopped early (train.early_stopping: it has ended for
    good); None when running the sweep trains it."""
    path = Path(cell_dir)
    status = cell_status(path)
    if status == "finished":
        try:
            summary = json.loads((path / rundir.SUMMARY).read_text())
        except (json.JSONDecodeError, OSError):
            summary = {}
        trained = summary.get("epochs_completed")
        if isinstance(trained, int) and trained < config["train"]["epochs"] \
                and not summary.get("stopped_early"):
            return None
    return status if status in DONE else None


def check_out_dir(path: Path, spec_file: str, what: str) -> bool:
    """Whether ``path`` already holds a ``what`` (its ``spec_file``). RunDirError when it is
    not a directory, or holds something else: a new one is only made in an empty (or absent)
    directory."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path} is not a directory; pick another --out")
    if (path / spec_file).exists():
        return True
    if path.exists() and any(p.name != rundir.LOCK for p in path.iterdir()):
        raise RunDirError(f"{path} exists, is not empty and is not a {what}; "
                          "pick another --out")
    return False


def load_sweep_spec(sweep_dir: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """The resolved spec stored in a sweep directory (for resume and reports).

    ``overrides`` (``key=value``) change its base run config, e.g. ``["train.epochs=300"]``
    to extend every cell (whether the sweep directory allows a change is decided when it
    runs: :func:`colearning.sweep.runner.check_sweep_dir`)."""
    path = Path(sweep_dir)
    if not (path / SPEC_FILE).is_file():
        raise RunDirError(f"{path} is not a sweep directory (it has no {SPEC_FILE})")
    values = read_yaml(path / SPEC_FILE)
    grid = dict(values.get("grid") or {})
    return spec_from_dict({"name": values.get("name"), "base": values.get("base"),
                           "grid": grid}, overrides=overrides)

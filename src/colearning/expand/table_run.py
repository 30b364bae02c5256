"""Training the cells of a Table S5 directory (see :mod:`colearning.expand.table`) with the
sweep runner, in two stages.

    spec = load_table_s5_spec("configs/sweeps/tableS5_cpu_jpeg.yaml")
    result = run_table_s5(spec, "sweeps/s5", workers=2)    # or backend="ray", pack=...

Stage 1 trains the base and from-scratch cells, stage 2 the expansions, whose
``expand.source`` is a base cell of stage 1. Each stage is one
:func:`colearning.sweep.runner.run_cells` call: the same worker processes, packs, Ray tasks,
skipping, resuming and failure records as ``colearn sweep`` (a grown cell trains alone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from colearning import rundir
from colearning.errors import RunDirError
from colearning.expand.table import (
    SPEC_FILE,
    TableS5Spec,
    cell_name,
    load_table_s5_dir,
    methods,
    plan_cells,
    write_table_s5,
)
from colearning.sweep.cell import CellOutcome
from colearning.sweep.layout import CELLS, cell_status, check_out_dir, done_status
from colearning.sweep.runner import SweepResult, check_backend, run_cells


def check_table_s5_dir(spec: TableS5Spec, out: str | Path) -> None:
    """Refuse ``out`` unless it is empty, absent or a Table S5 directory of ``spec``."""
    path = Path(out)
    if check_out_dir(path, SPEC_FILE, "Table S5 directory") and \
            load_table_s5_dir(path).to_dict() != spec.to_dict():
        raise RunDirError(f"{path} holds a Table S5 run with another spec; continue it with "
                          f"colearn expand-table --resume {path} or pick another --out")


def run_table_s5(spec: TableS5Spec, out: str | Path, *, progress: bool = True,
                 **runner: Any) -> SweepResult:
    """Train every missing cell of ``spec`` under ``out``, then write the table.

    ``runner``: the options of :func:`colearning.sweep.runner.run_cells` (``backend``,
    ``workers``, ``address``, ``cpus_per_cell``, ``gpus_per_cell``, ``pack``,
    ``pack_members``). An expansion whose base cell did not finish is left ``pending``; when
    stage 1 was stopped, stage 2 does not start. Returns one outcome per cell, in table order.
    """
    check_backend(runner.get("backend", "local"), runner.get("workers"))
    path = Path(out)
    first, second = plan_cells(spec, path)  # every cell's config validated first
    check_table_s5_dir(spec, path)  # refused before anything is made
    with rundir.os_errors(path, "create the Table S5 directory"):
        (path / CELLS).mkdir(parents=True, exist_ok=True)
    with rundir.locked(path, "Table S5 directory", "let it finish (colearn expand-table "
                                                   "--resume DIR continues a stopped one)"):
        rundir.atomic_write_text(path / SPEC_FILE,
                                 yaml.safe_dump(spec.to_dict(), sort_keys=False))
        result = SweepResult(path)
        try:
            result.outcomes += run_cells(first, path, desc=f"table S5 {spec.name} (1/2)",
                                         progress=progress, **runner).outcomes
            stopped = any(o.status == "interrupted" for o in result.outcomes)
            ready = [cell for cell in second if not stopped
                     and cell_status(cell.config["expand"]["source"]) == "finished"]
            names = {cell.name for cell in ready}
            for cell in second:
                if cell.name not in names:  # not run now: as it is on disk
                    done = done_status(path / CELLS / cell.name, cell.config)
                    result.outcomes.append(
                        CellOutcome(cell.name, done, skipped=True) if done is not None else
                        CellOutcome(cell.name, "pending", error="the run was stopped" if stopped
                                    else "its base run did not finish"))
            result.outcomes += run_cells(ready, path, desc=f"table S5 {spec.name} (2/2)",
                                         progress=progress, **runner).outcomes
        finally:
            write_table_s5(path)
    order = {cell_name(method, seed): k for k, (seed, method) in
             enumerate((seed, method) for seed in spec.seeds for method in methods(spec))}
    result.outcomes.sort(key=lambda o: order[o.name])
    return result

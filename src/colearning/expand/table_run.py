"""Training the cells of a Table S5 directory (see :mod:`colearning.expand.table`).

    run_table_s5(load_table_s5_spec("configs/sweeps/tableS5_cpu_jpeg.yaml"), "sweeps/s5")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from colearning import rundir
from colearning.config import config_from_dict, merge
from colearning.errors import RunDirError
from colearning.expand.grow import grown_config
from colearning.expand.table import (
    SPEC_FILE,
    Method,
    TableS5Spec,
    cell_name,
    load_table_s5_dir,
    methods,
    write_table_s5,
)
from colearning.sweep.cell import CellOutcome, run_cell
from colearning.sweep.layout import CELLS, cell_status


def cell_config(spec: TableS5Spec, method: Method, seed: int, out: Path) -> dict[str, Any]:
    """The run config of one cell; an expansion reads its base cell's config from disk."""
    if method.mode is None:
        values = merge(spec.base, {
            "seed": seed, "ensemble": {"n_members": method.n_members},
            "loss": {"beta": method.beta, "beta_bar": None},
            "train": {"epochs": method.train_epochs, "progress": False},
        })
        return config_from_dict(values).to_dict()
    source = out / CELLS / f"base_seed{seed}"
    margin = spec.margin if method.mode == "boost" else 0
    return grown_config(source, spec.add, method.mode,
                        [f"loss.beta={method.beta}", f"train.epochs={method.train_epochs}"],
                        margin).to_dict()


# ------------------------------------------------------------------------- running
def run_table_s5(spec: TableS5Spec, out: str | Path, *, progress: bool = True) -> list[CellOutcome]:
    """Train every missing cell of ``spec`` under ``out`` (seed-major), then write the table.

    Cells run one after another in this process; an expansion whose base cell did not finish
    is left pending. Returns one outcome per cell.
    """
    out = Path(out)
    spec_path = out / SPEC_FILE
    if spec_path.exists():
        if load_table_s5_dir(out).to_dict() != spec.to_dict():
            raise RunDirError(f"{out} holds a Table S5 run with another spec; continue it with "
                              f"colearn expand-table --resume {out} or pick another --out")
    elif out.exists() and any(out.iterdir()):
        raise RunDirError(f"{out} exists, is not empty and is not a Table S5 directory; "
                          "pick another --out")
    (out / CELLS).mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_text(spec_path, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    rows = methods(spec)
    outcomes = []
    bar = tqdm(total=len(rows) * len(spec.seeds), desc=f"table S5 {spec.name}", unit="cell",
               disable=not progress, dynamic_ncols=True)
    try:
        for seed in spec.seeds:
            for method in rows:
                name = cell_name(method, seed)
                if method.mode and cell_status(out / CELLS / f"base_seed{seed}") != "finished":
                    outcome = CellOutcome(name, "pending", error="its base run did not finish")
                else:
                    config = cell_config(spec, method, seed, out)
                    outcome = run_cell(config, str(out / CELLS / name))
                outcomes.append(outcome)
                bar.update(1)
                bar.set_postfix(last=name, status=outcome.status)
                if outcome.status == "interrupted":
                    return outcomes
    finally:
        bar.close()
        write_table_s5(out)
    return outcomes

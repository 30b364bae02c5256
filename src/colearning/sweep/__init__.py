"""Sweeps over beta, N, seeds and any config key: cells -> run directories -> tables -> report.

    from colearning.sweep import load_spec, run_sweep
    result = run_sweep(load_spec("configs/sweeps/fig2c_cpu_jpeg.yaml"), "sweeps/fig2c", workers=2)

Modules: ``spec`` (the sweep file and cell names), ``layout`` (the sweep directory and a cell's
state on disk), ``cell`` (a cell or a pack of cells, run in this process), ``runner`` (packs
in local worker processes), ``ray_backend`` (packs as Ray tasks), ``table`` (tidy CSV/Parquet
tables) and ``analysis`` (optimal beta, fits, Wilcoxon tests; pure functions). The sweep's
figures and HTML page are :mod:`colearning.report.sweep`.
"""

from colearning.sweep.layout import load_sweep_spec
from colearning.sweep.runner import SweepResult, run_sweep
from colearning.sweep.spec import SweepCell, SweepSpec, load_spec, spec_from_dict
from colearning.sweep.table import load_results, write_tables

__all__ = [
    "SweepCell",
    "SweepResult",
    "SweepSpec",
    "load_results",
    "load_spec",
    "load_sweep_spec",
    "run_sweep",
    "spec_from_dict",
    "write_tables",
]

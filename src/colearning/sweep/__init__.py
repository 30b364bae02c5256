"""Sweeps over beta, N, seeds and any config key: cells -> run directories -> tables -> report.

    from colearning.sweep import load_spec, run_sweep
    result = run_sweep(load_spec("configs/sweeps/fig2c_cpu_jpeg.yaml"), "sweeps/fig2c", workers=2)

Modules: ``spec`` (the sweep file and cell names), ``runner`` (local processes), ``ray_backend``
(Ray tasks), ``table`` (tidy CSV/Parquet tables), ``analysis`` (optimal beta, fits, Wilcoxon
tests; pure functions) and ``report`` (figures and the HTML page of ``colearn report``).
"""

from colearning.sweep.runner import SweepResult, load_sweep_spec, run_sweep
from colearning.sweep.spec import Cell, SweepSpec, load_spec, spec_from_dict
from colearning.sweep.table import write_tables

__all__ = [
    "Cell",
    "SweepResult",
    "SweepSpec",
    "load_spec",
    "load_sweep_spec",
    "run_sweep",
    "spec_from_dict",
    "write_tables",
]

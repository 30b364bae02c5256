"""Reports from saved artifacts: PNG figures and one self-contained report.html.

    build_report("runs/demo")        # a run directory   -> runs/demo/report/report.html
    build_report("sweeps/beta")      # a sweep directory -> its sweep report

Reports read run directories only; they never import the training loop or retrain.
"""

from __future__ import annotations

from pathlib import Path

from colearning import rundir
from colearning.errors import RunDirError

SWEEP_FILE = "sweep.yaml"
TABLE_S5_FILE = "table_s5.yaml"


def build_report(path: str | Path, out: str | Path | None = None, *,
                 allow_incomplete: bool = False) -> Path:
    """Write the report of a run or sweep directory; returns the path of report.html.

    ``out`` defaults to ``PATH/report``. A directory with config.yaml is a run, one with
    sweep.yaml a sweep, one with table_s5.yaml a Table S5 run (``colearn expand-table``);
    anything else raises :class:`RunDirError`. ``allow_incomplete``
    (sweeps): a coupling whose cells did not all finish may be the optimal one.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory; give a run or sweep directory")
    if rundir.is_run_dir(path):
        from colearning.report.run import build_run_report

        return build_run_report(path, out)
    if (path / SWEEP_FILE).is_file():
        from colearning.report.sweep import build_sweep_report

        return build_sweep_report(path, out, allow_incomplete=allow_incomplete)
    if (path / TABLE_S5_FILE).is_file():
        from colearning.report.table_s5 import build_table_s5_report

        return build_table_s5_report(path, out)
    raise RunDirError(f"{path} is neither a run directory ({rundir.CONFIG}), a sweep "
                      f"directory ({SWEEP_FILE}) nor a Table S5 directory ({TABLE_S5_FILE}); "
                      "nothing to report")


__all__ = ["build_report"]

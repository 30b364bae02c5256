"""Every figure of the run report keeps its text inside the figure (the ``checked``
fixture is in tests/conftest.py; the sweep report's test is in tests/sweep/test_report.py).
The run is given ``colearn evaluate``'s files, so the shift, OOD and risk-coverage figures are
checked too."""

from __future__ import annotations

from pathlib import Path

from colearning.report import build_report
from tests.report.conftest import write_evaluation_files


def test_run_report_text_stays_inside_every_figure(run_copy: Path, checked, tmp_path):
    write_evaluation_files(run_copy)
    build_report(run_copy, tmp_path / "report")
    assert {"shift_severity.png", "ood_roc.png", "risk_coverage.png"} <= {
        p.name for p in (tmp_path / "report").glob("*.png")}
    assert checked == {}

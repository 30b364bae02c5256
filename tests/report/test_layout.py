"""Every figure of the run report keeps its text inside the figure (the ``checked``
fixture is in tests/conftest.py; the sweep report's test is in tests/sweep/test_report.py)."""

from __future__ import annotations

from pathlib import Path

from colearning.report import build_report


def test_run_report_text_stays_inside_every_figure(run_copy: Path, checked, tmp_path):
    build_report(run_copy, tmp_path / "report")
    assert checked == {}

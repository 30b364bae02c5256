"""Tests for ``colearn report``."""

from __future__ import annotations

from pathlib import Path

import pytest

import colearning.report
from colearning.cli import build_parser, main


def test_report_command_calls_build_report_and_prints_the_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    calls = []

    def fake(path, out=None, allow_incomplete=False):
        calls.append((path, out) + ((True,) if allow_incomplete else ()))
        return Path(out or Path(path) / "report") / "report.html"

    monkeypatch.setattr(colearning.report, "build_report", fake)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    assert calls == [(str(tmp_path), str(tmp_path / "o"))]
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'o' / 'report.html'}"
    assert main(["report", str(tmp_path)]) == 0 and calls[-1] == (str(tmp_path), None)
    assert main(["report", str(tmp_path), "--allow-incomplete"]) == 0
    assert calls[-1] == (str(tmp_path), None, True)


def test_report_command_on_a_non_run_directory_exits_4(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]):
    assert main(["report", str(tmp_path)]) == 4
    assert "neither a run directory" in capsys.readouterr().err


def test_report_help_documents_the_command(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["report", "--help"])
    text = capsys.readouterr().out
    assert "PATH" in text and "--out" in text and "report.html" in text

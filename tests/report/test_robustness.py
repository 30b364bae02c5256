"""The run report's section on ``colearn evaluate``'s files: hand-written files in, figures,
tables and numbers out; a run that was never evaluated gets no section and no figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from colearning.metrics import ood_metrics
from colearning.metrics.ood import roc_curve
from colearning.report.robustness import (
    read_evaluation,
    robustness_section,
    shift_by_severity,
)
from tests.report.conftest import write_evaluation_files

FIGURES = {"shift_severity", "ood_roc", "risk_coverage"}


def test_every_file_draws_its_figure_and_tables(tmp_path: Path):
    write_evaluation_files(tmp_path / "run")
    evaluation = read_evaluation(tmp_path / "run")
    assert set(evaluation.scores) == {"noise", "svhn"} and not evaluation.problems
    section = robustness_section(evaluation, "N=3, β=-0.2", tmp_path / "out")
    assert {p.stem for p in section.figures} == FIGURES
    assert all(p.stat().st_size > 5_000 for p in section.figures)
    shift, ood, calibration = section.tables
    assert shift.rows[0][:2] == [0, "90.00"]  # clean
    # severity 5: the mean over corruptions of 0.9 - 0.1 * 5 and 0.9 - 0.15 * 5
    assert shift.rows[-1][:2] == [5, f"{100 * (0.4 + 0.15) / 2:.2f}"]
    assert len(ood.rows) == 8
    assert calibration.rows[1] == ["ensemble ECE (15 bins)", "0.045", "0.012"]
    assert "Temperature of the ensemble: 1.3" in section.text
    assert "accuracy at 90% coverage 95.00%" in section.text


def test_shift_curves_average_over_corruptions_from_the_clean_row(tmp_path: Path):
    import pandas as pd

    write_evaluation_files(tmp_path)
    severity, ensemble, members, per_corruption = shift_by_severity(
        pd.read_csv(tmp_path / "evaluation" / "shift.csv"))
    assert severity.tolist() == [0, 1, 2, 3, 4, 5]
    expected = [0.9] + [0.9 - 0.125 * s for s in range(1, 6)]
    np.testing.assert_allclose(ensemble["accuracy"], expected, atol=1e-4)
    np.testing.assert_allclose(members["accuracy"][1:], np.array(expected[1:]) - 0.05,
                               atol=1e-4)
    assert members["accuracy"][0] == pytest.approx(0.85)
    assert list(per_corruption) == ["gaussian_noise", "contrast"]
    assert per_corruption["contrast"]["accuracy"][0] == pytest.approx(0.9)


def test_roc_area_is_the_auroc_with_ties():
    rng = np.random.default_rng(1)
    inside = rng.integers(0, 5, 40).astype(float)  # many ties
    outside = rng.integers(0, 4, 30).astype(float)
    fpr, tpr = roc_curve(inside, outside)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(ood_metrics(inside, outside)["auroc"])


def test_a_run_never_evaluated_has_no_section(tmp_path: Path):
    assert robustness_section(read_evaluation(tmp_path), "tag", tmp_path) is None
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "summary.json").write_text("{}")
    assert robustness_section(read_evaluation(tmp_path), "tag", tmp_path) is None
    assert not list(tmp_path.glob("*.png"))


def test_partial_and_corrupt_files_draw_what_they_can(tmp_path: Path):
    folder = write_evaluation_files(tmp_path)
    (folder / "ood_scores.npz").write_bytes(b"not a zip")
    (folder / "shift.csv").unlink()
    calibration = json.loads((folder / "calibration.json").read_text())
    (folder / "calibration.json").write_text(json.dumps(
        {"temperature_ensemble": calibration["temperature_ensemble"],
         "note": "the run holds out no validation split"}))
    section = robustness_section(read_evaluation(tmp_path), "tag", tmp_path / "out")
    assert section.figures == []
    assert "ood_scores.npz" in section.warning
    assert "no validation split" in section.text
    assert [t.caption.split()[0] for t in section.tables] == ["OOD"]

from __future__ import annotations

from pathlib import Path

from colearning.report import build_report

FIGURES = {"accuracy_vs_beta", "js_vs_beta", "gain_heatmap", "optimal_beta",
           "accuracy_vs_beta_bar", "gain_over_epochs", "accuracy_over_epochs",
           "accuracy_vs_beta_geometric", "gain_heatmap_geometric", "accuracy_vs_beta_vote",
           "gain_heatmap_vote"}


def test_sweep_report_has_every_figure(tiny_sweep: Path, tmp_path):
    page = build_report(tiny_sweep, tmp_path / "report")
    assert page == tmp_path / "report" / "report.html"
    assert {p.stem for p in (tmp_path / "report").glob("*.png")} == FIGURES
    text = page.read_text()
    for heading in ("Accuracy vs coupling", "Optimal coupling vs N", "Gain along training",
                    "Wilcoxon signed-rank", "majority vote", "geometric mean"):
        assert heading in text
    assert text.count("<img") == len(FIGURES)
    assert "chosen on the validation split" in text  # the tiny sweep holds out 100 images


def test_optimal_beta_table_says_the_choice_was_made_on_test_without_validation(tmp_path):
    from colearning.report.sweep import _scaling_section

    summary = [{"N": 2, "beta": b, "beta_bar": 2 * b, "n_cells": 2, "n_finished": f,
                "test/ensemble_accuracy_mean:mean": acc, "test/ensemble_accuracy_mean:std": 0.0}
               for b, f, acc in ((0.0, 2, 0.6), (-0.2, 1, 0.7), (-0.1, 2, 0.65))]
    section = _scaling_section(summary, [], [2], tmp_path)
    (table,) = section.tables
    assert "chosen on the TEST set" in table.caption and "not eligible" in table.caption
    assert table.rows[0][1] == "-0.1" and table.rows[0][-1] == "-0.2"  # -0.2: 1 of 2 finished


def test_sweep_report_text_stays_inside_every_figure(tiny_sweep: Path, checked, tmp_path):
    build_report(tiny_sweep, tmp_path / "report")
    assert checked == {}

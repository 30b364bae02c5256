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

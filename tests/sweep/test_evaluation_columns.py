"""Sweep tables and ``colearn compare --metric`` carry ``colearn evaluate``'s results: hand-written
evaluation/summary.json files in the cells of a copy of the tiny sweep."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from colearning.cli import main
from colearning.errors import ConfigError
from colearning.sweep.compare import compare_sweeps, markdown
from colearning.sweep.table import cell_rows, facet_keys, summarize, write_tables

MI = "ood/auroc_mutual_information"


def _summary(row: dict) -> dict:
    """Made-up evaluation results of one cell: they depend on N, beta and the seed."""
    coupled = row["beta"] != 0
    return {"shift/accuracy_mean": 0.5 + 0.02 * row["seed"] + (0.03 + 0.01 * row["seed"])
            * coupled + 0.1 * (row["N"] == 3),
            "shift/ece_mean": 0.1 - 0.01 * coupled * (row["seed"] + 1),
            MI: 0.7 + 0.05 * coupled - 0.02 * row["seed"], "ood/auroc_entropy": 0.8,
            "ood/noise/auroc_mutual_information": 0.7, "selective/aurc": 0.01,
            "calibration/temperature_ensemble": 1.2, "evaluated_epoch": 2,
            "date": "2026-12-06T17:00:00"}


@pytest.fixture(scope="module")
def evaluated_sweep(tiny_sweep: Path, tmp_path_factory) -> Path:
    """The tiny sweep with evaluation/summary.json in every cell but (N=3, beta=0, seed 1)."""
    copy = Path(shutil.copytree(tiny_sweep, tmp_path_factory.mktemp("evaluated") / "sweep"))
    for row in cell_rows(copy):
        if (row["N"], row["beta"], row["seed"]) == (3, 0.0, 1):
            continue
        folder = copy / "cells" / row["cell"] / "evaluation"
        folder.mkdir()
        (folder / "summary.json").write_text(json.dumps(_summary(row)))
    return copy


def test_results_and_summary_carry_the_evaluation_columns(evaluated_sweep: Path,
                                                          tiny_sweep: Path):
    rows = cell_rows(evaluated_sweep)
    for row in rows:
        missing = (row["N"], row["beta"], row["seed"]) == (3, 0.0, 1)
        assert (row.get("shift/accuracy_mean") is None) == missing
        if not missing:
            assert row[MI] == pytest.approx(_summary(row)[MI])
            assert row["ood/noise/auroc_mutual_information"] == 0.7
            assert row["evaluated_epoch"] == 2 and "date" not in row
    assert facet_keys(rows) == facet_keys(cell_rows(tiny_sweep))  # no new facets
    written = write_tables(evaluated_sweep)
    results = pd.read_csv(written["results.csv"])
    assert {"shift/accuracy_mean", "shift/ece_mean", MI, "selective/aurc"} <= set(results)
    summary = {(r["N"], r["beta"]): r for r in summarize(rows)}
    group = [r["shift/accuracy_mean"] for r in rows if r["N"] == 2 and r["beta"] != 0]
    assert summary[(2, -0.3)]["shift/accuracy_mean:mean"] == pytest.approx(sum(group) / 2)
    assert math.isnan(summary[(3, 0.0)]["shift/accuracy_mean:std"])  # one evaluated seed
    # a sweep whose runs were never evaluated has no such column
    assert not any(k.startswith("shift/") for k in pd.read_csv(
        write_tables(tiny_sweep)["results.csv"]))


@pytest.mark.parametrize("metric", ["shift/accuracy_mean", MI])
def test_compare_on_an_evaluation_metric_is_seed_paired(evaluated_sweep: Path, metric: str):
    rows = {(r["configuration"], r["N"]): r for r in compare_sweeps([evaluated_sweep],
                                                                    metric=metric)}
    cells = cell_rows(evaluated_sweep)
    for n, name, seeds in ((2, "colearning beta_bar=-0.6", (0, 1)),
                           (3, "colearning beta_bar=-0.9", (0,))):
        mine = {c["seed"]: c[metric] for c in cells if c["N"] == n and c["beta"] != 0}
        theirs = {c["seed"]: c.get(metric) for c in cells if c["N"] == n and c["beta"] == 0}
        diff = [mine[s] - theirs[s] for s in seeds]  # seed 1 of N=3, beta=0: not evaluated
        row = rows[(name, n)]
        assert row["metric"] == metric and row["direction"] == "max"
        assert row["pairs"] == len(seeds)
        assert row["diff:mean"] == pytest.approx(sum(diff) / len(diff))
        assert row["p"] == pytest.approx(stats.wilcoxon(diff).pvalue)
        assert row["value:mean"] == pytest.approx(sum(mine.values()) / 2)
        assert row["n_values"] == 2
    assert rows[("independent", 3)]["n_values"] == 1
    assert math.isnan(rows[("independent", 2)]["p"])
    text = markdown(list(rows.values()))
    assert f"diff vs independent in {metric} (" in text and "higher is better" in text


def test_compare_metric_cli_and_errors(evaluated_sweep: Path, tiny_sweep: Path, capsys):
    assert main(["compare", str(evaluated_sweep), "--metric", "shift/ece_mean"]) == 0
    printed = capsys.readouterr().out
    assert "lower is better" in printed and "| shift/ece_mean |" in printed
    line = next(x for x in printed.splitlines() if x.startswith("| colearning beta_bar=-0.6"))
    assert "| -0.015 |" in line  # the mean over seeds 0 and 1 of -0.01 * (seed + 1)
    with pytest.raises(ConfigError, match="run colearn evaluate"):
        compare_sweeps([tiny_sweep], metric="shift/accuracy_mean")
    with pytest.raises(ConfigError, match="test/ensemble_nll"):
        compare_sweeps([tiny_sweep], metric="no/such_column")
    assert compare_sweeps([tiny_sweep], metric="test/ensemble_nll")[0]["direction"] == "min"


def test_sweep_report_tabulates_the_evaluation(evaluated_sweep: Path, tiny_sweep: Path):
    from colearning.report.sweep import _robustness_section

    rows = cell_rows(evaluated_sweep)
    section = _robustness_section(rows, summarize(rows), [])
    means, paired = section.tables
    assert "shift/accuracy_mean" in means.header and MI in means.header
    assert "ood/noise/auroc_mutual_information" not in means.header  # per-set: results.csv only
    assert {r[0] for r in paired.rows} >= {"shift/accuracy_mean", "shift/ece_mean", MI}
    never = cell_rows(tiny_sweep)
    assert _robustness_section(never, summarize(never), []) is None

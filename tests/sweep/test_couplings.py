"""Sweeps over couplings: a coupling's parameters are grid keys, and tables, the optimal
coupling, compare and the report group cells by the coupling's label."""

from __future__ import annotations

import pytest

from colearning.cli import main
from colearning.sweep import analysis
from colearning.sweep.compare import compare_sweeps
from colearning.sweep.spec import spec_from_dict
from colearning.sweep.table import cell_rows, facet_keys, summarize
from tests.sweep.conftest import TINY_BASE, write_sweep

RINGS = {"name": "rings", "base": {**TINY_BASE, "ensemble": {"n_members": 5},
                                   "loss": {"coupling": "ring"}},
         "grid": {"loss.coupling_options.k": [1, 2], "beta_bar": [-0.6, 0.0]}, "seeds": 2}


@pytest.fixture(scope="module")
def ring_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("rings")
    out = root / "out"
    assert main(["sweep", "--config", str(write_sweep(root / "s.yaml", RINGS)), "--out",
                 str(out), "--no-progress", "--pack", "4"]) == 0
    return out


def test_a_coupling_option_is_a_grid_key():
    spec = spec_from_dict(RINGS)
    cells = spec.cells()
    assert [c.name for c in cells[:2]] == ["k1_betabar-0.6_seed0", "k1_betabar0_seed0"]
    assert {c.config["loss"]["coupling_options"]["k"] for c in cells} == {1, 2}
    with pytest.raises(Exception, match="unknown option 'q' of coupling ring"):
        from colearning.config import config_from_dict
        from colearning.training.run import preflight

        bad = spec_from_dict({**RINGS, "grid": {"loss.coupling_options.q": [1]}})
        preflight(config_from_dict(bad.cells()[0].config))


def test_tables_group_by_the_coupling_label(ring_sweep):
    rows = cell_rows(ring_sweep)
    assert {r["coupling"] for r in rows} == {"ring(k=1)", "ring(k=2)"}
    assert {r["independent"] for r in rows if r["beta_bar"] == 0} == {True}
    assert {r["independent"] for r in rows if r["beta_bar"] != 0} == {False}
    assert facet_keys(rows) == ["coupling"]
    summary = summarize(rows)
    assert sorted((s["coupling"], s["beta_bar"], s["n_finished"]) for s in summary) == [
        ("ring(k=1)", -0.6, 2), ("ring(k=1)", 0.0, 2), ("ring(k=2)", -0.6, 2),
        ("ring(k=2)", 0.0, 2)]
    best = analysis.optimal_beta(summary, facets=facet_keys(rows))
    assert sorted((b["coupling"], round(b["beta_bar"], 6)) for b in best) == [
        ("ring(k=1)", -0.6), ("ring(k=2)", -0.6)]
    # compare: the two rings apart, every uncoupled cell one reference
    names = {r["configuration"]: r for r in compare_sweeps([ring_sweep])}
    assert set(names) == {"independent", "colearning beta_bar=-0.6 ring(k=1)",
                          "colearning beta_bar=-0.6 ring(k=2)"}
    assert names["independent"]["n_cells"] == 4
    assert names["colearning beta_bar=-0.6 ring(k=2)"]["pairs"] == 2


def test_the_report_draws_one_curve_set_per_coupling(ring_sweep, tmp_path):
    assert main(["report", str(ring_sweep), "--out", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "ring(k=1)" in html and "ring(k=2)" in html

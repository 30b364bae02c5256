"""colearn compare: configurations of several sweeps side by side, paired by seed."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from scipy import stats

from colearning.cli import main
from colearning.sweep.compare import compare_sweeps, label
from colearning.sweep.table import cell_rows
from tests.sweep.conftest import TINY_BASE, write_sweep

INTERPOLATED = {"name": "tiny_interpolated",
                "base": {**TINY_BASE, "loss": {"objective": "interpolated", "joint_weight": 0.5}},
                "grid": {"N": [2, 3], "joint_weight": [0.5, 1.0]}, "seeds": 2}


@pytest.fixture(scope="module")
def interpolated_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("interpolated")
    out = root / "out"
    assert main(["sweep", "--config", str(write_sweep(root / "s.yaml", INTERPOLATED)), "--out",
                 str(out), "--no-progress"]) == 0
    return out


def test_labels():
    assert label({"loss.objective": "colearning", "beta": 0.0, "beta_bar": 0.0}) == "independent"
    assert label({"loss.objective": "colearning", "beta": -0.25, "beta_bar": -0.5}) == \
        "colearning beta_bar=-0.5"
    assert label({"loss.objective": "interpolated", "loss.joint_weight": 0.25}) == \
        "interpolated lambda=0.25"
    assert label({"loss.objective": "joint", "loss.kl_reduction": "mean"},
                 ["loss.kl_reduction"]) == "joint kl_reduction=mean"
    # the coupling's label and the divergence, unless the paper's; no coupling: independent
    ring = {"beta": -0.05, "beta_bar": -0.5, "coupling": "ring(k=2)", "loss.divergence": "js",
            "independent": False}
    assert label(ring) == "colearning beta_bar=-0.5 ring(k=2) js"
    assert label({**ring, "beta": 0.0, "beta_bar": 0.0, "independent": True}) == "independent"
    assert label({"beta": 0.0, "beta_bar": 0.0, "independent": False,
                  "coupling": "communities(beta_in=0.1,beta_out=-0.1,groups=2)"}) == \
        "colearning communities(beta_in=0.1,beta_out=-0.1,groups=2)"


@pytest.mark.slow
def test_compare_two_sweeps(tiny_sweep, interpolated_sweep):
    rows = compare_sweeps([tiny_sweep, interpolated_sweep])
    names = {(r["configuration"], r["N"]) for r in rows}
    assert names == {(name, n) for n in (2, 3) for name in (
        "independent", "colearning beta_bar=-0.6" if n == 2 else "colearning beta_bar=-0.9",
        "interpolated lambda=0.5", "interpolated lambda=1")}
    cells = {(r["cell"], r["N"]): r for r in cell_rows(tiny_sweep) + cell_rows(interpolated_sweep)}
    for row in rows:
        assert row["n_cells"] == row["n_finished"] == 2
        assert row["selected_on"] == "val"
    # the numbers, recomputed from the cell rows by hand
    reference = {c["seed"]: c["best/ensemble_accuracy_mean"]
                 for c in cell_rows(tiny_sweep) if c["N"] == 2 and c["beta"] == 0}
    mine = {c["seed"]: c["best/ensemble_accuracy_mean"] for c in cell_rows(interpolated_sweep)
            if c["N"] == 2 and c["loss.joint_weight"] == 1.0}
    row = next(r for r in rows if r["configuration"] == "interpolated lambda=1" and r["N"] == 2)
    assert row["ensemble:mean"] == pytest.approx(sum(mine.values()) / 2)
    assert row["ensemble:std"] == pytest.approx(pd.Series(list(mine.values())).std())
    diff = [mine[s] - reference[s] for s in (0, 1)]
    assert row["diff:mean"] == pytest.approx(sum(diff) / 2)
    if any(diff):
        assert row["p"] == pytest.approx(stats.wilcoxon(diff).pvalue)
    independent = next(r for r in rows if r["configuration"] == "independent" and r["N"] == 2)
    assert independent["diff:mean"] == 0 and math.isnan(independent["p"])
    # one selected configuration per family and N, chosen on validation
    for n in (2, 3):
        chosen = [r for r in rows if r["N"] == n and r["objective"] == "interpolated"
                  and r["selected"]]
        assert len(chosen) == 1
        assert chosen[0]["val:mean"] == max(r["val:mean"] for r in rows if r["N"] == n
                                            and r["objective"] == "interpolated")
    assert len(cells) == 16


def test_compare_cli(tiny_sweep, interpolated_sweep, tmp_path, capsys):
    out = tmp_path / "table.csv"
    assert main(["compare", str(tiny_sweep), str(interpolated_sweep), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| interpolated lambda=0.5 | 2 | 2/2 |" in printed
    assert len(pd.read_csv(out)) == 8
    assert main(["compare", str(tmp_path)]) == 4
    assert "no sweep.yaml" in capsys.readouterr().err


def test_collapse_epochs_are_the_first_epoch_with_a_collapsed_member(tiny_sweep, tmp_path):
    import shutil

    from colearning import rundir
    from colearning.sweep.compare import markdown

    copy = tmp_path / "copy"
    shutil.copytree(tiny_sweep, copy)
    cell = next(r for r in cell_rows(copy) if r["N"] == 2 and r["beta"] != 0 and r["seed"] == 1)
    path = copy / "cells" / cell["cell"] / rundir.METRICS
    records = rundir.read_jsonl(path)
    records[-1]["test/member_collapsed"] = [False, True]  # as if member 1 collapsed at the end
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = {(r["configuration"], r["N"]): r for r in compare_sweeps([copy])}
    row = rows[("colearning beta_bar=-0.6", 2)]
    assert row["collapse_epochs"] == [records[-1]["epoch"]]
    assert rows[("independent", 2)]["collapse_epochs"] == []
    line = next(line for line in markdown(list(rows.values())).splitlines()
                if line.startswith("| colearning beta_bar=-0.6"))
    assert f" | 2 | 2/2 | 1 ({records[-1]['epoch']}) | " in line


def test_each_convention_is_compared_with_its_own_independent_runs(tmp_path):
    sweep = {"name": "conventions", "base": TINY_BASE,
             "grid": {"kl_reduction": ["batchmean", "mean_all"], "beta": [-0.3, 0.0]},
             "seeds": 2}
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(write_sweep(tmp_path / "s.yaml", sweep)), "--out",
                 str(out), "--no-progress", "--pack", "4"]) == 0
    rows = {r["configuration"]: r for r in compare_sweeps([out])}
    cells = cell_rows(out)
    for convention in ("batchmean", "mean_all"):
        coupled = rows[f"colearning beta_bar=-0.6 kl_reduction={convention}"]
        assert coupled["reference"] == f"independent kl_reduction={convention}"
        assert coupled["pairs"] == 2 and not coupled["is_reference"]
        mine = {c["seed"]: c["best/ensemble_accuracy_mean"] for c in cells
                if c["loss.kl_reduction"] == convention and c["beta"] != 0}
        theirs = {c["seed"]: c["best/ensemble_accuracy_mean"] for c in cells
                  if c["loss.kl_reduction"] == convention and c["beta"] == 0}
        assert coupled["diff:mean"] == pytest.approx(
            sum(mine[s] - theirs[s] for s in (0, 1)) / 2)
        # one pick per convention, never an independent row among the coupled ones
        assert not rows[f"independent kl_reduction={convention}"]["selected"] or \
            rows[f"independent kl_reduction={convention}"]["is_reference"]
    assert sum(r["selected"] for r in rows.values() if not r["is_reference"]) == 2


def test_the_same_seed_trained_differently_is_refused(tiny_sweep, tmp_path):
    import shutil

    import yaml

    from colearning.errors import ConfigError

    # the same sweep twice: its cells are the same trainings and count once
    rows = compare_sweeps([tiny_sweep, tiny_sweep])
    independent = next(r for r in rows if r["configuration"] == "independent" and r["N"] == 2)
    assert independent["n_cells"] == 4 and independent["pairs"] == 2
    # a copy trained for other epochs is not the same training
    other = tmp_path / "other"
    shutil.copytree(tiny_sweep, other)
    spec = yaml.safe_load((other / "sweep.yaml").read_text())
    spec["base"]["train"]["epochs"] = 3
    (other / "sweep.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"has two different seed-0 cells .* differ in "
                                          r"train.epochs\); compare sweeps that differ only"):
        compare_sweeps([tiny_sweep, other])


def test_an_unknown_reference_is_refused_with_the_valid_names(tiny_sweep, capsys):
    from colearning.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown reference 'foo': no configuration of these "
                                          r"sweeps is called that; valid: colearning "
                                          r"beta_bar=-0.6, colearning beta_bar=-0.9, "
                                          r"independent$"):
        compare_sweeps([tiny_sweep], reference="foo")
    assert main(["compare", str(tiny_sweep), "--reference", "foo"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("colearn: error: unknown reference 'foo'")
    assert captured.err.count("\n") == 1


def test_the_table_names_the_reference_it_used(tiny_sweep, interpolated_sweep, capsys):
    from colearning.sweep.compare import markdown

    rows = compare_sweeps([tiny_sweep, interpolated_sweep], reference="interpolated lambda=1")
    header = markdown(rows).splitlines()[0]
    assert "| diff vs interpolated lambda=1 (pp) |" in header and "independent" not in header
    reference = {c["seed"]: c["best/ensemble_accuracy_mean"] for c in cell_rows(interpolated_sweep)
                 if c["N"] == 2 and c["loss.joint_weight"] == 1.0}
    mine = {c["seed"]: c["best/ensemble_accuracy_mean"] for c in cell_rows(tiny_sweep)
            if c["N"] == 2 and c["beta"] == 0}
    row = next(r for r in rows if r["configuration"] == "independent" and r["N"] == 2)
    assert not row["is_reference"] and row["pairs"] == 2
    assert row["diff:mean"] == pytest.approx(sum(mine[s] - reference[s] for s in (0, 1)) / 2)
    assert main(["compare", str(tiny_sweep), "--reference", "colearning beta_bar=-0.6"]) == 0
    printed = capsys.readouterr().out
    assert "| diff vs colearning beta_bar=-0.6 (pp) |" in printed.splitlines()[0]
    assert main(["compare", str(tiny_sweep)]) == 0  # the default: independent
    assert "| diff vs independent (pp) |" in capsys.readouterr().out.splitlines()[0]


def test_sweeps_without_an_independent_configuration_say_so(interpolated_sweep, capsys):
    assert main(["compare", str(interpolated_sweep)]) == 0
    captured = capsys.readouterr()
    assert "| interpolated lambda=0.5 | 2 | 2/2 |" in captured.out
    assert captured.err == ("colearn: note: these sweeps have no independent configuration, so "
                            "no differences; give --reference NAME, one of: interpolated "
                            "lambda=0.5, interpolated lambda=1\n")
    assert main(["compare", str(interpolated_sweep), "--reference", "independent"]) == 2
    assert "valid: interpolated lambda=0.5, interpolated lambda=1" in capsys.readouterr().err


def test_compare_at_a_fixed_epoch_counts_every_cell_that_reached_it(tiny_sweep, tmp_path,
                                                                     capsys):
    import shutil

    from colearning import rundir
    from colearning.errors import ConfigError

    copy = tmp_path / "copy"
    shutil.copytree(tiny_sweep, copy)
    # one cell stopped after its first epoch: not finished, but it reached epoch 1
    cell = next(r for r in cell_rows(copy) if r["N"] == 2 and r["beta"] != 0 and r["seed"] == 1)
    cell_dir = copy / "cells" / cell["cell"]
    records = rundir.read_jsonl(cell_dir / rundir.METRICS)
    (cell_dir / rundir.METRICS).write_text(json.dumps(records[0]) + "\n")
    summary = json.loads((cell_dir / rundir.SUMMARY).read_text())
    (cell_dir / rundir.SUMMARY).write_text(json.dumps({**summary, "status": "interrupted"}))

    first = {(r["configuration"], r["N"]): r for r in compare_sweeps([copy], epoch=1)}
    row = first[("colearning beta_bar=-0.6", 2)]
    assert row["n_finished"] == 2 and row["epoch:mean"] == 1
    mine = {c["seed"]: c["best/ensemble_accuracy_mean"] for c in cell_rows(copy, epoch=1)
            if c["N"] == 2 and c["beta"] != 0}
    assert mine[1] == records[0]["test/ensemble_accuracy_mean"]
    assert row["ensemble:mean"] == pytest.approx(sum(mine.values()) / 2)
    reference = {c["seed"]: c["best/ensemble_accuracy_mean"] for c in cell_rows(copy, epoch=1)
                 if c["N"] == 2 and c["beta"] == 0}
    assert row["diff:mean"] == pytest.approx(sum(mine[s] - reference[s] for s in (0, 1)) / 2)
    # at epoch 2, and at the selected epoch, the stopped cell is left out
    assert {(r["configuration"], r["N"]): r for r in compare_sweeps([copy], epoch=2)}[
        ("colearning beta_bar=-0.6", 2)]["n_finished"] == 1
    assert {(r["configuration"], r["N"]): r for r in compare_sweeps([copy])}[
        ("colearning beta_bar=-0.6", 2)]["n_finished"] == 1
    assert main(["compare", str(copy), "--epoch", "1"]) == 0
    assert "| at epoch 1 |" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--epoch"):
        compare_sweeps([copy], epoch=0)
    assert main(["compare", str(copy), "--epoch", "0"]) == 2
    assert "--epoch must be" in capsys.readouterr().err

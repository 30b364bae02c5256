"""Local sweeps: the tiny digits sweep, a failing cell, an interrupted cell resumed."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from colearning import rundir
from colearning.sweep import load_spec, load_sweep_spec, run_sweep
from colearning.sweep.cell import run_cell
from colearning.sweep.layout import CELL_ERROR, CELLS, cell_status
from colearning.sweep.runner import prepare
from colearning.sweep.table import read_csv

from .conftest import TINY_BASE, write_sweep

NAMES = ["N2_beta-0.3_seed0", "N2_beta0_seed0", "N3_beta-0.3_seed0", "N3_beta0_seed0",
         "N2_beta-0.3_seed1", "N2_beta0_seed1", "N3_beta-0.3_seed1", "N3_beta0_seed1"]


def test_tiny_sweep_writes_run_dirs_and_tables(tiny_sweep: Path):
    assert sorted(p.name for p in (tiny_sweep / CELLS).iterdir()) == sorted(NAMES)
    results = read_csv(tiny_sweep / "results.csv")
    assert [r["cell"] for r in results] == NAMES
    assert all(r["status"] == "finished" and r["epochs_completed"] == 2 for r in results)
    for column in ("N", "beta", "beta_bar", "seed", "test/ensemble_accuracy_mean",
                   "test/ensemble_accuracy_geometric", "test/ensemble_accuracy_vote",
                   "test/member_accuracy_mean", "test/js_mean", "n_collapsed", "model.name"):
        assert column in results[0]
    first = results[0]
    summary = json.loads((tiny_sweep / CELLS / NAMES[0] / rundir.SUMMARY).read_text())
    assert first["test/ensemble_accuracy_mean"] == pytest.approx(
        summary["test/ensemble_accuracy_mean"])
    assert (first["N"], first["beta"], first["beta_bar"], first["seed"]) == (2, -0.3, -0.6, 0)
    summary_rows = read_csv(tiny_sweep / "summary.csv")
    assert [(s["N"], s["beta"], s["n_finished"]) for s in summary_rows] == [
        (2, -0.3, 2), (2, 0.0, 2), (3, -0.3, 2), (3, 0.0, 2)]
    seeds = [r["test/ensemble_accuracy_mean"] for r in results if r["cell"].startswith("N3_beta0")]
    assert summary_rows[3]["test/ensemble_accuracy_mean:mean"] == pytest.approx(sum(seeds) / 2)
    epochs = read_csv(tiny_sweep / "epochs.csv")
    assert len(epochs) == 16 and {e["epoch"] for e in epochs} == {1, 2}
    assert (tiny_sweep / "results.parquet").exists() or pytest.importorskip("pyarrow") is None


def test_rerun_skips_finished_cells(tiny_sweep: Path):
    mtimes = {p: p.stat().st_mtime_ns for p in (tiny_sweep / CELLS).rglob("*") if p.is_file()}
    result = run_sweep(load_sweep_spec(tiny_sweep), tiny_sweep, workers=2, progress=False)
    assert result.ok and all(o.skipped for o in result.outcomes) and len(result.outcomes) == 8
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_failed_cell_is_recorded_and_interrupted_cell_resumes(tmp_path, monkeypatch):
    # batch 5000 > the 400 training images: a config that validates but fails at run time
    sweep = {"name": "fail", "base": {**TINY_BASE, "ensemble": {"n_members": 2}},
             "grid": {"train.batch_size": [5000, 100]}, "seeds": 1}
    spec = load_spec(write_sweep(tmp_path / "fail.yaml", sweep))
    out = tmp_path / "out"
    bad, good = spec.cells()
    assert (bad.name, good.name) == ("batch_size5000_seed0", "batch_size100_seed0")

    # A real SIGTERM during the good cell's first epoch: it checkpoints and stops.
    import colearning.training.records as records

    real_save = records.save_checkpoint

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(records, "save_checkpoint", save_then_stop)
    prepare(spec, out)
    good_dir = out / CELLS / good.name
    outcome = run_cell(good.config, str(good_dir))
    monkeypatch.undo()
    assert outcome.status == "interrupted" == cell_status(good_dir)
    first_epoch = (good_dir / rundir.METRICS).read_text().splitlines()
    assert len(first_epoch) == 1

    result = run_sweep(spec, out, workers=1, progress=False)
    status = {o.name: o.status for o in result.outcomes}
    assert status == {bad.name: "failed", good.name: "finished"} and not result.ok
    error = json.loads((out / CELLS / bad.name / CELL_ERROR).read_text())
    assert error["error_type"] == "ConfigError" and "batch_size" in error["message"]
    lines = (good_dir / rundir.METRICS).read_text().splitlines()
    assert lines[0] == first_epoch[0] and len(lines) == 2  # continued, not retrained
    rows = {r["cell"]: r for r in read_csv(out / "results.csv")}
    assert rows[bad.name]["status"] == "failed" and "batch_size" in rows[bad.name]["error"]
    assert rows[good.name]["status"] == "finished" and rows[good.name]["epochs_completed"] == 2


def test_sweep_dir_with_another_base_is_refused(tiny_sweep: Path, tmp_path):
    from colearning.errors import RunDirError
    from colearning.sweep.spec import spec_from_dict

    other = spec_from_dict({"base": {**TINY_BASE, "seed": 5}, "grid": {"beta": [0.0]}})
    with pytest.raises(RunDirError, match="another base config"):
        run_sweep(other, tiny_sweep, progress=False)


def test_cli_dry_run_lists_cells(tiny_sweep: Path, capsys):
    from colearning.cli import main

    assert main(["sweep", "--resume", str(tiny_sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 cells" in out and "N3_beta0_seed1" in out and "finished" in out


@pytest.mark.slow
def test_packed_sweep_equals_unpacked_sweep(tiny_sweep: Path, tmp_path):
    """The session's tiny sweep ran unpacked (--pack auto on CPU); packed gives the same."""
    assert not (tiny_sweep / CELLS / NAMES[0] / "packs.jsonl").exists()
    spec = load_sweep_spec(tiny_sweep)
    packed = tmp_path / "packed"
    result = run_sweep(spec, packed, workers=2, pack="auto", pack_members=16, progress=False)
    assert result.ok
    packs = {tuple(line["cells"]) for name in NAMES
             for line in rundir.read_jsonl(packed / CELLS / name / "packs.jsonl")}
    assert len(packs) == 2 and sorted(len(p) for p in packs) == [4, 4]  # 20 members, budget 16
    for packed_row, alone_row in zip(read_csv(packed / "results.csv"),
                                     read_csv(tiny_sweep / "results.csv"), strict=True):
        for key in ("test/ensemble_accuracy_mean", "test/js_mean", "val/ensemble_accuracy_mean"):
            assert packed_row[key] == pytest.approx(alone_row[key], rel=1e-4, abs=1e-6), key


def test_pack_flag(tmp_path, capsys):
    from colearning.cli import main

    spec_file = write_sweep(tmp_path / "s.yaml", {"name": "s", "base": TINY_BASE,
                                                  "grid": {"beta": [0.0]}, "seeds": 1})
    assert main(["sweep", "--config", str(spec_file), "--out", str(tmp_path / "o"),
                 "--pack", "zero", "--no-progress"]) == 2
    assert "--pack must be auto, off or a number" in capsys.readouterr().err


def test_a_stopped_sweep_says_its_cells_checkpointed(tmp_path, monkeypatch, capsys):
    # The local backend re-raises Ctrl-C in the main process once every worker's cell has
    # checkpointed; the one line must not say "before training started".
    import colearning.sweep.runner as runner_module
    from colearning.cli import main

    from .conftest import TINY_SWEEP

    collect, calls = runner_module._collect, []

    def ctrl_c_first(pending, record):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        collect(pending, record)

    monkeypatch.setattr(runner_module, "_collect", ctrl_c_first)
    spec = write_sweep(tmp_path / "s.yaml", TINY_SWEEP)
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(spec), "--out", str(out), "--no-progress",
                 "--workers", "1"]) == 130
    err = capsys.readouterr().err
    assert "every cell that was training checkpointed" in err
    assert f"continue with: colearn sweep --resume {out}" in err
    assert "before training started" not in err

"""Continuing a sweep directory: what --dry-run says against what the run does, and
extending every cell with --resume DIR train.epochs=M."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from colearning import rundir
from colearning.cli import main
from colearning.sweep import load_sweep_spec, spec_from_dict
from colearning.sweep.layout import CELL_ERROR, CELLS, SPEC_FILE
from colearning.sweep.runner import prepare
from colearning.sweep.table import read_csv
from tests.conftest import assert_records_close
from tests.sweep.conftest import TINY_BASE, TINY_SWEEP, write_sweep

ONE_EPOCH = {**TINY_BASE, "train": {**TINY_BASE["train"], "epochs": 1}}


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != rundir.LOCK}


def test_dry_run_says_the_refusal_of_a_changed_base_config(tiny_sweep, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_sweep, copy)
    spec_file = write_sweep(tmp_path / "tiny.yaml", TINY_SWEEP)
    before = _files(copy)
    assert main(["sweep", "-c", str(spec_file), "--out", str(copy), "optim.lr=0.3",
                 "--dry-run"]) == 4
    dry = capsys.readouterr()
    assert dry.out == "" and dry.err.count("\n") == 1
    assert f"{copy} holds a sweep with another base config (optim.lr: 0.1 -> 0.3); only " \
           "train.epochs may grow" in dry.err
    # the run refuses the same way, and nothing changed
    assert main(["sweep", "-c", str(spec_file), "--out", str(copy), "optim.lr=0.3",
                 "--no-progress"]) == 4
    assert capsys.readouterr().err == dry.err
    assert _files(copy) == before


def test_dry_run_says_a_cell_with_a_changed_config_is_refused(tiny_sweep, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_sweep, copy)
    cell = copy / CELLS / "N2_beta0_seed1"
    # extended alone to 5 epochs and stopped there: the sweep says 2, which the cell refuses
    config = yaml.safe_load((cell / rundir.CONFIG).read_text())
    config["train"]["epochs"] = 5
    (cell / rundir.CONFIG).write_text(yaml.safe_dump(config))
    summary = json.loads((cell / rundir.SUMMARY).read_text())
    (cell / rundir.SUMMARY).write_text(json.dumps({**summary, "status": "interrupted"}))
    before = _files(copy)

    assert main(["sweep", "--resume", str(copy), "--dry-run"]) == 0
    lines = {line.split()[0]: line.split(None, 1)[1]
             for line in capsys.readouterr().out.splitlines()[1:]}
    assert _files(copy) == before
    assert sum(plan == "finished" for plan in lines.values()) == 7
    plan = lines["N2_beta0_seed1"]
    assert plan.startswith(f"interrupted: refused: cannot resume {cell} with a changed config "
                           "(train.epochs: 5 -> 2); only train.epochs may grow")
    # the run refuses that cell with the same words, and leaves the others as they are
    assert main(["sweep", "--resume", str(copy), "--no-progress", "-j", "1"]) == 1
    error = json.loads((cell / CELL_ERROR).read_text())
    assert plan == f"interrupted: refused: {error['message']}"
    assert "failed: N2_beta0_seed1: RunDirError: cannot resume" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_extends_every_cell_like_a_straight_run(tiny_sweep, tmp_path, capsys):
    """The same 4 cells as the session's 2-epoch sweep, run for 1 epoch, extended to 2."""
    short = {"name": "short", "base": ONE_EPOCH, "grid": {"N": [2], "beta": [-0.3, 0.0]},
             "seeds": 2}
    out = tmp_path / "out"
    assert main(["sweep", "-c", str(write_sweep(tmp_path / "s.yaml", short)), "--out",
                 str(out), "--workers", "2", "--no-progress"]) == 0
    # a cell that diverged stays as it is (as if it had diverged in its one epoch)
    diverged = out / CELLS / "N2_beta0_seed1"
    summary = json.loads((diverged / rundir.SUMMARY).read_text())
    (diverged / rundir.SUMMARY).write_text(json.dumps({**summary, "status": "diverged"}))
    capsys.readouterr()

    before = _files(out)
    assert main(["sweep", "--resume", str(out), "train.epochs=2", "--dry-run"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert _files(out) == before  # a dry run writes nothing
    assert listing[0] == f"sweep short: 4 cells in {out}; train.epochs 1 -> 2: finished cells " \
                         "are extended"
    assert listing[1].split() == ["N2_beta-0.3_seed0", "finished:", "extended", "from", "1",
                                  "to", "2", "epochs", "(resumes", "in", "epoch", "2)"]
    assert listing[4].split() == ["N2_beta0_seed1", "diverged"]

    assert main(["sweep", "--resume", str(out), "train.epochs=2", "--workers", "2",
                 "--no-progress"]) == 0
    assert load_sweep_spec(out).base["train"]["epochs"] == 2  # saved for a plain --resume
    assert rundir.read_jsonl(out / "config_history.jsonl")[0]["changed"] == {
        "train.epochs": [1, 2]}
    rows = {row["cell"]: row for row in read_csv(out / "results.csv")}
    for name in ("N2_beta-0.3_seed0", "N2_beta0_seed0", "N2_beta-0.3_seed1"):
        records = rundir.read_jsonl(out / CELLS / name / rundir.METRICS)
        straight = rundir.read_jsonl(tiny_sweep / CELLS / name / rundir.METRICS)
        # (dead-layer statistics come with the analysis at a run's last epoch: epoch 1 was)
        assert_records_close([{k: v for k, v in r.items() if k in s} for r, s in
                              zip(records, straight, strict=True)], straight)
        config = yaml.safe_load((out / CELLS / name / rundir.CONFIG).read_text())
        assert config["train"]["epochs"] == 2
        assert rows[name]["status"] == "finished" and rows[name]["epochs_completed"] == 2
    # the epochs a cell trained come from its metrics, not from the sweep's config
    assert rows["N2_beta0_seed1"]["status"] == "diverged"
    assert rows["N2_beta0_seed1"]["train.epochs"] == 2
    assert rows["N2_beta0_seed1"]["epochs_completed"] == 1 == rows["N2_beta0_seed1"]["best/epoch"]

    # a later plain --resume continues with the new length: nothing left to train
    capsys.readouterr()
    after = {p: p.stat().st_mtime_ns for p in (out / CELLS).rglob("*") if p.is_file()}
    assert main(["sweep", "--resume", str(out), "--dry-run"]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]] == [
        "finished", "finished", "finished", "diverged"]
    assert main(["sweep", "--resume", str(out), "--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in after} == after


@pytest.mark.parametrize("key", ["optim.schedule", "loss.beta_schedule"])
def test_extension_is_refused_under_a_schedule_set_by_the_length(key, tmp_path, capsys):
    """Refused for the whole sweep, before anything changes, with `colearn train`'s words."""
    from colearning.errors import RunDirError
    from colearning.training import resume, train

    section, name = key.split(".")
    base = {**ONE_EPOCH, section: {**ONE_EPOCH.get(section, {}), name: "cosine"}}
    spec = spec_from_dict({"name": "cos", "base": base, "grid": {"beta": [-0.3, 0.0]}})
    out = tmp_path / "out"
    prepare(spec, out)
    before = _files(out)
    for dry in (["--dry-run"], []):
        assert main(["sweep", "--resume", str(out), "train.epochs=3", *dry]) == 4
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and _files(out) == before
    # the message of `colearn train --resume RUN train.epochs=3` on that cell alone
    run = train(spec.cells()[0].config, run_dir=tmp_path / "alone")
    with pytest.raises(RunDirError) as refusal:
        resume(run.run_dir, {"train": {"epochs": 3}})
    cell_dir = out / CELLS / spec.cells()[0].name
    assert err.replace(str(cell_dir), "RUN") == \
        f"colearn: error: {refusal.value}\n".replace(str(run.run_dir), "RUN")


def test_resume_takes_train_epochs_only(tmp_path, capsys):
    gridded = spec_from_dict({"name": "g", "base": ONE_EPOCH,
                              "grid": {"train.epochs": [1, 2], "beta": [0.0]}})
    plain = spec_from_dict({"name": "p", "base": {**ONE_EPOCH, "train": {
        **ONE_EPOCH["train"], "epochs": 2}}, "grid": {"beta": [0.0]}})
    prepare(gridded, tmp_path / "gridded")
    prepare(plain, tmp_path / "plain")
    cases = [
        (["plain", "loss.beta=0.1"], 2, "--resume takes the saved sweep; its only key=value is "
                                        "train.epochs=M (to extend every cell); drop "
                                        "loss.beta=0.1"),
        (["plain", "train.epochs=3", "--seeds", "3"], 2, "drop --seeds"),
        (["plain", "train.epochs=1"], 4, "another base config (train.epochs: 2 -> 1); only "
                                         "train.epochs may grow"),
        (["gridded", "train.epochs=3"], 2, "train.epochs=3 sets train.epochs, a grid key of the "
                                           "sweep (train.epochs: [1, 2]); grids live in the "
                                           "sweep file"),
    ]
    for (where, *rest), code, message in cases:
        assert main(["sweep", "--resume", str(tmp_path / where), *rest, "--dry-run"]) == code
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert load_sweep_spec(tmp_path / "plain").base["train"]["epochs"] == 2
    assert not (tmp_path / "plain" / "config_history.jsonl").exists()
    assert (tmp_path / "plain" / SPEC_FILE).exists()

"""A sweep under faults: two drivers at once, stale error files, a killed parent."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from colearning import rundir
from colearning.cli import main
from colearning.sweep.layout import CELL_ERROR, cell_status
from colearning.sweep.table import cell_rows
from tests.sweep.conftest import TINY_BASE, write_sweep


def test_a_sweep_in_use_is_refused(tiny_sweep, capsys):
    with rundir.locked(tiny_sweep):
        assert main(["sweep", "--resume", str(tiny_sweep), "--no-progress"]) == 4
    err = capsys.readouterr().err
    assert f"sweep directory {tiny_sweep} is in use by another process" in err
    assert err.count("\n") == 1


def test_a_stale_error_file_does_not_hide_a_result(tiny_sweep):
    cell = next(p for p in (tiny_sweep / "cells").iterdir() if p.is_dir())
    assert cell_status(cell) == "finished"
    stale = cell / CELL_ERROR
    stale.write_text(json.dumps({"error_type": "RuntimeError", "message": "old attempt"}))
    try:
        assert cell_status(cell) == "finished"
        row = next(r for r in cell_rows(tiny_sweep) if r["cell"] == cell.name)
        assert row["status"] == "finished" and row["error"] is None
    finally:
        stale.unlink()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_workers_die_with_a_killed_sweep_and_the_sweep_resumes(tmp_path):
    slow = dict(TINY_BASE, train=dict(TINY_BASE["train"], epochs=15))
    spec = write_sweep(tmp_path / "s.yaml", {"name": "slow", "base": slow,
                                             "grid": {"beta": [-0.1, 0.0]}, "seeds": 2})
    out = tmp_path / "out"
    parent = subprocess.Popen([sys.executable, "-m", "colearning", "sweep", "--config",
                               str(spec), "--out", str(out), "-j", "2", "--pack", "off",
                               "--no-progress"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            rundir.read_jsonl(p / "metrics.jsonl")
            for p in (out / "cells").glob("*") if p.is_dir()):
        time.sleep(0.1)
    workers = [pid for pid in _children(parent.pid) if _alive(pid)]
    assert workers
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 90  # watch_parent's grace is 30 s
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)
    assert main(["sweep", "--resume", str(out), "--no-progress"]) == 0
    rows = cell_rows(out)
    assert len(rows) == 4 and all(r["status"] == "finished" for r in rows)
    assert all(r["epochs_completed"] == 15 for r in rows)

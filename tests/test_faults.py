"""Operating-system faults, made for real: a full disk (a small tmpfs), a read-only file
system (the tmpfs remounted read-only), paths that are devices or pseudo files.

Each checks the exit code, the one-line message, that no temporary file is left and that
what was written before is intact. The tmpfs tests need mount rights (root in CI's
container); elsewhere they skip.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from colearning import rundir
from colearning.cli import main

SMALL = ["--no-progress", "device=cpu", "data.name=digits", "model.name=small_cnn",
         "model.options={width: 4}", "train.batch_size=256", "train.analysis_every=0"]


def one_line_error(capsys: pytest.CaptureFixture, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("colearn: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def no_temporary_files(path: Path) -> None:
    assert not [p for p in path.rglob("*") if ".tmp" in p.name], list(path.rglob("*"))


@pytest.mark.parametrize("where, message", [
    ("/dev/null", "is a file, not a directory"),
    ("/proc/colearning-test/run", "does not exist (or cannot hold files)"),
])
def test_run_dir_that_cannot_be_one(where, message, capsys):
    assert main(["train", "--run-dir", where, "train.epochs=1", *SMALL]) == 4
    one_line_error(capsys, "cannot create the run directory", message)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill the disk until about ``leave`` bytes are free."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def test_full_disk_during_a_checkpoint_write(small_disk, capsys):
    run = small_disk / "run"
    assert main(["train", "--run-dir", str(run), "train.epochs=1", *SMALL]) == 0
    capsys.readouterr()
    before = {name: (run / name).read_bytes() for name in ("checkpoint.pt", "config.yaml")}
    size = len(before["checkpoint.pt"])
    fill(small_disk, leave=size // 2)  # room for the metrics line, not the checkpoint
    assert main(["train", "--resume", str(run), "train.epochs=2", "--no-progress"]) == 4
    one_line_error(capsys, "cannot write", "checkpoint.pt", "the disk is full")
    no_temporary_files(run)
    assert (run / "checkpoint.pt").read_bytes() == before["checkpoint.pt"]
    assert rundir.load_checkpoint(run / "checkpoint.pt")["epoch"] == 1


def test_full_disk_on_a_fresh_run_leaves_a_directory_the_retry_accepts(small_disk, capsys):
    filler = fill(small_disk, leave=0)
    run = small_disk / "run"
    assert main(["train", "--run-dir", str(run), "train.epochs=1", *SMALL]) == 4
    one_line_error(capsys, "the disk is full")
    no_temporary_files(small_disk)
    filler.unlink()
    assert main(["train", "--run-dir", str(run), "train.epochs=1", *SMALL]) == 0


def test_read_only_file_system(small_disk, capsys):
    run = small_disk / "run"
    assert main(["train", "--run-dir", str(run), "train.epochs=1", *SMALL]) == 0
    capsys.readouterr()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(["train", "--resume", str(run), "train.epochs=2", "--no-progress"]) == 4
    one_line_error(capsys, "cannot lock", "the file system is read-only")
    assert main(["train", "--run-dir", str(small_disk / "new"), "train.epochs=1", *SMALL]) == 4
    one_line_error(capsys, "read-only")


def _run_until_first_epoch(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    import sys
    import time

    run = tmp_path / "run"
    job = subprocess.Popen([sys.executable, "-m", "colearning", "train", "--run-dir", str(run),
                            "train.epochs=200", *SMALL], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not rundir.read_jsonl(run / "metrics.jsonl") and time.monotonic() < deadline:
        assert job.poll() is None, job.communicate()
        time.sleep(0.02)
    return job, run


@pytest.mark.slow
@pytest.mark.parametrize("burst, code", [(("SIGINT",) * 10, 130), (("SIGHUP",), 129)])
def test_signals_stop_cleanly(tmp_path, burst, code):
    """Ten SIGINTs within 100 ms, or a closed terminal (SIGHUP): one line, a summary with
    status interrupted, predictions, a checkpoint, no temporary files."""
    import json
    import signal
    import time

    job, run = _run_until_first_epoch(tmp_path)
    for name in burst:
        job.send_signal(getattr(signal, name))
        time.sleep(0.01)
    _, err = job.communicate(timeout=120)
    assert job.returncode == code, err
    assert err.strip().splitlines()[-1] == (f"colearn: stopped by {burst[0]}: checkpoint "
                                            f"written; continue with: colearn train --resume "
                                            f"{run}")
    assert "Traceback" not in err
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert (run / "predictions.npz").exists() and (run / "checkpoint.pt").exists()
    no_temporary_files(run)


def test_report_on_a_run_it_cannot_write_into(small_disk, capsys, tmp_path):
    run = small_disk / "run"
    assert main(["train", "--run-dir", str(run), "train.epochs=1", *SMALL]) == 0
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(tmp_path / "first")]) == 0
    figures = {p.name: p.read_bytes() for p in (tmp_path / "first").glob("*.png")}
    assert figures and all(figures.values())
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(["report", str(run)]) == 4
    one_line_error(capsys, f"cannot write the report into {run / 'report'}", "read-only",
                   "write the report elsewhere with --out DIR")
    assert main(["report", str(run), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.html").exists()


def test_data_paths_that_are_not_data(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r"), "data.name=imagefolder",
                 "data.path=/dev/zero", *SMALL[:1], "train.epochs=1"]) == 3
    one_line_error(capsys, "/dev/zero is not an image folder or a .tar/.tar.gz archive")


def _immutable(path: Path) -> bool:
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True,
                          check=False).returncode == 0


def test_an_immutable_metrics_file(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "train.epochs=1", *SMALL]) == 0
    capsys.readouterr()
    metrics = run / "metrics.jsonl"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    if not _immutable(metrics):
        pytest.skip("chattr +i is not available here (needs root on ext4/xfs)")
    try:
        assert main(["train", "--resume", str(run), "train.epochs=2", "--no-progress"]) == 4
        one_line_error(capsys, str(metrics), "the file is protected (immutable")
        no_temporary_files(run)
        assert metrics.read_bytes() == before["metrics.jsonl"]
        assert (run / "checkpoint.pt").read_bytes() == before["checkpoint.pt"]
    finally:
        subprocess.run(["chattr", "-i", str(metrics)], check=False)


def test_a_metrics_file_that_is_a_directory(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "train.epochs=1", *SMALL]) == 0
    capsys.readouterr()
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    assert main(["train", "--resume", str(run), "train.epochs=2", "--no-progress"]) == 4
    one_line_error(capsys, "metrics.jsonl: it is a directory, not a file")

"""What a new user and a hostile tester do (reliability round 3): each ends in the right
result or one line with the documented exit code, leaves nothing half-written and loses
nothing already written."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from colearning import rundir
from colearning.cli import main
from colearning.errors import ConfigError, RunDirError
from colearning.training import load_ensemble
from tests.test_faults import SMALL, one_line_error

FAST = [*SMALL, "train.epochs=1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-epoch run (read-only for the tests: they copy it)."""
    path = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", "--run-dir", str(path), *SMALL, "train.epochs=2"]) == 0
    return path


def _copy(run: Path, where: Path) -> Path:
    import shutil

    shutil.copytree(run, where)
    return where


# ---------------------------------------------------------------- item 1 and 2: failed starts
def test_a_negative_seed_is_refused_before_any_directory(tmp_path, capsys):
    path = tmp_path / "run"
    assert main(["train", "--run-dir", str(path), "seed=-1", *FAST]) == 2
    one_line_error(capsys, "seed must be >= 0")
    assert not path.exists()
    assert main(["train", "--run-dir", str(path), "train.epochs=10000000000000000000000",
                 *SMALL]) == 2
    one_line_error(capsys, "out of range")
    assert main(["train", "--run-dir", str(path), "seed=1", *FAST]) == 0  # the retry works


@pytest.mark.parametrize("argv, code", [
    (["data.train_size=100000"], 2),  # more images than the data set holds
    (["train.batch_size=100000"], 2),  # a batch larger than the training split
    (["model.options={width: 0}"], 2),  # a model that cannot be built
])
def test_a_failed_start_puts_the_directory_back(argv, code, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *FAST, *argv]) == code  # a new folder under ./runs
    one_line_error(capsys)
    assert not list((tmp_path / "runs").iterdir())
    empty = tmp_path / "mine"
    empty.mkdir()
    assert main(["train", "--run-dir", str(empty), *FAST, *argv]) == code
    one_line_error(capsys)
    assert empty.is_dir() and not list(empty.iterdir())  # as it was found: empty, no .lock


def test_model_options_the_model_does_not_take(tmp_path, capsys):
    path = tmp_path / "run"
    assert main(["train", "--run-dir", str(path), *FAST, "model.options={depth: 3}"]) == 2
    one_line_error(capsys, "model small_cnn takes no option 'depth'; its options: width")
    assert not path.exists()


# ---------------------------------------------------------------- item 3: collapse
def _log_probs(*members):
    return torch.stack([torch.as_tensor(m, dtype=torch.float32) for m in members]).log()


def test_constant_outputs_are_collapse_only_after_the_member_had_learned():
    from colearning.evaluation import evaluate_log_probs

    labels = torch.arange(200) % 10
    constant = torch.full((200, 10), 0.05)
    constant[:, 3] = 0.55  # one class, the same probabilities for every input
    right = torch.nn.functional.one_hot(labels, 10).float() * 0.9 + 0.01
    log_probs = _log_probs(constant, right)
    fresh = evaluate_log_probs(log_probs, labels)
    assert fresh["test/member_ignores_input"] == [True, False]
    assert fresh["test/member_learned"] == [False, True]
    assert fresh["test/member_collapsed"] == [False, False]
    assert fresh["test/member_not_learned"] == [True, False]
    later = evaluate_log_probs(log_probs, labels, learned_before=[True, True])
    assert later["test/member_collapsed"] == [True, False]
    assert later["test/member_not_learned"] == [False, False]


def test_a_slow_member_above_chance_is_neither_collapsed_nor_ignoring_its_input():
    """The paper config at beta = 0 after 2 epochs: a member at 15.7% with a small output
    spread predicts several classes; it has not learned yet, it did not collapse."""
    from colearning.evaluation import evaluate_log_probs, output_spread

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(1000) % 10
    logits = 0.05 * torch.randn(1000, 10, generator=gen)
    logits[torch.arange(1000)[:157], labels[:157]] += 0.2  # right on 15.7%, weakly
    probs = logits.softmax(-1)
    assert output_spread(probs[None])[0] < 0.05
    out = evaluate_log_probs(probs[None].log(), labels)
    assert out["test/member_ignores_input"] == [False]
    assert out["test/member_collapsed"] == [False]


def test_the_summary_and_the_report_say_not_learned_apart_from_collapsed(finished, tmp_path):
    from colearning.console import format_summary

    run = _copy(finished, tmp_path / "run")
    records = rundir.read_metrics(run / "metrics.jsonl")
    records[-1]["test/member_not_learned"] = [False, True]
    records[-1]["test/member_collapsed"] = [True, False]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["report", str(run)]) == 0
    page = (run / "report" / "report.html").read_text()
    assert "member 1 has not learned yet" in page and "member 0 collapsed" in page
    text = format_summary({"test/member_accuracy": [0.5, 0.1], "collapsed_members": [0],
                           "not_learned_members": [1]})
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("  member")}
    assert rows["0"].endswith("collapsed") and rows["1"].endswith("not learned")
    assert "members [0] collapsed" in text and "members [1] have not learned yet" in text


# ---------------------------------------------------------------- item 5: beta values
@pytest.mark.parametrize("beta", [torch.tensor(-0.3), np.array(-0.3), np.float32(-0.3)])
def test_zero_dimensional_betas_are_scalars(beta):
    from colearning.losses import coupled_loss

    logits, labels = torch.randn(3, 5, 4), torch.tensor([0, 1, 2, 3, 0])
    want = coupled_loss(logits, labels, beta=-0.3).total
    torch.testing.assert_close(coupled_loss(logits, labels, beta=beta).total, want)


@pytest.mark.parametrize("beta", ["-0.3", True, [[0, 1], [2]], object()])
def test_betas_that_are_not_numbers_get_the_librarys_error(beta):
    from colearning.losses import coupled_loss

    with pytest.raises(ConfigError, match="beta must be a number"):
        coupled_loss(torch.randn(2, 5, 4), torch.tensor([0, 1, 2, 3, 0]), beta=beta)


# ---------------------------------------------------------------- item 6: N = 1
def test_one_member_with_a_coupling_is_said_once(tmp_path, capsys):
    path = tmp_path / "run"
    assert main(["train", "--run-dir", str(path), *FAST, "ensemble.n_members=1",
                 "loss.beta=-0.3"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("ensemble.n_members=1 is one network") == 1
    assert "loss.beta" in captured.err
    assert "ensemble (" not in captured.out and "JS distance" not in captured.out


# ---------------------------------------------------------------- item 10: memory
def _limited(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


@pytest.mark.slow
def test_the_fit_check_uses_the_address_space_limit(tmp_path):
    """prlimit --as: a run larger than the limit (far below the machine's RAM) is refused
    with the numbers, not an allocator traceback."""
    path = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "colearning", "train", "--run-dir", str(path), *FAST,
         "ensemble.n_members=20000"], capture_output=True, text=True, timeout=120,
        preexec_fn=_limited(3 * 2**30))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "GiB" in done.stderr and "free" in done.stderr
    assert not path.exists()


def test_an_allocation_failure_mid_run_is_one_line_and_keeps_the_checkpoint(
        tmp_path, capsys, monkeypatch):
    import colearning.training.records as records

    path = tmp_path / "run"
    original = records.epoch_record

    def failing(epoch, *args, **kwargs):
        if epoch == 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator:"
                               " can't allocate memory: you tried to allocate 2147483648 bytes.")
        return original(epoch, *args, **kwargs)

    monkeypatch.setattr(records, "epoch_record", failing)
    assert main(["train", "--run-dir", str(path), *SMALL, "train.epochs=3"]) == 2
    one_line_error(capsys, "out of memory", "2.00 GiB", "the last checkpoint is intact")
    assert rundir.load_checkpoint(path / "checkpoint.pt")["epoch"] == 1
    monkeypatch.setattr(records, "epoch_record", original)
    assert main(["train", "--resume", str(path), "--no-progress"]) == 0
    assert len(rundir.read_metrics(path / "metrics.jsonl")) == 3


# ---------------------------------------------------------------- item 11: checkpoints
class _Payload:
    """Unpickling this creates a file: what a crafted checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_checkpoint_never_runs(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path / "run")
    marker = tmp_path / "pwned"
    torch.save({"epoch": 2, "payload": _Payload(marker)}, run / "checkpoint.pt")
    assert main(["train", "--resume", str(run), "train.epochs=3", "--no-progress"]) == 4
    one_line_error(capsys, "holds more than tensors")
    with pytest.raises(RunDirError, match="holds more than tensors"):
        load_ensemble(run)
    assert main(["expand", str(run), "--add", "1", "--mode", "add-freeze", "--run-dir",
                 str(tmp_path / "grown"), "--no-progress"]) == 4
    one_line_error(capsys, "holds more than tensors")
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(epoch=-1), "epoch is -1"),
    (lambda c: c.update(step=1.5), "step is 1.5"),
    (lambda c: c.update(format=99), "format 99"),
    (lambda c: c.pop("model"), "no model"),
    (lambda c: c["model"].update({k: torch.cat([v, v[:1]]) for k, v in c["model"].items()}),
     "does not fit its run"),  # three members' weights in a two-member run
])
def test_a_checkpoint_that_does_not_fit_is_one_line(finished, tmp_path, capsys, change,
                                                    message):
    run = _copy(finished, tmp_path / "run")
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, run / "checkpoint.pt")
    before = (run / "metrics.jsonl").read_bytes()
    assert main(["train", "--resume", str(run), "train.epochs=3", "--no-progress"]) == 4
    one_line_error(capsys, message)
    assert (run / "metrics.jsonl").read_bytes() == before


# ---------------------------------------------------------------- item 12: metrics.jsonl
@pytest.mark.parametrize("bad", ["[1, 2]", "null", '{"epoch": "1"}'])
def test_a_malformed_metrics_line_is_named_and_never_dropped(finished, tmp_path, capsys, bad):
    run = _copy(finished, tmp_path / "run")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[0] = bad + "\n"
    (run / "metrics.jsonl").write_text("".join(lines))
    before = (run / "metrics.jsonl").read_bytes()
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 4
    one_line_error(capsys, "metrics.jsonl line 1")
    assert main(["train", "--resume", str(run), "train.epochs=3", "--no-progress"]) == 4
    one_line_error(capsys, "metrics.jsonl line 1")
    assert (run / "metrics.jsonl").read_bytes() == before


def test_records_past_the_checkpoint_are_kept_aside_on_resume(finished, tmp_path, capsys):
    """A kill between the metrics append and the checkpoint leaves a line the checkpoint
    does not cover: the resumed run continues from the checkpoint and keeps the original."""
    run = _copy(finished, tmp_path / "run")
    extra = json.dumps({**rundir.read_metrics(run / "metrics.jsonl")[-1], "epoch": 3})
    original = (run / "metrics.jsonl").read_text() + extra + "\n"
    (run / "metrics.jsonl").write_text(original)
    (run / "summary.json").unlink()
    assert main(["train", "--resume", str(run), "train.epochs=3", "--no-progress"]) == 0
    assert "kept as" in capsys.readouterr().err
    assert (run / "metrics.jsonl.orig-1").read_text() == original
    assert [r["epoch"] for r in rundir.read_metrics(run / "metrics.jsonl")] == [1, 2, 3]


# ---------------------------------------------------------------- item 13: the rest
def test_a_run_directory_named_in_non_utf8_bytes(tmp_path, capsys):
    path = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/run\xff"))
    assert main(["train", "--run-dir", str(path), *FAST]) == 0
    assert main(["report", str(path)]) == 0
    assert (path / "report" / "report.html").is_file()


@pytest.mark.parametrize("variable, value", [
    ("COLEARNING_DIST_TIMEOUT", "soon"), ("COLEARNING_DIST_TIMEOUT", "-5"),
    ("COLEARNING_SLEEP_BEFORE_DATA", "nan"), ("COLEARNING_KILL_DURING_WRITE", "checkpoint.pt:x"),
    ("COLEARNING_KEEP_FREED_MEMORY", "yes"),
])
def test_malformed_environment_variables(variable, value, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(variable, value)
    assert main(["train", "--run-dir", str(tmp_path / "run"), *FAST]) == 2
    one_line_error(capsys, f"environment variable {variable}=")
    assert not (tmp_path / "run").exists()


def test_a_signal_while_a_command_starts_is_one_line():
    # what colearn's entry point installs before its heavy imports
    code = ("import os, signal; from colearning.startup import exit_at_once_on_signals; "
            "exit_at_once_on_signals(); os.kill(os.getpid(), signal.SIGTERM); print('alive')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 128 + signal.SIGTERM and done.stdout == ""
    assert done.stderr == ("colearn: interrupted (SIGTERM) while starting; nothing was "
                           "written\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("value, kept", [("", True), ("0", False)])
def test_malloc_keeps_freed_memory_unless_turned_off(value, kept):
    # a fresh process: the setting is once per process (and the suite's own is already set)
    code = ("import platform; from colearning.environment import "
            "retain_freed_memory as r; print(r(), r(), platform.libc_ver()[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "COLEARNING_KEEP_FREED_MEMORY": value}, check=True)
    first, again, libc = out.stdout.split()
    assert first == again == str(kept and libc == "glibc")


@pytest.mark.parametrize("argv, message", [
    (["--time-limit", "0"], "--time-limit must be > 0"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--min-time", "-1"], "--min-time must be >= 0"),
])
def test_bench_arguments_out_of_range(argv, message, tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path / "b.json"), *argv]) == 2
    one_line_error(capsys, message)


def test_more_processes_than_members_is_counted_before_any_starts(tmp_path, capsys,
                                                                  monkeypatch):
    import colearning.training.launch as launch

    def never(*_args, **_kwargs):
        raise AssertionError("processes were started")

    monkeypatch.setattr(launch, "launch", never)
    assert main(["train", "--nproc", "100", "--run-dir", str(tmp_path / "run"),
                 *FAST]) == 2
    one_line_error(capsys, "2 members cannot be split over 100 processes")
    assert not (tmp_path / "run").exists()


def _handles(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler of its own for ``signum`` (/proc SigCgt)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in text.splitlines()
                      if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signum - 1) & 1)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_the_first_second_exits_quietly(signum, tmp_path):
    """From the moment the command's code runs (its SIGTERM handler is in place) through
    the imports of torch and numpy and the start of the run: one line, 128 + signum."""
    for k, delay in enumerate((0.0, 0.2, 0.6)):
        path = tmp_path / f"run{k}"
        proc = subprocess.Popen([sys.executable, "-m", "colearning", "train", "--run-dir",
                                 str(path), *FAST], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while not _handles(proc.pid, signal.SIGTERM) and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 0:
            continue  # the run finished first
        assert proc.returncode == 128 + signum, err[-2000:]
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err[-2000:]


def test_a_checkpoint_naming_a_plugin_never_imports_it(finished, tmp_path, capsys,
                                                        monkeypatch):
    """A config inside a checkpoint is compared with the run's, never acted on."""
    run = _copy(finished, tmp_path / "run")
    marker = tmp_path / "imported"
    (tmp_path / "marker_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    checkpoint["config"]["plugins"] = ["marker_plugin"]
    torch.save(checkpoint, run / "checkpoint.pt")
    assert main(["train", "--resume", str(run), "train.epochs=3", "--no-progress"]) == 4
    one_line_error(capsys, "was written with another config.yaml")
    assert not marker.exists()

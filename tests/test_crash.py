"""Real SIGKILLs of a training subprocess, then resume: same numbers as no kill at all."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from colearning import rundir
from colearning.training import load_run
from tests.conftest import assert_records_close

pytestmark = pytest.mark.slow  # real processes


def _command(*args):
    return [sys.executable, "-m", "colearning.cli", "train", "--no-progress", *args]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from tests.conftest import TINY

    config = json.loads(json.dumps(TINY))
    config["train"]["epochs"] = 10
    root = tmp_path_factory.mktemp("crash")
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    # The reference runs in a subprocess too: the same thread count and process state as the
    # killed runs (other tests may change this process's torch thread count).
    done = subprocess.run(_command("--config", str(root / "config.yaml"), "--run-dir",
                                   str(root / "reference")), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return root, load_run(root / "reference")


def _assert_same_as(reference_run, path):
    records = rundir.read_jsonl(path / "metrics.jsonl")
    assert_records_close(records, reference_run.metrics)
    np.testing.assert_allclose(
        np.exp(np.load(path / "predictions.npz")["log_probs"]),
        np.exp(np.load(reference_run.run_dir / "predictions.npz")["log_probs"]),
        atol=2e-3)


def test_kill_during_checkpoint_write_then_resume(reference):
    root, ref = reference
    path = root / "killed-in-write"
    env = {**os.environ, "COLEARNING_KILL_DURING_WRITE": "checkpoint.pt:3"}
    proc = subprocess.run(_command("--config", str(root / "config.yaml"), "--run-dir", str(path)),
                          env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    # The half-written temporary file is never read back: the checkpoint is epoch 2's.
    assert rundir.load_checkpoint(path / "checkpoint.pt")["epoch"] == 2
    assert len(rundir.read_jsonl(path / "metrics.jsonl")) == 3  # epoch 3's line got out
    done = subprocess.run(_command("--resume", str(path)), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    _assert_same_as(ref, path)


def _wait_for_lock(path, pid, timeout=60.0):
    """Block until process ``pid`` holds the run directory's lock (it has started)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if (path / ".lock").read_text().strip() == str(pid):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.02)


def test_kill_at_random_moments_then_resume(reference):
    root, ref = reference
    path = root / "killed-randomly"
    rng = random.Random(1234)
    args = ["--config", str(root / "config.yaml"), "--run-dir", str(path)]
    kills = 0
    for attempt in range(4):  # three kills at random moments, then run to the end
        proc = subprocess.Popen(_command(*args), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _wait_for_lock(path, proc.pid)
        if attempt < 3:
            # From taking the lock, loading data and training 10 epochs takes ~2-3 s here.
            time.sleep(rng.uniform(0.2, 1.2))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        proc.wait(timeout=120)
        args = ["--resume", str(path)]
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert kills >= 1
    _assert_same_as(ref, path)


def test_sigterm_checkpoints_and_exits_with_code(reference):
    root, ref = reference
    path = root / "terminated"
    proc = subprocess.Popen(_command("--config", str(root / "config.yaml"), "--run-dir",
                                     str(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (path / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    assert f"continue with: colearn train --resume {path}" in err.decode()
    done = subprocess.run(_command("--resume", str(path)), capture_output=True, timeout=120)
    assert done.returncode == 0
    _assert_same_as(ref, path)


def test_sigint_during_start_up_prints_the_resume_command(tmp_path):
    """Ctrl-C while the run loads its data: one line with the exact command, exit 130."""
    path = tmp_path / "early"
    config = tmp_path / "slow.yaml"
    config.write_text("data: {name: digits}\nmodel: {name: mlp}\ntrain: {epochs: 1}\n")
    env = {**os.environ, "COLEARNING_SLEEP_BEFORE_DATA": "30"}
    proc = subprocess.Popen(_command("--config", str(config), "--run-dir", str(path)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 60
    while not (path / "meta.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    text = err.decode()
    assert proc.returncode == 130, text[-2000:]
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == (
        f"colearn: interrupted (SIGINT) before training started; continue with: colearn train "
        f"--resume {path}")
    done = subprocess.run(_command("--resume", str(path)), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

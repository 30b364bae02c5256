"""Members sharded over processes (torch.distributed, gloo): the numbers of one process.

Every test runs real processes: ``colearn train --nproc 2`` starts torchrun, which starts
two ranks that join a gloo group on this machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from colearning import rundir
from colearning.training.shard import Shard, member_slice

pytestmark = pytest.mark.slow

CONFIG = {
    "device": "cpu",
    "seed": 3,
    "data": {"name": "digits", "train_size": 600, "val_size": 100, "test_size": 200},
    # BatchNorm members (a narrow ResNet-20 on 8x8 digits); the loop strategy and one
    # thread per process, so that one process and two do the same float operations
    "model": {"name": "resnet20", "options": {"width": 4}},
    "ensemble": {"n_members": 5, "strategy": "loop"},
    "loss": {"beta": -0.1},
    "train": {"epochs": 3, "batch_size": 100, "analysis_every": 1, "progress": False},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def colearn(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "colearning", *args], env=ENV,
                          capture_output=True, text=True, timeout=timeout, check=False)


def write_config(path: Path, **changes) -> Path:
    config = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        config[section][key] = value
    path.write_text(yaml.safe_dump(config))
    return path


def same_run(a: Path, b: Path) -> None:
    """Metrics (but times), analysis, predictions and checkpoint weights are identical."""
    def metrics(path):
        return [{k: v for k, v in r.items() if not k.startswith("time/")}
                for r in rundir.read_jsonl(path / "metrics.jsonl")]

    assert metrics(a) == metrics(b)
    assert rundir.read_jsonl(a / "analysis.jsonl") == rundir.read_jsonl(b / "analysis.jsonl")
    left, right = (rundir.load_checkpoint(p / "checkpoint.pt") for p in (a, b))
    for key, value in left["model"].items():
        assert torch.equal(value, right["model"][key]), key
    optimizers = left["optimizer"], right["optimizer"]  # name, options, buffers [M, ...]
    assert optimizers[0].keys() == optimizers[1].keys()
    for key, value in optimizers[0].items():
        other = optimizers[1][key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            assert all(torch.equal(x, y) for x, y in zip(value, other, strict=True)), key
        else:
            assert value == other, key
    import numpy as np

    np.testing.assert_array_equal(np.load(a / "predictions.npz")["log_probs"],
                                  np.load(b / "predictions.npz")["log_probs"])


def test_member_slices():
    assert [member_slice(5, r, 2) for r in range(2)] == [slice(0, 3), slice(3, 5)]
    assert [member_slice(7, r, 3) for r in range(3)] == [slice(0, 3), slice(3, 5), slice(5, 7)]
    assert member_slice(2, 1, 2) == slice(1, 2)
    with pytest.raises(Exception, match="cannot be split over 3 processes"):
        member_slice(2, 0, 3)


def test_one_process_shard_is_the_identity():
    shard = Shard(0, 1, 4)
    x = torch.randn(4, 3)
    assert shard.gather_rows(x) is x and shard.local == slice(0, 4) and shard.writer
    assert shard.any(x > 0) is not None and shard.any_host(True) is True
    assert shard.broadcast({"a": 1}) == {"a": 1}


def train_alone(config: Path, run_dir: Path) -> None:
    """``colearn train`` in this process with one torch thread, as each rank has (the sharded
    runs are the real processes under test; a process start here would only add time)."""
    from colearning.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The one-process run every sharded run must reproduce (N=5, 3 epochs)."""
    root = tmp_path_factory.mktemp("reference")
    train_alone(write_config(root / "c.yaml"), root / "run")
    return root / "run"


def test_two_processes_equal_one_with_uneven_shards(tmp_path, reference):
    """N=5 over 2 processes: 3 + 2 members."""
    two = colearn("train", "--config", str(write_config(tmp_path / "c.yaml")), "--run-dir",
                  str(tmp_path / "two"), "--nproc", "2")
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("ensemble (mean)") == 1  # rank 0 alone prints the summary
    same_run(reference, tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in reference.iterdir())


def test_two_processes_equal_one_with_one_member_each_and_joint_peers(tmp_path):
    """peers=joint: each member's gradient also flows through its peer terms in the other
    members' losses, which the gathered logits carry without an autograd all-gather."""
    config = write_config(tmp_path / "c.yaml", **{"ensemble.n_members": 2, "train.epochs": 1,
                                                  "loss.peers": "joint"})
    train_alone(config, tmp_path / "one")
    two = colearn("train", "--config", str(config), "--run-dir", str(tmp_path / "two"),
                  "--nproc", "2")
    assert two.returncode == 0, two.stderr
    same_run(tmp_path / "one", tmp_path / "two")


def test_a_killed_rank_ends_the_job_and_the_run_resumes(tmp_path, reference):
    config = write_config(tmp_path / "c.yaml")
    path = tmp_path / "run"
    job = subprocess.Popen([sys.executable, "-m", "colearning", "train", "--config", str(config),
                            "--run-dir", str(path), "--nproc", "2"], env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not rundir.read_jsonl(path / "metrics.jsonl") and time.monotonic() < deadline:
        assert job.poll() is None, job.communicate()
        time.sleep(0.02)
    os.kill(_rank_pid(job.pid, rank=1), signal.SIGKILL)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 6
    assert f"colearn: error: process rank 1 of 2 was killed by SIGKILL; the job stopped (the " \
           f"run directory keeps its last checkpoint); continue with: colearn train --resume " \
           f"{path} --nproc 2" in err
    assert 1 <= len(rundir.read_jsonl(path / "metrics.jsonl")) < 3
    # the run resumes from its last checkpoint, in two processes, to the reference numbers
    resumed = colearn("train", "--resume", str(path), "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr
    same_run(reference, path)


def test_a_sharded_run_resumes_in_one_process(tmp_path, reference):
    short = colearn("train", "--config", str(write_config(tmp_path / "c.yaml")), "--run-dir",
                    str(tmp_path / "run"), "--nproc", "2", "train.epochs=1")
    assert short.returncode == 0, short.stderr
    extended = colearn("train", "--resume", str(tmp_path / "run"), "train.epochs=3")
    assert extended.returncode == 0, extended.stderr
    same_run(reference, tmp_path / "run")


USER_MODEL = """
from torch import nn

def build(num_classes, in_channels, image_size, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))
"""


def test_a_model_in_the_users_own_file_trains_over_two_processes(tmp_path):
    """The ``colearn`` command (not ``python -m``) in the user's folder, beside their model
    file: both ranks import it by its path, and the run loads back in this process."""
    from colearning import load_ensemble

    (tmp_path / "user_net.py").write_text(USER_MODEL)
    write_config(tmp_path / "c.yaml", **{"model.name": "user_net:build",
                                                  "model.options": {"hidden": 8},
                                                  "ensemble.n_members": 2,
                                                  "train.epochs": 1})
    command = [str(Path(sys.executable).with_name("colearn")), "train", "--config", "c.yaml"]
    for extra in (["--run-dir", "alone"], ["--run-dir", "run", "--nproc", "2"]):
        result = subprocess.run(command + extra, cwd=tmp_path, env=ENV, capture_output=True,
                                text=True, timeout=240, check=False)
        assert result.returncode == 0, result.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        ensemble, loaded = load_ensemble(tmp_path / "run")
    finally:
        sys.path.remove(str(tmp_path))
    assert loaded.model.name == "user_net:build" and ensemble.member(1)[1].out_features == 8


def test_more_processes_than_members_is_refused(tmp_path, capsys):
    """Refused by the launching command itself, before any process starts (so it runs here)."""
    from colearning.cli import main

    config = write_config(tmp_path / "c.yaml", **{"ensemble.n_members": 2})
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "r"),
                 "--nproc", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("2 members cannot be split over 3 processes") == 1
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before anything was made


PACK_SCRIPT = """
import json, sys
from colearning.training import train_pack
from colearning.training.shard import finish_distributed, init_from_environment

init_from_environment("cpu")
for cells in json.loads(sys.argv[1]):  # packs, one after another in the same two processes
    train_pack([(config, path) for config, path in cells])
finish_distributed()
"""


def test_a_pack_sharded_over_processes_equals_one_process(tmp_path, monkeypatch):
    """Cells of different sizes, objectives, couplings and learning rates: 7 members over 2
    processes (rows 0-3 and 4-6): the interpolated cell's rows 3-6 are split between them,
    and its objective differentiates through every member's probabilities. The optimizer
    state (momentum; AdamW's moments and step counts) of each cell gathers to one
    process's. One such pack with SGD, one with AdamW, both in one launch of two processes."""
    from colearning.training import train_pack
    from colearning.training.launch import launch

    packs = {}
    for optimizer in ("sgd", "adamw"):
        cells = []
        for k, (n, loss, lr) in enumerate([
                (3, {"beta": -0.2}, 0.05),
                (4, {"beta": None, "objective": "interpolated", "joint_weight": 0.5}, 0.02)]):
            config = json.loads(json.dumps(CONFIG))
            config.update(seed=k)
            config["ensemble"]["n_members"] = n
            config["loss"] = loss
            config["optim"] = {"name": optimizer, "lr": lr if optimizer == "sgd" else lr / 10}
            config["train"]["epochs"] = 2
            cells.append(config)
        packs[optimizer] = cells
    script = tmp_path / "pack.py"
    script.write_text(PACK_SCRIPT)
    sharded = [[(c, str(tmp_path / f"{optimizer}-two{k}")) for k, c in enumerate(cells)]
               for optimizer, cells in packs.items()]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, message = launch([sys.executable, str(script), json.dumps(sharded)], 2)
    assert code == 0 and message is None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank had
    try:
        for optimizer, cells in packs.items():
            train_pack([(c, tmp_path / f"{optimizer}-one{k}") for k, c in enumerate(cells)])
    finally:
        torch.set_num_threads(threads)
    for optimizer in packs:
        for k in range(2):
            same_run(tmp_path / f"{optimizer}-one{k}", tmp_path / f"{optimizer}-two{k}")
    # AdamW's state (moments, step counts) is not SGD's: both optimizers really ran
    states = [rundir.load_checkpoint(tmp_path / f"{optimizer}-two1" / "checkpoint.pt")
              ["optimizer"] for optimizer in packs]
    assert states[0].keys() != states[1].keys()


def _rank_pid(launcher: int, rank: int) -> int:
    """The pid of the worker process with RANK=rank below the launcher process."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ and _descends(int(entry.name), launcher):
                return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no rank {rank} process found")


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def test_the_communication_cost_script_runs(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "allgather_cost.py"
    result = subprocess.run([sys.executable, str(script), "--nproc", "2", "--members", "3",
                             "--batch", "8", "--repeats", "2"], env=ENV, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["n_members"] == 3 and row["bytes"] == 3 * 8 * 10 * 4 and row["total_us"] > 0


def test_rank_zeros_error_is_said_once(tmp_path, reference):
    result = colearn("train", "--config", str(write_config(tmp_path / "c.yaml")), "--run-dir",
                     str(reference), "--nproc", "2")
    assert result.returncode == 4
    assert result.stderr.count("already holds a run") == 1, result.stderr

"""Packs: cells trained together end with the numbers they get alone."""

import copy
import json
import os
import signal

import numpy as np
import pytest
import torch

import colearning.training.loop as loop_module
from colearning import rundir
from colearning.config import config_from_dict
from colearning.errors import ConfigError
from colearning.training import Interrupted, resume, train, train_pack
from colearning.training.pack import check_packable, plan_packs
from tests.conftest import assert_records_close

BASE = {
    "device": "cpu",
    "data": {"name": "digits", "val_size": 200},
    "model": {"name": "small_cnn", "options": {"width": 4}},
    "train": {"epochs": 2, "batch_size": 256, "progress": False, "analysis_every": 1},
}
# Different seeds, sizes, couplings, KL conventions, learning rates and weight decays.
CELLS = [
    {"seed": 0, "ensemble": {"n_members": 2}, "loss": {"beta": -0.2}, "optim": {"lr": 0.05}},
    {"seed": 1, "ensemble": {"n_members": 3}, "loss": {"beta_bar": -0.5, "kl_reduction": "mean"},
     "optim": {"lr": 0.1}},
    {"seed": 2, "ensemble": {"n_members": 2}, "loss": {"beta": 0.3, "kl_reduction": "mean_all"},
     "optim": {"lr": 0.02, "weight_decay": 1e-3}},
]
# Packed numbers equal the lone ones to float rounding, not bit for bit: in a pack the
# grouped engine runs the members in other groups and chunks, and the couplings of equal-
# sized cells are one [K, N, B, C] loss call, so float32 sums are taken in another order;
# SGD carries those last-bit differences along the steps.
RTOL = 1e-4


def config(cell, **changes):
    values = copy.deepcopy({**BASE, **cell})
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        values.setdefault(section, {})[key] = value
    return config_from_dict(values)


def packed_and_alone(configs, tmp_path):
    """The runs of ``configs`` trained one by one and as one pack; their metrics agree."""
    alone = [train(c, tmp_path / f"alone{k}") for k, c in enumerate(configs)]
    packed = train_pack([(c, tmp_path / f"pack{k}") for k, c in enumerate(configs)])
    for lone, cell in zip(alone, packed, strict=True):
        assert cell.status == lone.status == "finished"
        assert_records_close(_without_pack_size(cell.metrics), _without_pack_size(lone.metrics),
                             rtol=RTOL)
    return alone, packed


@pytest.mark.parametrize("strategy", ["grouped", "loop", "vmap"])
def test_packed_cells_equal_lone_cells(tmp_path, strategy):
    configs = [config(c, **{"ensemble.strategy": strategy}) for c in CELLS]
    alone, packed = packed_and_alone(configs, tmp_path)
    for lone, cell in zip(alone, packed, strict=True):
        np.testing.assert_allclose(np.load(cell.run_dir / "predictions.npz")["log_probs"],
                                   np.load(lone.run_dir / "predictions.npz")["log_probs"],
                                   rtol=1e-3, atol=1e-4)
    assert packed[1].metrics[-1]["time/pack_cells"] == 3
    lines = rundir.read_jsonl(packed[0].run_dir / "packs.jsonl")
    assert len(lines) == 1 and len(lines[0]["cells"]) == 3


OBJECTIVE_CELLS = [
    {"seed": 3, "ensemble": {"n_members": 2},
     "loss": {"objective": "interpolated", "joint_weight": 0.5}},
    {"seed": 4, "ensemble": {"n_members": 3}, "loss": {"objective": "joint"}},
    {"seed": 5, "ensemble": {"n_members": 2}, "loss": {"objective": "joint"}},
    CELLS[0],
]


def test_cells_of_other_objectives_pack_with_colearning_cells(tmp_path):
    alone, _ = packed_and_alone([config(c) for c in OBJECTIVE_CELLS], tmp_path)
    # the objectives' parts are logged: the joint cells' coupling is KL(q||p_ens) - KL(q||p_i)
    last = alone[1].metrics[-1]
    assert all(c != 0 for c in last["train/loss_coupling"])


def test_adam_cells_packed_equal_lone_cells_with_their_own_moments(tmp_path):
    """optim.name=adam is shared by a pack's cells; each cell's learning rate, weight decay,
    moments and step counts are its own (its checkpoint holds its rows)."""
    configs = [config(cell, **{"optim.name": "adam", "optim.lr": lr, "data.train_size": 712})
               for cell, lr in ((CELLS[0], 0.005), (CELLS[2], 0.002))]
    with pytest.raises(ConfigError, match="differ in optim.name"):
        check_packable([configs[0], config(CELLS[2], **{"data.train_size": 712})])
    alone, packed = packed_and_alone(configs, tmp_path)
    for lone, cell in zip(alone, packed, strict=True):
        want, got = (rundir.load_checkpoint(run.run_dir / "checkpoint.pt")["optimizer"]
                     for run in (lone, cell))
        assert got["name"] == want["name"] == "adam" and torch.equal(got["step"], want["step"])
        for x, y in zip(got["exp_avg"], want["exp_avg"], strict=True):
            torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-6)


def _without_pack_size(records):
    return [{k: v for k, v in r.items() if k != "time/pack_cells"} for r in records]


def test_a_diverging_neighbour_changes_nothing(tmp_path):
    good = [config(c) for c in CELLS[:2]]
    bad = config(CELLS[2], **{"optim.lr": 1e9})  # blows up within the first epoch
    alone_bad = train(bad, tmp_path / "bad")
    assert alone_bad.status == "diverged"
    alone = [train(c, tmp_path / f"alone{k}") for k, c in enumerate(good)]
    packed = train_pack([(good[0], tmp_path / "p0"), (bad, tmp_path / "p1"),
                         (good[1], tmp_path / "p2")])
    assert packed[1].status == "diverged"
    assert packed[1].summary["status_detail"] == alone_bad.summary["status_detail"]
    assert len(packed[1].metrics) == len(alone_bad.metrics)
    for lone, cell in zip(alone, [packed[0], packed[2]], strict=True):
        assert cell.status == "finished"
        assert_records_close(_without_pack_size(cell.metrics), _without_pack_size(lone.metrics),
                             rtol=RTOL)


def test_interrupted_pack_resumes_per_cell_and_as_a_pack(tmp_path, monkeypatch):
    configs = [config(c) for c in CELLS]
    reference = train_pack([(c, tmp_path / f"ref{k}") for k, c in enumerate(configs)])
    calls = {"n": 0}
    original = loop_module.Pack._loss

    def interrupting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # one loss per step: the 8th
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(loop_module.Pack, "_loss", interrupting)
    paths = [tmp_path / f"cell{k}" for k in range(3)]
    with pytest.raises(Interrupted):
        train_pack(list(zip(configs, paths, strict=True)))
    monkeypatch.setattr(loop_module.Pack, "_loss", original)
    for path in paths:
        assert json.loads((path / "summary.json").read_text())["status"] == "interrupted"
        checkpoint = rundir.load_checkpoint(path / "checkpoint.pt")
        assert (checkpoint["epoch"], checkpoint["step"]) == (1, 3)  # 5 steps per epoch
    # one cell resumes alone, the two others as a pack: all end as the uninterrupted pack
    alone = resume(paths[0])
    rest = train_pack([(configs[1], paths[1]), (configs[2], paths[2])])
    for got, want in zip([alone, *rest], reference, strict=True):
        assert got.status == "finished"
        assert_records_close(_without_pack_size(got.metrics), _without_pack_size(want.metrics),
                             rtol=RTOL)
    # a finished cell is never retrained
    again = train_pack(list(zip(configs, paths, strict=True)))
    assert [r.metrics for r in again] == [r.metrics for r in [alone, *rest]]


def test_only_packable_runs_share_a_pack(tmp_path):
    a, b = config(CELLS[0]), config(CELLS[1], **{"train.batch_size": 128})
    with pytest.raises(ConfigError, match="train.batch_size"):
        check_packable([a, b])
    with pytest.raises(ConfigError, match="train.batch_size"):
        train_pack([(a, tmp_path / "a"), (b, tmp_path / "b")])
    assert not (tmp_path / "a" / "config.yaml").exists()
    c = config(CELLS[2], **{"train.progress": True})  # display only: packable
    check_packable([a, c])
    assert plan_packs([a, b, c, a]) == [[0, 2, 3], [1]]
    assert plan_packs([a, c, a, c], max_cells=3) == [[0, 1], [2, 3]]  # balanced
    assert plan_packs([a, c, a, c, a], max_cells=2) == [[0, 1], [2, 3], [4]]
    assert plan_packs([a, c, a, c], max_members=4) == [[0, 1], [2, 3]]

"""Growing a trained run: add-freeze, add-retrain, boost, lineage, border subset, Table S5."""

import copy
import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch
import yaml

import colearning.training.loop as train_module
from colearning import rundir
from colearning.cli import main
from colearning.config import config_from_dict
from colearning.engine import Ensemble
from colearning.errors import ConfigError, RunDirError
from colearning.expand import border_indices, border_range, expand, grown_config
from colearning.expand.table import (
    format_table_s5,
    load_table_s5_dir,
    table_s5,
    table_s5_spec_from_dict,
)
from colearning.expand.table_run import run_table_s5
from colearning.report import build_report
from colearning.training import Interrupted, resume, train
from colearning.training.data import cell_data, gather, load_raw, make_pool
from colearning.training.setup import build_members, predict
from tests.conftest import TINY, comparable

SOURCE = dict(copy.deepcopy(TINY), train=dict(TINY["train"], epochs=2))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished N=2 run (beta=-0.2, 2 epochs) to grow from."""
    return train(config_from_dict(SOURCE), run_dir=tmp_path_factory.mktemp("src") / "base")


@pytest.fixture(scope="module")
def frozen_coupled(source, tmp_path_factory):
    """The source grown by 1 member, add-freeze, coupled to the old members (beta=-0.2)."""
    return expand(source.run_dir, 1, "add-freeze",
                  run_dir=tmp_path_factory.mktemp("grown") / "freeze")


def _model(path):
    return rundir.load_checkpoint(path / "checkpoint.pt")["model"]


def _rows_equal(a, b):
    return all(torch.equal(a[key], b[key]) for key in a)


def _init_state(config, n_members, first_index=0):
    pool = make_pool(load_raw(config), torch.device("cpu"))
    return build_members(config, pool, torch.device("cpu"), n_members=n_members,
                                       first_index=first_index).state_dict()


# ------------------------------------------------------------------------- border subset
@pytest.mark.parametrize("n_old, margin, expected", [
    (10, 0, (5, 5)), (10, 1, (4, 6)), (10, 5, (0, 10)), (10, 9, (0, 10)),
    (4, 0, (2, 2)), (5, 0, (2, 3)), (5, 1, (1, 4)), (1, 0, (0, 1)),
])
def test_border_range(n_old, margin, expected):
    assert border_range(n_old, margin) == expected


def test_border_indices_on_hand_made_votes():
    votes = np.array([0, 5, 4, 6, 5, 10, 3, 7])  # correct votes of 10 old members
    assert border_indices(votes, 10).tolist() == [1, 4]  # the paper's exact tie, 5 of 10
    assert border_indices(votes, 10, margin=1).tolist() == [1, 2, 3, 4]
    assert border_indices(votes, 10, margin=2).tolist() == [1, 2, 3, 4, 6, 7]
    assert border_indices(votes, 10, margin=5).tolist() == list(range(8))
    odd = torch.tensor([0, 1, 2, 3, 4, 5])  # 5 old members: no tie, one vote from it
    assert border_indices(odd, 5).tolist() == [2, 3]
    assert border_indices(odd, 5, margin=1).tolist() == [1, 2, 3, 4]
    assert border_indices(np.array([0, 0, 4]), 4).tolist() == []
    with pytest.raises(ConfigError, match="0..4"):
        border_indices(np.array([5]), 4)
    with pytest.raises(ConfigError, match=r"\[n\]"):
        border_indices(np.zeros((2, 2)), 4)
    with pytest.raises(ConfigError, match="margin"):
        border_indices(votes, 10, margin=-1)


def test_new_members_are_seeded_as_members_n_plus_i():
    big = Ensemble(lambda: torch.nn.Linear(4, 3), 5, seed=7).state_dict()
    tail = Ensemble(lambda: torch.nn.Linear(4, 3), 2, seed=7, first_index=3).state_dict()
    assert all(torch.equal(big[key][3:], tail[key]) for key in big)


# ------------------------------------------------------------------------- the modes
def test_add_freeze_coupled_keeps_old_members_bit_identical(source, frozen_coupled):
    run, path = frozen_coupled, frozen_coupled.run_dir
    assert run.status == "finished" and run.config.ensemble.n_members == 3
    saved = yaml.safe_load((path / "config.yaml").read_text())
    assert saved["expand"] == {"source": str(source.run_dir.resolve()), "mode": "add-freeze",
                               "add": 1, "margin": 0}
    lineage = json.loads((path / "lineage.json").read_text())
    assert lineage["source"] == str(source.run_dir.resolve())
    assert (lineage["mode"], lineage["add"], lineage["source_n_members"]) == ("add-freeze", 1, 2)
    assert lineage["trained_members"] == [2] and lineage["source_lineage"] is None
    assert len(lineage["source_config_sha256"]) == 64 and "source_git_commit" in lineage
    old, grown = _model(source.run_dir), _model(path)
    assert _rows_equal(old, {k: v[:2] for k, v in grown.items()})  # frozen: bit-identical
    init = _init_state(run.config, 1, first_index=2)
    assert not _rows_equal(init, {k: v[2:] for k, v in grown.items()})  # the new one trained
    log_probs = np.load(path / "predictions.npz")["log_probs"]
    assert log_probs.shape == (3, 360, 10)
    np.testing.assert_array_equal(log_probs[:2],
                                  np.load(source.run_dir / "predictions.npz")["log_probs"])
    last = run.metrics[-1]
    assert len(last["test/member_accuracy"]) == 3 and last["train/loss_total"][:2] == [None, None]
    # one new member has no trained peer: its coupling term comes from the frozen members
    assert last["train/loss_coupling"][2] < 0


def test_add_freeze_independent(source, tmp_path):
    run = expand(source.run_dir, 2, "add-freeze", ["loss.beta=0", "train.epochs=1"],
                 run_dir=tmp_path / "g")
    assert run.config.ensemble.n_members == 4 and run.config.loss.beta == 0.0
    assert run.metrics[-1]["train/loss_coupling"][2:] == [0.0, 0.0]
    grown = _model(run.run_dir)
    assert _rows_equal(_model(source.run_dir), {k: v[:2] for k, v in grown.items()})
    # the new members start as members 2 and 3 of a run of 4 (derive_seed(seed, member, N+i))
    assert not _rows_equal(_init_state(run.config, 2, first_index=2),
                           {k: v[2:] for k, v in grown.items()})


def test_a_grown_run_couples_through_the_couplings_registry(source, tmp_path, monkeypatch):
    """A ring over the N + M members: the new members' rows of the ring's matrix, no more."""
    from colearning.couplings import coupling_matrix
    from colearning.training import growth

    plans = []
    original = growth.growth_plan
    monkeypatch.setattr(growth, "growth_plan",
                        lambda *a, **k: plans.append(original(*a, **k)) or plans[-1])
    import colearning.training.run as run_module
    monkeypatch.setattr(run_module, "growth_plan", growth.growth_plan)
    run = expand(source.run_dir, 2, "add-freeze", ["loss.coupling=ring", "loss.beta=-0.3",
                                                   "train.epochs=1"], run_dir=tmp_path / "g")
    assert run.status == "finished"
    ring = coupling_matrix(run.config.loss, 4).float()  # [4, 4], old members first
    order = [2, 3, 0, 1]  # the plan's peers: the new members, then the old ones
    torch.testing.assert_close(plans[0].beta, ring[2:][:, order])
    assert ring[2, 0] == 0 and ring[2, 1] == -0.3  # a ring, not all-to-all


def test_add_retrain_updates_old_and_new_members(source, tmp_path):
    run = expand(source.run_dir, 1, "add-retrain", ["train.epochs=1"], run_dir=tmp_path / "r")
    assert run.status == "finished" and run.config.ensemble.n_members == 3
    lineage = json.loads((run.run_dir / "lineage.json").read_text())
    assert lineage["trained_members"] == [0, 1, 2]
    old, grown = _model(source.run_dir), _model(run.run_dir)
    for key in old:  # every old member moved away from the source's final weights
        assert all(not torch.equal(old[key][i], grown[key][i]) for i in range(2)), key
    assert None not in run.metrics[-1]["train/loss_total"]


def test_boost_trains_on_exactly_the_border_subset(source, tmp_path, monkeypatch):
    seen = []
    forward = Ensemble.forward

    def spy(self, x):
        if self.training and torch.is_grad_enabled():
            seen.append(x.detach().clone())
        return forward(self, x)

    monkeypatch.setattr(Ensemble, "forward", spy)
    run = expand(source.run_dir, 1, "boost", ["train.epochs=1"], run_dir=tmp_path / "b")
    monkeypatch.undo()
    assert run.config.loss.beta == 0.0 and run.config.expand.margin == 0  # independent
    # the border, computed independently from the source's members on the training split
    raw = load_raw(source.config)
    pool, cpu = make_pool(raw, torch.device("cpu")), torch.device("cpu")
    cell = cell_data(source.config, raw, cpu)
    ens = build_members(source.config, pool, cpu)
    ens.load_state_dict(_model(source.run_dir))
    train_x = gather(pool, cell.train.unsqueeze(0), [cell])[0]
    votes = (predict(ens, train_x, 512).argmax(-1) == pool.labels[cell.train]).sum(0)
    expected = np.flatnonzero(votes.numpy() == 1)  # 1 of 2 old members right: the tie
    assert 0 < len(expected) < len(votes)
    lineage = json.loads((run.run_dir / "lineage.json").read_text())
    assert lineage["border"]["samples"] == len(expected)
    trained_on = torch.cat(seen)
    assert len(trained_on) == len(expected)  # one epoch: every border sample once
    key = sorted(map(bytes, train_x[expected].flatten(1).numpy()))
    assert sorted(map(bytes, trained_on.flatten(1).numpy())) == key
    grown = _model(run.run_dir)
    assert _rows_equal(_model(source.run_dir), {k: v[:2] for k, v in grown.items()})


def test_grown_run_resumes_to_the_uninterrupted_numbers(source, frozen_coupled, tmp_path,
                                                        monkeypatch):
    calls = {"n": 0}
    original = train_module.Pack._loss

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 2 has steps 7-12
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module.Pack, "_loss", interrupting)
    path = tmp_path / "g"
    with pytest.raises(Interrupted):
        expand(source.run_dir, 1, "add-freeze", run_dir=path)
    monkeypatch.setattr(train_module.Pack, "_loss", original)
    resumed = resume(path)
    assert resumed.status == "finished"
    assert comparable(resumed.metrics) == comparable(frozen_coupled.metrics)
    assert _rows_equal(_model(frozen_coupled.run_dir), _model(path))


def test_resume_refuses_a_changed_source(frozen_coupled, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(frozen_coupled.run_dir, path)
    lineage = json.loads((path / "lineage.json").read_text())
    lineage["source_checkpoint_sha256"] = "0" * 64
    (path / "lineage.json").write_text(json.dumps(lineage))
    (path / "summary.json").unlink()
    with pytest.raises(RunDirError, match="changed since"):
        resume(path)


def test_checkpoint_from_before_the_expand_section_resumes(tmp_path):
    path = tmp_path / "old"
    train(dict(SOURCE, train=dict(SOURCE["train"], epochs=1)), run_dir=path)
    checkpoint = rundir.load_checkpoint(path / "checkpoint.pt")
    del checkpoint["config"]["expand"]
    rundir.atomic_torch_save(path / "checkpoint.pt", checkpoint)
    (path / "summary.json").unlink()
    assert resume(path).status == "finished"


def test_grown_run_can_grow_again(frozen_coupled, tmp_path):
    run = expand(frozen_coupled.run_dir, 1, "add-freeze", ["loss.beta=0", "train.epochs=1"],
                 run_dir=tmp_path / "again")
    assert run.config.ensemble.n_members == 4
    lineage = json.loads((run.run_dir / "lineage.json").read_text())
    assert lineage["source_lineage"]["mode"] == "add-freeze"
    assert _rows_equal(_model(frozen_coupled.run_dir),
                       {k: v[:3] for k, v in _model(run.run_dir).items()})


# ------------------------------------------------------------------------- bad inputs
def test_bad_sources_and_arguments(source, tmp_path):
    with pytest.raises(RunDirError, match="not a run directory"):
        expand(tmp_path, 1, "add-freeze")
    with pytest.raises(RunDirError, match="not a directory"):
        expand(tmp_path / "missing", 1, "add-freeze")
    with pytest.raises(ConfigError, match="expand.mode='grow' is not valid"):
        grown_config(source.run_dir, 1, "grow")
    with pytest.raises(ConfigError, match="expand.add must be >= 1"):
        grown_config(source.run_dir, 0, "add-freeze")
    with pytest.raises(ConfigError, match="contradicts the source's 2 members"):
        grown_config(source.run_dir, 1, "add-freeze", ["ensemble.n_members=4"])
    assert grown_config(source.run_dir, 1, "add-freeze",
                        ["ensemble.n_members=3"]).ensemble.n_members == 3
    with pytest.raises(ConfigError, match="--add/--mode/--margin"):
        grown_config(source.run_dir, 1, "add-freeze", ["expand.margin=1"])
    with pytest.raises(ConfigError, match="margin applies to mode boost only"):
        grown_config(source.run_dir, 1, "add-freeze", margin=1)
    for change, what in [("seed=1", "seed"), ("data.train_size=500", "data.train_size"),
                         ("model.options.hidden=[16]", "model")]:
        with pytest.raises(ConfigError, match=what):
            expand(source.run_dir, 1, "add-freeze", [change], run_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()  # refused before the directory was made
    with pytest.raises(ConfigError, match="need expand.source"):
        config_from_dict({"expand": {"mode": "boost"}})
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((source.run_dir / "config.yaml").read_text())
    with pytest.raises(RunDirError, match="not finished"):
        expand(unfinished, 1, "add-freeze")
    (unfinished / "summary.json").write_text('{"status": "diverged"}')
    with pytest.raises(RunDirError, match="would diverge again. Grow a finished run instead"):
        expand(unfinished, 1, "add-freeze")


def test_cli_expand(source, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["expand", str(source.run_dir), "--add", "1", "--mode", "boost", "--margin",
                 "1", "--run-dir", str(out), "train.epochs=1"])
    assert code == 0 and "grown from" in capsys.readouterr().out
    assert json.loads((out / "lineage.json").read_text())["margin"] == 1
    assert main(["expand", str(tmp_path / "nope"), "--add", "1", "--mode", "boost"]) == 4
    with pytest.raises(SystemExit):
        main(["expand", str(source.run_dir), "--add", "1", "--mode", "grow"])


# ------------------------------------------------------------------------- Table S5
S5_BASE = dict(copy.deepcopy(TINY), ensemble={"n_members": 2}, loss={"beta": -0.2},
               train=dict(TINY["train"], epochs=1, analysis_every=0),
               data={"name": "digits", "train_size": 600, "test_size": 200})


@pytest.mark.slow
def test_table_s5_on_digits(tmp_path, monkeypatch):
    """The 14 cells go through the sweep runner's worker processes, in two stages."""
    from colearning.sweep import runner

    stages = []
    run_local = runner._run_local
    monkeypatch.setattr(runner, "_run_local", lambda groups, *a: stages.append(
        sorted(c.name for group in groups for c in group)) or run_local(groups, *a))
    spec = table_s5_spec_from_dict({"name": "t", "base": S5_BASE, "seeds": 2,
                                    "expand": {"add": 1}})
    assert (spec.n_members, spec.add, spec.beta, spec.epochs) == (2, 1, -0.2, 1)
    result = run_table_s5(spec, tmp_path / "t", progress=False, workers=2)
    assert [o.status for o in result.outcomes] == ["finished"] * 14
    assert [o.name for o in result.outcomes[:7]] == [
        "base_seed0", "freeze0_seed0", "freeze_seed0", "retrain_seed0", "boost_seed0",
        "scratch_seed0", "scratch2x_seed0"]
    assert stages == [  # stage 1: base and from scratch; stage 2: grown from stage 1
        sorted(f"{m}_seed{s}" for m in ("base", "scratch", "scratch2x") for s in (0, 1)),
        sorted(f"{m}_seed{s}" for m in ("freeze0", "freeze", "retrain", "boost")
               for s in (0, 1))]
    cells = tmp_path / "t" / "cells"
    lineage = json.loads((cells / "retrain_seed1" / "lineage.json").read_text())
    assert lineage["source"] == str((cells / "base_seed1").resolve())
    config = yaml.safe_load((cells / "scratch2x_seed0" / "config.yaml").read_text())
    assert (config["ensemble"]["n_members"], config["train"]["epochs"]) == (3, 2)
    assert yaml.safe_load((cells / "freeze0_seed0" / "config.yaml").read_text())["loss"] == {
        "beta": 0.0, "beta_bar": None, "coupling": "uniform", "coupling_options": {},
        "beta_schedule": "constant", "beta_schedule_options": {}, "target_js": None,
        "peers": "detached",
        "kl_reduction": "batchmean", "divergence": "kl", "objective": "colearning",
        "joint_weight": None}
    for mode, key, beta in [("add-freeze", "freeze", -0.2), ("boost", "boost", 0.0)]:
        # a grown cell's config is what colearn expand BASE_CELL makes of it
        grown = grown_config(cells / "base_seed0", 1, mode, [f"loss.beta={beta}"]).to_dict()
        assert yaml.safe_load((cells / f"{key}_seed0" / "config.yaml").read_text()) == grown
    rows = table_s5(tmp_path / "t")
    assert [r["label"] for r in rows] == [
        "2 networks ensemble", "add-freeze β=0", "add-freeze β=-0.2", "add-retrain",
        "boost (m=0)", "3 networks (same budget)", "3 networks (double budget)"]
    assert all(r["count"] == 2 and 10 < r["accuracy_mean"] <= 100 for r in rows)
    base_accs = [100 * json.loads((cells / f"base_seed{s}" / "summary.json").read_text())[
        "test/ensemble_accuracy_mean"] for s in (0, 1)]
    assert rows[0]["accuracy_mean"] == pytest.approx(np.mean(base_accs))
    assert rows[0]["accuracy_std"] == pytest.approx(np.std(base_accs, ddof=1))
    text = format_table_s5(rows)
    assert "add-retrain" in text and "83.65 ± 0.38" in text
    assert (tmp_path / "t" / "table_s5.txt").read_text().startswith("Training method")
    page = build_report(tmp_path / "t")  # colearn report dispatches a Table S5 directory
    assert page == tmp_path / "t" / "report.html" and page.read_text().count("<tr>") == 8
    # continuing skips every finished cell; a changed spec is refused
    stages.clear()
    again = run_table_s5(load_table_s5_dir(tmp_path / "t"), tmp_path / "t", progress=False)
    assert all(o.skipped for o in again.outcomes) and len(again.outcomes) == 14
    assert stages == []  # nothing left to train: no worker started
    # a directory written before the experiment keys were run config keys still resumes
    saved = yaml.safe_load((tmp_path / "t" / "table_s5.yaml").read_text())
    base = copy.deepcopy(saved["base"])
    base["ensemble"]["n_members"], base["loss"]["beta"], base["train"]["epochs"] = 10, 0.0, 9
    old = {"name": "t", "base": base, "seeds": [0, 1], "n_members": 2, "add": 1,
           "beta": -0.2, "epochs": 1, "margin": 0, "methods": saved["methods"]}
    (tmp_path / "t" / "table_s5.yaml").write_text(yaml.safe_dump(old))
    assert load_table_s5_dir(tmp_path / "t").to_dict() == spec.to_dict()
    again = run_table_s5(load_table_s5_dir(tmp_path / "t"), tmp_path / "t", progress=False)
    assert all(o.skipped for o in again.outcomes) and len(again.outcomes) == 14
    assert yaml.safe_load((tmp_path / "t" / "table_s5.yaml").read_text()) == saved
    changed = table_s5_spec_from_dict({"name": "t", "base": S5_BASE, "seeds": 2,
                                       "expand": {"add": 1}}, overrides=["loss.beta=-0.1"])
    with pytest.raises(RunDirError, match="another spec"):
        run_table_s5(changed, tmp_path / "t", progress=False)


@pytest.mark.slow
def test_table_s5_interrupted_run_resumes(tmp_path, monkeypatch, capsys):
    """Stopped between its stages, colearn expand-table --resume trains what is left."""
    from colearning.expand import table_run

    spec_file = tmp_path / "s5.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "s", "base": S5_BASE, "seeds": 1,
                                         "methods": ["freeze0", "scratch"]}))
    out = tmp_path / "s"
    calls = []
    run_cells = table_run.run_cells

    def stop_at_stage_2(cells, *args, **kwargs):
        calls.append([c.name for c in cells])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_cells(cells, *args, **kwargs)

    monkeypatch.setattr(table_run, "run_cells", stop_at_stage_2)
    code = main(["expand-table", "--config", str(spec_file), "--out", str(out),
                 "--no-progress", "-j", "1", "expand.add=1", "train.epochs=1"])
    assert code == 130 and calls == [["base_seed0", "scratch_seed0"], ["freeze0_seed0"]]
    assert f"continue with: colearn expand-table --resume {out}" in capsys.readouterr().err
    assert not (out / "cells" / "freeze0_seed0").exists()
    rows = {r["method"]: r for r in table_s5(out)}  # the table of what finished is written
    assert (rows["base"]["count"], rows["freeze0"]["count"]) == (1, 0)
    monkeypatch.setattr(table_run, "run_cells", run_cells)
    assert main(["expand-table", "--resume", str(out), "--no-progress", "-j", "2"]) == 0
    assert "add-freeze β=0" in capsys.readouterr().out
    rows = {r["method"]: r for r in table_s5(out)}
    assert [r["count"] for r in rows.values()] == [1, 1, 1]
    lineage = json.loads((out / "cells" / "freeze0_seed0" / "lineage.json").read_text())
    assert lineage["source"] == str((out / "cells" / "base_seed0").resolve())


def test_shipped_table_s5_configs_plan_their_cells():
    from pathlib import Path

    from colearning.expand.table import load_table_s5_spec, plan_cells

    root = Path(__file__).parents[1] / "configs" / "sweeps"
    spec = load_table_s5_spec(root / "tableS5_lenet5_cifar10.yaml")
    assert (spec.n_members, spec.add, spec.beta, spec.epochs, spec.margin) == (10, 5, -0.07,
                                                                                150, 0)
    first, second = plan_cells(spec, "out")
    assert (len(first), len(second)) == (30, 40)
    spec = load_table_s5_spec(root / "tableS5_cpu_jpeg.yaml", ["expand.add=3"], seeds=1)
    assert (spec.n_members, spec.add, spec.beta, spec.epochs) == (10, 3, -0.02, 2)
    first, second = plan_cells(spec, "out")
    assert [c.name for c in first] == ["base_seed0", "scratch_seed0", "scratch2x_seed0"]
    assert [c.config["ensemble"]["n_members"] for c in first + second] == [10] + [13] * 6


def test_table_s5_spec_errors():
    with pytest.raises(ConfigError, match="unknown Table S5 method"):
        table_s5_spec_from_dict({"base": TINY, "methods": ["base", "bagging"]})
    with pytest.raises(ConfigError, match="add must be >= 1"):
        table_s5_spec_from_dict({"base": TINY, "expand": {"add": 0}})
    with pytest.raises(ConfigError, match="add must be >= 1"):
        table_s5_spec_from_dict({"base": TINY}, overrides=["expand.add=0"])
    with pytest.raises(ConfigError, match="unknown Table S5 key 'n_member'"):
        table_s5_spec_from_dict({"base": TINY, "n_member": 3})
    with pytest.raises(ConfigError, match="unknown Table S5 key 'grid'"):
        table_s5_spec_from_dict({"base": TINY, "grid": {"beta": [0.0]}})
    with pytest.raises(ConfigError, match="'n_members' is the run config key ensemble.n_members"):
        table_s5_spec_from_dict({"base": TINY, "n_members": 3})
    with pytest.raises(ConfigError, match="expand.add and expand.margin only, not expand.mode"):
        table_s5_spec_from_dict({"base": TINY}, overrides=["expand.mode=boost"])
    with pytest.raises(ConfigError, match="give loss.beta, not loss.beta_bar"):
        table_s5_spec_from_dict({"base": dict(TINY, loss={"beta_bar": -0.5})})
    with pytest.raises(ConfigError, match="'margin' must be int"):
        table_s5_spec_from_dict({"base": TINY, "expand": {"margin": 0.5}})

"""End-to-end training on digits: artifacts, determinism, resume, divergence, locking."""

import json
import math
import os
import signal

import numpy as np
import pytest
import torch
import yaml

import colearning.training.loop as train_module
from colearning import rundir
from colearning.config import config_from_dict
from colearning.errors import ConfigError, RunDirError
from colearning.training import Interrupted, load_run, resume, train
from colearning.training.data import load_raw, make_pool
from colearning.training.setup import build_members, predict
from tests.conftest import comparable

REQUIRED = ["epoch", "test/member_accuracy", "test/ensemble_accuracy_mean",
            "test/ensemble_accuracy_geometric", "test/ensemble_accuracy_vote", "test/js_mean",
            "test/js_matrix", "test/member_kl", "train/loss_total", "train/loss_task",
            "train/loss_coupling", "lr", "time/epoch_seconds"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from tests.conftest import TINY

    path = tmp_path_factory.mktemp("runs") / "a"
    return train(config_from_dict(TINY), run_dir=path)


def test_run_directory_contents(finished):
    path = finished.run_dir
    assert finished.status == "finished"
    records = rundir.read_jsonl(path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for key in REQUIRED:
        assert key in records[-1], key
    assert len(records[-1]["test/member_accuracy"]) == 2
    assert records[-1]["test/ensemble_accuracy_mean"] > 0.5  # digits are easy
    saved = np.load(path / "predictions.npz")
    log_probs = saved["log_probs"]
    assert log_probs.shape == (2, 360, 10) and log_probs.dtype == np.float32
    assert saved["labels"].shape == (360,) and saved["test_indices"].shape == (360,)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-5)
    checkpoint = rundir.load_checkpoint(path / "checkpoint.pt")
    assert checkpoint["epoch"] == 3 and checkpoint["step"] == 0
    assert {"model", "optimizer", "rng", "config"} <= set(checkpoint)
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 3
    assert summary["test/ensemble_accuracy_mean"] == records[-1]["test/ensemble_accuracy_mean"]
    config = yaml.safe_load((path / "config.yaml").read_text())
    assert config_from_dict(config) == finished.config
    meta = json.loads((path / "meta.json").read_text())
    assert meta["colearning_version"] and "git_commit" in meta
    analysis = rundir.read_jsonl(path / "analysis.jsonl")
    assert [a["epoch"] for a in analysis] == [0, 1, 2, 3]
    assert set(analysis[0]["members"][0]["activation"]) == {"ReLU1"}


def test_predictions_match_the_checkpoint(finished):
    """The saved log-probabilities are what the checkpointed members predict."""
    raw = load_raw(finished.config)
    pool = make_pool(raw, torch.device("cpu"))
    ens = build_members(finished.config, pool, torch.device("cpu"))
    ens.load_state_dict(rundir.load_checkpoint(finished.run_dir / "checkpoint.pt")["model"])
    log_probs = predict(ens, torch.from_numpy(raw.test_x).float() / 255, 512)  # official test
    saved = np.load(finished.run_dir / "predictions.npz")["log_probs"]
    np.testing.assert_array_equal(log_probs.numpy(), saved)


def test_same_seed_same_numbers_other_seed_differs(finished, tmp_path, tiny_config):
    again = train(tiny_config, run_dir=tmp_path / "b")
    assert comparable(again.metrics) == comparable(finished.metrics)
    tiny_config["seed"] = 1
    other = train(tiny_config, run_dir=tmp_path / "c")
    assert comparable(other.metrics) != comparable(finished.metrics)


def test_dropout_runs_do_not_depend_on_earlier_work_in_the_process(tmp_path, tiny_config):
    tiny_config["model"]["options"]["dropout"] = 0.3
    tiny_config["train"]["epochs"] = 2
    torch.manual_seed(123)
    first = train(tiny_config, run_dir=tmp_path / "a")
    torch.rand(1000)  # other work in the same process (a sweep worker, a notebook)
    torch.nn.Dropout(0.5)(torch.ones(10))
    second = train(tiny_config, run_dir=tmp_path / "b")
    assert comparable(first.metrics) == comparable(second.metrics)
    # the run seeds and restores the global RNG: the caller's stream is as it was
    state = torch.get_rng_state()
    train(tiny_config, run_dir=tmp_path / "c")
    assert torch.equal(torch.get_rng_state(), state)


def test_dropout_run_resumes_exactly(tmp_path, tiny_config, monkeypatch):
    tiny_config["model"]["options"]["dropout"] = 0.3
    reference = train(tiny_config, run_dir=tmp_path / "reference")
    calls = {"n": 0}
    original = train_module.Pack._loss

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module.Pack, "_loss", interrupting)
    with pytest.raises(Interrupted):
        train(tiny_config, run_dir=tmp_path / "r")
    monkeypatch.setattr(train_module.Pack, "_loss", original)
    torch.rand(1000)  # the resuming process has its own history
    assert comparable(resume(tmp_path / "r").metrics) == comparable(reference.metrics)


def test_resume_after_sigterm_mid_epoch_matches(finished, tmp_path, tiny_config, monkeypatch):
    calls = {"n": 0}
    original = train_module.Pack._loss

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 2 has steps 7-12 (6 steps of 256 in 1,437 images)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module.Pack, "_loss", interrupting)
    path = tmp_path / "r"
    with pytest.raises(Interrupted):
        train(tiny_config, run_dir=path)
    checkpoint = rundir.load_checkpoint(path / "checkpoint.pt")
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 2)
    assert json.loads((path / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(train_module.Pack, "_loss", original)
    resumed = resume(path)
    assert resumed.status == "finished"
    assert comparable(resumed.metrics) == comparable(finished.metrics)
    np.testing.assert_array_equal(np.load(path / "predictions.npz")["log_probs"],
                                  np.load(finished.run_dir / "predictions.npz")["log_probs"])


def test_resume_drops_metric_lines_newer_than_checkpoint(finished, tmp_path, tiny_config,
                                                         monkeypatch):
    """A crash between the metrics line and the checkpoint write, plus a torn append."""
    original = rundir.atomic_torch_save
    calls = {"n": 0}

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk vanished")
        return original(*args, **kwargs)

    monkeypatch.setattr(rundir, "atomic_torch_save", crash_on_third)
    path = tmp_path / "t"
    with pytest.raises(OSError):
        train(tiny_config, run_dir=path)
    monkeypatch.setattr(rundir, "atomic_torch_save", original)
    assert len(rundir.read_jsonl(path / "metrics.jsonl")) == 3
    assert rundir.load_checkpoint(path / "checkpoint.pt")["epoch"] == 2
    with open(path / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 4, "test/ens')
    resumed = resume(path)
    assert [r["epoch"] for r in resumed.metrics] == [1, 2, 3]
    assert comparable(resumed.metrics) == comparable(finished.metrics)
    assert comparable(rundir.read_jsonl(path / "metrics.jsonl")) == comparable(finished.metrics)


def test_resume_refuses_changed_config_and_bad_paths(finished, tmp_path):
    with pytest.raises(RunDirError, match=r"changed config \(loss.beta: -0.2 -> 0.3\)"):
        resume(finished.run_dir, {"loss": {"beta": 0.3}})
    assert resume(finished.run_dir, {"loss": {"beta": -0.2}}).status == "finished"
    with pytest.raises(RunDirError, match="not a run directory"):
        resume(tmp_path)
    with pytest.raises(RunDirError, match="not a directory"):
        resume(tmp_path / "missing")


def test_refuses_existing_run_and_locked_run(finished, tiny_config):
    with pytest.raises(RunDirError, match="already holds a run"):
        train(tiny_config, run_dir=finished.run_dir)
    with rundir.locked(finished.run_dir), pytest.raises(RunDirError, match="in use"):
        resume(finished.run_dir)


def test_divergence_stops_cleanly_and_keeps_last_checkpoint(tmp_path, tiny_config, monkeypatch):
    original = train_module.Pack._loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        parts = original(*args, **kwargs)
        if calls["n"] == 9:  # epoch 2, step 3
            return parts._replace(total=parts.total * float("nan"))
        return parts

    monkeypatch.setattr(train_module.Pack, "_loss", poisoned)
    run = train(tiny_config, run_dir=tmp_path / "d")
    assert run.status == "diverged"
    assert run.summary["status_detail"].startswith("diverged at epoch 2, step 3")
    assert len(run.metrics) == 1
    assert rundir.load_checkpoint(tmp_path / "d" / "checkpoint.pt")["epoch"] == 1
    params = rundir.load_checkpoint(tmp_path / "d" / "checkpoint.pt")["model"]
    assert all(torch.isfinite(t).all() for t in params.values() if t.is_floating_point())

    calls["n"] = 0
    tiny_config["train"]["on_nonfinite"] = "skip"
    skipped = train(tiny_config, run_dir=tmp_path / "s")
    assert skipped.status == "finished"
    assert [r["train/skipped_steps"] for r in skipped.metrics] == [0, 1, 0]
    assert all("train/note" not in r for r in skipped.metrics)


def test_epoch_with_every_step_skipped_logs_nan_not_zero(tmp_path, tiny_config, monkeypatch,
                                                         capsys):
    original = train_module.Pack._loss

    def poisoned(*args, **kwargs):
        parts = original(*args, **kwargs)
        return parts._replace(total=parts.total * float("nan"))

    monkeypatch.setattr(train_module.Pack, "_loss", poisoned)
    tiny_config["train"]["on_nonfinite"] = "skip"
    tiny_config["train"]["epochs"] = 1
    run = train(tiny_config, run_dir=tmp_path / "s")
    record = run.metrics[0]
    assert record["train/skipped_steps"] == 6  # 1,437 images in batches of 256
    assert all(math.isnan(v) for v in record["train/loss_total"])
    saved = rundir.read_jsonl(tmp_path / "s" / "metrics.jsonl")[0]
    assert saved["train/loss_total"] == [None, None] and saved["train/loss_task"] == [None, None]
    assert "every step of epoch 1 was skipped" in saved["train/note"]
    assert "every step of epoch 1 was skipped" in capsys.readouterr().err


def test_gradient_clipping_is_per_member(tmp_path, tiny_config):
    tiny_config["optim"]["grad_clip"] = 0.5
    run = train(tiny_config, run_dir=tmp_path / "g")
    assert run.status == "finished"


def test_batch_larger_than_training_set(tmp_path, tiny_config):
    tiny_config["train"]["batch_size"] = 5000
    with pytest.raises(ConfigError, match="larger than the training set"):
        train(tiny_config, run_dir=tmp_path / "x")


def test_unknown_names_fail_before_anything_is_written(tmp_path, tiny_config):
    tiny_config["model"]["name"] = "resnet"
    with pytest.raises(ConfigError, match="model.name='resnet' is not valid; valid: lenet5"):
        train(tiny_config, run_dir=tmp_path / "y")
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize("schedule, options, expected", [
    ("constant", {}, [0.1, 0.1, 0.1, 0.1]),
    ("step", {"every": 2, "gamma": 0.5}, [0.1, 0.1, 0.05, 0.05]),
    ("cosine", {}, [0.05 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]),
    ("warmup", {"epochs": 2}, [0.0, 0.05, 0.1, 0.1]),
])
def test_learning_rate_schedules(tmp_path, tiny_config, monkeypatch, schedule, options,
                                 expected):
    """The learning rate each epoch of a run trains with (what its optimizer is given) and
    logs, against the schedule's formula."""
    from colearning.optim import StackedSGD

    given = []
    original = StackedSGD.set_lr

    def recording(self, lr):
        given.append(lr)
        return original(self, lr)

    monkeypatch.setattr(StackedSGD, "set_lr", recording)
    tiny_config["optim"].update(lr=0.1, schedule=schedule, schedule_options=options)
    tiny_config["train"]["epochs"] = 4
    run = train(tiny_config, run_dir=tmp_path / schedule)
    logged = [r["lr"] for r in rundir.read_jsonl(run.run_dir / "metrics.jsonl")]
    assert logged == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # once per epoch, one rate per member: the logged one
    assert [list(lr) for lr in given] == [[pytest.approx(lr, rel=1e-12, abs=1e-15)] * 2
                                          for lr in expected]


def test_load_run(finished):
    run = load_run(finished.run_dir)
    assert run.summary["status"] == "finished" and len(run.metrics) == 3


def test_resume_after_a_torn_append_with_nothing_newer(finished, tmp_path, tiny_config,
                                                       monkeypatch):
    """A kill in the middle of appending epoch 3's line: the torn tail must not stay glued."""
    original = rundir.atomic_torch_save
    calls = {"n": 0}

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk vanished")
        return original(*args, **kwargs)

    monkeypatch.setattr(rundir, "atomic_torch_save", crash_on_third)
    path = tmp_path / "torn"
    with pytest.raises(OSError):
        train(tiny_config, run_dir=path)
    monkeypatch.setattr(rundir, "atomic_torch_save", original)
    for name in ("metrics.jsonl", "analysis.jsonl"):
        lines = (path / name).read_text().splitlines(keepends=True)
        (path / name).write_text("".join(lines[:-1]) + lines[-1][:25])  # tear the last line
    assert len(rundir.read_jsonl(path / "metrics.jsonl")) == 2  # == the checkpoint's epoch
    resumed = resume(path)
    assert comparable(rundir.read_jsonl(path / "metrics.jsonl")) == comparable(finished.metrics)
    assert comparable(resumed.metrics) == comparable(finished.metrics)
    epochs = [r["epoch"] for r in rundir.read_jsonl(path / "analysis.jsonl")]
    assert epochs == [0, 1, 2, 3]


def test_restart_without_checkpoint_rewrites_initial_statistics(tmp_path, tiny_config,
                                                                 monkeypatch):
    """Killed before the first checkpoint: the rerun from scratch leaves one epoch-0 record."""
    original = rundir.atomic_torch_save

    def crash(*args, **kwargs):
        raise OSError("disk vanished")

    monkeypatch.setattr(rundir, "atomic_torch_save", crash)
    path = tmp_path / "fresh"
    with pytest.raises(OSError):
        train(tiny_config, run_dir=path)
    monkeypatch.setattr(rundir, "atomic_torch_save", original)
    assert not (path / "checkpoint.pt").exists()
    resume(path)
    epochs = [r["epoch"] for r in rundir.read_jsonl(path / "analysis.jsonl")]
    assert epochs == [0, 1, 2, 3]
    assert [r["epoch"] for r in rundir.read_jsonl(path / "metrics.jsonl")] == [1, 2, 3]


def test_validation_split_gets_its_own_metrics(tmp_path, tiny_config):
    tiny_config["data"]["val_size"] = 200
    tiny_config["train"]["epochs"] = 1
    run = train(tiny_config, run_dir=tmp_path / "v")
    record = run.metrics[0]
    for key in ("val/ensemble_accuracy_mean", "val/member_accuracy", "val/js_mean",
                "test/ensemble_accuracy_mean"):
        assert key in record, key
    assert record["val/ensemble_accuracy_mean"] != record["test/ensemble_accuracy_mean"]
    plain = train({**tiny_config, "data": {"name": "digits"}}, run_dir=tmp_path / "p")
    assert not any(key.startswith("val/") for key in plain.metrics[0])


def test_bf16_precision_runs_the_members_in_bf16_and_the_loss_in_fp32(tmp_path, tiny_config,
                                                                      monkeypatch):
    seen = []
    original = train_module.Pack._loss

    def spy(pack, logits, *args, **kwargs):
        seen.append(logits.dtype)
        parts = original(pack, logits, *args, **kwargs)
        seen.append(parts.total.dtype)
        return parts

    monkeypatch.setattr(train_module.Pack, "_loss", spy)
    tiny_config["train"].update(precision="bf16", epochs=1)
    run = train(tiny_config, run_dir=tmp_path / "bf16")
    assert run.status == "finished" and seen[:2] == [torch.bfloat16, torch.float32]
    fp32 = train({**tiny_config, "train": {**tiny_config["train"], "precision": "fp32"}},
                 run_dir=tmp_path / "fp32")
    assert comparable(run.metrics) != comparable(fp32.metrics)  # bf16 did change the numbers
    assert abs(run.summary["test/ensemble_accuracy_mean"]
               - fp32.summary["test/ensemble_accuracy_mean"]) < 0.1


def test_compile_falls_back_to_eager_with_a_one_line_warning(tmp_path, tiny_config, monkeypatch,
                                                            capsys, finished):
    def no_compiler(fn, mode=None):
        def run(*args, **kwargs):
            raise RuntimeError("no C++ compiler found\nlong details")
        return run

    monkeypatch.setattr(torch, "compile", no_compiler)
    tiny_config["train"]["compile"] = "reduce-overhead"
    run = train(tiny_config, run_dir=tmp_path / "c")
    assert comparable(run.metrics) == comparable(finished.metrics)  # eager: the same numbers
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "could not compile" in line]
    assert len(warnings) == 2  # the members' forward and the loss, once each
    assert "RuntimeError: no C++ compiler found" in warnings[0]


def test_resume_accepts_display_only_changes(finished, tmp_path, tiny_config):
    again = resume(finished.run_dir, {"train": {"progress": True}})
    assert again.status == "finished" and again.metrics == finished.metrics
    config = yaml.safe_load((finished.run_dir / "config.yaml").read_text())
    assert config["train"]["progress"] is False  # the saved config is untouched


def test_a_finished_run_extends_to_more_epochs_like_a_straight_run(tmp_path, tiny_config):
    straight = train({**tiny_config, "train": {**tiny_config["train"], "epochs": 5}},
                     run_dir=tmp_path / "straight")
    short = train(tiny_config, run_dir=tmp_path / "short")  # 3 epochs
    assert short.status == "finished" and len(short.metrics) == 3
    longer = resume(short.run_dir, {"train": {"epochs": 5}})
    assert longer.status == "finished" and longer.config.train.epochs == 5
    assert comparable(longer.metrics) == comparable(straight.metrics)
    assert yaml.safe_load((short.run_dir / "config.yaml").read_text())["train"]["epochs"] == 5
    history = rundir.read_jsonl(short.run_dir / "config_history.jsonl")
    assert history[0]["changed"] == {"train.epochs": [3, 5]}
    assert resume(short.run_dir).metrics == longer.metrics  # finished again: nothing to do


def test_extension_is_refused_where_it_would_not_equal_a_straight_run(tmp_path, tiny_config):
    tiny_config["optim"]["schedule"] = "cosine"
    run = train(tiny_config, run_dir=tmp_path / "cos")
    with pytest.raises(RunDirError, match=r"cosine learning-rate schedule \(optim.schedule\) "
                                          "depends on train.epochs"):
        resume(run.run_dir, {"train": {"epochs": 6}})
    with pytest.raises(RunDirError, match="only train.epochs may grow"):
        resume(run.run_dir, {"train": {"epochs": 2}})


def test_run_directory_names_say_beta_or_beta_bar():
    from colearning.config import config_from_dict
    from colearning.training.lifecycle import new_run_dir

    assert new_run_dir(config_from_dict({"loss": {"beta": -0.125}})).name.endswith(
        "-small_cnn-N2-b-0.125")
    assert new_run_dir(config_from_dict({"loss": {"beta_bar": -0.5}})).name.endswith(
        "-small_cnn-N2-bb-0.5")
    matrix = config_from_dict({"loss": {"beta": [[0, 1], [1, 0]]}})
    assert new_run_dir(matrix).name.endswith("-bmatrix")


def test_load_ensemble_gives_the_trained_members_for_inference(finished):
    import colearning
    from colearning.data import load_dataset

    ensemble, config = colearning.load_ensemble(finished.run_dir)
    assert config == finished.config and not ensemble.training
    assert ensemble.inputs["num_classes"] == 10 and ensemble.inputs["mean"] is None
    test_x = load_dataset("digits").test_x  # the official test side, all of it
    with torch.no_grad():
        log_probs = torch.log_softmax(ensemble(torch.from_numpy(test_x).float() / 255), -1)
    saved = np.load(finished.run_dir / "predictions.npz")["log_probs"]
    np.testing.assert_allclose(log_probs.numpy(), saved, atol=1e-5)
    assert len(ensemble.members()) == 2
    with pytest.raises(ConfigError, match="valid: final, best"):
        colearning.load_ensemble(finished.run_dir, epoch="last")
    with pytest.raises(RunDirError, match="train with train.keep_best=true"):
        colearning.load_ensemble(finished.run_dir, checkpoint="best")  # the older keyword


def test_metrics_can_also_go_to_tensorboard(tmp_path, tiny_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny_config["train"].update(log_to="tensorboard", epochs=2)
    run = train(tiny_config, run_dir=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "test/ensemble_accuracy_mean" in tags and "train/loss_total/member_1" in tags
    values = [e.value for e in events.Scalars("test/ensemble_accuracy_mean")]
    assert values == pytest.approx([r["test/ensemble_accuracy_mean"] for r in run.metrics])


def test_tensorboard_missing_is_a_one_line_error(tmp_path, tiny_config, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    tiny_config["train"]["log_to"] = "tensorboard"
    with pytest.raises(ConfigError, match=r"pip install 'colearning\[tensorboard\]'"):
        train(tiny_config, run_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_metrics_that_do_not_cover_the_checkpoint_stop_a_resume(tmp_path, tiny_config, capsys):
    from colearning.cli import main

    tiny_config["train"]["epochs"] = 2
    path = tmp_path / "r"
    train(tiny_config, run_dir=path)
    (path / "metrics.jsonl").unlink()  # a user cleaning up, a sync tool, a bad copy
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    assert main(["train", "--resume", str(path), "train.epochs=4"]) == 4
    err = capsys.readouterr().err
    assert "holds 0 epoch(s) but the checkpoint is at epoch 2: the metrics of epochs 1-2 " \
           "are gone" in err and err.count("\n") == 1
    # nothing was changed: not the config (the extension is refused), not the checkpoint
    after = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    assert after == before


def test_a_bounded_divergence_trains(tmp_path, tiny_config):
    """loss.divergence=js: the coupling each member logs is beta sum_j JS <= |beta| (N-1) log 2."""
    tiny_config["loss"] = {"beta": -0.3, "divergence": "js"}
    run = train(tiny_config, run_dir=tmp_path / "js")
    assert run.status == "finished"
    n = tiny_config["ensemble"]["n_members"]
    for record in run.metrics:
        for coupling in record["train/loss_coupling"]:
            assert -0.3 * (n - 1) * math.log(2) - 1e-6 <= coupling <= 0


def test_a_scheduled_ring_coupling_trains_logs_beta_and_resumes_exactly(tmp_path, tiny_config):
    tiny_config["ensemble"]["n_members"] = 3
    tiny_config["loss"] = {"beta_bar": -0.6, "coupling": "ring", "beta_schedule": "warmup",
                           "beta_schedule_options": {"epochs": 2}}
    tiny_config["train"]["epochs"] = 3
    full = train(tiny_config, run_dir=tmp_path / "full")
    # ring of 3 with k=1 is every pair: beta_bar / 3 each, off-diagonal mean -0.2, warmed up
    assert [r["train/beta_mean"] for r in full.metrics] == pytest.approx([0.0, -0.1, -0.2])
    short = dict(tiny_config, train=dict(tiny_config["train"], epochs=1))
    train(short, run_dir=tmp_path / "short")
    resumed = resume(tmp_path / "short", {"train": {"epochs": 3}})
    assert comparable(resumed.metrics) == comparable(full.metrics)
    cosine = dict(tiny_config, loss=dict(tiny_config["loss"], beta_schedule="cosine",
                                         beta_schedule_options={}))
    train(dict(cosine, train=dict(tiny_config["train"], epochs=1)), run_dir=tmp_path / "cos")
    with pytest.raises(RunDirError, match="depends on train.epochs"):
        resume(tmp_path / "cos", {"train": {"epochs": 3}})


def test_the_adaptive_coupling_follows_its_rule_and_resumes_exactly(tmp_path, tiny_config):
    from colearning.couplings import adapt_scale

    tiny_config["data"] = {"name": "digits", "val_size": 200}
    tiny_config["loss"] = {"beta_bar": -0.5, "target_js": 0.2}
    tiny_config["train"]["epochs"] = 4
    full = train(tiny_config, run_dir=tmp_path / "full")
    scales = [r["train/coupling_scale"] for r in full.metrics]
    assert scales[0] == 1.0
    for before, after, record in zip(scales, scales[1:], full.metrics, strict=False):
        assert after == pytest.approx(adapt_scale(before, record["val/js_mean"], 0.2))
    n = tiny_config["ensemble"]["n_members"]
    assert [r["train/beta_mean"] for r in full.metrics] == pytest.approx(
        [-0.5 / n * s for s in scales])
    assert len(set(scales)) > 1  # the controller moved
    short = dict(tiny_config, train=dict(tiny_config["train"], epochs=2))
    train(short, run_dir=tmp_path / "short")
    resumed = resume(tmp_path / "short", {"train": {"epochs": 4}})
    assert comparable(resumed.metrics) == comparable(full.metrics)
    with pytest.raises(ConfigError, match="data.val_size > 0"):
        train(dict(tiny_config, data={"name": "digits"}), run_dir=tmp_path / "no_val")


def test_the_report_draws_a_changing_coupling(tmp_path, tiny_config):
    from colearning.report import build_report

    tiny_config["data"] = {"name": "digits", "val_size": 200}
    tiny_config["loss"] = {"beta_bar": -0.5, "target_js": 0.2}
    tiny_config["train"]["epochs"] = 2
    run = train(tiny_config, run_dir=tmp_path / "run")
    page = build_report(run.run_dir, tmp_path / "report").read_text()
    assert (tmp_path / "report" / "coupling.png").stat().st_size > 0
    assert "The coupling in effect each epoch" in page

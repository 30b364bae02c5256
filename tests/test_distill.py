"""Distillation: the objective against a float64 hand computation, the teacher's soft
targets against predict(), and ``colearn distill`` end to end (an ordinary student run,
the baseline, distill.json, resume, refusals)."""

from __future__ import annotations

import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch

import colearning
import colearning.training.step as step_module
from colearning import rundir
from colearning.cli import main
from colearning.config import config_from_dict
from colearning.distillation import baseline_config, student_config
from colearning.errors import ConfigError, RunDirError
from colearning.losses import distillation_loss, objective_loss, softened
from colearning.training import Interrupted, load_ensemble, train, train_pack
from colearning.training.data import cell_data, load_raw, make_pool
from colearning.training.pack import check_packable, plan_packs
from colearning.training.teacher import TEACHER, soft_targets
from tests.conftest import assert_records_close

TEACHER_CONFIG = {
    "device": "cpu",
    "data": {"name": "digits", "train_size": 600},
    "model": {"name": "mlp", "options": {"hidden": [32]}},
    "ensemble": {"n_members": 3},
    "loss": {"beta": -0.1},
    "optim": {"lr": 0.1},
    "train": {"epochs": 2, "batch_size": 100, "progress": False, "analysis_every": 0},
}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return train(config_from_dict(TEACHER_CONFIG), tmp_path_factory.mktemp("t") / "teacher")


# ------------------------------------------------------------------------- the objective
def reference(logits, labels, soft, temperature, weight):
    """Per member: alpha T^2 KL(soft || softmax(z / T)) + (1 - alpha) CE(y, softmax(z)),
    batch means, in float64 numpy."""
    z = logits.detach().double().numpy()
    p = soft.double().numpy()

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    hard = -np.take_along_axis(log_softmax(z), labels.numpy()[None, :, None], -1)[..., 0]
    kl = (p * (np.log(p) - log_softmax(z / temperature))).sum(-1)
    return (1 - weight) * hard.mean(-1), weight * temperature ** 2 * kl.mean(-1)


@pytest.mark.parametrize("temperature,weight", [(4.0, 0.9), (1.0, 0.5), (10.0, 1.0), (2.0, 0.0)])
def test_the_objective_is_the_hand_computed_one(temperature, weight):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 16, 5, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, 5, (16,), generator=generator)
    soft = torch.softmax(torch.randn(16, 5, generator=generator, dtype=torch.float64), -1)
    parts = distillation_loss(logits, labels, soft, temperature, weight)
    task, coupling = reference(logits, labels, soft, temperature, weight)
    np.testing.assert_allclose(parts.task.numpy(), task, rtol=1e-12)
    np.testing.assert_allclose(parts.coupling.numpy(), coupling, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(parts.total.numpy(), task + coupling, rtol=1e-12)
    # the registry entry is the same function, with the step's extra options
    via = objective_loss("distill", logits, labels, soft=soft, temperature=temperature,
                         weight=weight, joint_weight=None)
    torch.testing.assert_close(via.total, parts.total)


def test_alpha_zero_is_cross_entropy_and_the_gradient_checks():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 8, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (8,), generator=generator)
    soft = torch.softmax(torch.randn(8, 4, generator=generator, dtype=torch.float64), -1)
    plain = distillation_loss(logits, labels, soft, 3.0, 0.0).total
    want = torch.stack([torch.nn.functional.cross_entropy(member, labels) for member in logits])
    torch.testing.assert_close(plain, want)
    assert torch.autograd.gradcheck(
        lambda z: distillation_loss(z, labels, soft, 3.0, 0.7).total, (logits,))
    # a pack's [K, N, B, C] with [K, B] labels and [K, B, C] soft targets
    packed = distillation_loss(logits.unsqueeze(0), labels.unsqueeze(0), soft.unsqueeze(0),
                               3.0, 0.7)
    assert packed.total.shape == (1, 2)


def test_soft_targets_are_the_tempered_mean_of_the_members():
    log_probs = torch.log_softmax(torch.randn(4, 6, 3, dtype=torch.float64), -1)
    mean = log_probs.exp().mean(0)
    for temperature in (0.5, 1.0, 5.0):
        want = mean ** (1 / temperature)
        want = want / want.sum(-1, keepdim=True)
        torch.testing.assert_close(softened(log_probs, temperature).double(), want,
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad,message", [
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"temperature": -1.0}, "temperature must be > 0"),
    ({"weight": 1.5}, r"must be in \[0, 1\]"),
])
def test_bad_temperature_or_weight_is_one_line(bad, message):
    options = {"temperature": 2.0, "weight": 0.5, **bad}
    with pytest.raises(ConfigError, match=message):
        distillation_loss(torch.zeros(1, 2, 3), torch.tensor([0, 1]), torch.full((2, 3), 1 / 3),
                          **options)
    config = {"loss": {"objective": "distill"}, "distill": {"teacher": "x", **bad}}
    with pytest.raises(ConfigError, match=message.replace("temperature", "distill.temperature")
                       if "temperature" in bad else r"distill.weight .* \[0, 1\]"):
        config_from_dict(config)


# ------------------------------------------------------------------------- soft targets
def test_soft_targets_are_the_teachers_predictions_on_its_training_split(teacher, tmp_path):
    config = student_config(teacher.run_dir, temperature=3.0)
    raw = load_raw(config)
    pool = make_pool(raw, torch.device("cpu"))
    data = cell_data(config, raw, torch.device("cpu"))
    soft = soft_targets(config, pool, data, torch.device("cpu"), tmp_path)
    images = pool.images[data.train].numpy()
    want = softened(colearning.predict(teacher.run_dir, images).member_log_probs, 3.0)
    torch.testing.assert_close(soft[data.train], want, rtol=1e-5, atol=1e-6)
    outside = torch.ones(len(pool.labels), dtype=torch.bool)
    outside[data.train] = False
    assert soft[outside].abs().sum() == 0  # never the test images
    record = json.loads((tmp_path / TEACHER).read_text())
    assert record["teacher_n_members"] == 3 and record["temperature"] == 3.0


# ------------------------------------------------------------------------- end to end
def test_colearn_distill_writes_a_student_run_a_baseline_and_the_comparison(teacher, tmp_path,
                                                                             capsys):
    out = tmp_path / "student"
    code = main(["distill", str(teacher.run_dir), "--out", str(out), "--epochs", "2",
                 "--temperature", "3", "--weight", "0.8", "--no-progress", "optim.lr=0.2"])
    assert code == 0
    table = capsys.readouterr().out
    assert "teacher" in table and "student" in table and "baseline" in table
    for name in ("config.yaml", "summary.json", "checkpoint.pt", "predictions.npz", TEACHER,
                 "distill.json"):
        assert (out / name).is_file(), name
    ensemble, config = load_ensemble(out)  # an ordinary run
    assert ensemble.n_members == 1 and config.loss.objective == "distill"
    assert config.distill.temperature == 3.0 and config.distill.weight == 0.8
    assert config.loss.beta is None and config.seed == teacher.config.seed
    record = json.loads((out / "distill.json").read_text())
    rows = record["rows"]
    assert set(rows) == {"teacher", "student", "baseline"}
    assert rows["teacher"]["members"] == 3 and rows["student"]["members"] == 1
    assert rows["teacher"]["accuracy"] == teacher.summary["test/ensemble_accuracy_mean"]
    for row in rows.values():
        assert {"accuracy", "nll", "ece", "brier"} <= set(row)
        assert 0 <= row["accuracy"] <= 1 and row["nll"] > 0
    baseline = rundir.require_run_dir(f"{out}-baseline")
    _, base = load_ensemble(baseline)
    assert base.loss.objective == "colearning" and base.distill.teacher is None
    assert base.ensemble.n_members == 1 and base.optim.lr == 0.2
    student_run = colearning.load_run(out)
    losses = student_run.metrics[-1]
    assert losses["train/loss_coupling"][0] > 0  # the soft term is logged as the coupling
    # the same command again: both runs are finished, reused as they are
    mtime = (out / "checkpoint.pt").stat().st_mtime_ns
    assert main(["distill", str(teacher.run_dir), "--out", str(out), "--epochs", "2",
                 "--temperature", "3", "--weight", "0.8", "--no-progress", "optim.lr=0.2"]) == 0
    assert (out / "checkpoint.pt").stat().st_mtime_ns == mtime


def test_an_interrupted_student_continues_where_it_stopped(teacher, tmp_path, monkeypatch):
    reference = colearning.distill(teacher.run_dir, tmp_path / "reference", epochs=2,
                                   baseline=False, overrides=["train.progress=false"])
    calls = {"n": 0}
    original = step_module.Pack._loss

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 2 (6 steps of 100 in 600 images per epoch)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(step_module.Pack, "_loss", interrupting)
    out = tmp_path / "student"
    with pytest.raises(Interrupted):
        colearning.distill(teacher.run_dir, out, epochs=2, baseline=False,
                           overrides=["train.progress=false"])
    monkeypatch.setattr(step_module.Pack, "_loss", original)
    assert rundir.load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    resumed = colearning.resume(out)  # an ordinary run: resumes as any run does
    assert resumed.status == "finished"
    assert_records_close(resumed.metrics, reference.metrics)
    # a teacher that changed since is refused
    record = json.loads((out / TEACHER).read_text())
    record["teacher_checkpoint_sha256"] = "0" * 64
    rundir.atomic_write_json(out / TEACHER, record)
    (out / "summary.json").unlink()  # else a finished run is returned as it is
    with pytest.raises(RunDirError, match="changed since"):
        colearning.resume(out)


def test_refusals_are_one_line(teacher, tmp_path, capsys):
    def refused(*argv):
        code = main(["distill", *map(str, argv), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code != 0 and err.count("\n") == 0, err
        return err

    assert "not a directory" in refused(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "not a run directory" in refused(tmp_path / "empty")
    assert "temperature must be > 0" in refused(teacher.run_dir, "-T", "0", "--out",
                                                tmp_path / "s")
    assert "[0, 1]" in refused(teacher.run_dir, "--weight", "1.5", "--out", tmp_path / "s")
    assert "seed" in refused(teacher.run_dir, "seed=3", "--out", tmp_path / "s")
    assert "not distill.* overrides" in refused(teacher.run_dir, "distill.temperature=2")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(teacher.run_dir, unfinished)
    (unfinished / "summary.json").unlink()
    assert "not finished" in refused(unfinished, "--out", tmp_path / "s")
    assert "best.pt" in refused(teacher.run_dir, "--teacher-epoch", "best", "--out",
                                tmp_path / "s")
    assert not (tmp_path / "s").exists()  # nothing was written


def test_distilled_runs_train_alone(teacher):
    student = student_config(teacher.run_dir)
    other = baseline_config(student)
    with pytest.raises(ConfigError, match="trains alone"):
        check_packable([student, student])
    assert plan_packs([student, student, other, other]) == [[0], [1], [2, 3]]
    with pytest.raises(ConfigError, match="distill.teacher go together"):
        config_from_dict({"loss": {"objective": "distill"}})
    with pytest.raises(ConfigError, match="trains alone"):
        train_pack([(student, "a"), (student, "b")])


def test_a_teacher_trained_on_arrays_is_distilled_with_the_same_arrays(tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.random((200, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 200),
            rng.random((60, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 60))
    config = {key: value for key, value in TEACHER_CONFIG.items() if key != "data"}
    teacher = colearning.train({**config, "train": {**config["train"], "epochs": 1}},
                               tmp_path / "teacher", data=data)
    with pytest.raises(ConfigError, match=r"in memory; pass the same data"):
        colearning.distill(teacher.run_dir, tmp_path / "none")
    assert not (tmp_path / "none").exists()
    other = (data[0][::-1].copy(), *data[1:])
    with pytest.raises(RunDirError, match="is not the data the teacher"):
        colearning.distill(teacher.run_dir, tmp_path / "other", data=other, baseline=False)
    student = colearning.distill(teacher.run_dir, tmp_path / "student", data=data)
    rows = json.loads((student.run_dir / "distill.json").read_text())["rows"]
    assert rows["baseline"]["members"] == rows["student"]["members"] == 1
    assert student.config.data.name == "arrays"
    # again: the finished student and baseline are reused, checked against the same data
    again = colearning.distill(teacher.run_dir, tmp_path / "student", data=data)
    assert again.summary == student.summary
    with pytest.raises(RunDirError):
        colearning.distill(teacher.run_dir, tmp_path / "student", data=other)

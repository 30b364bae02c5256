"""The both-terms KL convention (kl_reduction=mean_all) and the per-epoch size metrics that
show how a collapse happens (members' logit and weight norms)."""

from __future__ import annotations

import math

import pytest
import torch

from colearning import rundir
from colearning.config import config_from_dict
from colearning.errors import ConfigError
from colearning.evaluation import evaluate_log_probs, logit_norm
from colearning.training import train
from colearning.training.run import load_ensemble

BASE = {
    "device": "cpu",
    "data": {"name": "digits", "train_size": 600, "val_size": 0},
    "model": {"name": "mlp", "options": {"hidden": [32]}},
    "ensemble": {"n_members": 2},
    "loss": {"beta": -0.3},
    "train": {"epochs": 2, "batch_size": 100, "progress": False, "analysis_every": 0},
}


def run(tmp_path, name, kl_reduction, lr, weight_decay):
    values = {**BASE, "loss": {**BASE["loss"], "kl_reduction": kl_reduction},
              "optim": {"lr": lr, "momentum": 0.9, "weight_decay": weight_decay}}
    return train(config_from_dict(values), tmp_path / name)


def test_both_terms_over_c_is_eq1_with_lr_over_c_and_weight_decay_times_c(tmp_path):
    """SGD on L / C with (lr, wd) takes the same steps as on L with (lr / C, wd * C)."""
    classes = 10  # digits
    both = run(tmp_path, "both", "mean_all", 0.5, 1e-3)
    eq1 = run(tmp_path, "eq1", "batchmean", 0.5 / classes, 1e-3 * classes)
    for a, b in zip(both.metrics, eq1.metrics, strict=True):
        assert a["test/member_accuracy"] == pytest.approx(b["test/member_accuracy"], abs=1e-3)
        assert a["train/member_weight_norm"] == pytest.approx(b["train/member_weight_norm"],
                                                              rel=1e-4)
        assert [x * classes for x in a["train/loss_total"]] == pytest.approx(
            b["train/loss_total"], rel=1e-4)
    # train.analysis_every=0: structure statistics of the final epoch only (none at init)
    assert [a["epoch"] for a in rundir.read_jsonl(both.run_dir / rundir.ANALYSIS)] == [2]
    # and it is not a no-op: Eq. 1 at the same lr and weight decay trains differently
    same = run(tmp_path, "same", "batchmean", 0.5, 1e-3)
    assert same.metrics[-1]["train/member_weight_norm"] != pytest.approx(
        both.metrics[-1]["train/member_weight_norm"], rel=1e-2)


def test_kl_reduction_is_refused_for_other_objectives():
    with pytest.raises(ConfigError, match="loss.kl_reduction applies to loss.objective="
                                          "colearning only"):
        config_from_dict({"loss": {"objective": "joint", "kl_reduction": "mean_all",
                                   "beta": None}})


def test_logit_norm_is_the_centered_logits_norm():
    logits = torch.randn(3, 50, 7, dtype=torch.float64) * 5 + 100  # a shift changes nothing
    want = (logits - logits.mean(-1, keepdim=True)).norm(dim=-1).mean(-1)
    got = logit_norm(torch.log_softmax(logits, -1).float())
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    record = evaluate_log_probs(torch.log_softmax(logits, -1).float(),
                                torch.zeros(50, dtype=torch.long))
    assert record["test/member_logit_norm"] == pytest.approx(want.tolist(), rel=1e-5)


def test_the_weight_norm_is_the_trained_members_parameter_norm(tmp_path):
    trained = run(tmp_path, "r", "batchmean", 0.1, 5e-4)
    ensemble, _ = load_ensemble(tmp_path / "r")
    want = [math.sqrt(sum(float(p.double().pow(2).sum()) for p in member.parameters()))
            for member in ensemble.members()]
    assert trained.metrics[-1]["train/member_weight_norm"] == pytest.approx(want, rel=1e-5)
    assert len(trained.metrics[-1]["test/member_logit_norm"]) == 2

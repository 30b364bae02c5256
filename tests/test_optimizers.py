"""optim.name (sgd, adam, adamw) and optim.warmup_epochs through the trainer: the learning
rate each epoch against torch's schedulers, and an AdamW run resumed bit for bit."""

import os
import signal

import pytest
import torch

import colearning.training.loop as loop_module
from colearning import rundir
from colearning.config import config_from_dict
from colearning.errors import RunDirError
from colearning.training import Interrupted, resume, train
from colearning.training.setup import learning_rate
from tests.conftest import comparable


def _torch_rates(warmup, main, epochs, lr=0.1):
    """The learning rate of each epoch under torch's linear warm-up then ``main``."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    schedule = main(optimizer, epochs - warmup)
    if warmup:
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / (warmup + 1),
                                                 total_iters=warmup)
        schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, schedule],
                                                         milestones=[warmup])
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


@pytest.mark.parametrize("warmup", [0, 1, 3])
@pytest.mark.parametrize("schedule, options, main", [
    ("constant", {}, lambda opt, n: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0)),
    ("cosine", {}, lambda opt, n: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n)),
    ("step", {"every": 2, "gamma": 0.5},
     lambda opt, n: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)),
])
def test_warm_up_then_the_schedule_is_torchs_sequential_lr(warmup, schedule, options, main):
    """Epoch e < W trains at lr (e + 1) / (W + 1), then the schedule runs from its own start
    over the remaining epochs: torch's LinearLR warm-up then the schedule (SequentialLR)."""
    epochs = 8
    config = config_from_dict({"optim": {"lr": 0.1, "warmup_epochs": warmup,
                                         "schedule": schedule, "schedule_options": options},
                               "train": {"epochs": epochs}})
    ours = [learning_rate(config, epoch) for epoch in range(epochs)]
    assert ours == pytest.approx(_torch_rates(warmup, main, epochs), rel=1e-12, abs=1e-15)
    assert ours[:warmup] == pytest.approx([0.1 * (e + 1) / (warmup + 1) for e in range(warmup)])


def _final_state(path):
    checkpoint = rundir.load_checkpoint(path / "checkpoint.pt")
    return checkpoint["model"], checkpoint["optimizer"]


def _assert_same_state(a, b):
    (model_a, optim_a), (model_b, optim_b) = _final_state(a), _final_state(b)
    for key, value in model_a.items():
        assert torch.equal(value, model_b[key]), key
    assert optim_a.keys() == optim_b.keys() and optim_a["name"] == "adamw"
    assert torch.equal(optim_a["step"], optim_b["step"])
    for key in ("exp_avg", "exp_avg_sq"):
        for x, y in zip(optim_a[key], optim_b[key], strict=True):
            assert torch.equal(x, y), key


def test_an_adamw_run_resumes_and_extends_bit_for_bit(tmp_path, tiny_config, monkeypatch):
    """AdamW behind a one-epoch warm-up: 2 epochs straight, 1 epoch extended to 2, and 2
    epochs interrupted mid-epoch then resumed end with the same weights, moments and step
    counts; another optimizer on resume is refused in one line."""
    tiny_config["optim"].update(name="adamw", lr=0.01, weight_decay=0.01, warmup_epochs=1)
    tiny_config["train"]["epochs"] = 2
    straight = train(tiny_config, run_dir=tmp_path / "straight")
    assert [r["lr"] for r in straight.metrics] == pytest.approx([0.005, 0.01])
    assert _final_state(straight.run_dir)[1]["step"].tolist() == [[12.0] * 4] * 2

    tiny_config["train"]["epochs"] = 1
    short = train(tiny_config, run_dir=tmp_path / "short")
    longer = resume(short.run_dir, {"train": {"epochs": 2}})
    assert comparable(longer.metrics) == comparable(straight.metrics)
    _assert_same_state(short.run_dir, straight.run_dir)

    tiny_config["train"]["epochs"] = 2
    calls = {"n": 0}
    original = loop_module.Pack._loss

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 2, step 2 (6 steps of 256 in 1,437 images)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop_module.Pack, "_loss", interrupting)
    with pytest.raises(Interrupted):
        train(tiny_config, run_dir=tmp_path / "cut")
    monkeypatch.setattr(loop_module.Pack, "_loss", original)
    with pytest.raises(RunDirError, match=r"changed config \(optim.name: 'adamw' -> 'adam'\)"):
        resume(tmp_path / "cut", {"optim": {"name": "adam"}})
    assert comparable(resume(tmp_path / "cut").metrics) == comparable(straight.metrics)
    _assert_same_state(tmp_path / "cut", straight.run_dir)


@pytest.mark.parametrize("optim, copies", [({"name": "sgd", "momentum": 0.9}, 4),
                                           ({"name": "sgd", "momentum": 0.0}, 3),
                                           ({"name": "adam"}, 5), ({"name": "adamw"}, 5)])
def test_memory_estimate_counts_the_optimizers_state(optim, copies):
    # weights, gradients, the per-member modules, and the optimizer's parameter-sized state
    import numpy as np

    from colearning.data import RawDataset
    from colearning.training.resources import FLOAT_BYTES, _member, estimate

    images = np.zeros((4, 1, 8, 8), dtype=np.uint8)
    raw = RawDataset(images, np.arange(4) % 2, images, np.arange(4) % 2, ["a", "b"])
    config = config_from_dict({"model": {"name": "mlp"}, "optim": optim})
    parameters = sum(p.numel() for p in _member(config, raw).parameters())
    assert parameters > 0
    assert estimate(config, raw, n_members=3)["weights"] == copies * parameters * FLOAT_BYTES * 3

"""Training paths end to end: augmentation resumed mid-epoch, data.normalize through
load_ensemble, and packs (trained together equals trained alone) with other divergences,
joint peers, beta schedules and the adaptive coupling."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

import colearning
import colearning.training.loop as loop_module
from colearning import rundir
from colearning.data import load_dataset, split_indices
from colearning.training import Interrupted, resume, train, train_pack
from tests.conftest import assert_records_close, comparable
from tests.test_pack import CELLS, RTOL, _without_pack_size, config, packed_and_alone


def interrupt_at(monkeypatch, call):
    """SIGTERM during the ``call``-th loss of the trainer (one loss per step, every cell of
    a pack together); returns the undo."""
    calls = {"n": 0}
    original = loop_module.Pack._loss

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop_module.Pack, "_loss", interrupting)
    return lambda: monkeypatch.setattr(loop_module.Pack, "_loss", original)


def assert_stopped_mid_epoch(path):
    assert json.loads((path / "summary.json").read_text())["status"] == "interrupted"
    checkpoint = rundir.load_checkpoint(path / "checkpoint.pt")
    assert checkpoint["epoch"] >= 1 and checkpoint["step"] > 0  # inside an epoch, not at its end
    return checkpoint


# ------------------------------------------------------------------------- augmentation
def test_augmented_run_resumed_mid_epoch_equals_a_straight_run(tmp_path, tiny_config,
                                                               monkeypatch):
    tiny_config["data"]["augment"] = True
    straight = train(tiny_config, run_dir=tmp_path / "straight")
    plain = train({**tiny_config, "data": {"name": "digits", "augment": False}},
                  run_dir=tmp_path / "plain")
    assert comparable(straight.metrics) != comparable(plain.metrics)  # augmentation is on
    undo = interrupt_at(monkeypatch, 8)  # epoch 2 (6 steps of 256 in 1,437 images per epoch)
    path = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train(tiny_config, run_dir=path)
    undo()
    checkpoint = assert_stopped_mid_epoch(path)
    assert checkpoint["rng"]["augment"] is not None  # the crop+flip stream, mid-epoch
    torch.rand(1000)  # the resuming process has its own history
    resumed = resume(path)
    assert resumed.status == "finished"
    assert_records_close(resumed.metrics, straight.metrics)
    np.testing.assert_allclose(np.load(path / "predictions.npz")["log_probs"],
                               np.load(straight.run_dir / "predictions.npz")["log_probs"],
                               rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------- data.normalize
def write_rgb_folder(root, seed=0, per_class=(40, 10)):
    """A tiny 3-class RGB image folder whose channels have clearly different statistics."""
    gen = np.random.default_rng(seed)
    for split, count in zip(("train", "test"), per_class, strict=True):
        for label, name in enumerate(("a", "b", "c")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                pixels = np.stack([gen.integers(120, 256, (8, 8)),  # bright red
                                   gen.integers(0, 256, (8, 8)),  # spread green
                                   gen.integers(0, 60, (8, 8))], -1)  # dark blue
                pixels[label * 2:label * 2 + 3] //= 2  # a class-dependent darker band
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{k}.png")
    return root


def test_normalized_run_end_to_end(tmp_path):
    """data.normalize: the checkpoint holds the training split's per-channel mean and std,
    and load_ensemble on images standardized with them gives the run's saved predictions."""
    images = write_rgb_folder(tmp_path / "images")
    values = {
        "seed": 0, "device": "cpu",
        "data": {"name": "imagefolder", "path": str(images), "cache_dir": str(tmp_path / "cache"),
                 "normalize": True, "val_size": 30},
        "model": {"name": "mlp", "options": {"hidden": [16]}},
        "ensemble": {"n_members": 2}, "loss": {"beta": -0.2}, "optim": {"lr": 0.05},
        "train": {"epochs": 2, "batch_size": 32, "progress": False},
    }
    run = train(values, run_dir=tmp_path / "run")
    assert run.status == "finished"
    raw = load_dataset("imagefolder", str(images), cache_dir=str(tmp_path / "cache"),
                       progress=False)
    pooled = np.concatenate([raw.train_x, raw.test_x])
    split = split_indices(len(raw.train_y), len(raw.test_y), "official", val_size=30, seed=0)
    scaled = pooled[split.train].astype(np.float64) / 255  # float64 reference statistics
    mean, std = scaled.mean(axis=(0, 2, 3)), scaled.std(axis=(0, 2, 3))
    inputs = rundir.load_checkpoint(run.run_dir / "checkpoint.pt")["inputs"]
    assert inputs["in_channels"] == 3 and inputs["num_classes"] == 3
    np.testing.assert_allclose(inputs["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(inputs["std"], std, rtol=1e-6)
    # the statistics are per channel and of the training images only (not the validation's)
    assert np.ptp(mean) > 0.2 and np.ptp(std) > 0.05
    everything = pooled[:len(raw.train_y)].astype(np.float64) / 255
    assert np.abs(everything.mean(axis=(0, 2, 3)) - mean).max() > 1e-6 * mean.max()

    ensemble, _ = colearning.load_ensemble(run.run_dir)
    assert ensemble.inputs["mean"] == inputs["mean"] and ensemble.inputs["std"] == inputs["std"]
    saved = np.load(run.run_dir / "predictions.npz")
    x = torch.from_numpy(pooled[saved["test_indices"]]).float() / 255
    standardized = (x - torch.tensor(inputs["mean"]).view(1, 3, 1, 1)) \
        / torch.tensor(inputs["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        log_probs = torch.log_softmax(ensemble(standardized), -1).numpy()
        unnormalized = torch.log_softmax(ensemble(x), -1).numpy()
    np.testing.assert_allclose(log_probs, saved["log_probs"], atol=1e-5)
    assert np.abs(unnormalized - saved["log_probs"]).max() > 1e-2  # the run did standardize


# ------------------------------------------------------------------------- packs
def with_loss(**changes):
    """CELLS (seeds, sizes, couplings, KL reductions, learning rates) with loss keys set."""
    return [config(cell, **{f"loss.{key}": value for key, value in changes.items()})
            for cell in CELLS]


@pytest.mark.parametrize("divergence", ["js", "reverse_kl", "l2"])
def test_a_pack_with_another_divergence_equals_its_cells_alone(tmp_path, divergence):
    alone, _ = packed_and_alone(with_loss(divergence=divergence), tmp_path)
    kl = train(config(CELLS[0]), tmp_path / "kl")
    assert comparable(alone[0].metrics) != comparable(kl.metrics)  # the divergence counts


def test_a_pack_with_joint_peers_equals_its_cells_alone(tmp_path):
    alone, _ = packed_and_alone(with_loss(peers="joint"), tmp_path)
    detached = train(config(CELLS[0]), tmp_path / "detached")
    assert comparable(alone[0].metrics) != comparable(detached.metrics)


SCHEDULED = {  # factor each of 3 epochs
    "warmup": ({"epochs": 2}, [0.0, 0.5, 1.0]),
    "step": ({"every": 1, "gamma": 0.5}, [1.0, 0.5, 0.25]),
    "cosine": ({}, [1.0, 0.75, 0.25]),
}


@pytest.mark.parametrize("schedule", sorted(SCHEDULED))
def test_a_beta_schedule_packed_equals_alone_and_resumes_mid_epoch(tmp_path, monkeypatch,
                                                                   schedule):
    options, factors = SCHEDULED[schedule]
    configs = [config(cell, **{"loss.beta_schedule": schedule,
                               "loss.beta_schedule_options": options, "train.epochs": 3})
               for cell in CELLS]
    alone, packed = packed_and_alone(configs, tmp_path)
    # the schedule reaches the logged coupling and the loss: beta_mean is the cell's mean
    # off-diagonal beta times the factor (CELLS[0]: beta -0.2, N=2), and a zero factor
    # leaves no coupling term
    assert [r["train/beta_mean"] for r in alone[0].metrics] == pytest.approx(
        [-0.2 * f for f in factors])
    for run in alone:
        first = run.metrics[0]["train/loss_coupling"]
        assert all(c == 0 for c in first) == (factors[0] == 0)
    # stopped inside epoch 2 and resumed as a pack: the uninterrupted pack's numbers
    paths = [tmp_path / f"cell{k}" for k in range(len(configs))]
    undo = interrupt_at(monkeypatch, 8)  # 5 steps per epoch: epoch 2, step 3
    with pytest.raises(Interrupted):
        train_pack(list(zip(configs, paths, strict=True)))
    undo()
    for path in paths:
        assert_stopped_mid_epoch(path)
    resumed = train_pack(list(zip(configs, paths, strict=True)))
    for got, want in zip(resumed, packed, strict=True):
        assert got.status == "finished"
        assert_records_close(_without_pack_size(got.metrics), _without_pack_size(want.metrics),
                             rtol=RTOL)


def test_the_adaptive_coupling_packed_equals_alone(tmp_path):
    configs = [config(cell, **{"loss.target_js": 0.2, "train.epochs": 3}) for cell in CELLS]
    assert all(c.data.val_size > 0 for c in configs)  # the controller reads validation JS
    alone, _ = packed_and_alone(configs, tmp_path)
    for run in alone:
        scales = [r["train/coupling_scale"] for r in run.metrics]
        assert scales[0] == 1.0 and len(set(scales)) > 1  # the controller moved
    # each cell has its own controller: their scales are not one shared sequence
    assert len({tuple(r["train/coupling_scale"] for r in run.metrics) for run in alone}) > 1

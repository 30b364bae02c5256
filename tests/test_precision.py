"""train.precision=auto: bf16 only where native and timed faster; the timing leaves the run
exactly as an fp32 run (weights, BatchNorm statistics, random streams)."""

import json

import torch

from colearning import rundir
from colearning.training import precision, train


def _resnet(tiny_config, **train_keys):
    config = tiny_config
    config["model"] = {"name": "resnet20", "options": {"width": 4}}  # BatchNorm members
    config["train"].update(epochs=1, **train_keys)
    return config


def test_auto_without_native_bf16_is_fp32_without_timing(tiny_config, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    monkeypatch.setattr(precision, "_time", lambda *a: (_ for _ in ()).throw(AssertionError))
    tiny_config["train"].update(epochs=1, precision="auto", progress=True)
    train(tiny_config, tmp_path / "run")
    assert "precision auto: fp32 (this device has no native bf16)" in capsys.readouterr().err


def test_auto_picks_the_faster_precision_once_and_caches_it(tiny_config, tmp_path,
                                                            monkeypatch, capsys):
    monkeypatch.setenv("COLEARNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    calls = []
    monkeypatch.setattr(precision, "_time", lambda *a: calls.append(1) or (0.02, 0.01))
    tiny_config["train"].update(epochs=1, precision="auto", progress=True)
    for name in ("a", "b"):
        train(tiny_config, tmp_path / name)
    assert len(calls) == 1  # the second run read the cache
    assert capsys.readouterr().err.count("precision auto: bf16 (bf16 step 2.00x") == 2
    cached = json.loads((tmp_path / "cache" / "precision.json").read_text())
    assert [entry["bf16_seconds"] for entry in cached.values()] == [0.01]


def test_timing_leaves_the_run_exactly_as_fp32(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("COLEARNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    monkeypatch.setattr(precision, "MARGIN", 1.0)  # timed for real, never picked
    auto = train(_resnet(tiny_config, precision="auto"), tmp_path / "auto")
    plain = train(_resnet(tiny_config), tmp_path / "fp32")
    assert (tmp_path / "cache" / "precision.json").is_file()  # it did time
    left, right = (rundir.load_checkpoint(run.run_dir / "checkpoint.pt")["model"]
                   for run in (auto, plain))
    assert any("running_mean" in key for key in left)
    for key in left:
        assert torch.equal(left[key], right[key]), key

"""The user's own data: arrays, torch tensors and Datasets, .npz files (data.name=arrays),
each becoming the same RawDataset and so the same run; each mistake one line."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from colearning import resume, train
from colearning.cli import main
from colearning.data import as_raw, load_dataset, split_indices, take
from colearning.data.arrays import fingerprint
from colearning.errors import ConfigError, DataError, RunDirError
from colearning.training import step as step_module
from colearning.training.process import Interrupted
from colearning.training.run import load_ensemble
from tests.conftest import comparable

CONFIG = {"device": "cpu", "model": {"name": "mlp", "options": {"hidden": [32]}},
          "ensemble": {"n_members": 2}, "optim": {"lr": 0.2}, "loss": {"beta": -0.2},
          "train": {"epochs": 2, "batch_size": 100, "progress": False, "analysis_every": 0}}
OVERRIDES = ["model.name=mlp", "model.options.hidden=[32]", "ensemble.n_members=2",
             "optim.lr=0.2", "loss.beta=-0.2", "train.epochs=2", "train.batch_size=100",
             "train.analysis_every=0"]


@pytest.fixture(scope="module")
def toy():
    """300 train and 100 test digits: uint8 [n, 1, 8, 8], int64 labels."""
    digits = load_dataset("digits")
    return digits.train_x[:300], digits.train_y[:300], digits.test_x[:100], digits.test_y[:100]


def channels_last(toy):
    x, y, xt, yt = toy
    return {"x_train": x.transpose(0, 2, 3, 1), "y_train": y.astype(np.uint8),
            "x_test": xt.transpose(0, 2, 3, 1), "y_test": yt.astype(np.int32)}


def test_every_form_of_the_same_images_is_the_same_dataset(toy):
    x, y, xt, yt = toy
    reference = fingerprint(as_raw(toy))
    floats = (x / 255).astype(np.float32), y, (xt / 255), yt  # float32 and float64
    forms = [
        channels_last(toy),
        floats,
        (x[:, 0], y, xt[:, 0], yt),  # grayscale [N, H, W]
        tuple(torch.from_numpy(a) for a in toy),
        (torch.from_numpy(x).permute(0, 2, 3, 1).float() / 255, torch.from_numpy(y),
         torch.from_numpy(xt).double() / 255, yt),
        {"train": TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
         "test": TensorDataset(torch.from_numpy(xt).float() / 255, torch.from_numpy(yt))},
        [TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
         TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt))],
    ]
    for form in forms:
        raw = as_raw(form)
        assert raw.train_x.dtype == np.uint8 and raw.train_x.shape == (300, 1, 8, 8)
        assert raw.classes == [str(k) for k in range(10)] and raw.val_x is None
        assert fingerprint(raw) == reference
    # RGB, channels last and first; [N, 3, 3, 3] is read channels first (PyTorch's order)
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1])
    last = as_raw((rgb, labels, rgb, labels))
    first = as_raw((rgb.transpose(0, 3, 1, 2), labels, rgb.transpose(0, 3, 1, 2), labels))
    assert last.train_x.shape == (6, 3, 5, 5) and fingerprint(last) == fingerprint(first)
    assert as_raw((rgb[:, :3, :3], labels) * 2).train_x.shape == (6, 3, 3, 3)
    named = as_raw({**channels_last(toy), "classes": [f"d{k}" for k in range(12)]})
    assert named.classes[-1] == "d11" and named.num_classes == 12


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


ERRORS = {  # what goes wrong: (how the arrays change, what the one line says)
    "missing key": (lambda a: a.pop("y_test"), "has no y_test; save x_train"),
    "unknown key": (lambda a: a.update(x_valid=a["x_test"]), "unknown key 'x_valid'; valid:"),
    "wrong ndim": (lambda a: a.update(x_train=a["x_train"][:, :, :, 0, None, None]),
                   "x_train has shape [300, 8, 8, 1, 1]; images must be"),
    "not square": (lambda a: a.update(x_test=a["x_test"][:, :, :6]),
                   "x_test: images are 8x6, not square"),
    "label out of range": (lambda a: a.update(y_train=a["y_train"].astype(np.int64) - 1),
                           "y_train holds label -1; labels are class indices"),
    "too few classes": (lambda a: a.update(classes=np.array(["a", "b"])),
                        "holds label 9 but there are 2 classes"),
    "floats beyond [0, 1]": (lambda a: a.update(x_train=a["x_train"].astype(np.float32)),
                             "x_train spans [0, 255]; float images must lie in [0, 1]"),
    "not finite": (lambda a: a.update(x_test=np.full((100, 8, 8, 1), np.nan)),
                   "x_test holds NaN or infinite values"),
    "float labels": (lambda a: a.update(y_test=a["y_test"].astype(np.float32)),
                     "y_test has dtype float32; labels must be integer class indices"),
    "lengths differ": (lambda a: a.update(y_train=a["y_train"][:-1]),
                       "x_train has 300 images but y_train has 299 labels"),
    "val without labels": (lambda a: a.update(x_val=a["x_test"]),
                           "y_val is missing; give x_val and y_val together"),
    "objects": (lambda a: a.update(classes=np.array([object()] * 10)),
                "holds Python objects, which are never unpickled"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_each_mistake_in_an_npz_is_one_line_from_the_cli(case, toy, tmp_path, capsys):
    arrays = channels_last(toy)
    change, message = ERRORS[case]
    change(arrays)
    path = write_npz(tmp_path / "data.npz", **arrays)
    code = main(["train", "--no-progress", "--run-dir", str(tmp_path / "run"),
                 "data.name=arrays", f"data.path={path}", *OVERRIDES])
    err = capsys.readouterr().err
    assert code == DataError.exit_code, err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()  # a failed start leaves no run behind


def test_the_arrays_dataset_without_a_file_and_files_that_are_no_npz(tmp_path):
    with pytest.raises(ConfigError, match="needs data.path=FILE.npz"):
        load_dataset("arrays")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="is not an .npz file"):
        load_dataset("arrays", str(tmp_path / "text.npz"))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("arrays", str(tmp_path / "absent.npz"))
    with pytest.raises(DataError, match="one Dataset has no test side"):
        as_raw(TensorDataset(torch.zeros(4, 1, 2, 2), torch.zeros(4)))


def test_npz_arrays_tensors_and_datasets_train_the_same_run(toy, tmp_path, monkeypatch):
    """One run however the data arrives (same seed, same numbers); a run on data in memory
    resumes with the same data only, and load_ensemble needs none."""
    x, y, xt, yt = toy
    uint8_last = write_npz(tmp_path / "last.npz", **channels_last(toy))
    float_first = write_npz(tmp_path / "first.npz", x_train=x / 255, y_train=y,
                            x_test=(xt / 255).astype(np.float32), y_test=yt)
    runs = []
    for path in (uint8_last, float_first):
        assert main(["train", "--no-progress", "--run-dir", str(tmp_path / path.stem),
                     "data.name=arrays", f"data.path={path}", *OVERRIDES]) == 0
        runs.append(rundir_metrics(tmp_path / path.stem))
    tensors = tuple(torch.from_numpy(a) for a in toy)
    datasets = {"train": TensorDataset(tensors[0], tensors[1]),
                "test": TensorDataset(tensors[2], tensors[3])}
    for name, data in (("numpy", toy), ("datasets", datasets)):  # tensors: the resume
        runs.append(comparable(train(CONFIG, tmp_path / name, data=data).metrics))
    assert all(run == runs[0] for run in runs[1:])
    assert runs[0][-1]["test/ensemble_accuracy_mean"] > 0.3  # it learned something
    saved = json.loads((tmp_path / "numpy" / "data.json").read_text())
    assert saved["sha256"] == fingerprint(as_raw(toy)) and saved["images"]["test"] == 100
    assert "data.json" not in os.listdir(tmp_path / "last")  # read from a file: none

    # interrupted in epoch 2, resumed with the same data (as tensors), refused otherwise
    calls, original = {"n": 0}, step_module.Pack._loss

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2 is steps 4-6 (3 steps of 100 in 300 images)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(step_module.Pack, "_loss", interrupting)
    with pytest.raises(Interrupted):
        train(CONFIG, tmp_path / "stopped", data=toy)
    monkeypatch.setattr(step_module.Pack, "_loss", original)
    with pytest.raises(ConfigError, match="was trained on data given in memory; pass the "
                                          "same data"):
        resume(tmp_path / "stopped")
    with pytest.raises(RunDirError, match="data= is not the data"):
        resume(tmp_path / "stopped", data=(x, y, xt, (yt + 1) % 10))
    with pytest.raises(ConfigError, match="reads its data from data.name=arrays"):
        resume(tmp_path / "last", data=toy)  # a run on a file takes no data=
    assert comparable(resume(tmp_path / "stopped", data=tensors).metrics) == runs[0]
    assert resume(tmp_path / "stopped").status == "finished"  # finished: nothing to check
    ensemble, config = load_ensemble(tmp_path / "stopped")
    assert config.data.name == "arrays" and config.data.path is None
    assert ensemble(torch.rand(5, 1, 8, 8)).shape == (2, 5, 10)
    with pytest.raises(ConfigError, match="data= gives the data, but the config names"):
        train({**CONFIG, "data": {"name": "digits", "path": "x"}}, tmp_path / "x", data=toy)


def rundir_metrics(path):
    from colearning import rundir

    return comparable(rundir.read_metrics(path / rundir.METRICS))


def test_validation_arrays_are_the_validation_split(toy, tmp_path):
    x, y, xt, yt = toy
    sides = split_indices(300, 100, "random", seed=4, n_val=40)
    np.testing.assert_array_equal(sides.val, np.arange(400, 440))
    raw = as_raw((x, y, xt, yt, xt[:40], yt[:40]))
    images, labels = take(raw, np.array([0, 300, 400, 439]))
    np.testing.assert_array_equal(images, [x[0], xt[0], xt[0], xt[39]])
    np.testing.assert_array_equal(labels, [y[0], yt[0], yt[0], yt[39]])
    # validation = the test images: every val/ metric equals its test/ twin, every epoch
    run = train({**CONFIG, "data": {"val_size": 100}}, tmp_path / "val",
                data={"x_train": x, "y_train": y, "x_test": xt, "y_test": yt,
                      "x_val": xt, "y_val": yt})
    for record in run.metrics:
        tests = {k[5:]: v for k, v in record.items() if k.startswith("test/")}
        vals = {k[4:]: v for k, v in record.items() if k.startswith("val/")}
        assert vals and all(vals[k] == tests[k] for k in vals if k in tests)
        assert "ensemble_accuracy_mean" in vals
    with pytest.raises(ConfigError, match="brings its own 40 validation images .* set "
                                          "data.val_size to 0 or 40, not 10"):
        train({**CONFIG, "data": {"val_size": 10}}, tmp_path / "bad",
              data=(x, y, xt, yt, xt[:40], yt[:40]))

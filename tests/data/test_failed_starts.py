"""Starts that fail on the data: each a one-line ColearningError with its exit code, raised
before any training (no epoch is written)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request

import pytest

from colearning.cli import main

SMALL = ["--no-progress", "device=cpu", "model.name=mlp", "train.epochs=1",
         "train.analysis_every=0"]


def jpeg_archive(make_imagefolder, tmp_path, monkeypatch):
    return [f"data.path={make_imagefolder('tgz').path}", "data.name=cifar10"]


def single_class(make_imagefolder, tmp_path, monkeypatch):
    folder = make_imagefolder("dir").path
    for split in ("train", "test"):
        shutil.rmtree(folder / split / "dog")
    return ["data.name=imagefolder", f"data.path={folder}", "train.batch_size=2"]


def offline(make_imagefolder, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    return ["data.name=cifar10", f"data.path={tmp_path / 'data'}"]


@pytest.mark.parametrize(("case", "code", "message"), [
    (lambda *_: ["data.name=imagefolder", "data.path=/nonexistent/images"], 3,
     "image folder /nonexistent/images does not exist"),
    (lambda *_: ["train.batch_size=2000"], 2,
     "train.batch_size=2000 is larger than the training set (1437 images)"),
    (lambda *_: ["data.train_size=5000"], 2, "train_size=5000 is larger than the 1437"),
    (lambda *_: ["data.test_size=5000"], 2, "test_size=5000 is larger than the 360"),
    (lambda *_: ["data.val_size=1437"], 2, "val_size=1437 leaves no training images"),
    (offline, 3, "could not download"),
    (jpeg_archive, 3, "holds class folders of images"),
    (single_class, 3, "a classifier needs at least 2 classes"),
], ids=["missing path", "batch size", "train size", "test size", "val size", "offline",
        "jpeg tar as cifar10", "single class"])
def test_failed_start_is_one_line_error(make_imagefolder, tmp_path, monkeypatch, capsys,
                                        case, code, message):
    overrides = case(make_imagefolder, tmp_path, monkeypatch)
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), *SMALL, *overrides]) == code
    err = capsys.readouterr().err
    assert err.startswith("colearn: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err
    assert not (run / "metrics.jsonl").exists() and not (run / "summary.json").exists()

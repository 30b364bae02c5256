"""A tiny trained run (digits, a convolutional net, normalized inputs), trained once per
test session, and the digits images it was tested on."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import train_once

RUN = {
    "seed": 0,
    "device": "cpu",
    # normalize: predict must standardize other images as the run's training did; a
    # validation split, so that the run keeps its best epoch (best.pt) for --epoch best
    "data": {"name": "digits", "normalize": True, "val_size": 200},
    "model": {"name": "small_cnn", "options": {"width": 4}},
    "ensemble": {"n_members": 2},
    "optim": {"lr": 0.05},
    "train": {"epochs": 2, "batch_size": 256, "progress": False, "analysis_every": 0,
              "keep_best": True},
}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a finished tiny run; read-only for tests (copy it to write)."""
    return train_once(tmp_path_factory, "inference", RUN)


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny run that a test may evaluate (which writes into it)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def saved(trained_run: Path) -> dict[str, np.ndarray]:
    """The run's own predictions.npz, with the uint8 images [n, 1, 8, 8] it predicted."""
    from colearning.data import load_dataset

    raw = load_dataset("digits")
    with np.load(trained_run / "predictions.npz") as file:
        out = {key: file[key] for key in file.files}
    out["images"] = np.concatenate([raw.train_x, raw.test_x])[out["test_indices"]]
    return out

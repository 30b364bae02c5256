"""A tiny real run (digits, small_cnn, N=3, 3 epochs), trained once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from colearning.config import config_from_dict

TINY_RUN = {
    "seed": 0,
    "device": "cpu",
    "data": {"name": "digits"},
    "model": {"name": "small_cnn", "options": {"width": 8}},
    "ensemble": {"n_members": 3},
    "loss": {"beta": -0.2},
    "optim": {"lr": 0.05},
    "train": {"epochs": 3, "batch_size": 128, "progress": False, "save_probs_every": 2,
              "analysis_samples": 200},
}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a finished tiny run; read-only for tests (copy it to change it)."""
    from colearning.training import train

    run_dir = tmp_path_factory.mktemp("report") / "run"
    train(config_from_dict(TINY_RUN), run_dir=run_dir)
    return run_dir


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny run that a test may edit."""
    return Path(shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns(
        "report")))

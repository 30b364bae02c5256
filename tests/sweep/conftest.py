"""A tiny digits sweep (8 cells, ~1 s of training each), run once per session with the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY_BASE = {
    "device": "cpu",
    "data": {"name": "digits", "train_size": 400, "val_size": 100},
    "model": {"name": "mlp", "options": {"hidden": [32]}},
    "optim": {"lr": 0.1},
    "train": {"epochs": 2, "batch_size": 100, "analysis_every": 0},
}
TINY_SWEEP = {"name": "tiny", "base": TINY_BASE,
              "grid": {"N": [2, 3], "beta": [-0.3, 0.0]}, "seeds": 2}


def write_sweep(path: Path, sweep: dict) -> Path:
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 8-cell sweep directory (N in {2, 3}, beta in {-0.3, 0}, seeds 0 and 1)."""
    from colearning.cli import main

    root = tmp_path_factory.mktemp("sweep")
    spec_file = write_sweep(root / "tiny.yaml", TINY_SWEEP)
    out = root / "out"
    code = main(["sweep", "--config", str(spec_file), "--out", str(out), "--workers", "2",
                 "--no-progress"])
    assert code == 0
    return out

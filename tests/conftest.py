"""Shared fixtures: a tiny digits config that trains in about a second."""

import copy

import pytest

TINY = {
    "seed": 0,
    "device": "cpu",
    "data": {"name": "digits"},
    "model": {"name": "mlp", "options": {"hidden": [32]}},
    "ensemble": {"n_members": 2},
    "loss": {"beta": -0.2},
    "optim": {"lr": 0.05},
    "train": {"epochs": 3, "batch_size": 256, "progress": False},
}


@pytest.fixture
def tiny_config():
    """A fresh nested dict config (mutable per test)."""
    return copy.deepcopy(TINY)


def comparable(records):
    """Metric records without wall-clock timings, for exact equality checks."""
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]

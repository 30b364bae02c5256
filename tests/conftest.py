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


def assert_records_close(got, want, rtol=1e-4):
    """Metric records equal up to float rounding: same keys, epochs and flags, floats close.

    Bit-for-bit equality holds on an idle machine; under heavy load BLAS/oneDNN kernels may
    sum in another order and the last float digits move. A resume that replays or skips a
    batch moves losses and accuracies by far more than ``rtol``.
    """
    assert len(got) == len(want)
    for a, b in zip(comparable(got), comparable(want), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            _assert_close(a[key], b[key], rtol, key)


def _assert_close(a, b, rtol, key):
    import math

    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), key
        for x, y in zip(a, b, strict=True):
            _assert_close(x, y, rtol, key)
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=rtol, abs_tol=1e-7), (key, a, b)
    else:
        assert a == b, (key, a, b)

"""Shared fixtures: a tiny digits config that trains in about a second."""

import copy
import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n K: K workers share the cores; one thread each (and in the processes they
    # start), not K x cores threads fighting over them
    os.environ.setdefault("OMP_NUM_THREADS", "1")

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


def pytest_collection_modifyitems(config, items):
    """Slow tests (real processes, long trainings) first: with pytest -n K the workers then
    end on short tests instead of one waiting for another's long one."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def train_once(factory: pytest.TempPathFactory, name: str, config: dict) -> Path:
    """A finished run of ``config`` in a fresh temporary folder (``name``/run): what a
    module- or session-scoped fixture trains once and its tests read or copy."""
    from colearning.config import config_from_dict
    from colearning.training import train

    run_dir = factory.mktemp(name) / "run"
    train(config_from_dict(config), run_dir=run_dir)
    return run_dir


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


def _outside(fig):
    """The drawn texts (titles, labels, tick labels, legends, notes) of a matplotlib figure
    that reach beyond its edges by more than a pixel."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height

    def beyond(box):
        return box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1

    if not beyond(fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)):
        return []
    bad = [text.get_text()[:60] for text in fig.texts if text.get_visible()
           and text.get_text().strip() and beyond(text.get_window_extent(renderer))]
    for ax in fig.axes:
        for artist in [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts,
                       *([ax.get_legend()] if ax.get_legend() else [])]:
            if artist.get_visible() and beyond(artist.get_window_extent(renderer)):
                bad.append(getattr(artist, "get_text", lambda: "legend")()[:60] or "legend")
        for axis in (ax.xaxis, ax.yaxis):
            if beyond(axis.get_tightbbox(renderer) or fig.bbox):
                bad.append(f"{axis.axis_name}-axis tick labels")
    return bad or ["(the figure's tight box)"]


@pytest.fixture
def checked(monkeypatch):
    """{figure file: texts outside it} of every report figure saved during the test."""
    from pathlib import Path

    import colearning.report.figures as run_figures
    import colearning.report.robustness_figures as robustness_figures
    import colearning.report.sweep_figures as sweep_figures

    problems = {}
    for module in (run_figures, sweep_figures, robustness_figures):
        original = module._save

        def save(fig, path, _original=original):
            outside = _outside(fig)
            if outside:
                problems[Path(path).name] = outside
            return _original(fig, path)

        monkeypatch.setattr(module, "_save", save)
    return problems

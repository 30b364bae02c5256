"""The same tiny sweep as Ray tasks on a local Ray with 2 CPUs (skipped without ray)."""

from __future__ import annotations

import pytest

from colearning import rundir
from colearning.sweep import load_spec, run_sweep
from colearning.sweep.table import read_csv

from .conftest import TINY_BASE, write_sweep


@pytest.mark.slow
def test_ray_local_sweep(tmp_path):
    pytest.importorskip("ray")
    sweep = {"name": "ray", "base": {**TINY_BASE, "ensemble": {"n_members": 2}},
             "grid": {"beta": [-0.3, 0.0]}, "seeds": 1}
    spec = load_spec(write_sweep(tmp_path / "ray.yaml", sweep))
    result = run_sweep(spec, tmp_path / "out", backend="ray", workers=2, pack=2,
                       progress=False)
    assert result.ok and [o.name for o in result.outcomes] == ["beta-0.3_seed0", "beta0_seed0"]
    rows = read_csv(tmp_path / "out" / "summary.csv")
    assert [(r["beta"], r["n_finished"]) for r in rows] == [(-0.3, 1), (0.0, 1)]
    # --pack 2: the two cells trained as one pack, in one Ray task
    packs = rundir.read_jsonl(tmp_path / "out" / "cells" / "beta0_seed0" / "packs.jsonl")
    assert len(packs) == 1 and len(packs[0]["cells"]) == 2
    # a rerun skips both cells without starting Ray
    again = run_sweep(spec, tmp_path / "out", backend="ray", workers=2, progress=False)
    assert all(o.skipped for o in again.outcomes)


def test_missing_ray_is_a_one_line_config_error(monkeypatch):
    import builtins

    from colearning.errors import ConfigError
    from colearning.sweep.ray_backend import import_ray

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r"pip install 'colearning\[ray\]'"):
        import_ray()

"""Tests for colearning.report.artifacts (beyond the end-to-end run in test_run.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from colearning.config import config_from_dict
from colearning.errors import RunDirError
from colearning.report.artifacts import RunArtifacts, coupling_label, load_artifacts


@pytest.mark.parametrize(("loss", "n", "expected"), [
    ({"beta": -0.2}, 2, "β=-0.2"),
    ({}, 3, "β=0"),
    ({"beta_bar": -1.0}, 4, "β̄=-1 (β=-0.25)"),
    ({"beta": [[0.0, -0.1], [-0.3, 0.0]]}, 2, "β=matrix"),
])
def test_coupling_label(loss, n, expected):
    config = config_from_dict({"loss": loss, "ensemble": {"n_members": n}})
    assert coupling_label(config) == expected


def test_series_fills_missing_values_with_nan():
    run = RunArtifacts(path=Path("."), config=config_from_dict({}), config_text="",
                       metrics=[{"epoch": 1, "a": [0.5, None], "b": 1.0},
                                {"epoch": 2, "b": None}],
                       summary={}, meta={}, analysis=[])
    np.testing.assert_array_equal(run.series("a"), [[0.5, np.nan], [np.nan, np.nan]])
    np.testing.assert_array_equal(run.series("b"), [1.0, np.nan])
    assert run.epochs.tolist() == [1, 2] and run.tag == "N=2, β=0"


def test_load_artifacts_rejects_corrupt_files(run_copy: Path):
    (run_copy / "summary.json").write_text("{not json")
    with pytest.raises(RunDirError, match="summary.json is corrupt"):
        load_artifacts(run_copy)
    (run_copy / "summary.json").unlink()
    (run_copy / "config.yaml").write_text("data: [unclosed\n")
    with pytest.raises(RunDirError, match="not valid YAML"):
        load_artifacts(run_copy)

"""Tests for colearning.report.artifacts (beyond the end-to-end run in test_run.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from colearning.config import config_from_dict
from colearning.errors import RunDirError
from colearning.report.artifacts import RunArtifacts, load_artifacts


@pytest.mark.parametrize(("loss", "n", "expected"), [
    ({"beta": -0.2}, 2, "β=-0.2"),
    ({}, 3, "β=0"),
    ({"beta_bar": -1.0}, 4, "β̄=-1 (β=-0.25)"),
    ({"beta": [[0.0, -0.1], [-0.3, 0.0]]}, 2, "matrix"),
    # a graph: its label, and beta_bar alone (an edge gets beta_bar / (degree + 1) = -1/3
    # on this ring, not beta_bar / N = -0.1)
    ({"beta_bar": -1.0, "coupling": "ring"}, 10, "ring, β̄=-1"),
    ({"beta": -0.1, "coupling": "ring", "coupling_options": {"k": 2}}, 10,
     "ring(k=2), β=-0.1"),
    # communities: the strengths are options (loss.beta unset); the mean off-diagonal
    # coupling, as the sweep tables report it: (2 * 2 * 0.1 - 8 * 0.1) / 12 = -0.0333
    ({"coupling": "communities", "coupling_options": {"beta_in": 0.1, "beta_out": -0.1}}, 4,
     "communities(beta_in=0.1,beta_out=-0.1), mean β=-0.0333"),
    ({"beta": -0.2, "beta_schedule": "warmup", "target_js": 0.2}, 2,
     "uniform+warmup+js0.2, β=-0.2"),
])
def test_coupling(loss, n, expected):
    config = config_from_dict({"loss": loss, "ensemble": {"n_members": n},
                               "data": {"val_size": 100}})  # (target_js needs it)
    run = RunArtifacts(path=Path("."), config=config, config_text="", metrics=[], summary={},
                       meta={}, analysis=[])
    assert run.coupling == expected and run.tag == f"N={n}, {expected}"


def test_coupling_strength_is_the_sweep_tables():
    """The report's beta is the one the sweep tables give the same config."""
    from colearning.couplings import coupling_matrix
    from colearning.sweep.table import coupling

    config = config_from_dict({"ensemble": {"n_members": 5}, "loss": {
        "coupling": "communities",
        "coupling_options": {"groups": 2, "beta_in": -0.3, "beta_out": 0.05}}})
    _, beta, _ = coupling(config.to_dict(), coupling_matrix(config.loss, 5))
    run = RunArtifacts(path=Path("."), config=config, config_text="", metrics=[], summary={},
                       meta={}, analysis=[])
    assert run.coupling.endswith(f"mean β={beta:.3g}") and beta != 0


def test_a_saved_communities_run_is_named_by_its_coupling(run_copy: Path):
    """From config.yaml to the status line: the topology, its options and the mean beta,
    not the unset loss.beta as 0."""
    from colearning.report.run import status_section

    config = yaml.safe_load((run_copy / "config.yaml").read_text())
    config["loss"].update(beta=None, coupling="communities",
                          coupling_options={"beta_in": -0.3, "beta_out": 0.1})
    (run_copy / "config.yaml").write_text(yaml.safe_dump(config))
    run = load_artifacts(run_copy)
    # N=3 in groups {0, 1} and {2}: 2 ordered pairs at -0.3, 4 at 0.1: (-0.6 + 0.4) / 6
    expected = "N=3, communities(beta_in=-0.3,beta_out=0.1), mean β=-0.0333"
    assert run.tag == expected and expected in status_section(run).text


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

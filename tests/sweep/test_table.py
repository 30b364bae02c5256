from __future__ import annotations

import math

import pytest

from colearning.errors import ConfigError
from colearning.sweep.table import read_csv, summarize, to_csv, write_parquet


def row(seed, beta, acc, status="finished", n=2, kl="batchmean", collapsed=0):
    return {"cell": f"b{beta}_s{seed}", "status": status, "loss.kl_reduction": kl, "N": n,
            "beta": beta, "beta_bar": beta * n, "seed": seed,
            "test/ensemble_accuracy_mean": acc, "n_collapsed": collapsed}


def test_summary_mean_std_count_over_finished_seeds():
    rows = [row(0, -0.2, 0.60), row(1, -0.2, 0.64), row(2, -0.2, 0.99, status="diverged"),
            row(0, 0.0, 0.50, collapsed=1), row(0, 0.0, 0.52, kl="mean")]
    summary = summarize(rows, ["loss.kl_reduction"], metrics=["test/ensemble_accuracy_mean"])
    assert [(s["loss.kl_reduction"], s["beta"], s["n_finished"]) for s in summary] == [
        ("batchmean", -0.2, 2), ("batchmean", 0.0, 1), ("mean", 0.0, 1)]
    first = summary[0]
    assert first["test/ensemble_accuracy_mean:mean"] == pytest.approx(0.62)
    assert first["test/ensemble_accuracy_mean:std"] == pytest.approx(math.sqrt(0.0008))
    assert (first["n_cells"], first["n_diverged"], first["beta_bar"]) == (3, 1, -0.4)
    assert math.isnan(summary[1]["test/ensemble_accuracy_mean:std"])
    assert summary[1]["n_collapsed"] == 1 and summary[0]["n_collapsed"] == 0
    assert [s["n_cells"] for s in summary] == [3, 1, 1]


def test_best_epoch_is_chosen_on_validation_when_there_is_one():
    from colearning.sweep.table import best_epoch

    records = [{"epoch": 1, "test/ensemble_accuracy_mean": 0.5, "test/js_mean": 0.1,
                "test/member_accuracy": [0.4, 0.5]},
               {"epoch": 2, "test/ensemble_accuracy_mean": 0.7, "test/js_mean": 0.2,
                "test/member_accuracy": [0.6, 0.5]},
               {"epoch": 3, "test/ensemble_accuracy_mean": 0.6, "test/js_mean": 0.3,
                "test/member_accuracy": [0.5, 0.6]}]
    assert best_epoch(records) == {"best/epoch": 2, "best/ensemble_accuracy_mean": 0.7,
                                   "best/val_ensemble_accuracy_mean": None,
                                   "best/member_accuracy_mean": 0.55, "best/js_mean": 0.2,
                                   "best/selected_on": "test"}
    for record, val in zip(records, [0.55, 0.52, 0.58], strict=True):
        record["val/ensemble_accuracy_mean"] = val
    # validation picks epoch 3; the test accuracy reported is epoch 3's, not the best test
    assert best_epoch(records) == {"best/epoch": 3, "best/ensemble_accuracy_mean": 0.6,
                                   "best/val_ensemble_accuracy_mean": 0.58,
                                   "best/member_accuracy_mean": 0.55, "best/js_mean": 0.3,
                                   "best/selected_on": "val"}


def test_csv_round_trip_and_parquet(tmp_path):
    rows = [row(0, -0.2, 0.6), {**row(1, 0.0, None), "error": "ValueError: x"}]
    text = to_csv(rows)
    assert text.splitlines()[0].startswith("cell,status,loss.kl_reduction,N,beta")
    (tmp_path / "t.csv").write_text(text)
    back = read_csv(tmp_path / "t.csv")
    assert back[0]["beta"] == -0.2 and back[0]["seed"] == 0 and back[1]["error"] == "ValueError: x"
    assert back[1]["test/ensemble_accuracy_mean"] is None
    pq = pytest.importorskip("pyarrow.parquet")
    assert write_parquet(rows, tmp_path / "t.parquet")
    table = pq.read_table(tmp_path / "t.parquet").to_pylist()
    assert table[0]["beta"] == -0.2 and table[1]["error"] == "ValueError: x"


def test_load_results_is_a_dataframe_with_the_files_columns(tiny_sweep):
    import pandas as pd

    from colearning.sweep import load_results

    results = load_results(tiny_sweep)
    assert isinstance(results, pd.DataFrame) and len(results) == 8
    on_disk = pd.read_csv(tiny_sweep / "results.csv")
    assert list(results.columns) == list(on_disk.columns)
    summary = load_results(tiny_sweep, "summary")
    assert {"n_cells", "n_finished", "test/ensemble_accuracy_mean:mean"} <= set(summary.columns)
    assert len(load_results(tiny_sweep, "epochs")) == 16
    with pytest.raises(ConfigError, match="valid: results, summary, epochs"):
        load_results(tiny_sweep, "cells")


def test_first_collapse_is_where_the_final_collapse_began():
    from colearning.sweep.table import first_collapse

    def records(*flags):
        return [{"epoch": k + 1, "test/member_collapsed": list(f)} for k, f in enumerate(flags)]

    # untrained members look collapsed at epoch 1; member 1 recovers, member 0 relapses at 3
    assert first_collapse(records((True, True), (False, False), (True, False),
                                  (True, False))) == 3
    assert first_collapse(records((True, False), (False, False))) is None
    assert first_collapse(records((True, True), (True, True))) == 1  # never learned
    assert first_collapse(records((False, False), (False, True), (True, True))) == 2
    assert first_collapse([]) is None

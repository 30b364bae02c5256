"""Tests for colearning.report.tables."""

from __future__ import annotations

import math

from colearning.report.tables import (
    activation_tables,
    ensemble_table,
    final_metrics_table,
    mean_std,
    status_table,
    weight_table,
)


def _record(epoch, sparsity, mean, dead, std):
    return {"epoch": epoch, "members": [
        {"activation": {"ReLU1": {"sparsity": s, "mean": m, "dead": d}}, "weight_std": {"Conv1": w}}
        for s, m, d, w in zip(sparsity, mean, dead, std, strict=True)]}


FINAL = _record(5, [0.6, 0.4], [0.3, 0.5], [0.0, 1.0], [0.4, 0.2])
INITIAL = _record(0, [0.5, 0.5], [0.1, 0.3], [0.0, 0.0], [0.1, 0.1])


def test_mean_std_is_the_sample_std_over_members():
    assert mean_std([1.0, 3.0]) == "2 ± 1.4"  # sqrt(2): ddof = 1, as everywhere
    assert mean_std([0.2, 0.4, math.nan], "{:.2f}") == "0.30 ± 0.14"
    assert mean_std([]) == "n/a"


def test_table_s3_rows_per_layer_members_then_mean_std_then_init():
    non_active, mean = activation_tables(FINAL, INITIAL)
    assert non_active.caption.startswith("Table S3a") and "epoch 5" in non_active.caption
    assert list(non_active.header) == ["layer", "member 0", "member 1", "mean ± std over members",
                                       "at initialization (mean ± std)"]
    assert non_active.rows == [["ReLU1", "60.0", "40.0 (dead)", "50.0 ± 14", "50.0 ± 0"]]
    assert mean.rows == [["ReLU1", "0.3", "0.5 (dead)", "0.4 ± 0.14", "0.2 ± 0.14"]]


def test_table_s4_weight_std_without_initial_record():
    table = weight_table(FINAL, None)
    assert table.caption.startswith("Table S4")
    assert table.rows == [["Conv1", "0.4", "0.2", "0.3 ± 0.14", "n/a"]]


FINAL_METRICS = {
    "epoch": 4, "test/member_accuracy": [0.5, 0.25], "test/member_kl": [1.0, 2.0],
    "test/member_brier": [0.6, 0.8], "test/member_ece": [0.1, 0.2],
    "test/member_entropy": [1.5, 1.25], "test/js_to_ensemble": [0.01, 0.02],
    "test/member_logit_norm": [3.0, 4.0],
    "test/member_collapsed": [False, True], "test/member_dead_layers": [[], ["ReLU2"]],
    "test/ensemble_accuracy_mean": 0.625, "test/ensemble_accuracy_geometric": 0.6,
    "test/ensemble_accuracy_vote": 0.5, "test/ensemble_nll": 0.9, "test/ensemble_brier": 0.55,
    "test/ensemble_ece": 0.05, "test/ensemble_entropy": 1.75, "test/js_mean": 0.03,
    "test/disagreement": 0.4,
}


def test_final_metrics_table_members_then_ensemble():
    table = final_metrics_table(FINAL_METRICS)
    # one column per registered member metric, in registration order (colearning.evaluation)
    assert table.header[1:3] == ["accuracy (%)", "NLL = KL(q‖p) (nats)"]
    assert table.rows[0] == ["member 0", "50.00", "1", "0.6", "0.1", "1.5", "3", "0.01", "no"]
    assert table.rows[1][-1] == "yes (dead: ReLU2)"
    assert table.rows[2] == ["ensemble (mean)", "62.50", "0.9", "0.55", "0.05", "1.75", "", "",
                             ""]


def test_ensemble_table_combiners_and_gain_over_best_member():
    rows = dict(ensemble_table(FINAL_METRICS).rows)
    assert rows["ensemble, geometric"] == "60.00" and rows["ensemble, vote"] == "50.00"
    assert rows["best member"] == "50.00" and rows["member mean"] == "37.50"
    assert rows["ensemble (mean) − best member (points)"] == "+12.50"


def test_status_table_drops_empty_detail():
    table = status_table({"status": "finished", "epochs_completed": 3, "wall_seconds": 12.34},
                         3, {"git_commit": None}, [2])
    rows = dict(table.rows)
    assert "detail" not in rows
    assert rows["epochs completed"] == "3 of 3" and rows["wall time (s)"] == "12.3"
    assert rows["git commit"] == "n/a" and rows["saved per-epoch probabilities (probs/)"] == "2"

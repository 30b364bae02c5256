"""The report's tables, built from saved metrics (no plotting, no HTML).

Tables S3/S4 follow the paper's Supplementary layout: one row per layer, one column per
member, then the mean ± std over members and the value at initialization.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from colearning.combiners import COMBINERS
from colearning.evaluation import METRICS, metric_names
from colearning.metrics import statistics
from colearning.report.html import Table


def mean_std(values: Sequence[float], fmt: str = "{:.3g}") -> str:
    """``"0.45 ± 0.063"``: mean (``fmt``) and sample std (ddof = 1, 2 significant digits)
    over members; NaNs are ignored."""
    finite = [v for v in np.asarray(values, dtype=float).tolist() if math.isfinite(v)]
    if not finite:
        return "n/a"
    mean, std = statistics.mean_std(finite)
    return f"{fmt.format(mean)} ± {std:.2g}"


def _members(n: int) -> list[str]:
    return [f"member {i}" for i in range(n)]


def _layer_table(caption: str, records: list[dict[str, Any]], initial: dict[str, Any] | None,
                 section: str, stat: str | None, scale: float, fmt: str) -> Table:
    """Rows per layer of ``member[section][layer][stat]`` (``stat`` None: a plain value)."""
    def value(member: dict[str, Any], layer: str) -> float:
        entry = member[section].get(layer)
        entry = entry if stat is None or entry is None else entry.get(stat)
        return np.nan if entry is None else scale * float(entry)

    layers = list(records[0][section])
    rows = []
    for layer in layers:
        values = [value(member, layer) for member in records]
        cells: list[Any] = [fmt.format(v) if np.isfinite(v) else "n/a" for v in values]
        if section == "activation":
            cells = [f"{c} (dead)" if member["activation"][layer].get("dead") else c
                     for c, member in zip(cells, records, strict=True)]
        init = mean_std([value(m, layer) for m in initial["members"]], fmt) if initial else "n/a"
        rows.append([layer, *cells, mean_std(values, fmt), init])
    header = ["layer", *_members(len(records)), "mean ± std over members",
              "at initialization (mean ± std)"]
    return Table(caption, header, rows)


def activation_tables(final: dict[str, Any], initial: dict[str, Any] | None) -> list[Table]:
    """Table S3 from two analysis.jsonl records: non-active units (%) and mean activation."""
    epoch = final["epoch"]
    members = final["members"]
    return [
        _layer_table(f"Table S3a: mean non-active units per sample (%) at epoch {epoch}",
                     members, initial, "activation", "sparsity", 100.0, "{:.1f}"),
        _layer_table(f"Table S3b: mean activation per unit and sample (a.u.) at epoch {epoch}",
                     members, initial, "activation", "mean", 1.0, "{:.3g}"),
    ]


def weight_table(final: dict[str, Any], initial: dict[str, Any] | None) -> Table:
    """Table S4 from analysis.jsonl records: standard deviation of each layer's weights."""
    return _layer_table(f"Table S4: standard deviation of the weights at epoch {final['epoch']}",
                        final["members"], initial, "weight_std", None, 1.0, "{:.3g}")


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not np.isfinite(x))


def _pct(x: Any) -> str:
    return "n/a" if _missing(x) else f"{100 * x:.2f}"


def _num(x: Any, fmt: str = "{:.4g}") -> str:
    return "n/a" if _missing(x) else fmt.format(x)


def _metric(value: Any, percent: bool) -> str:
    return _pct(value) if percent else _num(value)


def final_metrics_table(final: dict[str, Any]) -> Table:
    """Per member and for the mean ensemble: every registered per-member metric
    (:data:`colearning.evaluation.METRICS`; the ensemble row shows each one's ensemble
    counterpart), and whether the member collapsed."""
    n = len(final["test/member_accuracy"])

    def member(key: str) -> list[Any]:
        return final.get(key) or [None] * n

    names = list(metric_names("member"))
    dead = member("test/member_dead_layers")
    rows = []
    for i in range(n):
        flag = ("yes" if member("test/member_collapsed")[i] else
                "not learned" if member("test/member_not_learned")[i] else "no")
        if dead[i]:
            flag += f" (dead: {', '.join(dead[i])})"
        rows.append([f"member {i}", *(_metric(member(f"test/{name}")[i],
                                              METRICS.get(name).percent) for name in names),
                     flag])
    pairs = [METRICS.get(name).pair for name in names]
    rows.append(["ensemble (mean)",
                 *(_metric(final.get(f"test/{pair}"), METRICS.get(pair).percent) if pair
                   else "" for pair in pairs), ""])
    header = ["model", *(METRICS.get(name).title for name in names), "collapsed"]
    return Table(f"Final test metrics (epoch {final['epoch']})", header, rows)


def ensemble_table(final: dict[str, Any]) -> Table:
    """Ensemble accuracy per combiner against the members, and every other registered
    ensemble-wide metric (diversity among them)."""
    members = np.array([np.nan if a is None else a for a in final["test/member_accuracy"]])
    ensemble = final.get("test/ensemble_accuracy_mean")
    gain = np.nan if ensemble is None else 100 * (ensemble - np.nanmax(members))
    accuracies = [f"ensemble_accuracy_{method}" for method in COMBINERS]
    rows = [[f"ensemble, {name.rpartition('_')[2]}", _pct(final.get(f"test/{name}"))]
            for name in accuracies]
    rows += [["best member", _pct(np.nanmax(members))],
             ["member mean", _pct(np.nanmean(members))],
             ["ensemble (mean) − best member (points)", f"{gain:+.2f}"]]
    paired = {METRICS.get(name).pair for name in metric_names("member")}
    rows += [[METRICS.get(name).title, _metric(final.get(f"test/{name}"),
                                               METRICS.get(name).percent)]
             for name in metric_names("ensemble") if name not in accuracies + list(paired)]
    return Table(f"Ensemble vs members (epoch {final['epoch']})", ["quantity", "value"], rows)


def status_table(summary: dict[str, Any], planned_epochs: int, meta: dict[str, Any],
                 probs_epochs: Sequence[int]) -> Table:
    """Status, progress, wall time and provenance of the run."""
    rows: list[list[Any]] = [
        ["status", summary.get("status", "unknown")],
        ["detail", summary.get("status_detail", "")],
        ["epochs completed", f"{summary.get('epochs_completed', 'n/a')} of {planned_epochs}"],
        ["wall time (s)", _num(summary.get("wall_seconds"), "{:.1f}")],
        ["colearning version", meta.get("colearning_version", "n/a")],
        ["git commit", meta.get("git_commit") or "n/a"],
        ["torch", meta.get("torch_version", "n/a")],
        ["started", meta.get("started", "n/a")],
        ["saved per-epoch probabilities (probs/)",
         ", ".join(map(str, probs_epochs)) if probs_epochs else "none"],
    ]
    return Table("Run", ["field", "value"], [r for r in rows if r[1] != ""])

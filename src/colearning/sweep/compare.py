"""Sweeps side by side: each configuration's seed statistics at its validation-selected
epoch, and its seed-paired difference to a reference configuration.

    rows = compare_sweeps(["sweeps/objectives_colearning", "sweeps/objectives_interpolated"])
    print(markdown(rows))

A *configuration* is a group of cells that differ only in their seed: its label names the
objective and its knob (``independent``, ``colearning beta_bar=-0.5``, ``interpolated
lambda=0.25``, ``joint``), the coupling's label and divergence unless the paper's, plus N
and any other grid value. Per configuration: how many cells ran, finished, diverged and
collapsed (``collapse_epochs``: the epoch each collapse began); the mean and std over
finished seeds of the test ensemble accuracy, the mean member accuracy and the members'
mean JS distance, all at each cell's best epoch (chosen on its validation split when it
has one, said in ``selected_on``); ``diff`` = the mean over seeds of (configuration -
reference) ensemble accuracy, with the two-sided Wilcoxon signed-rank p over the seed
pairs; and ``selected``: the configuration of its objective with the best mean validation
accuracy (the knob a researcher would pick without looking at the test set). Cells of one
configuration with the same seed (beta = 0 in two sweeps: the same training) count once in
the statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scipy import stats

from colearning.sweep.table import cell_rows, facet_keys

REFERENCE = "independent"
ENSEMBLE, MEMBER, JS = "best/ensemble_accuracy_mean", "best/member_accuracy_mean", "best/js_mean"
SCORE = "best/val_ensemble_accuracy_mean"


def label(row: dict[str, Any], extra: Sequence[str] = ()) -> str:
    """A configuration's name from a cell row (objective, its knob, the coupling's label and
    divergence unless the paper's, other grid values). Every cell of the paper's objective
    whose couplings are all 0 is ``independent``, whatever its topology or divergence."""
    objective = row.get("loss.objective") or "colearning"
    coupled = []
    if objective == "interpolated":
        name = f"interpolated lambda={float(row['loss.joint_weight']):g}"
    elif objective == "joint":
        name = "joint"
    elif row.get("independent", row.get("beta") == 0):
        name = REFERENCE
    else:
        topology = str(row.get("coupling") or "uniform").split("(")[0].split("+")[0]
        if topology in ("matrix", "communities") or row.get("beta_bar") is None:
            name = "colearning"
        else:
            name = f"colearning beta_bar={float(row['beta_bar']):g}"
        if row.get("coupling") not in ("uniform", None):
            coupled.append(str(row["coupling"]))
        if row.get("loss.divergence") not in ("kl", None):
            coupled.append(str(row["loss.divergence"]))
    others = [f"{key.split('.')[-1]}={row[key]}" for key in extra if row.get(key) is not None]
    return " ".join([name, *coupled, *others])


def _stats(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def compare_sweeps(sweep_dirs: Sequence[str | Path],
                   reference: str = REFERENCE) -> list[dict[str, Any]]:
    """One row per (configuration, N) over the cells of all ``sweep_dirs`` (see the module
    docstring); ``reference`` is the label the differences are taken against (the same N)."""
    rows: list[dict[str, Any]] = []
    for path in sweep_dirs:
        cells = cell_rows(path)
        skip = {"loss.objective", "loss.joint_weight", "loss.beta", "loss.beta_bar",
                "loss.divergence", "coupling"}
        extra = [k for k in facet_keys(cells) if k not in skip]
        rows += [{**row, "configuration": label(row, extra)} for row in cells]
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["configuration"], row["N"]), []).append(row)
    finished = {key: {r["seed"]: r for r in cells if r["status"] == "finished"
                      and r.get(ENSEMBLE) is not None}
                for key, cells in groups.items()}
    out = []
    for (name, n), cells in groups.items():
        done = finished[(name, n)]
        line: dict[str, Any] = {
            "configuration": name, "N": n, "objective": cells[0].get("loss.objective"),
            "n_cells": len(cells),
            "n_finished": sum(r["status"] == "finished" and r.get(ENSEMBLE) is not None
                              for r in cells),
            "n_diverged": sum(r["status"] == "diverged" for r in cells),
            "n_collapsed": sum(bool(r.get("n_collapsed")) for r in cells
                               if r["status"] == "finished"),
            "selected_on": next((r.get("best/selected_on") for r in done.values()), None),
            "collapse_epochs": sorted(r["first_collapse_epoch"] for r in cells
                                      if r["status"] == "finished"
                                      and r.get("first_collapse_epoch") is not None)}
        for key, column in (("ensemble", ENSEMBLE), ("member", MEMBER), ("js", JS),
                            ("epoch", "best/epoch"), ("val", SCORE)):
            values = [float(r[column]) for r in done.values() if r.get(column) is not None]
            line[f"{key}:mean"], line[f"{key}:std"] = _stats(values)
        line.update(_paired(done, finished.get((reference, n), {})))
        out.append(line)
    _mark_selected(out)
    return out


def _paired(cells: dict[Any, dict[str, Any]], reference: dict[Any, dict[str, Any]]
            ) -> dict[str, Any]:
    seeds = sorted(set(cells) & set(reference), key=str)
    diff = [float(cells[s][ENSEMBLE]) - float(reference[s][ENSEMBLE]) for s in seeds]
    p = math.nan
    if any(d != 0 for d in diff):
        p = float(stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
    return {"pairs": len(seeds), "diff:mean": _stats(diff)[0] if diff else math.nan,
            "diff:std": _stats(diff)[1] if diff else math.nan, "p": p}


def _mark_selected(rows: list[dict[str, Any]]) -> None:
    """Per (objective family, N): the configuration with the best mean validation accuracy
    (among those whose cells all finished)."""
    for row in rows:
        row["selected"] = False
    families: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        family = row["objective"] if row["configuration"] != REFERENCE else REFERENCE
        families.setdefault((family, row["N"]), []).append(row)
    for members in families.values():
        eligible = [r for r in members if r["n_finished"] == r["n_cells"] > 0
                    and math.isfinite(r["val:mean"])]
        if eligible:
            max(eligible, key=lambda r: r["val:mean"])["selected"] = True


def _percent(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if math.isfinite(std) else "")


def markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (accuracies in %, mean ± std over seeds)."""
    lines = ["| configuration | N | finished | collapsed (first epoch) | ensemble % | members % "
             "| JS (nats) | epoch | diff vs independent (pp) | Wilcoxon p |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        js = f"{r['js:mean']:.3f}" if math.isfinite(r["js:mean"]) else "-"
        diff = (f"{100 * r['diff:mean']:+.2f}" if math.isfinite(r["diff:mean"])
                and r["configuration"] != REFERENCE else "-")
        p = f"{r['p']:.2f}" if math.isfinite(r["p"]) else "-"
        name = r["configuration"] + (" (val-selected)" if r["selected"]
                                     and r["configuration"] != REFERENCE else "")
        epoch = f"{r['epoch:mean']:.1f}" if math.isfinite(r["epoch:mean"]) else "-"
        collapsed = str(r["n_collapsed"])
        if r["collapse_epochs"]:
            collapsed += f" ({', '.join(map(str, r['collapse_epochs']))})"
        finished = f"{r['n_finished']}/{r['n_cells']}"
        if r["n_diverged"]:
            finished += f" ({r['n_diverged']} diverged)"
        lines.append(f"| {name} | {r['N']} | {finished} | "
                     f"{collapsed} | {_percent(r['ensemble:mean'], r['ensemble:std'])} | "
                     f"{_percent(r['member:mean'], r['member:std'])} | {js} | {epoch} | {diff} "
                     f"| {p} |")
    return "\n".join(lines)

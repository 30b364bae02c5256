"""The paper's scaling analysis on sweep tables (pure functions of rows; no files, no torch).

Rows are the dicts of :mod:`colearning.sweep.table`: cell rows (``N``, ``beta``, ``seed``,
``status``, metrics) or summary rows (``N``, ``beta``, ``METRIC:mean``/``:std``/``count``).
Groups are the ``facets`` (other grid keys, e.g. ``loss.kl_reduction``) plus ``N``.

    best = optimal_beta(summary, facets=[])                  # one row per N
    fit = loglog_fit([b["N"] for b in best], [b["beta"] for b in best])
    fit["slope"], fit["slope_se"]                            # paper Fig. 3c: -0.99 +/- 0.18
    tests = paired_wilcoxon(rows, "test/ensemble_accuracy_mean", facets=[])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats

ENSEMBLE = "test/ensemble_accuracy_mean"
COMBINER_METRICS = {
    "mean": "test/ensemble_accuracy_mean",
    "geometric": "test/ensemble_accuracy_geometric",
    "vote": "test/ensemble_accuracy_vote",
}


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _group_key(row: dict[str, Any], facets: Sequence[str]) -> tuple:
    return tuple(row.get(k) for k in facets) + (row["N"],)


def gain_over_independent(summary: list[dict[str, Any]], metric: str = ENSEMBLE,
                          facets: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per summary row: ``gain`` = mean metric at (N, beta) minus the mean at (N, beta=0).

    Fig. 3b's heatmap. ``gain`` is None where the group has no finished beta=0 cell.
    """
    zero = {_group_key(r, facets): r.get(f"{metric}:mean") for r in summary if r["beta"] == 0}
    out = []
    for row in summary:
        reference = zero.get(_group_key(row, facets))
        value = row.get(f"{metric}:mean")
        gain = value - reference if _finite(value) and _finite(reference) else None
        out.append({**{k: row.get(k) for k in facets}, "N": row["N"], "beta": row["beta"],
                    "beta_bar": row["beta_bar"], "gain": gain})
    return out


def selection_metric(metric: str, summary: list[dict[str, Any]]) -> str:
    """The metric that selects: ``val/...`` for a ``test/...`` metric when the summary has
    validation numbers, else the test metric itself (an optimistic choice)."""
    val = metric.replace("test/", "val/", 1)
    if val != metric and any(_finite(r.get(f"{val}:mean")) for r in summary):
        return val
    return metric


def _complete(row: dict[str, Any]) -> bool:
    return row.get("n_finished", 0) == row.get("n_cells", 0) and row.get("n_cells", 0) > 0


def optimal_beta(summary: list[dict[str, Any]], metric: str = ENSEMBLE,
                 facets: Sequence[str] = (), *,
                 allow_incomplete: bool = False) -> list[dict[str, Any]]:
    """The optimal negative coupling per (facets, N): the grid's beta < 0 with the highest
    mean accuracy over seeds (ties: the least negative). Fig. 3c's points.

    The choice is made on the validation split when the runs hold one out (the summary has
    ``val/...:mean``) and reported on the test set: ``value`` is the test ``metric`` at the
    chosen beta, ``selected_on`` says which split chose. Without validation numbers the
    choice is made on the test set itself, which flatters the optimum. A beta whose cells
    did not all finish (diverged, failed, still running) is not eligible: its mean would
    come from the seeds that survived. ``allow_incomplete=True`` lifts that rule.

    Each result: facets, ``N``, ``beta`` (beta*), ``beta_bar`` (beta* N), ``value``, ``std``,
    ``independent`` (test mean at beta=0, None if absent), ``gain`` (value - independent),
    ``selected_on`` (``val`` or ``test``), ``n_finished`` / ``n_cells`` of the chosen beta
    and ``excluded`` (the negative betas left out as incomplete). Groups without an
    eligible negative beta are left out.
    """
    chooser = selection_metric(metric, summary)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in summary:
        groups.setdefault(_group_key(row, facets), []).append(row)
    out = []
    for key, rows in groups.items():
        negative = [r for r in rows if _finite(r["beta"]) and r["beta"] < 0
                    and _finite(r.get(f"{chooser}:mean")) and _finite(r.get(f"{metric}:mean"))]
        excluded = [r["beta"] for r in rows if _finite(r["beta"]) and r["beta"] < 0
                    and not allow_incomplete and not _complete(r)]
        eligible = [r for r in negative if r["beta"] not in excluded]
        if not eligible:
            continue
        best = max(eligible, key=lambda r: (r[f"{chooser}:mean"], r["beta"]))
        zero = [r for r in rows if r["beta"] == 0 and _finite(r.get(f"{metric}:mean"))]
        independent = zero[0][f"{metric}:mean"] if zero else None
        out.append({**dict(zip(facets, key[:-1], strict=True)), "N": key[-1],
                    "beta": best["beta"], "beta_bar": best["beta"] * key[-1],
                    "value": best[f"{metric}:mean"], "std": best.get(f"{metric}:std"),
                    "independent": independent,
                    "gain": None if independent is None else best[f"{metric}:mean"] - independent,
                    "selected_on": chooser.split("/", 1)[0],
                    "n_finished": best.get("n_finished"), "n_cells": best.get("n_cells"),
                    "excluded": excluded})
    return out


def loglog_fit(n_members: Sequence[float], betas: Sequence[float]) -> dict[str, float] | None:
    """Least-squares line ln|beta*| = slope * ln N + intercept (natural logs), with standard
    errors (``slope_se``, ``intercept_se``; NaN with fewer than 3 points) and ``r``.

    beta* = -c / N^k gives slope -k and intercept ln c exactly. None with < 2 distinct N.
    """
    n = np.asarray(n_members, dtype=float)
    b = np.abs(np.asarray(betas, dtype=float))
    keep = (n > 0) & (b > 0) & np.isfinite(b)
    n, b = n[keep], b[keep]
    if len(np.unique(n)) < 2:
        return None
    fit = stats.linregress(np.log(n), np.log(b))
    few = len(n) < 3
    return {"slope": float(fit.slope), "intercept": float(fit.intercept),
            "slope_se": math.nan if few else float(fit.stderr),
            "intercept_se": math.nan if few else float(fit.intercept_stderr),
            "r": float(fit.rvalue), "points": len(n)}


def _exponential(n: np.ndarray, a: float, rate: float, c: float) -> np.ndarray:
    return a * np.exp(-rate * n) + c


def exponential_fit(n_members: Sequence[float],
                    betas: Sequence[float]) -> dict[str, float] | None:
    """Least-squares |beta*|(N) = a exp(-rate N) + c (Fig. 3c's curve), with standard errors
    from the fit's covariance (``a_se``, ``rate_se``, ``c_se``). None with < 4 distinct N or
    when the fit does not converge.
    """
    n = np.asarray(n_members, dtype=float)
    b = np.abs(np.asarray(betas, dtype=float))
    keep = np.isfinite(b) & np.isfinite(n)
    n, b = n[keep], b[keep]
    if len(np.unique(n)) < 4:
        return None
    guess = (2 * float(b.max()), 1.0 / float(np.median(n)), float(b.min()) / 2)
    try:
        params, covariance = optimize.curve_fit(
            _exponential, n, b, p0=guess, bounds=([0, 0, -np.inf], [np.inf, np.inf, np.inf]),
            maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    errors = np.sqrt(np.clip(np.diag(covariance), 0, None))
    residual = b - _exponential(n, *params)
    return {"a": float(params[0]), "rate": float(params[1]), "c": float(params[2]),
            "a_se": float(errors[0]), "rate_se": float(errors[1]), "c_se": float(errors[2]),
            "rmse": float(np.sqrt(np.mean(residual ** 2))), "points": len(n)}


def exponential_curve(fit: dict[str, float], n: np.ndarray) -> np.ndarray:
    """|beta*| of an :func:`exponential_fit` at ensemble sizes ``n``."""
    return _exponential(np.asarray(n, dtype=float), fit["a"], fit["rate"], fit["c"])


def signed_ranks(differences: Sequence[float]) -> tuple[float, float, int]:
    """(T+, T-, n): sums of the ranks of |d| over positive and negative d, zeros dropped
    (Wilcoxon's convention; ties get average ranks)."""
    d = np.asarray([x for x in differences if x != 0], dtype=float)
    if len(d) == 0:
        return 0.0, 0.0, 0
    ranks = stats.rankdata(np.abs(d))
    return float(ranks[d > 0].sum()), float(ranks[d < 0].sum()), len(d)


def paired_wilcoxon(rows: list[dict[str, Any]], metric: str = ENSEMBLE,
                    facets: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Coupled vs independent ensembles, paired by seed, per (facets, N, beta != 0).

    The Wilcoxon signed-rank test (two-sided, exact for small samples) on the seed-paired
    differences d = independent - coupled of ``metric`` over finished cells, as in Fig. S4c.
    ``t_plus`` is the paper's T+: the rank sum where the independent ensemble was better, so
    T+ = 0 means the coupled ensemble won on every seed. ``p_bonferroni`` = min(1, p * m)
    with m the number of tests returned (one family per metric). ``mean_diff`` is the mean
    of coupled - independent. p is NaN when no pair differs.
    """
    done = [r for r in rows if r.get("status") == "finished" and _finite(r.get(metric))]
    independent: dict[tuple, dict[Any, float]] = {}
    for row in done:
        if row["beta"] == 0:
            independent.setdefault(_group_key(row, facets), {})[row["seed"]] = row[metric]
    coupled: dict[tuple, dict[Any, float]] = {}
    for row in done:
        if row["beta"] is not None and row["beta"] != 0:
            key = _group_key(row, facets) + (row["beta"],)
            coupled.setdefault(key, {})[row["seed"]] = row[metric]
    out = []
    for key, by_seed in coupled.items():
        reference = independent.get(key[:-1], {})
        seeds = sorted(set(by_seed) & set(reference), key=str)
        if not seeds:
            continue
        diff = [reference[s] - by_seed[s] for s in seeds]  # independent - coupled
        t_plus, t_minus, nonzero = signed_ranks(diff)
        p = math.nan
        if nonzero:
            p = float(stats.wilcoxon([by_seed[s] for s in seeds], [reference[s] for s in seeds],
                                     zero_method="wilcox", alternative="two-sided").pvalue)
        out.append({**dict(zip(facets, key[:-2], strict=True)), "N": key[-2], "beta": key[-1],
                    "beta_bar": key[-1] * key[-2], "pairs": len(seeds), "nonzero": nonzero,
                    "mean_diff": -float(np.mean(diff)), "t_plus": t_plus, "t_minus": t_minus,
                    "p": p})
    tests = sum(1 for r in out if _finite(r["p"]))
    for row in out:
        row["p_bonferroni"] = min(1.0, row["p"] * tests) if _finite(row["p"]) else math.nan
        row["significant"] = bool(_finite(row["p"]) and row["p_bonferroni"] < 0.05)
    return out


def gain_over_epochs(epoch_rows: list[dict[str, Any]], metric: str = ENSEMBLE,
                     facets: Sequence[str] = ()) -> dict[tuple, dict[str, list[float]]]:
    """Ensemble gain over beta=0 at every epoch, paired by seed, per (facets, N, beta).

    Returns {(facets..., N, beta): {"epoch": [...], "mean": [...], "std": [...],
    "count": [...]}} where, at each epoch, gain = metric(beta, seed) - metric(0, seed)
    averaged over the seeds that reached that epoch in both cells (std ddof=1, NaN for one).
    """
    values: dict[tuple, dict[int, dict[Any, float]]] = {}
    for row in epoch_rows:
        if row.get("beta") is None or not _finite(row.get(metric)):
            continue
        key = _group_key(row, facets) + (row["beta"],)
        values.setdefault(key, {}).setdefault(row["epoch"], {})[row["seed"]] = row[metric]
    out = {}
    for key, by_epoch in values.items():
        if key[-1] == 0:
            continue
        reference = values.get(key[:-1] + (0.0,), {})
        curve: dict[str, list[float]] = {"epoch": [], "mean": [], "std": [], "count": []}
        for epoch in sorted(by_epoch):
            zero = reference.get(epoch, {})
            gains = [v - zero[s] for s, v in by_epoch[epoch].items() if s in zero]
            if not gains:
                continue
            curve["epoch"].append(epoch)
            curve["mean"].append(float(np.mean(gains)))
            curve["std"].append(float(np.std(gains, ddof=1)) if len(gains) > 1 else math.nan)
            curve["count"].append(len(gains))
        if curve["epoch"]:
            out[key] = curve
    return out

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

``metric=KEY`` takes ``diff`` and its p on any numeric column of results.csv instead, e.g.
``shift/accuracy_mean`` or ``ood/auroc_mutual_information`` of ``colearn evaluate`` (seeds
whose cells lack it are left out of the pairs), and adds its mean and std over seeds
(``value:mean``, ``value:std``, from ``n_values`` cells) and which way is better
(``direction``, :func:`colearning.evaluation.key_direction`).

``epoch=E`` takes every cell at epoch E instead of its selected epoch (cells that reached it,
finished or still running), so a gain can be followed over training: does it hold, grow or
vanish?
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scipy import stats

from colearning.config import keys_tagged
from colearning.couplings import COUPLINGS
from colearning.errors import ConfigError
from colearning.evaluation import key_direction, registered_metric
from colearning.metrics.statistics import mean_std
from colearning.sweep.layout import load_sweep_spec
from colearning.sweep.table import EVALUATION_PREFIXES, cell_rows, facet_keys

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
        if COUPLINGS.meta(topology)["strength"] != "beta" or row.get("beta_bar") is None:
            name = "colearning"
        else:
            name = f"colearning beta_bar={float(row['beta_bar']):g}"
        if row.get("coupling") not in ("uniform", None):
            coupled.append(str(row["coupling"]))
        if row.get("loss.divergence") not in ("kl", None):
            coupled.append(str(row["loss.divergence"]))
    return " ".join([name, *coupled, *_others(row, extra)])


def _others(row: dict[str, Any], extra: Sequence[str]) -> list[str]:
    """The other grid values of a cell row, as ``key=value`` words."""
    return [f"{key.split('.')[-1]}={row[key]}" for key in extra if row.get(key) is not None]


# What a cell's config may differ in from another cell of its configuration and seed and
# still be the same training: uncoupled cells ignore every coupling key.
# what independent training (every coupling 0) does not depend on
_UNCOUPLED_KEYS = tuple(key.removeprefix("loss.") for key in keys_tagged("coupling"))


def _fingerprint(config: dict[str, Any], independent: bool) -> dict[str, Any]:
    out = {key: value for key, value in config.items() if key not in ("seed", "train")}
    out["train"] = {k: v for k, v in config["train"].items() if k != "progress"}
    if independent:
        out["loss"] = {k: v for k, v in config["loss"].items() if k not in _UNCOUPLED_KEYS}
    return out


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b))
                for d in _differences(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def compare_sweeps(sweep_dirs: Sequence[str | Path], reference: str | None = None,
                   metric: str | None = None, epoch: int | None = None) -> list[dict[str, Any]]:
    """One row per (configuration, N) over the cells of all ``sweep_dirs`` (see the module
    docstring). Differences are taken against ``reference`` with the same N and the same
    other grid values (``independent kl_reduction=mean`` for the ``kl_reduction=mean``
    configurations). ``reference`` must name a configuration of the sweeps (without the
    other grid values; ConfigError listing the names otherwise); None: ``independent``,
    and no differences where the sweeps have no independent configuration. ``metric``: the
    results.csv column the differences are taken on (None: the test ensemble accuracy at
    the best epoch); one that no cell has is a ConfigError listing the numeric columns.
    ``epoch``: every cell at that epoch instead of its selected one, counted when it reached
    it (finished or not: ``n_finished`` counts those), to follow a gain over training."""
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)
                              or epoch < 1):
        raise ConfigError(f"--epoch must be an epoch number >= 1, got {epoch!r}")
    given, reference = reference is not None, reference or REFERENCE
    rows: list[dict[str, Any]] = []
    for path in sweep_dirs:
        cells = cell_rows(path, epoch)
        configs = {cell.name: cell.config for cell in load_sweep_spec(Path(path)).cells()}
        skip = {"loss.objective", "loss.joint_weight", "loss.beta", "loss.beta_bar",
                "loss.divergence", "coupling"}
        extra = [k for k in facet_keys(cells) if k not in skip]
        for row in cells:
            others = _others(row, extra)
            rows.append({**row, "configuration": label(row, extra), "name": label(row),
                         "reference": " ".join([reference, *others]),
                         "others": " ".join(others), "sweep": str(path),
                         "fingerprint": _fingerprint(configs[row["cell"]],
                                                     bool(row.get("independent")))})
    if metric is not None:
        _check_metric(metric, rows)
    names = sorted({row["name"] for row in rows})
    if given and reference not in names:
        raise ConfigError(f"unknown reference {reference!r}: no configuration of these sweeps "
                          f"is called that; valid: {', '.join(names)}")
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["configuration"], row["N"]), []).append(row)
    finished = {key: _by_seed(cells, epoch is not None) for key, cells in groups.items()}
    out = []
    for (name, n), cells in groups.items():
        done = finished[(name, n)]
        line: dict[str, Any] = {
            "configuration": name, "N": n, "objective": cells[0].get("loss.objective"),
            "reference": cells[0]["reference"], "others": cells[0]["others"],
            "is_reference": name == cells[0]["reference"],
            "n_cells": len(cells),
            "n_finished": sum(_counted(r, epoch is not None) for r in cells),
            "at_epoch": epoch,
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
            line[f"{key}:mean"], line[f"{key}:std"] = mean_std(values)
        line.update(_paired(done, finished.get((line["reference"], n), {}), metric or ENSEMBLE))
        if metric is not None:
            values = [float(r[metric]) for r in done.values() if _number(r.get(metric))]
            line.update({"metric": metric, "direction": key_direction(metric),
                         "n_values": len(values)})
            line["value:mean"], line["value:std"] = mean_std(values)
        out.append(line)
    _mark_selected(out)
    return out


def _counted(row: dict[str, Any], at_epoch: bool) -> bool:
    """Whether a cell's row enters the statistics: finished, or (``at_epoch``) it reached
    the epoch asked for."""
    return row.get(ENSEMBLE) is not None and (at_epoch or row["status"] == "finished")


def _by_seed(cells: list[dict[str, Any]], at_epoch: bool = False) -> dict[Any, dict[str, Any]]:
    """The counted cells of one configuration by seed (:func:`_counted`). Two cells of one
    seed (beta = 0 in two sweeps) count once when they are the same training, and are
    refused otherwise."""
    out: dict[Any, dict[str, Any]] = {}
    for row in cells:
        if not _counted(row, at_epoch):
            continue
        seen = out.get(row["seed"])
        if seen is not None and seen["fingerprint"] != row["fingerprint"]:
            keys = ", ".join(_differences(seen["fingerprint"], row["fingerprint"])[:3])
            raise ConfigError(
                f"{row['configuration']!r} has two different seed-{row['seed']} cells "
                f"({seen['sweep']}/{seen['cell']} and {row['sweep']}/{row['cell']}; they "
                f"differ in {keys}); compare sweeps that differ only in their grid values")
        out.setdefault(row["seed"], row)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _check_metric(metric: str, rows: list[dict[str, Any]]) -> None:
    """A ConfigError naming the numeric columns unless some cell has a number for
    ``metric``."""
    if any(_number(row.get(metric)) for row in rows):
        return
    numeric = sorted({key for row in rows for key, value in row.items() if _number(value)
                      and key not in ("N", "seed")})
    hint = (" (their runs have no evaluation/summary.json: run colearn evaluate on them "
            "first)" if metric.startswith(EVALUATION_PREFIXES) else "")
    raise ConfigError(f"--metric {metric!r}: no cell of these sweeps has it{hint}; valid: "
                      f"{', '.join(numeric)}")


def _paired(cells: dict[Any, dict[str, Any]], reference: dict[Any, dict[str, Any]],
            metric: str = ENSEMBLE) -> dict[str, Any]:
    seeds = sorted((s for s in set(cells) & set(reference)
                    if _number(cells[s].get(metric)) and _number(reference[s].get(metric))),
                   key=str)
    diff = [float(cells[s][metric]) - float(reference[s][metric]) for s in seeds]
    p = math.nan
    if any(d != 0 for d in diff):
        p = float(stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
    return {"pairs": len(seeds), "diff:mean": mean_std(diff)[0] if diff else math.nan,
            "diff:std": mean_std(diff)[1] if diff else math.nan, "p": p}


def _mark_selected(rows: list[dict[str, Any]]) -> None:
    """Per (objective family, other grid values, N): the configuration with the best mean
    validation accuracy (among those whose cells all finished)."""
    for row in rows:
        row["selected"] = False
    families: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        family = REFERENCE if row["is_reference"] else row["objective"]
        families.setdefault((family, row["others"], row["N"]), []).append(row)
    for members in families.values():
        eligible = [r for r in members if r["n_finished"] == r["n_cells"] > 0
                    and math.isfinite(r["val:mean"])]
        if eligible:
            max(eligible, key=lambda r: r["val:mean"])["selected"] = True


def _percent(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if math.isfinite(std) else "")


def _bare(name: str, others: str) -> str:
    """A configuration's name without its other grid values."""
    return name[:-len(others) - 1] if others and name.endswith(" " + others) else name


def reference_name(rows: list[dict[str, Any]]) -> str:
    """The configuration the differences of :func:`compare_sweeps`'s ``rows`` are taken
    against (without the other grid values)."""
    return _bare(rows[0]["reference"], rows[0]["others"]) if rows else REFERENCE


def configuration_names(rows: list[dict[str, Any]]) -> list[str]:
    """The names a reference may take: the configurations of ``rows`` without their other
    grid values."""
    return sorted({_bare(row["configuration"], row["others"]) for row in rows})


def _in_percent(metric: str) -> bool:
    """Whether ``metric`` is a fraction shown in % (an accuracy)."""
    entry = registered_metric(metric)
    if entry is not None:
        return entry.percent
    return "accuracy" in metric.rpartition("/")[2].split("_")


def _value(mean: float, std: float, percent: bool) -> str:
    if percent:
        return _percent(mean, std)
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.4g}" + (f" ± {std:.2g}" if math.isfinite(std) else "")


def markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (accuracies in %, mean ± std over seeds); the
    difference column names the reference, and the metric when it is not the ensemble
    accuracy (then a column gives its mean ± std over seeds)."""
    metric = rows[0].get("metric") if rows else None
    percent = metric is None or _in_percent(metric)
    extra, diff_title = "", f"diff vs {reference_name(rows)} (pp)"
    if metric is not None:
        better = {"max": ", higher is better", "min": ", lower is better"}.get(
            rows[0].get("direction") or "", "")
        extra = f" {metric}{' %' if percent else ''} |"
        diff_title = (f"diff vs {reference_name(rows)} in {metric} "
                      f"({'pp' if percent else 'difference'}{better})")
    at_epoch = rows[0].get("at_epoch") if rows else None
    counted = "finished" if at_epoch is None else f"at epoch {at_epoch}"
    lines = [f"| configuration | N | {counted} | collapsed (first epoch) | ensemble % | members % "
             f"| JS (nats) | epoch |{extra} {diff_title} | Wilcoxon p |",
             "|---|---|---|---|---|---|---|---|" + ("---|" if extra else "") + "---|---|"]
    for r in rows:
        js = f"{r['js:mean']:.3f}" if math.isfinite(r["js:mean"]) else "-"
        diff = "-"
        if math.isfinite(r["diff:mean"]) and not r["is_reference"]:
            diff = f"{100 * r['diff:mean']:+.2f}" if percent else f"{r['diff:mean']:+.4g}"
        p = f"{r['p']:.2f}" if math.isfinite(r["p"]) else "-"
        name = r["configuration"] + (" (val-selected)" if r["selected"]
                                     and not r["is_reference"] else "")
        epoch = f"{r['epoch:mean']:.1f}" if math.isfinite(r["epoch:mean"]) else "-"
        collapsed = str(r["n_collapsed"])
        if r["collapse_epochs"]:
            collapsed += f" ({', '.join(map(str, r['collapse_epochs']))})"
        finished = f"{r['n_finished']}/{r['n_cells']}"
        if r["n_diverged"]:
            finished += f" ({r['n_diverged']} diverged)"
        value = (f" {_value(r['value:mean'], r['value:std'], percent)} |"
                 if metric is not None else "")
        lines.append(f"| {name} | {r['N']} | {finished} | "
                     f"{collapsed} | {_percent(r['ensemble:mean'], r['ensemble:std'])} | "
                     f"{_percent(r['member:mean'], r['member:std'])} | {js} | {epoch} |{value} "
                     f"{diff} | {p} |")
    return "\n".join(lines)

"""Plain-text tables for the terminal: the end-of-run summary."""

from __future__ import annotations

from typing import Any

from colearning.evaluation import METRICS, metric_names


def _value(summary: dict[str, Any], name: str, member: int | None = None,
           prefix: str = "test") -> str:
    """Metric ``name``'s value under ``prefix`` (of ``member``), formatted as its entry says."""
    value = summary.get(f"{prefix}/{name}")
    if member is not None:
        value = (value or [None] * (member + 1))[member]
    if not isinstance(value, (int, float)):
        return "-"
    return f"{100 * value:.2f}" if METRICS.get(name).percent else f"{value:.4f}"


def format_summary(summary: dict[str, Any], title: str = "") -> str:
    """The end-of-run table: per member and for the ensemble, every metric whose registry
    entry has a ``summary`` title (colearning.evaluation.METRICS: member accuracy and NLL,
    ensemble accuracy per combiner, mean JS distance, and any a plugin adds)."""
    lines = [title] if title else []
    status = summary.get("status", "unknown")
    detail = summary.get("status_detail")
    lines.append(f"status: {status}" + (f" ({detail})" if detail else ""))
    lines.append(f"epochs: {summary.get('epochs_completed', 0)}   "
                 f"wall time: {summary.get('wall_seconds', 0.0):.1f} s")
    if summary.get("test/member_accuracy") is None:
        return "\n".join(lines)
    collapsed = set(summary.get("collapsed_members", []))
    unlearned = set(summary.get("not_learned_members", []))
    lines += _metric_table(summary, "test", collapsed, unlearned)
    if collapsed:
        lines.append(f"warning: members {sorted(collapsed)} collapsed: their outputs ignore "
                     "the input (one class, near-constant probabilities, or a dead ReLU layer) "
                     "after they had learned")
    if unlearned:
        lines.append(f"note: members {sorted(unlearned)} have not learned yet (near-constant "
                     "outputs, accuracy near the best constant guess): train longer or raise "
                     "optim.lr")
    return "\n".join(lines)


def _metric_table(values: dict[str, Any], prefix: str, collapsed: set[int],
                  unlearned: set[int]) -> list[str]:
    """Per member and for the ensemble, every metric ``prefix/<name>`` of ``values`` whose
    registry entry has a ``summary`` title."""
    members = values[f"{prefix}/member_accuracy"]
    shown = [name for name in metric_names("member") if METRICS.get(name).summary]
    lines = ["", f"{'':22}" + "".join(f"{METRICS.get(name).summary:>12}" for name in shown)]
    for i in range(len(members)):
        flag = "  collapsed" if i in collapsed else "  not learned" if i in unlearned else ""
        cells = "".join(f"{_value(values, name, i, prefix):>12}" for name in shown)
        lines.append(f"  member {i:<13}{cells}{flag}")
    if len(members) > 1:  # one member is no ensemble: no combiners, no distance
        for name in metric_names("ensemble"):
            title = METRICS.get(name).summary
            if title and values.get(f"{prefix}/{name}") is not None:
                lines.append(f"  {title:<20}{_value(values, name, prefix=prefix):>12}")
    return lines


def format_evaluation(metrics: dict[str, Any], title: str = "", prefix: str = "eval") -> str:
    """The table of an evaluation on other data (colearn evaluate): what was evaluated, then
    the end-of-run table's metrics under ``prefix``."""
    lines = [title] if title else []
    lines.append(f"data: {metrics.get('data')}" + (f" ({metrics['data_path']})"
                                                     if metrics.get("data_path") else "")
                 + f", {metrics.get('split')} side, {metrics.get('images', 0):,} images; "
                 f"checkpoint: {metrics.get('epoch')}")
    flagged = {key: {i for i, flag in enumerate(metrics.get(f"{prefix}/member_{key}", [])) if flag}
               for key in ("collapsed", "not_learned")}
    return "\n".join(lines + _metric_table(metrics, prefix, flagged["collapsed"],
                                           flagged["not_learned"]))


def format_uncertainty(summary: dict[str, Any], title: str = "") -> str:
    """The headline numbers of an uncertainty evaluation's summary.json (shift, OOD AUROC,
    calibration), one line each."""
    lines = [title] if title else []
    if "shift/accuracy_mean" in summary:
        lines.append(f"  shift: ensemble accuracy {summary['shift/accuracy_mean']:.4f} (mean "
                     f"over corruptions and severities), ECE {summary['shift/ece_mean']:.4f}, "
                     f"member accuracy {summary['shift/member_accuracy_mean']:.4f}")
    sets = sorted({key.split("/")[1] for key in summary
                   if key.startswith("ood/") and key.count("/") == 2})
    for name in sets:
        scores = ", ".join(f"{key.rsplit('auroc_', 1)[1]} {value:.4f}"
                           for key, value in summary.items()
                           if key.startswith(f"ood/{name}/auroc_"))
        lines.append(f"  ood {name}: AUROC {scores}")
    if "calibration/ensemble_ece" in summary:
        after = summary.get("calibration/ensemble_ece_ts")
        lines.append(f"  calibration: ensemble ECE {summary['calibration/ensemble_ece']:.4f}"
                     + (f" -> {after:.4f} at T = {summary['calibration/temperature_ensemble']:.3g}"
                        if after is not None else " (no validation split: no temperature)")
                     + f"; AURC {summary['selective/aurc']:.4f}")
    return "\n".join(lines)

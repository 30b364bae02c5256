"""Plain-text tables for the terminal: the end-of-run summary."""

from __future__ import annotations

from typing import Any

from colearning.combiners import COMBINERS


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:6.2f}"


def format_summary(summary: dict[str, Any], title: str = "") -> str:
    """The end-of-run table: member accuracies, ensemble accuracy per combiner, mean JS."""
    lines = [title] if title else []
    status = summary.get("status", "unknown")
    detail = summary.get("status_detail")
    lines.append(f"status: {status}" + (f" ({detail})" if detail else ""))
    lines.append(f"epochs: {summary.get('epochs_completed', 0)}   "
                 f"wall time: {summary.get('wall_seconds', 0.0):.1f} s")
    members = summary.get("test/member_accuracy")
    if members is None:
        return "\n".join(lines)
    collapsed = set(summary.get("collapsed_members", []))
    unlearned = set(summary.get("not_learned_members", []))
    lines.append("")
    lines.append(f"{'':22}{'accuracy %':>10}{'KL(q||p)':>10}")
    kls = summary.get("test/member_kl", [None] * len(members))
    for i, (acc, kl) in enumerate(zip(members, kls, strict=True)):
        flag = "  collapsed" if i in collapsed else "  not learned" if i in unlearned else ""
        kl_text = "-" if kl is None else f"{kl:.3f}"
        lines.append(f"  member {i:<14}{_pct(acc):>10}{kl_text:>10}{flag}")
    if len(members) > 1:  # one member is no ensemble: no combiners, no distance
        for method in COMBINERS:
            acc = summary.get(f"test/ensemble_accuracy_{method}")
            lines.append(f"  ensemble ({method}){'':<{12 - len(method)}}{_pct(acc):>10}")
        js = summary.get("test/js_mean")
        if js is not None:
            lines.append(f"  mean JS distance d   {js:10.4f}")
    if collapsed:
        lines.append(f"warning: members {sorted(collapsed)} collapsed: their outputs ignore "
                     "the input (one class, near-constant probabilities, or a dead ReLU layer) "
                     "after they had learned")
    if unlearned:
        lines.append(f"note: members {sorted(unlearned)} have not learned yet (near-constant "
                     "outputs, accuracy near the best constant guess): train longer or raise "
                     "optim.lr")
    return "\n".join(lines)

"""The run report's figures of ``colearn evaluate``'s files: shift, OOD detection and
selective prediction. Pure like :mod:`.figures`: arrays in, a PNG written, its path out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from colearning.report.figures import ENSEMBLE, _figure, _title, member_color, save_figure

# The three panels of the shift figure: (column stem of shift.csv, title, axis label, in %)
SHIFT_PANELS = (("accuracy", "accuracy", "test accuracy (%)", True),
                ("nll", "NLL", "NLL (nats)", False),
                ("ece", "ECE", "ECE (15 bins, 0 = calibrated)", False))


def _save(fig: Figure, path: str | Path) -> Path:
    path = save_figure(fig, path)
    fig.clear()
    return path


def shift_curves(severity: np.ndarray, ensemble: Mapping[str, np.ndarray],
                 members: Mapping[str, np.ndarray],
                 corruptions: Mapping[str, Mapping[str, np.ndarray]], tag: str,
                 path: str | Path) -> Path:
    """Accuracy, NLL and ECE against severity [S] (0 = clean): the ensemble's mean over
    corruptions {stem: [S]}, the members' mean {stem: [S]} (dashed; a stem may be missing)
    and thin lines per corruption {name: {stem: [S]}}."""
    fig, axes = _figure(ncols=3, width=4.4, height=3.8)
    for ax, (stem, title, label, percent) in zip(axes, SHIFT_PANELS, strict=True):
        scale = 100.0 if percent else 1.0
        for k, curves in enumerate(corruptions.values()):
            ax.plot(severity, scale * curves[stem], color=member_color(k), lw=0.7, alpha=0.45)
        ax.plot(severity, scale * ensemble[stem], color=ENSEMBLE, lw=2.2, marker="o",
                label="ensemble (mean over corruptions)")
        if stem in members:
            ax.plot(severity, scale * members[stem], color=ENSEMBLE, lw=1.4, ls="--",
                    marker=".", label="members' mean")
        ax.set(title=title, xlabel="severity (0 = clean)", ylabel=label)
        ax.set_xticks(severity)
    if corruptions:
        axes[0].plot([], [], color="0.5", lw=0.7, label="one corruption (ensemble)")
    axes[0].legend(fontsize=7)
    _title(fig, "Distribution shift: corrupted test images", tag,
           f"{len(corruptions)} corruptions")
    return _save(fig, path)


def ood_roc(curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray, float]]], tag: str,
            path: str | Path) -> Path:
    """ROC curves of OOD detection, one panel per OOD set: {set: {score: (fpr [K], tpr [K],
    auroc)}}, in-distribution samples the positives."""
    fig, axes = _figure(ncols=len(curves), width=4.6, height=4.4)
    for ax, (name, scores) in zip(axes, curves.items(), strict=True):
        ax.plot([0, 100], [0, 100], color="0.6", ls=":", label="chance (AUROC 0.5)")
        for k, (score, (fpr, tpr, auroc)) in enumerate(scores.items()):
            ax.plot(100 * fpr, 100 * tpr, color=member_color(k), lw=1.6,
                    label=f"{score} (AUROC {auroc:.3f})")
        ax.set(title=f"OOD set: {name}", xlabel="OOD samples accepted (FPR, %)",
               ylabel="test samples accepted (TPR, %)", xlim=(0, 100), ylim=(0, 100.5))
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="lower right")
    _title(fig, "Out-of-distribution detection: ROC per score (higher score = in-distribution)",
           tag)
    return _save(fig, path)


def risk_coverage(coverage: np.ndarray, risk: np.ndarray, aurc: float | None, tag: str,
                  path: str | Path) -> Path:
    """Selective prediction: risk [K] (error rate of the answered samples) against coverage
    [K] (fraction answered, most confident first), both fractions."""
    fig, (ax,) = _figure(width=6.4, height=4.4)
    ax.plot(100 * coverage, 100 * risk, color=ENSEMBLE, lw=2, label="ensemble (mean)")
    ax.axhline(100 * risk[-1], color="0.6", ls=":", label="risk at full coverage")
    ax.set(xlabel="coverage: test samples answered, most confident first (%)",
           ylabel="risk: error rate of the answered (%)", xlim=(0, 100), ylim=(0, None))
    ax.legend(fontsize=8, loc="upper left")
    detail = "" if aurc is None else f"AURC = {aurc:.4f} (area under the curve, lower is better)"
    _title(fig, "Selective prediction: risk vs coverage", tag, detail)
    return _save(fig, path)

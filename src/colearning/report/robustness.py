"""The run report's section on ``colearn evaluate``'s files in RUN_DIR/evaluation/.

    evaluation = read_evaluation("runs/demo")    # every file that is there, None/empty if not
    section = robustness_section(evaluation, "N=2, β=-0.2", out)   # None: nothing evaluated

Files (all optional; one that is missing draws nothing, one that cannot be read is named in
the section's text): ``shift.csv`` (a row per corruption and severity 1..5 plus ``clean,0``),
``ood.csv`` (a row per OOD set and score), ``ood_scores.npz`` (``SET/SCORE/in`` and
``SET/SCORE/out``, higher = more in-distribution) and ``calibration.json`` (temperature
scaling and selective prediction). Nothing is recomputed from a network.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from colearning.metrics.ood import roc_curve
from colearning.report import robustness_figures
from colearning.report.html import Section, Table
from colearning.sweep.table import EVALUATION

SHIFT, OOD, OOD_SCORES, CALIBRATION = "shift.csv", "ood.csv", "ood_scores.npz", "calibration.json"
SHIFT_COLUMNS = ("corruption", "severity", "ensemble_accuracy", "ensemble_nll", "ensemble_ece")
OOD_COLUMNS = ("ood_set", "score", "auroc")


@dataclass
class Evaluation:
    """What ``colearn evaluate`` saved for one run (a file that is missing: None or empty)."""

    path: Path
    shift: pd.DataFrame | None = None
    ood: pd.DataFrame | None = None
    scores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # files present but unreadable

    @property
    def empty(self) -> bool:
        return (self.shift is None and self.ood is None and not self.scores
                and not self.calibration and not self.problems)


def _table(path: Path, columns: tuple[str, ...], problems: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as error:
        problems.append(f"{path.name} ({error})")
        return None
    missing = [c for c in columns if c not in table.columns]
    if missing or table.empty:
        problems.append(f"{path.name} (no rows or no column {', '.join(missing)})")
        return None
    return table


def read_evaluation(run_dir: str | Path) -> Evaluation:
    """Every readable file of ``run_dir``/evaluation/; never raises for a missing or corrupt
    one (it is left out, and a corrupt one is listed in ``problems``)."""
    folder = Path(run_dir) / EVALUATION
    evaluation = Evaluation(folder)
    if not folder.is_dir():
        return evaluation
    problems = evaluation.problems
    evaluation.shift = _table(folder / SHIFT, SHIFT_COLUMNS, problems)
    evaluation.ood = _table(folder / OOD, OOD_COLUMNS, problems)
    if (folder / OOD_SCORES).is_file():
        try:
            with np.load(folder / OOD_SCORES) as saved:
                arrays = {key: saved[key].astype(np.float64) for key in saved.files}
        except (OSError, ValueError, EOFError) as error:
            problems.append(f"{OOD_SCORES} ({error})")
            arrays = {}
        for key, inside in arrays.items():
            name, _, side = key.rpartition("/")
            set_name, _, score = name.partition("/")
            outside = arrays.get(f"{name}/out")
            if side == "in" and score and outside is not None and inside.size and outside.size:
                evaluation.scores.setdefault(set_name, {})[score] = (inside, outside)
    if (folder / CALIBRATION).is_file():
        try:
            evaluation.calibration = json.loads((folder / CALIBRATION).read_text())
        except (OSError, ValueError) as error:
            problems.append(f"{CALIBRATION} ({error})")
    return evaluation


def shift_by_severity(shift: pd.DataFrame, stems: tuple[str, ...] = ("accuracy", "nll", "ece")
                      ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray],
                                 dict[str, dict[str, np.ndarray]]]:
    """(severities [S] with 0 the clean row, ensemble {stem: [S]} and members' mean {stem:
    [S]} averaged over corruptions, per corruption {name: {stem: [S]}} with the clean value
    at severity 0). A members' stem whose column is absent is left out."""
    clean = shift[shift["severity"] == 0]
    corrupted = shift[shift["severity"] > 0]
    severity = np.array(sorted({0, *corrupted["severity"].astype(int)}))

    def curve(rows: pd.DataFrame, column: str) -> np.ndarray:
        means = rows.groupby("severity")[column].mean()
        start = clean[column].mean() if len(clean) else np.nan
        return np.array([start if s == 0 else means.get(s, np.nan) for s in severity], float)

    ensemble = {stem: curve(corrupted, f"ensemble_{stem}") for stem in stems}
    members = {stem: curve(corrupted, f"member_{stem}_mean") for stem in stems
               if f"member_{stem}_mean" in shift.columns}
    per_corruption = {str(name): {stem: curve(rows, f"ensemble_{stem}") for stem in stems}
                      for name, rows in corrupted.groupby("corruption", sort=False)}
    return severity, ensemble, members, per_corruption


def _number(value: Any, fmt: str = "{:.4g}") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return fmt.format(value)


def calibration_table(calibration: dict[str, Any]) -> Table | None:
    """Test NLL, ECE and Brier of the ensemble (and the members' mean) before and after
    temperature scaling; None when calibration.json has none of them."""
    rows = [[title, _number(calibration.get(f"test/{key}")),
             _number(calibration.get(f"test/{key}_ts"))]
            for key, title in (("ensemble_nll", "ensemble NLL (nats)"),
                               ("ensemble_ece", "ensemble ECE (15 bins)"),
                               ("ensemble_brier", "ensemble Brier"),
                               ("member_nll_mean", "members' mean NLL (nats)"),
                               ("member_ece_mean", "members' mean ECE (15 bins)"))
            if f"test/{key}" in calibration or f"test/{key}_ts" in calibration]
    if not rows:
        return None
    return Table("Calibration on the test split before and after temperature scaling "
                 "(temperatures fitted on the validation split)",
                 ["quantity", "before", "after temperature scaling"], rows)


def _shift_table(severity: np.ndarray, ensemble: dict[str, np.ndarray],
                 members: dict[str, np.ndarray]) -> Table:
    rows = [[int(s), _number(100 * ensemble["accuracy"][k], "{:.2f}"),
             _number(ensemble["nll"][k]), _number(ensemble["ece"][k]),
             _number(100 * members["accuracy"][k], "{:.2f}") if "accuracy" in members else "n/a"]
            for k, s in enumerate(severity)]
    return Table("Corrupted test images: mean over corruptions per severity (0 = clean)",
                 ["severity", "ensemble accuracy %", "ensemble NLL (nats)", "ensemble ECE",
                  "members' mean accuracy %"], rows)


def _ood_table(ood: pd.DataFrame) -> Table:
    columns = [c for c in ("ood_set", "score", "n_in", "n_out", "auroc", "aupr_in", "aupr_out",
                           "fpr95") if c in ood.columns]
    rows = [[value if isinstance(value, str) else _number(value) for value in row]
            for row in ood[columns].itertuples(index=False)]
    return Table("OOD detection per set and score (test split = in-distribution; higher "
                 "AUROC/AUPR and lower FPR95 are better)", columns, rows)


def _auroc(evaluation: Evaluation, set_name: str, score: str, fpr: np.ndarray,
           tpr: np.ndarray) -> float:
    """The AUROC of ood.csv when it has the row, else the area of the curve."""
    ood = evaluation.ood
    if ood is not None:
        match = ood[(ood["ood_set"].astype(str) == set_name) & (ood["score"] == score)]
        if len(match) and np.isfinite(match["auroc"].iloc[0]):
            return float(match["auroc"].iloc[0])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def robustness_section(evaluation: Evaluation, tag: str, out: Path) -> Section | None:
    """The report section of ``evaluation`` (figures written into ``out``); None when the run
    was never evaluated."""
    if evaluation.empty:
        return None
    figs: list[Path] = []
    captions: list[str] = []
    tables: list[Table] = []
    text = [f"From {evaluation.path} (colearn evaluate)."]
    if evaluation.shift is not None:
        severity, ensemble, members, per_corruption = shift_by_severity(evaluation.shift)
        figs.append(robustness_figures.shift_curves(severity, ensemble, members, per_corruption,
                                                    tag, out / "shift_severity.png"))
        captions.append("Accuracy, NLL and ECE of the mean ensemble on corrupted test images "
                        "against the corruption severity (0 = clean), averaged over "
                        "corruptions (thick), per corruption (thin); dashed: the members' "
                        "mean.")
        tables.append(_shift_table(severity, ensemble, members))
    if evaluation.scores:
        curves = {}
        for set_name, scores in evaluation.scores.items():
            curves[set_name] = {}
            for score, (inside, outside) in scores.items():
                fpr, tpr = roc_curve(inside, outside)
                curves[set_name][score] = (fpr, tpr, _auroc(evaluation, set_name, score, fpr,
                                                            tpr))
        figs.append(robustness_figures.ood_roc(curves, tag, out / "ood_roc.png"))
        captions.append("ROC curves of telling test images (positives) from each OOD set "
                        "by each score of the ensemble's predictions; AUROC in the legend.")
    if evaluation.ood is not None:
        tables.append(_ood_table(evaluation.ood))
    calibration = evaluation.calibration
    curve = calibration.get("risk_coverage") or {}
    coverage = np.asarray(curve.get("coverage") or [], dtype=float)
    risk = np.asarray(curve.get("risk") or [], dtype=float)
    if coverage.size and coverage.shape == risk.shape:
        aurc = calibration.get("selective/aurc")
        figs.append(robustness_figures.risk_coverage(
            coverage, risk, aurc if isinstance(aurc, (int, float)) else None, tag,
            out / "risk_coverage.png"))
        captions.append("Selective prediction: the ensemble answers only its most confident "
                        "test samples; the error rate among them against the fraction "
                        "answered.")
    table = calibration_table(calibration)
    if table is not None:
        tables.append(table)
    if "temperature_ensemble" in calibration:
        members = calibration.get("temperature_members") or []
        text.append(f"Temperature of the ensemble: {_number(calibration['temperature_ensemble'])}"
                    + (f"; of the members: {', '.join(_number(t) for t in members)}"
                       if members else "") + ".")
    selective = [f"{what} {_number(scale * calibration[key], fmt)}" for key, what, scale, fmt in
                 (("selective/aurc", "AURC", 1.0, "{:.4g}"),
                  ("selective/accuracy_at_90", "accuracy at 90% coverage", 100.0, "{:.2f}%"),
                  ("selective/accuracy_at_95", "accuracy at 95% coverage", 100.0, "{:.2f}%"))
                 if _number(calibration.get(key)) != "n/a"]
    if selective:
        text.append("Selective prediction: " + ", ".join(selective) + ".")
    if calibration.get("note"):
        text.append(f"Calibration: {calibration['note']}.")
    return Section("Robustness: shift, OOD detection and calibration", text=" ".join(text),
                   figures=figs, captions=captions, tables=tables,
                   warning=("Unreadable files in the evaluation folder: "
                            + "; ".join(evaluation.problems)) if evaluation.problems else "")

"""A run under distribution shift: its test split corrupted (:mod:`colearning.shift`) at
each severity, one row of metrics per (corruption, severity) in ``shift.csv``.

Images are corrupted as floats in [0, 1] (before the run's normalization, which
:func:`~colearning.inference.prediction.member_log_probs` applies), in fixed chunks of
:data:`CHUNK` images with seed = the chunk's number, so a split is corrupted the same way
on every run of the evaluation.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearning import rundir
from colearning.engine import Ensemble
from colearning.errors import ConfigError
from colearning.inference.prediction import BATCH_SIZE, member_log_probs
from colearning.metrics import accuracy, brier, expected_calibration_error, nll
from colearning.shift import CORRUPTIONS, SEVERITIES, corrupt

CHUNK = 500  # images corrupted together (a corruption's random draws depend on the shape)
CLEAN = "clean"  # the row of the uncorrupted test split, severity 0
COLUMNS = ("corruption", "severity", "images", "ensemble_accuracy", "ensemble_nll",
           "ensemble_ece", "ensemble_brier", "member_accuracy_mean", "member_nll_mean",
           "member_ece_mean")


def check_corruptions(corruptions: Sequence[str] | None) -> list[str]:
    """The corruptions to run (None: every one of CORRUPTIONS, in its order); an unknown
    name is a one-line ConfigError listing the valid ones."""
    if corruptions is None:
        return CORRUPTIONS.ordered()
    for name in corruptions:
        CORRUPTIONS.get(name)
    if not corruptions:
        raise ConfigError("--corruptions names no corruption")
    return list(dict.fromkeys(corruptions))


def check_severities(severities: Sequence[int] | None) -> list[int]:
    """The severities to run (None: 1 to 5), each an int from 1 to 5."""
    if severities is None:
        return list(SEVERITIES)
    for value in severities:
        if isinstance(value, bool) or not isinstance(value, int) or value not in SEVERITIES:
            raise ConfigError(f"severities are ints from 1 to 5, got {value!r}")
    if not severities:
        raise ConfigError("--severities names no severity")
    return sorted(set(severities))


def row_metrics(log_probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The metric columns of a row from member log-probabilities [N, n, C] and labels [n]:
    the ensemble (mean of the members' probabilities) and the mean over the members."""
    log_ens = torch.logsumexp(log_probs, 0) - math.log(log_probs.shape[0])
    probs = log_probs.exp()
    return {
        "ensemble_accuracy": float(accuracy(log_ens, labels)),
        "ensemble_nll": float(nll(log_ens, labels, log=True)),
        "ensemble_ece": float(expected_calibration_error(log_ens.exp(), labels)),
        "ensemble_brier": float(brier(log_ens.exp(), labels)),
        "member_accuracy_mean": float(accuracy(log_probs, labels).mean()),
        "member_nll_mean": float(nll(log_probs, labels, log=True).mean()),
        "member_ece_mean": float(expected_calibration_error(probs, labels).mean()),
    }


def corrupted_log_probs(ensemble: Ensemble, images: np.ndarray, corruption: str,
                        severity: int, *, batch_size: int = BATCH_SIZE,
                        device: str | None = None) -> torch.Tensor:
    """Member log-probabilities [N, n, C] of ``ensemble`` on uint8 ``images`` [n, C, H, W]
    corrupted by ``corruption`` at ``severity`` (chunk k with seed k)."""
    parts = []
    for index, start in enumerate(range(0, len(images), CHUNK)):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + CHUNK])).float() / 255
        shifted = corrupt(chunk, corruption, severity, seed=index)
        parts.append(member_log_probs(ensemble, shifted, batch_size=batch_size, device=device))
    return torch.cat(parts, dim=1)


def row(corruption: str, severity: int, log_probs: torch.Tensor,
        labels: torch.Tensor) -> dict[str, Any]:
    """One row of shift.csv."""
    return {"corruption": corruption, "severity": severity, "images": int(labels.numel()),
            **row_metrics(log_probs, labels)}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a shift.csv (numbers parsed); [] when there is none or it is not one."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        return []
    rows = []
    for item in reader:
        rows.append({key: item[key] if key == "corruption" else
                     int(item[key]) if key in ("severity", "images") else float(item[key])
                     for key in COLUMNS})
    return rows


def _order(entry: dict[str, Any]) -> tuple[int, str, int]:
    names = CORRUPTIONS.ordered()
    name = entry["corruption"]
    rank = -1 if name == CLEAN else names.index(name) if name in names else len(names)
    return rank, name, entry["severity"]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace shift.csv by ``rows`` (clean first, then the registry's order), atomically."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for entry in sorted(rows, key=_order):
        writer.writerow([entry[key] if not isinstance(entry[key], float) else repr(entry[key])
                         for key in COLUMNS])
    rundir.atomic_write_text(path, out.getvalue())


def shift_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """summary.json's shift/ keys: means over every corrupted row (and severity 5's)."""
    shifted = [r for r in rows if r["corruption"] != CLEAN]
    if not shifted:
        return {}
    strong = [r for r in shifted if r["severity"] == 5]

    def mean(items: list[dict[str, Any]], key: str) -> float:
        return float(np.mean([r[key] for r in items]))

    out = {"shift/accuracy_mean": mean(shifted, "ensemble_accuracy"),
           "shift/nll_mean": mean(shifted, "ensemble_nll"),
           "shift/ece_mean": mean(shifted, "ensemble_ece"),
           "shift/member_accuracy_mean": mean(shifted, "member_accuracy_mean")}
    if strong:
        out["shift/accuracy_s5"] = mean(strong, "ensemble_accuracy")
        out["shift/ece_s5"] = mean(strong, "ensemble_ece")
    return out

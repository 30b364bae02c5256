"""Temperature scaling and selective prediction of a run: ``calibration.json``.

Temperatures are fitted on the run's validation split (:mod:`colearning.metrics.temperature`:
one for the ensemble's ``log p_ens``, one per member) and applied to its test split; the
test metrics before and after (suffix ``_ts``). Selective prediction ranks the test images
by the ensemble's max probability (uncalibrated): AURC, the accuracy of the most confident
90% and 95%, and the risk-coverage curve subsampled to at most :data:`CURVE_POINTS` points.
Without a validation split the temperature entries are null and ``note`` says why.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from colearning.metrics import (
    accuracy_at_coverage,
    apply_temperature,
    aurc,
    brier,
    expected_calibration_error,
    fit_temperature,
    fit_temperatures,
    nll,
    risk_coverage,
)

CURVE_POINTS = 200  # at most this many points of the risk-coverage curve for the figure
NO_VALIDATION = ("temperature scaling skipped: the run has no validation split (train with "
                 "data.val_size > 0)")


def _ensemble(log_probs: torch.Tensor) -> torch.Tensor:
    """log p_ens [n, C] of the mean combiner from member log-probabilities [N, n, C]."""
    return torch.logsumexp(log_probs, 0) - math.log(log_probs.shape[0])


def _test_metrics(log_probs: torch.Tensor, labels: torch.Tensor, suffix: str) -> dict[str, float]:
    log_ens = _ensemble(log_probs)
    return {
        f"test/ensemble_nll{suffix}": float(nll(log_ens, labels, log=True)),
        f"test/ensemble_ece{suffix}": float(expected_calibration_error(log_ens.exp(), labels)),
        f"test/ensemble_brier{suffix}": float(brier(log_ens.exp(), labels)),
        f"test/member_nll_mean{suffix}": float(nll(log_probs, labels, log=True).mean()),
        f"test/member_ece_mean{suffix}": float(
            expected_calibration_error(log_probs.exp(), labels).mean()),
    }


def calibration(test_log_probs: torch.Tensor, test_labels: torch.Tensor,
                val_log_probs: torch.Tensor | None = None,
                val_labels: torch.Tensor | None = None) -> dict[str, Any]:
    """calibration.json's content from member log-probabilities [N, n, C] of the test split
    and (None: no validation split) of the validation split, with their labels [n]."""
    out: dict[str, Any] = {"temperature_ensemble": None, "temperature_members": None}
    out.update(_test_metrics(test_log_probs, test_labels, ""))
    if val_log_probs is None or val_labels is None:
        out["note"] = NO_VALIDATION
        out.update({f"{key}_ts": None for key in _test_metrics(
            test_log_probs[:, :1], test_labels[:1], "")})
    else:
        t_ensemble = fit_temperature(_ensemble(val_log_probs), val_labels)
        t_members = fit_temperatures(val_log_probs, val_labels)
        # each member at its own temperature; the ensemble's entries are then replaced by
        # those of log p_ens at the ensemble's temperature
        scaled = _test_metrics(apply_temperature(test_log_probs, t_members), test_labels, "_ts")
        log_ens_ts = apply_temperature(_ensemble(test_log_probs), t_ensemble)
        scaled["test/ensemble_nll_ts"] = float(nll(log_ens_ts, test_labels, log=True))
        scaled["test/ensemble_ece_ts"] = float(expected_calibration_error(log_ens_ts.exp(),
                                                                          test_labels))
        scaled["test/ensemble_brier_ts"] = float(brier(log_ens_ts.exp(), test_labels))
        out.update(temperature_ensemble=t_ensemble, temperature_members=t_members.tolist(),
                   **scaled)
    log_ens = _ensemble(test_log_probs)
    confidence = log_ens.exp().amax(-1)
    correct = log_ens.argmax(-1) == test_labels
    coverage, risk = risk_coverage(confidence, correct)
    keep = np.unique(np.linspace(0, len(coverage) - 1, min(len(coverage), CURVE_POINTS))
                     .round().astype(int))
    out.update({
        "selective/aurc": aurc(confidence, correct),
        "selective/accuracy_at_90": accuracy_at_coverage(confidence, correct, 0.9),
        "selective/accuracy_at_95": accuracy_at_coverage(confidence, correct, 0.95),
        "risk_coverage": {"coverage": coverage[keep].tolist(), "risk": risk[keep].tolist()},
    })
    return out


def calibration_summary(content: dict[str, Any]) -> dict[str, float]:
    """summary.json's keys of a calibration.json: ``calibration/<name>`` for the temperature
    and test entries (``test/`` dropped), ``selective/...`` as they are; nulls left out."""
    out = {}
    for key, value in content.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if key.startswith("selective/"):
            out[key] = value
        else:
            out["calibration/" + key.removeprefix("test/")] = value
    return out

"""Metrics for co-learning ensembles; member axis first (``probs [N, B, C]``), nats.

Families: :mod:`.divergence` (KL/JS, Eq. 5 distance matrices), :mod:`.classification`
(accuracy, votes, entropy, disagreement), :mod:`.calibration` (NLL, Brier, ECE),
:mod:`.statistics` (Spearman, rescued samples, epoch-to-epoch change) and
:mod:`.embedding` (MDS of distance matrices and aligned trajectories),
:mod:`.reliability` (reliability-diagram bins), :mod:`.trajectory` (per-epoch
distances from saved metrics), :mod:`.ood` (out-of-distribution scores and AUROC/AUPR/FPR95),
:mod:`.temperature` (temperature scaling) and :mod:`.selective` (risk-coverage, AURC).
"""

from __future__ import annotations

from .calibration import brier, expected_calibration_error, nll
from .classification import accuracy, disagreement, entropy, true_class_prob, votes_correct
from .divergence import (
    js_divergence,
    js_matrix,
    js_matrix_with_ensemble,
    js_mean,
    kl_divergence,
    kl_to_target,
)
from .ood import ood_metrics, ood_scores
from .reliability import ReliabilityBins, reliability_bins
from .selective import accuracy_at_coverage, aurc, risk_coverage
from .statistics import accuracy_change, rescued_count, spearman
from .temperature import apply_temperature, fit_temperature, fit_temperatures

# The embedding (MDS: scikit-learn, scipy) is for reports only: imported on first use, so a
# training run does not pay for its imports (docs/performance.md).
_LAZY = {name: "embedding" for name in ("align_to", "embedding_distance_correlation",
                                         "mds_embed", "mds_trajectory")}
_LAZY.update({name: "trajectory" for name in ("distance_matrix_with_ensemble",
                                              "distance_to_others",
                                              "trajectory_distance_correlation")})


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "kl_divergence",
    "js_divergence",
    "js_matrix",
    "js_mean",
    "js_matrix_with_ensemble",
    "kl_to_target",
    "accuracy",
    "true_class_prob",
    "votes_correct",
    "entropy",
    "disagreement",
    "nll",
    "brier",
    "expected_calibration_error",
    "spearman",
    "rescued_count",
    "accuracy_change",
    "mds_embed",
    "align_to",
    "mds_trajectory",
    "embedding_distance_correlation",
    "reliability_bins",
    "ReliabilityBins",
    "distance_to_others",
    "distance_matrix_with_ensemble",
    "trajectory_distance_correlation",
    "ood_scores",
    "ood_metrics",
    "fit_temperature",
    "fit_temperatures",
    "apply_temperature",
    "risk_coverage",
    "aurc",
    "accuracy_at_coverage",
]

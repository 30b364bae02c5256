"""The scaling analysis against synthetic tables with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from colearning.sweep import analysis

SIZES = [2, 3, 5, 10, 20, 50]
BETAS = sorted({-1.0 / n for n in SIZES} | {-0.8, -0.03, -0.01, 0.0, 0.1})


def synthetic_summary(optimum=lambda n: -1.0 / n):
    """Mean ensemble accuracy peaked exactly at beta = optimum(N), 0.6 at beta = 0."""
    rows = []
    for n in SIZES:
        for beta in BETAS:
            acc = 0.6 + 0.02 * math.log(n) - 0.05 * abs(beta - optimum(n)) \
                + (0.05 * abs(optimum(n)) if beta != 0 else 0.0)
            rows.append({"kl": "batchmean", "N": n, "beta": beta, "beta_bar": beta * n,
                         "n_cells": 5, "n_finished": 5,
                         "test/ensemble_accuracy_mean:mean": acc,
                         "test/ensemble_accuracy_mean:std": 0.01})
    return rows


def test_optimal_beta_and_loglog_fit_recover_minus_one_over_n():
    best = analysis.optimal_beta(synthetic_summary(), facets=["kl"])
    assert [b["N"] for b in best] == SIZES
    assert [b["beta"] for b in best] == pytest.approx([-1.0 / n for n in SIZES])
    assert all(b["kl"] == "batchmean" and b["gain"] > 0 for b in best)
    fit = analysis.loglog_fit([b["N"] for b in best], [b["beta"] for b in best])
    assert fit["slope"] == pytest.approx(-1.0, abs=1e-12)
    assert fit["intercept"] == pytest.approx(0.0, abs=1e-12)
    assert fit["slope_se"] < 1e-10 and fit["intercept_se"] < 1e-10 and fit["points"] == 6


def test_optimal_beta_needs_every_cell_finished_unless_allowed():
    summary = [
        {"N": 2, "beta": 0.0, "beta_bar": 0.0, "n_cells": 3, "n_finished": 3,
         "test/ensemble_accuracy_mean:mean": 0.60},
        # the best mean, but from the one seed of three that did not diverge
        {"N": 2, "beta": -0.4, "beta_bar": -0.8, "n_cells": 3, "n_finished": 1,
         "test/ensemble_accuracy_mean:mean": 0.66},
        {"N": 2, "beta": -0.1, "beta_bar": -0.2, "n_cells": 3, "n_finished": 3,
         "test/ensemble_accuracy_mean:mean": 0.62},
    ]
    (best,) = analysis.optimal_beta(summary)
    assert best["beta"] == -0.1 and best["excluded"] == [-0.4]
    assert (best["n_finished"], best["n_cells"]) == (3, 3)
    (loose,) = analysis.optimal_beta(summary, allow_incomplete=True)
    assert loose["beta"] == -0.4 and loose["excluded"] == []


def test_optimal_beta_is_chosen_on_validation_and_reported_on_test():
    summary = [
        {"N": 2, "beta": 0.0, "beta_bar": 0.0, "n_cells": 2, "n_finished": 2,
         "test/ensemble_accuracy_mean:mean": 0.60, "val/ensemble_accuracy_mean:mean": 0.59},
        {"N": 2, "beta": -0.2, "beta_bar": -0.4, "n_cells": 2, "n_finished": 2,
         "test/ensemble_accuracy_mean:mean": 0.65, "val/ensemble_accuracy_mean:mean": 0.60},
        {"N": 2, "beta": -0.1, "beta_bar": -0.2, "n_cells": 2, "n_finished": 2,
         "test/ensemble_accuracy_mean:mean": 0.62, "val/ensemble_accuracy_mean:mean": 0.63},
    ]
    (best,) = analysis.optimal_beta(summary)
    assert best["selected_on"] == "val" and best["beta"] == -0.1
    assert best["value"] == 0.62 and best["gain"] == pytest.approx(0.02)  # test numbers
    for row in summary:
        del row["val/ensemble_accuracy_mean:mean"]
    (on_test,) = analysis.optimal_beta(summary)
    assert on_test["selected_on"] == "test" and on_test["beta"] == -0.2


def test_loglog_fit_power_law_and_known_standard_error():
    n = np.array([2.0, 4.0, 8.0])
    fit = analysis.loglog_fit(n, -0.86 * n ** -0.99)
    assert fit["slope"] == pytest.approx(-0.99) and fit["intercept"] == pytest.approx(
        math.log(0.86))
    # three points off the line by +e, -2e, +e in ln|beta|: hand-computed OLS errors
    e = 0.1
    x = np.log(n)
    y = -x + np.array([e, -2 * e, e])
    fit = analysis.loglog_fit(n, -np.exp(y))
    sxx = np.sum((x - x.mean()) ** 2)
    residual_var = (6 * e ** 2) / (3 - 2)
    assert fit["slope"] == pytest.approx(-1.0)
    assert fit["slope_se"] == pytest.approx(math.sqrt(residual_var / sxx))
    assert analysis.loglog_fit([2, 2], [-0.5, -0.4]) is None


def test_exponential_fit_recovers_parameters():
    n = np.array(SIZES, dtype=float)
    beta = -(0.9 * np.exp(-0.3 * n) + 0.02)
    fit = analysis.exponential_fit(n, beta)
    assert (fit["a"], fit["rate"], fit["c"]) == pytest.approx((0.9, 0.3, 0.02), rel=1e-4)
    assert fit["rmse"] < 1e-8
    assert analysis.exponential_curve(fit, n) == pytest.approx(-beta, rel=1e-4)
    assert analysis.exponential_fit([2, 3, 5], [-0.5, -0.3, -0.2]) is None


def test_gain_over_independent():
    gains = analysis.gain_over_independent(synthetic_summary(), facets=["kl"])
    zero = [g for g in gains if g["beta"] == 0]
    assert all(g["gain"] == pytest.approx(0.0) for g in zero)
    best = [g for g in gains if g["N"] == 2 and g["beta"] == -0.5][0]
    # acc(-0.5) - acc(0) = 0.05 * |opt| - (-0.05 * |0 - opt|) with opt = -0.5
    assert best["gain"] == pytest.approx(0.05 * 0.5 + 0.05 * 0.5)


def cell(seed, beta, acc, n=2):
    return {"status": "finished", "N": n, "beta": beta, "seed": seed,
            "test/ensemble_accuracy_mean": acc}


def test_wilcoxon_paired_by_seed_with_bonferroni():
    independent = [0.60, 0.61, 0.59, 0.62, 0.60, 0.58, 0.61, 0.63]
    # beta=-0.5: better on all 8 seeds by 1..8 points (distinct |d|: ranks 1..8)
    better = [a + 0.01 * (k + 1) for k, a in enumerate(independent)]
    # beta=-1.0: differences +1, -2, +3, -4 points (and 4 seeds missing: unpaired)
    mixed = [a + d for a, d in zip(independent, [0.01, -0.02, 0.03, -0.04], strict=False)]
    rows = [cell(s, 0.0, a) for s, a in enumerate(independent)]
    rows += [cell(s, -0.5, a) for s, a in enumerate(better)]
    rows += [cell(s, -1.0, a) for s, a in enumerate(mixed)]
    rows += [{**cell(9, -1.0, 0.9), "status": "diverged"}]
    tests = {t["beta"]: t for t in analysis.paired_wilcoxon(rows)}
    assert set(tests) == {-0.5, -1.0}
    strong, weak = tests[-0.5], tests[-1.0]
    # paper convention: T+ sums ranks where independent > coupled -> 0 here
    assert (strong["t_plus"], strong["t_minus"], strong["pairs"]) == (0.0, 36.0, 8)
    assert strong["p"] == pytest.approx(2 / 2 ** 8)  # exact two-sided, all signs equal
    assert strong["p_bonferroni"] == pytest.approx(2 * 2 / 2 ** 8) and strong["significant"]
    assert strong["mean_diff"] == pytest.approx(0.045)
    assert strong["beta_bar"] == -1.0
    # d = indep - coupled = -1, +2, -3, +4 points: T+ = 2 + 4, T- = 1 + 3
    assert (weak["t_plus"], weak["t_minus"], weak["pairs"]) == (6.0, 4.0, 4)
    assert weak["p"] == pytest.approx(0.875) and weak["p_bonferroni"] == 1.0
    assert not weak["significant"]


def test_signed_ranks_ties_and_zeros():
    assert analysis.signed_ranks([0.0, 1.0, -1.0, 2.0]) == (4.5, 1.5, 3)
    assert analysis.signed_ranks([0.0]) == (0.0, 0.0, 0)


def test_gain_over_epochs_pairs_by_seed():
    epochs = []
    for seed in (0, 1):
        for epoch in (1, 2, 3):
            epochs.append({"N": 2, "beta": 0.0, "seed": seed, "epoch": epoch,
                           "test/ensemble_accuracy_mean": 0.5 + 0.01 * epoch})
            if not (seed == 1 and epoch == 3):  # seed 1's coupled run stopped early
                epochs.append({"N": 2, "beta": -0.2, "seed": seed, "epoch": epoch,
                               "test/ensemble_accuracy_mean": 0.5 + 0.02 * epoch + 0.01 * seed})
    curves = analysis.gain_over_epochs(epochs)
    curve = curves[(2, -0.2)]
    assert curve["epoch"] == [1, 2, 3] and curve["count"] == [2, 2, 1]
    assert curve["mean"] == pytest.approx([0.015, 0.025, 0.03])
    assert curve["std"][0] == pytest.approx(math.sqrt(0.5) * 0.01) and math.isnan(curve["std"][2])

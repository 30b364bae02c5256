"""colearning.metrics.ood: detection metrics against scikit-learn (ties included) and the
per-sample scores against float64 references."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from colearning.errors import ConfigError
from colearning.metrics import ood, ood_metrics, ood_scores


def sklearn_reference(score_in, score_out):
    labels = np.r_[np.ones(len(score_in)), np.zeros(len(score_out))]
    scores = np.r_[score_in, score_out]
    return {"auroc": roc_auc_score(labels, scores),
            "aupr_in": average_precision_score(labels, scores),
            "aupr_out": average_precision_score(1 - labels, -scores)}


def brute_fpr95(score_in, score_out):
    """The highest threshold keeping >= 95% of in-distribution: out's rate at or above it."""
    keeps = [t for t in np.unique(score_in) if np.mean(score_in >= t) >= 0.95]
    return float(np.mean(score_out >= max(keeps)))


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    n_in, n_out = rng.integers(1, 60, size=2)
    score_in, score_out = rng.normal(1, 1, n_in), rng.normal(0, 1, n_out)
    if seed % 2:  # heavy ties, within and across the two sets
        score_in, score_out = np.round(score_in * 2) / 2, np.round(score_out * 2) / 2
    got = ood_metrics(torch.from_numpy(score_in), score_out)
    for key, want in sklearn_reference(score_in, score_out).items():
        assert got[key] == pytest.approx(want, abs=1e-12), key
    assert got["fpr95"] == brute_fpr95(score_in, score_out)


def test_hand_values():
    perfect = ood_metrics([3.0, 2.0], [1.0, 0.0])
    assert perfect == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    tied = ood_metrics([1.0, 1.0], [1.0, 1.0, 1.0])  # one threshold: everything
    assert tied == pytest.approx({"auroc": 0.5, "aupr_in": 0.4, "aupr_out": 0.6, "fpr95": 1.0})
    # 20 in-distribution scores 0..19: the threshold keeping 19 (95%) is 1
    metrics = ood_metrics(np.arange(20.0), [0.5, 1.0, 1.5, 30.0])
    assert metrics["fpr95"] == 0.75


def test_refusals():
    for bad, match in (([], "non-empty 1-D"), ([[1.0, 2.0]], "non-empty 1-D"),
                       ([1.0, math.nan], "finite"), ([1.0, math.inf], "finite")):
        with pytest.raises(ConfigError, match=match):
            ood_metrics(bad, [1.0])
    with pytest.raises(ConfigError, match="score_out"):
        ood_metrics([1.0], [])


def reference_scores(probs):
    """Plain float64 loops over samples and member pairs."""
    p = np.asarray(probs, dtype=np.float64)
    n, b, _ = p.shape

    def h(q):
        return -sum(x * math.log(x) for x in q if x > 0)

    def js(a, c):
        m = (a + c) / 2
        return (sum(x * math.log(x / y) for x, y in zip(a, m, strict=True) if x > 0)
                + sum(x * math.log(x / y) for x, y in zip(c, m, strict=True) if x > 0)) / 2

    out = {k: [] for k in ("max_probability", "entropy", "mutual_information", "js_spread")}
    for s in range(b):
        ens = p[:, s].mean(0)
        out["max_probability"].append(ens.max())
        out["entropy"].append(-h(ens))
        out["mutual_information"].append(-(h(ens) - np.mean([h(p[i, s]) for i in range(n)])))
        pairs = [js(p[i, s], p[j, s]) for i, j in itertools.combinations(range(n), 2)]
        out["js_spread"].append(-np.mean(pairs) if pairs else 0.0)
    return out


@pytest.mark.parametrize("n_members", [1, 2, 5])
def test_scores_match_float64_loops(n_members):
    gen = torch.Generator().manual_seed(n_members)
    logits = torch.randn(n_members, 7, 4, generator=gen, dtype=torch.float64) * 3
    probs = torch.softmax(logits, -1)
    probs[0, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # exact zeros
    want = reference_scores(probs)
    for log in (False, True):
        got = ood_scores(probs.log() if log else probs, log=log)
        assert set(got) == set(want)
        for key, values in got.items():
            assert values.shape == (7,)
            np.testing.assert_allclose(values.numpy(), want[key], atol=1e-12, err_msg=key)


def test_scores_are_higher_in_distribution():
    confident = torch.tensor([[[0.98, 0.01, 0.01]], [[0.97, 0.02, 0.01]]])
    unsure = torch.tensor([[[0.9, 0.05, 0.05]], [[0.05, 0.9, 0.05]]])
    high, low = ood_scores(confident), ood_scores(unsure)
    for key in high:
        assert float(high[key]) > float(low[key]), key
    with pytest.raises(ConfigError, match=r"\[N, B, C\]"):
        ood_scores(torch.ones(3, 2) / 2)


def test_docstring_examples():
    assert doctest.testmod(ood).failed == 0

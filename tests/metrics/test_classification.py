"""Tests for colearning.metrics.classification on hand-made predictions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from colearning.errors import ConfigError
from colearning.metrics import accuracy, disagreement, entropy, true_class_prob, votes_correct

# N=3 members, B=4 samples, C=3 classes; argmaxes per member:
#   m0: [0, 1, 2, 0]   m1: [0, 2, 2, 1]   m2: [1, 1, 0, 0]      labels: [0, 1, 2, 2]
PROBS = torch.tensor(
    [
        [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0], [0.5, 0.3, 0.2]],
        [[0.6, 0.4, 0.0], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]],
        [[0.3, 0.6, 0.1], [0.0, 1.0, 0.0], [0.9, 0.0, 0.1], [0.4, 0.3, 0.3]],
    ]
)
LABELS = torch.tensor([0, 1, 2, 2])


def test_accuracy_per_member_and_single():
    acc = accuracy(PROBS, LABELS)
    assert acc.shape == (3,)
    assert torch.allclose(acc, torch.tensor([3 / 4, 2 / 4, 1 / 4]))
    single = accuracy(PROBS[1], LABELS)
    assert single.shape == () and float(single) == pytest.approx(0.5)
    assert torch.allclose(accuracy(PROBS[:1], LABELS), torch.tensor([0.75]))  # N=1


def test_true_class_prob_values():
    out = true_class_prob(PROBS, LABELS)
    assert out.shape == (3, 4)
    expected = torch.tensor([[0.7, 0.8, 1.0, 0.2], [0.6, 0.3, 0.8, 0.3], [0.3, 1.0, 0.1, 0.3]])
    assert torch.allclose(out, expected)
    assert torch.allclose(true_class_prob(PROBS[0], LABELS), expected[0])


def test_votes_correct_counts():
    votes = votes_correct(PROBS, LABELS)
    assert votes.dtype == torch.int64
    assert votes.tolist() == [2, 2, 2, 0]
    assert votes_correct(PROBS[:1], LABELS).tolist() == [1, 1, 1, 0]


def test_entropy_hand_values_and_zeros():
    p = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.25, 0.75, 0.0, 0.0]])
    h = entropy(p)
    expected = [math.log(4), 0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    assert h.tolist() == pytest.approx(expected, abs=1e-6)
    assert entropy(PROBS).shape == (3, 4)
    assert torch.isfinite(entropy(PROBS)).all()


def ref_disagreement(preds):
    n = len(preds)
    pairs = list(itertools.combinations(range(n), 2))
    return float(np.mean([np.mean(preds[i] != preds[j]) for i, j in pairs]))


def test_disagreement_hand_made_argmaxes():
    # pairs: (m0,m1) differ on 2/4, (m0,m2) on 2/4, (m1,m2) on 4/4 -> mean 2/3
    assert disagreement(PROBS) == pytest.approx(2 / 3)
    two = torch.eye(2)[torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])]
    assert disagreement(two) == pytest.approx(0.25)
    same = torch.eye(3)[torch.tensor([[0, 1, 2], [0, 1, 2]])]
    assert disagreement(same) == 0.0
    assert disagreement(PROBS[:1]) == 0.0


def test_disagreement_matches_pair_loop_random():
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 4, size=(6, 50))
    probs = torch.eye(4)[torch.tensor(preds)] * 0.7 + 0.075
    assert disagreement(probs) == pytest.approx(ref_disagreement(preds))


@pytest.mark.parametrize(
    "call",
    [
        lambda: accuracy(PROBS, LABELS[:3]),
        lambda: accuracy(PROBS[0, 0], LABELS[:1]),
        lambda: accuracy(PROBS, torch.tensor([0, 1, 2, 3])),
        lambda: true_class_prob(PROBS, LABELS.float()),
        lambda: votes_correct(PROBS[0], LABELS),
        lambda: disagreement(PROBS[0]),
        lambda: entropy(torch.ones(2, 0)),
    ],
)
def test_shape_errors_raise_config_error(call):
    with pytest.raises(ConfigError):
        call()

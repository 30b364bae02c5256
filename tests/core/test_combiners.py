import math

import pytest
import torch

from colearning import ConfigError, combine, ensemble_predict


def test_mean_geometric_vote_by_hand():
    probs = torch.tensor([[[0.9, 0.1]], [[0.2, 0.8]], [[0.6, 0.4]]])
    torch.testing.assert_close(combine(probs, "mean"), torch.tensor([[1.7 / 3, 1.3 / 3]]))
    g0, g1 = (0.9 * 0.2 * 0.6) ** (1 / 3), (0.1 * 0.8 * 0.4) ** (1 / 3)
    torch.testing.assert_close(combine(probs, "geometric"), torch.tensor([[g0, g1]]) / (g0 + g1))
    torch.testing.assert_close(combine(probs, "vote"), torch.tensor([[2 / 3, 1 / 3]]))


def test_vote_ties_go_to_the_higher_mean_probability():
    # Hand-made votes of 2 members on 4 samples (member votes in the comments):
    probs = torch.tensor([
        [[0.1, 0.2, 0.7], [0.1, 0.4, 0.5], [0.5, 0.45, 0.05], [0.6, 0.4, 0.0]],
        [[0.1, 0.8, 0.1], [0.4, 0.45, 0.15], [0.5, 0.45, 0.05], [0.4, 0.6, 0.0]],
    ])
    # sample 0: votes 2 / 1, mean p 0.4 / 0.5 -> 1
    # sample 1: votes 2 / 1, mean p 0.325 / 0.425 -> 1
    # sample 2: both vote 0 -> 0 (no tie)
    # sample 3: votes 0 / 1, mean p 0.5 / 0.5 -> the lowest index, 0
    assert ensemble_predict(probs, "vote").tolist() == [1, 1, 0, 0]
    assert ensemble_predict(probs.log(), "vote", log=True).tolist() == [1, 1, 0, 0]
    # A third member: sample 0 votes 2 / 1 / 0 (a three-way tie, mean p of classes 0 / 1 / 2:
    # 0.33 / 0.37 / 0.30 -> 1), sample 2 votes 0 / 0 / 1: two votes beat class 1's
    # higher mean probability.
    third = torch.tensor([[[0.8, 0.1, 0.1], [0.3, 0.3, 0.4], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]])
    votes3 = torch.cat([probs, third])
    assert ensemble_predict(votes3, "vote").tolist() == [1, 2, 0, 0]
    # the vote fractions themselves are unchanged
    torch.testing.assert_close(combine(votes3, "vote")[1], torch.tensor([0.0, 1 / 3, 2 / 3]))


def test_two_member_disagreement_is_not_decided_by_class_numbering():
    probs = torch.tensor([[[0.55, 0.45]], [[0.05, 0.95]]])  # votes 0 and 1; means 0.3 / 0.7
    assert ensemble_predict(probs, "vote").item() == 1
    assert ensemble_predict(probs.flip(-1), "vote").item() == 0


def test_log_space_combiners_match_and_keep_precision():
    gen = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(40 * torch.randn(4, 50, 6, generator=gen, dtype=torch.float64),
                                  -1)
    for method in ("mean", "geometric", "vote"):
        from_log = combine(log_probs, method, log=True)
        torch.testing.assert_close(from_log.exp(), combine(log_probs.exp(), method))
        assert torch.equal(ensemble_predict(log_probs, method, log=True),
                           ensemble_predict(log_probs.exp(), method))
    # members certain to 1e-30 of the wrong class: the mean's log-probability is exact
    lp = torch.tensor([[[0.0, -70.0]], [[0.0, -80.0]]], dtype=torch.float64)
    got = combine(lp, "mean", log=True)[0, 1].item()
    assert got == pytest.approx(math.log((math.exp(-70) + math.exp(-80)) / 2), rel=1e-12)


def test_geometric_with_zero_is_finite():
    probs = torch.tensor([[[1.0, 0.0]], [[0.5, 0.5]]])
    out = combine(probs, "geometric")
    assert torch.isfinite(out).all() and out[0, 0] > 0.99
    assert math.isclose(out.sum().item(), 1.0, rel_tol=1e-6)


def test_unknown_and_bad_shape():
    with pytest.raises(ConfigError, match="valid: geometric, mean, vote"):
        combine(torch.rand(2, 3, 4), "median")
    with pytest.raises(ConfigError, match=r"\[N, B, C\]"):
        combine(torch.rand(3, 4))

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


def test_vote_tie_goes_to_lowest_class():
    probs = torch.tensor([[[0.1, 0.2, 0.7]], [[0.1, 0.8, 0.1]]])  # votes: class 2, class 1
    assert ensemble_predict(probs, "vote").item() == 1


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

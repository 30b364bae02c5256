"""Tests for colearning.metrics.trajectory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colearning.errors import ConfigError
from colearning.metrics import (
    distance_matrix_with_ensemble,
    distance_to_others,
    js_matrix_with_ensemble,
    trajectory_distance_correlation,
)


def test_distance_to_others_hand_values():
    d = np.array([[0.0, 0.2, 0.4], [0.2, 0.0, 0.6], [0.4, 0.6, 0.0]])
    # row means over the two other members: (0.2+0.4)/2, (0.2+0.6)/2, (0.4+0.6)/2
    np.testing.assert_allclose(distance_to_others(d), [0.3, 0.4, 0.5])
    np.testing.assert_allclose(distance_to_others(torch.tensor([[0.0, 0.7], [0.7, 0.0]])),
                               [0.7, 0.7])


def test_distance_to_others_needs_two_members_and_a_square_matrix():
    with pytest.raises(ConfigError):
        distance_to_others([[0.0]])
    with pytest.raises(ConfigError):
        distance_to_others([[0.0, 1.0, 2.0]])


def test_distance_matrix_with_ensemble_layout():
    out = distance_matrix_with_ensemble([[0.0, 0.4], [0.4, 0.0]], [0.1, 0.2])
    np.testing.assert_array_equal(out, [[0.0, 0.4, 0.1], [0.4, 0.0, 0.2], [0.1, 0.2, 0.0]])


def test_distance_matrix_with_ensemble_matches_the_direct_computation():
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]],
                          [[0.2, 0.6, 0.2], [0.3, 0.3, 0.4]],
                          [[0.5, 0.25, 0.25], [0.05, 0.05, 0.9]]], dtype=torch.float64)
    direct = js_matrix_with_ensemble(probs).numpy()  # [N+1, N+1], ensemble last
    rebuilt = distance_matrix_with_ensemble(direct[:3, :3], direct[:3, 3])
    np.testing.assert_allclose(rebuilt, direct, atol=1e-12)


def test_distance_matrix_with_ensemble_shape_errors():
    with pytest.raises(ConfigError):
        distance_matrix_with_ensemble([[0.0, 0.4], [0.4, 0.0]], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError):
        distance_matrix_with_ensemble([[0.0, 0.4], [0.4, 0.0]], [0.1, float("nan")])


def test_trajectory_distance_correlation_pools_epochs():
    # Epoch 0: 3 points on a line at 0, 1, 3 -> distances (1, 3, 2); the given d doubles
    # them, epoch 1 matches exactly: embedded distances are an affine map of d -> r = 1.
    x0 = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    x = np.stack([x0, 2 * x0])
    e0 = np.linalg.norm(x0[:, None] - x0[None], axis=-1)
    d = np.stack([e0, 2 * e0])
    r, p = trajectory_distance_correlation(d, x)
    assert r == pytest.approx(1.0) and p < 0.01


def test_trajectory_distance_correlation_hand_value():
    # T=4 epochs of M=2 points: given d = [1, 2, 3, 4], embedded = [1, 3, 2, 4].
    d = np.array([[[0, v], [v, 0]] for v in (1.0, 2.0, 3.0, 4.0)])
    x = np.array([[[0.0, 0.0], [v, 0.0]] for v in (1.0, 3.0, 2.0, 4.0)])
    # Pearson of (1,2,3,4) and (1,3,2,4): deviations (-1.5,-.5,.5,1.5) and (-1.5,.5,-.5,1.5),
    # sum of products 2.25 - 0.25 - 0.25 + 2.25 = 4, sums of squares 5 and 5 -> r = 4/5.
    r, _ = trajectory_distance_correlation(d, x)
    assert r == pytest.approx(0.8)


def test_trajectory_distance_correlation_degenerate_and_errors():
    d = np.zeros((3, 2, 2))
    x = np.zeros((3, 2, 2))
    r, p = trajectory_distance_correlation(d, x)
    assert math.isnan(r) and math.isnan(p)
    with pytest.raises(ConfigError):  # only one pooled distance
        trajectory_distance_correlation(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))
    with pytest.raises(ConfigError):
        trajectory_distance_correlation(np.zeros((3, 2, 2)), np.zeros((3, 3, 2)))

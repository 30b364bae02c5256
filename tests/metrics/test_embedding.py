"""Tests for colearning.metrics.embedding (MDS, Procrustes alignment, correlation)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import colearning.metrics.embedding as embedding_module
from colearning.errors import ConfigError
from colearning.metrics import (
    align_to,
    embedding_distance_correlation,
    js_matrix_with_ensemble,
    mds_embed,
    mds_trajectory,
)


def pairwise(x):
    return np.linalg.norm(x[:, None] - x[None], axis=-1)


def rotation(theta, reflect=False):
    r = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return r @ np.diag([1.0, -1.0]) if reflect else r


POINTS = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [2.0, 1.0], [-1.0, 2.5]])


def test_mds_embed_recovers_planar_distances_without_warnings():
    d = pairwise(POINTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb = mds_embed(d)
    assert emb.shape == (5, 2)
    assert np.allclose(pairwise(emb), d, atol=1e-6)
    assert np.array_equal(emb, mds_embed(torch.tensor(d)))  # deterministic, tensors accepted


def test_mds_embed_degenerate_inputs():
    assert mds_embed(np.zeros((1, 1))).tolist() == [[0.0, 0.0]]
    zeros = mds_embed(np.zeros((4, 4)))
    assert zeros.shape == (4, 2) and np.all(zeros == 0.0)
    two = mds_embed(np.array([[0.0, 0.3], [0.3, 0.0]]))
    assert np.linalg.norm(two[0] - two[1]) == pytest.approx(0.3, abs=1e-3)


@pytest.mark.parametrize(
    "bad",
    [
        np.array([[0.0, 1.0], [2.0, 0.0]]),  # asymmetric
        np.array([[0.0, -1.0], [-1.0, 0.0]]),  # negative
        np.zeros((2, 3)),  # not square
        np.array([[0.0, np.nan], [np.nan, 0.0]]),  # non-finite
    ],
)
def test_mds_embed_rejects_bad_matrices(bad):
    with pytest.raises(ConfigError):
        mds_embed(bad)


def test_align_to_undoes_rotation_reflection_translation():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 2))
    for reflect in (False, True):
        moved = ref @ rotation(1.1, reflect).T + np.array([3.0, -2.0])
        assert not np.allclose(moved, ref)
        assert np.allclose(align_to(ref, moved), ref, atol=1e-10)


def test_align_to_does_not_scale():
    ref = POINTS - POINTS.mean(0)
    scaled = 2.0 * ref @ rotation(0.4).T
    aligned = align_to(ref, scaled)
    assert np.allclose(aligned, 2.0 * ref, atol=1e-10)  # rotation undone, scale kept
    with pytest.raises(ConfigError):
        align_to(ref, ref[:3])


def test_mds_trajectory_undoes_per_frame_rotations(monkeypatch):
    # Fake per-epoch embeddings: a slowly drifting layout, each frame with its own arbitrary
    # rotation/reflection/shift. The trajectory must remove them up to one global transform.
    rng = np.random.default_rng(1)
    drift = rng.normal(scale=0.01, size=(4, 5, 2)).cumsum(0)
    truth = POINTS + drift
    frames = [
        truth[t] @ rotation(a, reflect=bool(t % 2)).T + rng.normal(size=2)
        for t, a in enumerate([0.3, 2.0, -1.2, 2.8])
    ]
    calls = iter(frames)
    monkeypatch.setattr(embedding_module, "mds_embed", lambda d, **kwargs: next(calls))
    traj = mds_trajectory(np.zeros((4, 5, 5)))
    assert traj.shape == (4, 5, 2)
    one_fit = align_to(truth.reshape(-1, 2), traj.reshape(-1, 2)).reshape(traj.shape)
    assert np.abs(one_fit - truth).max() < 0.05
    raw = np.stack(frames)  # the unaligned frames cannot be explained by one transform
    raw_fit = align_to(truth.reshape(-1, 2), raw.reshape(-1, 2)).reshape(raw.shape)
    assert np.abs(raw_fit - truth).max() > 1.0


def test_mds_trajectory_real_frames_faithful_and_aligned():
    truth = np.stack([POINTS * np.array([1.0 + 0.1 * t, 1.0 - 0.05 * t]) for t in range(3)])
    ds = np.stack([pairwise(x) for x in truth])
    traj = mds_trajectory(torch.tensor(ds), seed=0)
    assert traj.shape == (3, 5, 2)
    for t in range(3):
        assert np.allclose(pairwise(traj[t]), ds[t], atol=1e-5)  # each frame is faithful
        if t:  # already optimally aligned to the previous frame: re-aligning is a no-op
            assert np.allclose(align_to(traj[t - 1], traj[t]), traj[t], atol=1e-8)
            assert np.abs(traj[t] - traj[t - 1]).max() < 0.6  # small steps, no flips


def test_mds_trajectory_shape_errors():
    with pytest.raises(ConfigError):
        mds_trajectory(np.zeros((3, 3)))
    with pytest.raises(ConfigError):
        mds_trajectory(np.zeros((2, 3, 4)))


def test_embedding_distance_correlation():
    d = pairwise(POINTS)
    r, p = embedding_distance_correlation(d, POINTS)
    assert r == pytest.approx(1.0, abs=1e-12) and p < 1e-6
    r_mds, _ = embedding_distance_correlation(d, mds_embed(d))
    assert r_mds > 0.999
    shuffled = POINTS[[2, 0, 4, 1, 3]]
    r_bad, _ = embedding_distance_correlation(d, shuffled)
    assert r_bad < 0.9
    r_nan, p_nan = embedding_distance_correlation(np.ones((3, 3)) - np.eye(3), POINTS[:3])
    assert math.isnan(r_nan) and math.isnan(p_nan)
    with pytest.raises(ConfigError):
        embedding_distance_correlation(d[:2, :2], POINTS[:2])
    with pytest.raises(ConfigError):
        embedding_distance_correlation(d, POINTS[:4])


def test_js_matrix_to_mds_pipeline():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(4, 30, 5, generator=gen), -1)
    d = js_matrix_with_ensemble(probs)
    emb = mds_embed(d)
    assert emb.shape == (5, 2) and np.all(np.isfinite(emb))
    r, _ = embedding_distance_correlation(d, emb)
    assert r > 0.5

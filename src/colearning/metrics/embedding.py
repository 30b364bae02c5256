"""MDS embeddings of functional-distance matrices (paper Fig. 4b).

Distances are typically :func:`colearning.metrics.js_matrix_with_ensemble` outputs
(nats). Results are numpy ``float64`` arrays; inputs may be tensors or arrays.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import pdist
from sklearn.manifold import MDS

from colearning.errors import ConfigError

from ._checks import correlation, shape_str, square_matrix, to_numpy

__all__ = ["mds_embed", "align_to", "mds_trajectory", "embedding_distance_correlation"]

_MAX_ITER = 1000  # SMACOF iterations per start
_EPS = 1e-9  # SMACOF relative-stress tolerance (sklearn's 1e-6 stops ~0.2% short)


def _mds(n_components: int, seed: int, n_init: int) -> MDS:
    """A metric, precomputed-dissimilarity MDS for the installed scikit-learn version."""
    params = inspect.signature(MDS.__init__).parameters
    kwargs: dict[str, Any] = {
        "n_components": n_components,
        "n_init": n_init,
        "random_state": seed,
        "n_jobs": 1,
        "max_iter": _MAX_ITER,
        "eps": _EPS,
    }
    if "metric_mds" in params:  # scikit-learn >= 1.8: `metric` names the dissimilarity
        kwargs.update(metric_mds=True, metric="precomputed")
    else:  # scikit-learn < 1.8: `metric` is the metric/non-metric switch
        kwargs.update(metric=True, dissimilarity="precomputed")
    if "init" in params:  # >= 1.8 warns unless told; random starts make n_init meaningful
        kwargs["init"] = "random"
    if "normalized_stress" in params:  # 1.2/1.3 warn unless told
        kwargs["normalized_stress"] = "auto"
    return MDS(**kwargs)


def _classical_mds(d: np.ndarray, n_components: int) -> np.ndarray:
    """Torgerson classical MDS ``[M, M] -> [M, n_components]`` (exact for Euclidean d)."""
    m = d.shape[0]
    j = np.eye(m) - 1.0 / m
    b = -0.5 * j @ (d**2) @ j
    w, v = np.linalg.eigh(b)
    order = np.argsort(w)[::-1][:n_components]
    x = v[:, order] * np.sqrt(np.clip(w[order], 0.0, None))
    if x.shape[1] < n_components:  # more components than points
        x = np.pad(x, ((0, 0), (0, n_components - x.shape[1])))
    return x


def _distance_matrix(distance_matrix: Any) -> np.ndarray:
    d = square_matrix(distance_matrix, "distance_matrix")
    if (d < 0).any():
        raise ConfigError("distance_matrix must be non-negative")
    if not np.allclose(d, d.T, rtol=1e-5, atol=1e-8):
        raise ConfigError("distance_matrix must be symmetric")
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    return d


def mds_embed(
    distance_matrix: Any, n_components: int = 2, seed: int = 0, *, n_init: int = 4
) -> np.ndarray:
    """Metric (stress/SMACOF) MDS of a distance matrix: ``[M, M] -> [M, n_components]``.

    Uses :class:`sklearn.manifold.MDS` (metric SMACOF, precomputed dissimilarities)
    from a classical (Torgerson) MDS start and from ``n_init`` random starts with
    ``random_state=seed``; the lowest-stress layout is kept, so the result is
    deterministic and exact for Euclidean distance matrices. The matrix must be
    symmetric, finite and non-negative. Degenerate inputs (``M = 1`` or all distances
    0) give all-zero coordinates. The layout is centred at the origin and defined only
    up to rotation/reflection (see :func:`align_to`).

    >>> import numpy as np
    >>> d = np.array([[0.0, 3.0, 4.0], [3.0, 0.0, 5.0], [4.0, 5.0, 0.0]])  # 3-4-5 triangle
    >>> x = mds_embed(d)
    >>> x.shape
    (3, 2)
    >>> round(float(np.linalg.norm(x[1] - x[2])), 2)
    5.0
    """
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ConfigError(f"n_components must be a positive int, got {n_components!r}")
    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1:
        raise ConfigError(f"n_init must be a positive int, got {n_init!r}")
    d = _distance_matrix(distance_matrix)
    m = d.shape[0]
    scale = float(d.max())
    if m == 1 or scale <= 0.0:
        return np.zeros((m, n_components))
    # SMACOF on a unit-scale matrix, then scale back: tiny JS distances stay well conditioned.
    d = d / scale
    classical = _mds(n_components, seed, 1)
    best = classical.fit_transform(d, init=_classical_mds(d, n_components))
    best_stress = classical.stress_
    randomized = _mds(n_components, seed, n_init)
    emb = randomized.fit_transform(d)
    if randomized.stress_ < best_stress:
        best = emb
    best = np.asarray(best, dtype=np.float64)
    return (best - best.mean(0)) * scale


def align_to(reference: Any, points: Any) -> np.ndarray:
    """Rigidly align ``points [M, k]`` onto ``reference [M, k]`` -> ``[M, k]``.

    Orthogonal Procrustes: translation plus rotation/reflection (no scaling) minimizing
    ``sum_m ||R (points_m - mean(points)) + mean(reference) - reference_m||^2``
    (:func:`scipy.linalg.orthogonal_procrustes`).

    >>> import numpy as np
    >>> ref = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> flipped = ref * np.array([-1.0, 1.0]) + 5.0  # reflected and shifted copy
    >>> bool(np.allclose(align_to(ref, flipped), ref))
    True
    """
    ref = to_numpy(reference, "reference")
    pts = to_numpy(points, "points")
    if ref.ndim != 2 or ref.shape != pts.shape or ref.shape[0] == 0:
        raise ConfigError(
            f"reference and points must both have shape [M, k], got {shape_str(ref)} "
            f"and {shape_str(pts)}"
        )
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(pts))):
        raise ConfigError("reference and points must be finite")
    ref_mean = ref.mean(0)
    pts_mean = pts.mean(0)
    rot, _ = orthogonal_procrustes(pts - pts_mean, ref - ref_mean)
    return (pts - pts_mean) @ rot + ref_mean


def mds_trajectory(
    distance_matrices: Any, seed: int = 0, *, n_components: int = 2, n_init: int = 4
) -> np.ndarray:
    """MDS per epoch, aligned into continuous trajectories: ``[T, M, M] -> [T, M, 2]``.

    Each epoch is embedded with :func:`mds_embed` (same ``seed``), then rigidly aligned
    to the previous epoch's aligned embedding with :func:`align_to`, so a point's path
    over epochs has no arbitrary flips/rotations between frames (paper Fig. 4b).

    >>> import numpy as np
    >>> d = np.array([[0.0, 3.0, 4.0], [3.0, 0.0, 5.0], [4.0, 5.0, 0.0]])
    >>> traj = mds_trajectory(np.stack([d, d]))
    >>> traj.shape
    (2, 3, 2)
    >>> bool(np.allclose(traj[0], traj[1], atol=1e-3))  # identical epochs stay in place
    True
    """
    if isinstance(distance_matrices, (list, tuple)):
        distance_matrices = np.stack([to_numpy(d, "distance_matrices") for d in distance_matrices])
    ds = to_numpy(distance_matrices, "distance_matrices")
    if ds.ndim != 3 or ds.shape[1] != ds.shape[2] or ds.shape[0] == 0 or ds.shape[1] == 0:
        raise ConfigError(f"distance_matrices must have shape [T, M, M], got {shape_str(ds)}")
    out = np.empty((ds.shape[0], ds.shape[1], n_components))
    for t in range(ds.shape[0]):
        emb = mds_embed(ds[t], n_components=n_components, seed=seed, n_init=n_init)
        out[t] = emb if t == 0 else align_to(out[t - 1], emb)
    return out


def embedding_distance_correlation(distance_matrix: Any, embedding: Any) -> tuple[float, float]:
    """Pearson correlation between distances and embedded distances: ``[M, M]``,
    ``[M, k]`` -> ``(r, p)`` floats (paper Fig. 4b caption).

    Compares the upper-triangle entries ``d[i, j], i < j`` with the Euclidean distances
    ``||x_i - x_j||`` of the embedding. Needs ``M >= 3``; returns ``(nan, nan)`` if
    either set of distances is constant (correlation undefined).

    >>> import numpy as np
    >>> pts = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
    >>> d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    >>> r, p = embedding_distance_correlation(d, pts)
    >>> round(r, 6)
    1.0
    """
    d = square_matrix(distance_matrix, "distance_matrix")
    emb = to_numpy(embedding, "embedding")
    m = d.shape[0]
    if emb.ndim != 2 or emb.shape[0] != m:
        raise ConfigError(f"embedding must have shape [M, k] with M = {m}, got {shape_str(emb)}")
    if m < 3:
        raise ConfigError(f"embedding_distance_correlation needs M >= 3 points, got {m}")
    if not np.all(np.isfinite(emb)):
        raise ConfigError("embedding must be finite")
    iu = np.triu_indices(m, k=1)
    a = d[iu]
    b = pdist(emb)  # same (i < j, row-major) order as triu_indices
    return correlation(a, b, "pearson")

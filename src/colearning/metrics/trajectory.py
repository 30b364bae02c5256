"""Functional-space trajectories over epochs from saved distances (paper Fig. 2b, Fig. 4b).

Inputs are the per-epoch distances a run records (``test/js_matrix`` ``[N, N]`` and
``test/js_to_ensemble`` ``[N]``, nats); outputs are numpy ``float64`` arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from colearning.errors import ConfigError

from ._checks import correlation, shape_str, square_matrix, to_numpy

__all__ = ["distance_to_others", "distance_matrix_with_ensemble", "trajectory_distance_correlation"]


def distance_to_others(distance_matrix: Any) -> np.ndarray:
    """Mean distance of each member to the other members: ``[N, N] -> [N]``.

    ``out[i] = mean_{j != i} d[i, j]``; for ``N = 2`` both entries are ``d(n_1, n_2)``,
    the y-axis of paper Fig. 2b. Needs ``N >= 2``.

    >>> d = np.array([[0.0, 0.2, 0.4], [0.2, 0.0, 0.6], [0.4, 0.6, 0.0]])
    >>> distance_to_others(d).round(4).tolist()
    [0.3, 0.4, 0.5]
    """
    d = square_matrix(distance_matrix, "distance_matrix", layout="[N, N]")
    n = d.shape[0]
    if n < 2:
        raise ConfigError("distance_to_others needs N >= 2 members")
    return (d.sum(1) - np.diag(d)) / (n - 1)


def distance_matrix_with_ensemble(member_distances: Any, to_ensemble: Any) -> np.ndarray:
    """Members' distance matrix plus the ensemble as the last point:
    ``[N, N]``, ``[N]`` -> ``[N + 1, N + 1]`` (the input of the MDS of paper Fig. 4b).

    Rows/cols ``0..N-1`` are ``member_distances``; row/col ``N`` is ``to_ensemble``
    (distance of each member to the ensemble), with a zero diagonal. Same layout as
    :func:`colearning.metrics.js_matrix_with_ensemble`, rebuilt from saved numbers.

    >>> distance_matrix_with_ensemble([[0.0, 0.4], [0.4, 0.0]], [0.1, 0.2]).tolist()
    [[0.0, 0.4, 0.1], [0.4, 0.0, 0.2], [0.1, 0.2, 0.0]]
    """
    d = square_matrix(member_distances, "member_distances", layout="[N, N]")
    e = to_numpy(to_ensemble, "to_ensemble")
    n = d.shape[0]
    if e.shape != (n,):
        raise ConfigError(f"to_ensemble must have shape [N] = ({n},), got {shape_str(e)}")
    if not np.all(np.isfinite(e)):
        raise ConfigError("to_ensemble must be finite")
    out = np.zeros((n + 1, n + 1))
    out[:n, :n] = d
    out[:n, n] = e
    out[n, :n] = e
    return out


def trajectory_distance_correlation(distance_matrices: Any, trajectory: Any) -> tuple[float, float]:
    """Pearson r between distances and embedded distances, pooled over epochs:
    ``[T, M, M]``, ``[T, M, k]`` -> ``(r, p)`` floats (paper Fig. 4b caption).

    Pools the pairs ``i < j`` of every epoch, comparing ``d[t, i, j]`` with
    ``||x[t, i] - x[t, j]||``. Needs at least 3 pooled pairs (e.g. ``M >= 3`` or
    ``T >= 3``); ``(nan, nan)`` when either set of distances is constant.

    >>> x = np.array([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [2.0, 0.0]],
    ...               [[0.0, 0.0], [3.0, 0.0]]])  # T=3 epochs, M=2 points
    >>> d = np.array([[[0, 1], [1, 0]], [[0, 2], [2, 0]], [[0, 3], [3, 0]]])
    >>> round(trajectory_distance_correlation(d, x)[0], 6)
    1.0
    """
    d = to_numpy(distance_matrices, "distance_matrices")
    x = to_numpy(trajectory, "trajectory")
    if d.ndim != 3 or d.shape[1] != d.shape[2]:
        raise ConfigError(f"distance_matrices must have shape [T, M, M], got {shape_str(d)}")
    if x.ndim != 3 or x.shape[:2] != d.shape[:2]:
        raise ConfigError(
            f"trajectory must have shape [T, M, k] = ({d.shape[0]}, {d.shape[1]}, k), "
            f"got {shape_str(x)}"
        )
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(x))):
        raise ConfigError("distance_matrices and trajectory must be finite")
    iu = np.triu_indices(d.shape[1], k=1)
    given = d[:, iu[0], iu[1]].ravel()
    embedded = np.linalg.norm(x[:, iu[0]] - x[:, iu[1]], axis=-1).ravel()
    if given.size < 3:
        raise ConfigError(f"need at least 3 pooled distances, got {given.size}")
    return correlation(given, embedded, "pearson")

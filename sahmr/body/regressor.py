"""Convex joint regressors: joints as convex combinations of mesh vertices.

A joint regressor ``W`` of shape (J, V) maps vertices (V, 3) to joints ``W @ vertices``
(J, 3). SMPL-style regressors are *convex*: every row is non-negative and sums to one, so a
regressed joint always lies inside the convex hull of the vertices it uses and moves with
them under any affine deformation of the mesh.

`fit_convex_regressor` fits such rows to target joint positions by non-negative least
squares (NNLS) over a sparse support of candidate vertices, with the sum-to-one constraint
enforced by a heavily weighted extra equation and then made exact by renormalisation.

All coordinates are in metres; the computation runs in float64.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy.optimize import nnls

logger = logging.getLogger(__name__)

#: Weight of the sum-to-one equation relative to the coordinate equations (unitless).
#: Coordinates are metres, so a weight of 1e3 makes a 1e-3 violation of the constraint
#: cost as much as a 1 m coordinate residual.
SUM_TO_ONE_WEIGHT = 1.0e3


def _fit_row(
    cand_vertices: np.ndarray, target: np.ndarray, ridge: float
) -> np.ndarray:
    """Solves one convex row by NNLS.

    Minimises ``|cand_vertices.T @ w - target|^2 + ridge * |w|^2`` subject to ``w >= 0``
    and ``sum(w) = 1`` (the latter as a weighted equation, then renormalised).

    Args:
        cand_vertices: Array of shape (K, 3), candidate vertex positions in metres.
        target: Array of shape (3,), the target joint position in metres.
        ridge: Non-negative ridge weight (m^2) pulling the weights towards uniform.

    Returns:
        Array of shape (K,), non-negative weights summing to one.
    """
    k = cand_vertices.shape[0]
    rows = [cand_vertices.T, np.full((1, k), SUM_TO_ONE_WEIGHT)]
    rhs = [target, np.array([SUM_TO_ONE_WEIGHT])]
    if ridge > 0.0:
        rows.append(np.sqrt(ridge) * np.eye(k))
        rhs.append(np.zeros(k))
    a = np.concatenate(rows, axis=0)
    b = np.concatenate(rhs, axis=0)
    w, _ = nnls(a, b, maxiter=50 * max(k, 10))
    total = w.sum()
    if total <= 0.0:  # cannot happen with a positive sum-to-one row, kept as a guard
        nearest = np.argmin(np.linalg.norm(cand_vertices - target, axis=1))
        w = np.zeros(k)
        w[nearest] = 1.0
        return w
    return w / total


def fit_convex_regressor(
    vertices: np.ndarray,
    targets: np.ndarray,
    candidates: Sequence[np.ndarray] | None = None,
    k: int = 32,
    ridge: float = 0.0,
) -> np.ndarray:
    """Fits a sparse convex regressor reproducing target points from vertices.

    Each row ``j`` of the result is non-negative, sums to one and is non-zero only on its
    support (``candidates[j]``, or the ``k`` vertices nearest to ``targets[j]`` when
    ``candidates`` is None). Within that support, ``weights[j] @ vertices`` is as close to
    ``targets[j]`` as a convex combination can be (exact when the target lies inside the
    convex hull of the support; the nearest hull point otherwise).

    Args:
        vertices: Array of shape (V, 3), vertex positions in metres (any frame).
        targets: Array of shape (J, 3), target points in metres, same frame.
        candidates: Optional sequence of J integer arrays of vertex indices, the allowed
            support of each row.
        k: Support size per row when ``candidates`` is None.
        ridge: Optional non-negative ridge weight in m^2. Zero (default) gives the
            plain NNLS solution (at most 4 vertices per row in general position); a small
            positive value (e.g. 1e-6) spreads the weights over the support at the cost of
            a residual of roughly ``sqrt(ridge)`` metres in the worst case.

    Returns:
        Array of shape (J, V), float64 convex weights.

    Raises:
        ValueError: On mismatched shapes, an empty support or an out-of-range index.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {vertices.shape}")
    if targets.ndim != 2 or targets.shape[1] != 3:
        raise ValueError(f"targets must be (J, 3), got {targets.shape}")
    num_v, num_j = vertices.shape[0], targets.shape[0]
    if candidates is not None and len(candidates) != num_j:
        raise ValueError(f"need {num_j} candidate sets, got {len(candidates)}")
    if ridge < 0.0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")

    weights = np.zeros((num_j, num_v), dtype=np.float64)
    for j in range(num_j):
        if candidates is None:
            dist = np.linalg.norm(vertices - targets[j], axis=1)
            support = np.argsort(dist, kind="stable")[: min(k, num_v)]
        else:
            support = np.unique(np.asarray(candidates[j], dtype=np.int64))
        if support.size == 0:
            raise ValueError(f"row {j} has an empty support")
        if support.min() < 0 or support.max() >= num_v:
            raise ValueError(f"row {j} has a vertex index outside [0, {num_v})")
        weights[j, support] = _fit_row(vertices[support], targets[j], ridge)
    residual = regressor_residual(weights, vertices, targets)
    logger.debug("convex regressor: %d rows, max residual %.3e m", num_j, residual.max())
    return weights


def regressor_residual(
    weights: np.ndarray, vertices: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Distance between regressed and target points.

    Args:
        weights: Array of shape (J, V), regressor rows.
        vertices: Array of shape (V, 3), vertex positions in metres.
        targets: Array of shape (J, 3), target points in metres.

    Returns:
        Array of shape (J,), Euclidean residual per row in metres.
    """
    regressed = np.asarray(weights, dtype=np.float64) @ np.asarray(vertices, dtype=np.float64)
    return np.linalg.norm(regressed - np.asarray(targets, dtype=np.float64), axis=1)

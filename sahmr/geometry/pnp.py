"""Perspective-n-point with a known rotation: the translation placing a body in the camera.

Camera-relative methods (METRO, HMR, SPIN, VIBE) predict a body up to a translation, plus its
2-D projection. With the rotation fixed (their output is already in the camera's orientation),
each 2-D point gives two equations linear in the translation ``t``:

    fx (X + tx) + cx' (Z + tz) = u (Z + tz)   ->   fx tx + (cx - u) tz = u Z - fx X - cx Z
    fy (Y + ty) + cy' (Z + tz) = v (Z + tz)   ->   fy ty + (cy - v) tz = v Z - fy Y - cy Z

which are solved in the (weighted) least-squares sense, in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor


def estimate_translation(
    points3d_rel: Tensor,
    points2d: Tensor,
    K: Tensor,
    weights: Tensor | None = None,
    *,
    min_depth: float = 0.1,
) -> Tensor:
    """Translation ``t`` such that ``project(K, points3d_rel + t)`` best matches ``points2d``.

    Args:
        points3d_rel: Tensor (B, N, 3) points relative to the unknown translation, camera axes,
            metres.
        points2d: Tensor (B, N, 2) their observed projections, pixels of ``K``.
        K: Tensor (B, 3, 3) intrinsics (zero skew).
        weights: Optional Tensor (B, N) non-negative confidence per point.
        min_depth: The solved ``tz`` is clamped to at least this, metres.

    Returns:
        Tensor (B, 3) translation, camera frame, metres (dtype of ``points3d_rel``).
    """
    dtype = points3d_rel.dtype
    X = points3d_rel.double()
    uv = points2d.double()
    Kd = K.double()
    fx, fy = Kd[:, 0, 0, None], Kd[:, 1, 1, None]
    cx, cy = Kd[:, 0, 2, None], Kd[:, 1, 2, None]
    u, v = uv[..., 0], uv[..., 1]
    zeros = torch.zeros_like(u)
    # Rows (B, N, 3) for the u and v equations.
    A_u = torch.stack([fx.expand_as(u), zeros, cx - u], dim=-1)
    A_v = torch.stack([zeros, fy.expand_as(v), cy - v], dim=-1)
    b_u = u * X[..., 2] - fx * X[..., 0] - cx * X[..., 2]
    b_v = v * X[..., 2] - fy * X[..., 1] - cy * X[..., 2]
    A = torch.cat([A_u, A_v], dim=1)  # (B, 2N, 3)
    b = torch.cat([b_u, b_v], dim=1)  # (B, 2N)
    if weights is not None:
        w = weights.double().clamp_min(0).sqrt()
        w = torch.cat([w, w], dim=1)
        A = A * w[..., None]
        b = b * w
    AtA = A.transpose(1, 2) @ A + 1e-9 * torch.eye(3, dtype=A.dtype, device=A.device)
    Atb = (A.transpose(1, 2) @ b[..., None])[..., 0]
    t = torch.linalg.solve(AtA, Atb)
    t = torch.cat([t[:, :2], t[:, 2:].clamp_min(min_depth)], dim=1)
    return t.to(dtype)

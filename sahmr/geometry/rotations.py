"""Rotation representations: axis-angle, rotation matrices, 6D, quaternions (torch, batched).

Conventions:
    * Rotation matrices act on column vectors: ``x' = R @ x``.
    * Axis-angle vectors are ``theta * axis`` (radians), as in SMPL's ``global_orient`` and
      ``body_pose``.
    * Quaternions are ``(w, x, y, z)`` (scalar first; scipy's ``as_quat`` is scalar last).
    * The 6D representation (Zhou et al., "On the Continuity of Rotation Representations in
      Neural Networks", CVPR 2019) is the first two columns of ``R`` concatenated:
      ``[R[:, 0], R[:, 1]]`` (the layout 4D-Humans uses; SPIN interleaves them instead).

Every function takes any leading batch shape and is differentiable; the axis-angle maps use
Taylor expansions near zero so gradients stay finite at the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_SMALL_ANGLE_SQ = 1e-6
"""Squared angle (rad^2) below which the axis-angle maps switch to Taylor series."""


def skew(v: Tensor) -> Tensor:
    """Cross-product matrices ``[v]_x`` with ``[v]_x @ w = v x w``.

    Args:
        v: Tensor of shape (..., 3).

    Returns:
        Tensor of shape (..., 3, 3).
    """
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        [
            torch.stack([zero, -z, y], dim=-1),
            torch.stack([z, zero, -x], dim=-1),
            torch.stack([-y, x, zero], dim=-1),
        ],
        dim=-2,
    )


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula ``R = I + A [r]_x + B [r]_x^2``.

    With ``theta = |r|``: ``A = sin(theta) / theta`` and ``B = (1 - cos(theta)) / theta^2``,
    both replaced by their Taylor series below ``theta^2 = 1e-6`` so the value and gradient are
    exact to float precision at ``r = 0``.

    Args:
        axis_angle: Tensor of shape (..., 3), radians.

    Returns:
        Tensor of shape (..., 3, 3).
    """
    theta_sq = (axis_angle * axis_angle).sum(-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    # Evaluate the closed form only where it is well conditioned (keeps NaNs out of grads).
    theta_sq_safe = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = torch.sqrt(theta_sq_safe)
    a_exact = torch.sin(theta) / theta
    b_exact = (1 - torch.cos(theta)) / theta_sq_safe
    a_taylor = 1 - theta_sq / 6 + theta_sq * theta_sq / 120
    b_taylor = 0.5 - theta_sq / 24 + theta_sq * theta_sq / 720
    a = torch.where(small, a_taylor, a_exact)[..., None, None]
    b = torch.where(small, b_taylor, b_exact)[..., None, None]
    K = skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * K + b * (K @ K)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """Rotation matrices to unit quaternions (Shepperd's method, ``w >= 0``).

    Each of the four algebraically equivalent formulas divides by a different component; the
    one with the largest component is used, which keeps the result accurate for every angle,
    including rotations by pi.

    Args:
        R: Tensor of shape (..., 3, 3), proper rotations.

    Returns:
        Tensor of shape (..., 4), ``(w, x, y, z)`` with ``w >= 0``.
    """
    m = R
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * squared components: 1 + trace, 1 + m00 - m11 - m22, ...
    four_sq = torch.stack(
        [
            1 + m00 + m11 + m22,
            1 + m00 - m11 - m22,
            1 - m00 + m11 - m22,
            1 - m00 - m11 + m22,
        ],
        dim=-1,
    )
    # Clamp to a tiny positive value so unused candidates never produce inf/NaN gradients.
    q_abs = torch.sqrt(four_sq.clamp_min(1e-12))  # (..., 4) = 2 * |q_i|
    d21 = m[..., 2, 1] - m[..., 1, 2]
    d02 = m[..., 0, 2] - m[..., 2, 0]
    d10 = m[..., 1, 0] - m[..., 0, 1]
    s21 = m[..., 2, 1] + m[..., 1, 2]
    s02 = m[..., 0, 2] + m[..., 2, 0]
    s10 = m[..., 1, 0] + m[..., 0, 1]
    # Row i: the quaternion (times 2 * |q_i|) computed by dividing by component i.
    cand = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, d21, d02, d10], dim=-1),
            torch.stack([d21, q_abs[..., 1] ** 2, s10, s02], dim=-1),
            torch.stack([d02, s10, q_abs[..., 2] ** 2, s21], dim=-1),
            torch.stack([d10, s02, s21, q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )
    cand = cand / (2 * q_abs[..., :, None])
    best = q_abs.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(quaternion: Tensor) -> Tensor:
    """Quaternions ``(w, x, y, z)`` (normalised here) to rotation matrices.

    Args:
        quaternion: Tensor of shape (..., 4).

    Returns:
        Tensor of shape (..., 3, 3).
    """
    w, x, y, z = F.normalize(quaternion, dim=-1).unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        dim=-2,
    )


def quaternion_to_axis_angle(quaternion: Tensor) -> Tensor:
    """Unit quaternions ``(w, x, y, z)`` to axis-angle vectors with angle in ``[0, pi]``.

    ``theta = 2 atan2(|v|, w)`` after flipping to ``w >= 0``; near zero the factor
    ``theta / |v|`` uses its series ``2 / w * (1 - |v|^2 / (3 w^2))``.

    Args:
        quaternion: Tensor of shape (..., 4), need not be normalised.

    Returns:
        Tensor of shape (..., 3), radians.
    """
    q = F.normalize(quaternion, dim=-1)
    q = torch.where(q[..., :1] < 0, -q, q)
    w = q[..., 0]
    v = q[..., 1:]
    s_sq = (v * v).sum(-1)
    small = s_sq < _SMALL_ANGLE_SQ
    s_safe = torch.sqrt(torch.where(small, torch.ones_like(s_sq), s_sq))
    factor_exact = 2 * torch.atan2(s_safe, w) / s_safe
    factor_taylor = 2 / w * (1 - s_sq / (3 * w * w))
    factor = torch.where(small, factor_taylor, factor_exact)
    return v * factor[..., None]


def axis_angle_to_quaternion(axis_angle: Tensor) -> Tensor:
    """Axis-angle vectors to unit quaternions ``(w, x, y, z)``.

    Args:
        axis_angle: Tensor of shape (..., 3), radians.

    Returns:
        Tensor of shape (..., 4).
    """
    theta_sq = (axis_angle * axis_angle).sum(-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    half_sinc_exact = torch.sin(theta / 2) / theta
    half_sinc_taylor = 0.5 - theta_sq / 48
    half_sinc = torch.where(small, half_sinc_taylor, half_sinc_exact)
    w = torch.where(small, 1 - theta_sq / 8, torch.cos(theta / 2))
    return torch.cat([w[..., None], axis_angle * half_sinc[..., None]], dim=-1)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """Rotation matrices to axis-angle vectors (angle in ``[0, pi]``).

    Goes through :func:`matrix_to_quaternion`, which stays accurate near 0 and near pi
    (where the ``acos((trace - 1) / 2)`` route loses the axis).

    Args:
        R: Tensor of shape (..., 3, 3).

    Returns:
        Tensor of shape (..., 3), radians.
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def rot6d_to_matrix(rot6d: Tensor) -> Tensor:
    """6D representations to rotation matrices by Gram-Schmidt.

    ``b1 = normalise(a1)``, ``b2 = normalise(a2 - (b1 . a2) b1)``, ``b3 = b1 x b2``;
    ``R = [b1 b2 b3]`` (columns).

    Args:
        rot6d: Tensor of shape (..., 6), ``[a1 (3), a2 (3)]``, the two first columns.

    Returns:
        Tensor of shape (..., 3, 3), proper rotations.
    """
    a1 = rot6d[..., 0:3]
    a2 = rot6d[..., 3:6]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(R: Tensor) -> Tensor:
    """Rotation matrices to the 6D representation (first two columns).

    Args:
        R: Tensor of shape (..., 3, 3).

    Returns:
        Tensor of shape (..., 6), ``[R[:, 0], R[:, 1]]``.
    """
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def axis_angle_to_rot6d(axis_angle: Tensor) -> Tensor:
    """Axis-angle (..., 3) radians to 6D (..., 6)."""
    return matrix_to_rot6d(axis_angle_to_matrix(axis_angle))


def rot6d_to_axis_angle(rot6d: Tensor) -> Tensor:
    """6D (..., 6) to axis-angle (..., 3) radians."""
    return matrix_to_axis_angle(rot6d_to_matrix(rot6d))


def geodesic_angle(R1: Tensor, R2: Tensor) -> Tensor:
    """Angle of the relative rotation ``R1^T R2``.

    Args:
        R1: Tensor of shape (..., 3, 3).
        R2: Tensor of shape (..., 3, 3).

    Returns:
        Tensor of shape (...), radians in ``[0, pi]``.
    """
    return matrix_to_axis_angle(R1.transpose(-1, -2) @ R2).norm(dim=-1)

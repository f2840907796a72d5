"""Pinhole cameras in the OpenCV convention (x right, y down, z forward).

``T_w2c`` is a 4x4 matrix mapping world points to the camera frame; ``K`` is the 3x3
intrinsic matrix in pixels. All functions are batched over leading dimensions and
differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor


def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """Apply a rigid (or any affine) 4x4 transform to points.

    Args:
        T: Tensor of shape (..., 4, 4), e.g. ``T_w2c``.
        points: Tensor of shape (..., N, 3) in the source frame.

    Returns:
        Tensor of shape (..., N, 3) in the target frame.
    """
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    return points @ R.transpose(-1, -2) + t.unsqueeze(-2)


def invert_rigid(T: Tensor) -> Tensor:
    """Invert rigid 4x4 transforms without a general matrix inverse.

    Args:
        T: Tensor of shape (..., 4, 4) with an orthonormal rotation block.

    Returns:
        Tensor of shape (..., 4, 4), the inverse transform.
    """
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    R_inv = R.transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = R_inv
    out[..., :3, 3:] = -R_inv @ t
    out[..., 3, 3] = 1
    return out


def project(K: Tensor, points_cam: Tensor, eps: float = 1e-8) -> Tensor:
    """Project camera-frame points to pixels.

    Args:
        K: Tensor of shape (..., 3, 3), intrinsics in pixels.
        points_cam: Tensor of shape (..., N, 3), metres, camera frame (z forward).
        eps: lower clamp on depth to avoid division by zero for points on the image plane.

    Returns:
        Tensor of shape (..., N, 2), pixel coordinates (u right, v down).
    """
    z = points_cam[..., 2:3].clamp_min(eps)
    xy = points_cam[..., :2] / z
    fx = K[..., 0, 0].unsqueeze(-1)
    fy = K[..., 1, 1].unsqueeze(-1)
    cx = K[..., 0, 2].unsqueeze(-1)
    cy = K[..., 1, 2].unsqueeze(-1)
    skew = K[..., 0, 1].unsqueeze(-1)
    u = fx * xy[..., 0] + skew * xy[..., 1] + cx
    v = fy * xy[..., 1] + cy
    return torch.stack([u, v], dim=-1)


def unproject(K: Tensor, pixels: Tensor, depth: Tensor) -> Tensor:
    """Lift pixels with known depth (camera z, metres) to camera-frame points.

    Args:
        K: Tensor of shape (..., 3, 3).
        pixels: Tensor of shape (..., N, 2).
        depth: Tensor of shape (..., N), the z coordinate in metres.

    Returns:
        Tensor of shape (..., N, 3) in the camera frame.
    """
    fx = K[..., 0, 0].unsqueeze(-1)
    fy = K[..., 1, 1].unsqueeze(-1)
    cx = K[..., 0, 2].unsqueeze(-1)
    cy = K[..., 1, 2].unsqueeze(-1)
    skew = K[..., 0, 1].unsqueeze(-1)
    y = (pixels[..., 1] - cy) / fy
    x = (pixels[..., 0] - cx - skew * y) / fx
    return torch.stack([x * depth, y * depth, depth], dim=-1)

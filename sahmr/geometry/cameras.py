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


def make_K(
    fx: Tensor | float,
    fy: Tensor | float,
    cx: Tensor | float,
    cy: Tensor | float,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Build pinhole intrinsic matrices from focal lengths and principal points.

    Args:
        fx: Focal length along x in pixels; a float or a Tensor of shape (...).
        fy: Focal length along y in pixels; same shape rules as ``fx``.
        cx: Principal point x in pixels (OpenCV: pixel centres at integer coordinates).
        cy: Principal point y in pixels.
        dtype: Output dtype; defaults to the dtype of the first tensor argument or float32.
        device: Output device; defaults to the device of the first tensor argument.

    Returns:
        Tensor of shape (..., 3, 3) (``(3, 3)`` when all arguments are floats), zero skew.
    """
    ref = next((v for v in (fx, fy, cx, cy) if isinstance(v, Tensor)), None)
    if dtype is None:
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    if device is None:
        device = ref.device if ref is not None else None
    fx_t, fy_t, cx_t, cy_t = (
        torch.as_tensor(v, dtype=dtype, device=device) for v in (fx, fy, cx, cy)
    )
    fx_t, fy_t, cx_t, cy_t = torch.broadcast_tensors(fx_t, fy_t, cx_t, cy_t)
    zero = torch.zeros_like(fx_t)
    one = torch.ones_like(fx_t)
    rows = [
        torch.stack([fx_t, zero, cx_t], dim=-1),
        torch.stack([zero, fy_t, cy_t], dim=-1),
        torch.stack([zero, zero, one], dim=-1),
    ]
    return torch.stack(rows, dim=-2)


def make_K_from_fov(
    fov_x_deg: Tensor | float,
    width: int,
    height: int,
    *,
    fov_y_deg: Tensor | float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Build intrinsics from a field of view and an image size (square pixels by default).

    The principal point is the image centre ``((W - 1) / 2, (H - 1) / 2)`` in the OpenCV
    convention (pixel centres at integer coordinates); the focal length is
    ``f = (W / 2) / tan(fov_x / 2)``.

    Args:
        fov_x_deg: Horizontal field of view in degrees, float or Tensor of shape (...).
        width: Image width W in pixels.
        height: Image height H in pixels.
        fov_y_deg: Optional vertical field of view in degrees; when omitted ``fy = fx``.
        dtype: Output dtype (default float32 or the tensor's dtype).
        device: Output device.

    Returns:
        Tensor of shape (..., 3, 3).
    """
    if dtype is None:
        dtype = fov_x_deg.dtype if isinstance(fov_x_deg, Tensor) else torch.float32
    fov_x = torch.deg2rad(torch.as_tensor(fov_x_deg, dtype=dtype, device=device))
    fx = (width / 2.0) / torch.tan(fov_x / 2.0)
    if fov_y_deg is None:
        fy = fx
    else:
        fov_y = torch.deg2rad(torch.as_tensor(fov_y_deg, dtype=dtype, device=device))
        fy = (height / 2.0) / torch.tan(fov_y / 2.0)
    cx = torch.full_like(fx, (width - 1) / 2.0)
    cy = torch.full_like(fx, (height - 1) / 2.0)
    return make_K(fx, fy, cx, cy)


def make_rigid(R: Tensor, t: Tensor) -> Tensor:
    """Assemble 4x4 rigid transforms from rotations and translations.

    Args:
        R: Tensor of shape (..., 3, 3).
        t: Tensor of shape (..., 3).

    Returns:
        Tensor of shape (..., 4, 4) with last row ``[0, 0, 0, 1]``.
    """
    batch = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    T = torch.zeros(*batch, 4, 4, dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1
    return T


def T_c2w_from_w2c(T_w2c: Tensor) -> Tensor:
    """Camera-to-world transforms from world-to-camera ones (rigid inverse).

    Args:
        T_w2c: Tensor of shape (..., 4, 4), OpenCV camera convention.

    Returns:
        Tensor of shape (..., 4, 4) mapping camera-frame points to the world frame.
    """
    return invert_rigid(T_w2c)


def world_to_camera(T_w2c: Tensor, points_world: Tensor) -> Tensor:
    """Map world-frame points to the camera frame.

    Args:
        T_w2c: Tensor of shape (..., 4, 4).
        points_world: Tensor of shape (..., N, 3), metres, world frame.

    Returns:
        Tensor of shape (..., N, 3), metres, camera frame (OpenCV).
    """
    return transform_points(T_w2c, points_world)


def camera_to_world(T_w2c: Tensor, points_cam: Tensor) -> Tensor:
    """Map camera-frame points back to the world frame.

    Args:
        T_w2c: Tensor of shape (..., 4, 4), the world-to-camera transform.
        points_cam: Tensor of shape (..., N, 3), metres, camera frame.

    Returns:
        Tensor of shape (..., N, 3), metres, world frame.
    """
    R = T_w2c[..., :3, :3]
    t = T_w2c[..., :3, 3]
    return (points_cam - t.unsqueeze(-2)) @ R


def camera_center_world(T_w2c: Tensor) -> Tensor:
    """Optical centre of each camera in world coordinates, ``-R^T t``.

    Args:
        T_w2c: Tensor of shape (..., 4, 4).

    Returns:
        Tensor of shape (..., 3), metres, world frame.
    """
    R = T_w2c[..., :3, :3]
    t = T_w2c[..., :3, 3:]
    return (-R.transpose(-1, -2) @ t).squeeze(-1)


def project_world(K: Tensor, T_w2c: Tensor, points_world: Tensor) -> Tensor:
    """Project world-frame points to pixels: ``project(K, T_w2c * X)``.

    Args:
        K: Tensor of shape (..., 3, 3).
        T_w2c: Tensor of shape (..., 4, 4).
        points_world: Tensor of shape (..., N, 3), metres.

    Returns:
        Tensor of shape (..., N, 2), pixels.
    """
    return project(K, world_to_camera(T_w2c, points_world))


# Square-bbox crops live in their own module; re-exported here because a crop is a camera.
from sahmr.geometry.crops import crop_camera, crop_image, square_bbox  # noqa: E402

__all__ = [
    "T_c2w_from_w2c",
    "camera_center_world",
    "camera_to_world",
    "crop_camera",
    "crop_image",
    "invert_rigid",
    "make_K",
    "make_K_from_fov",
    "make_rigid",
    "project",
    "project_world",
    "square_bbox",
    "transform_points",
    "unproject",
    "world_to_camera",
]

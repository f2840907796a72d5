"""Select the scene points inside each frame's bounding-box frustum, and ROI balls.

Frames: scene points are in the world (scan) frame, metres; selected points are returned
in each frame's OpenCV camera frame (x right, y down, z forward). Everything is torch,
batched over B frames, on CPU or CUDA, and chunked so that 2 M points x 32 frames never
materialise a (B, N, 3) tensor at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["FrustumPoints", "frustum_crop", "roi_select"]


@dataclass
class FrustumPoints:
    """Packed per-frame frustum points.

    Attributes:
        points_cam: Tensor of shape (M, 3), camera frame of the frame it belongs to, metres.
        batch_idx: int64 Tensor of shape (M,), frame index in ``0..B-1``; sorted ascending.
        point_idx: int64 Tensor of shape (M,), row of the point in the scene points given.
        batch_size: B.
    """

    points_cam: Tensor
    batch_idx: Tensor
    point_idx: Tensor
    batch_size: int

    def counts(self) -> Tensor:
        """Return the number of points per frame, int64 Tensor of shape (B,)."""
        return torch.bincount(self.batch_idx, minlength=self.batch_size)


def frustum_crop(
    points_world: Tensor,
    K: Tensor,
    T_w2c: Tensor,
    bbox: Tensor,
    near: float = 0.5,
    far: float = 12.5,
    *,
    scene_idx: Tensor | None = None,
    frame_scene: Tensor | None = None,
    chunk_size: int = 2**21,
) -> FrustumPoints:
    """Keep, per frame, the scene points whose projection falls inside the bbox.

    A point is kept for frame b when ``near <= z_cam <= far`` and its projection (u, v)
    satisfies ``x1 <= u <= x2`` and ``y1 <= v <= y2``. All B frustums are tested at once
    as 6 B world-frame half-spaces (one matrix product per chunk of points); only the
    kept points are transformed to their camera frames.

    Args:
        points_world: Tensor of shape (N, 3), world frame, metres.
        K: Tensor of shape (B, 3, 3), intrinsics in pixels.
        T_w2c: Tensor of shape (B, 4, 4), world-to-camera transforms.
        bbox: Tensor of shape (B, 4), ``x1, y1, x2, y2`` in pixels.
        near: nearest camera depth kept, metres.
        far: farthest camera depth kept, metres.
        scene_idx: optional int64 Tensor of shape (N,) for several scenes packed together:
            the scene each point belongs to. Requires ``frame_scene``.
        frame_scene: optional int64 Tensor of shape (B,), the scene of each frame.
        chunk_size: point-frame pairs per step; temporary memory is about
            ``chunk_size * 5`` bytes (float32 distances + bool masks).

    Returns:
        FrustumPoints with points ordered by frame, then by scene-point index.
    """
    if (scene_idx is None) != (frame_scene is None):
        raise ValueError("pass both scene_idx and frame_scene, or neither")
    B = K.shape[0]
    N = points_world.shape[0]
    device = points_world.device
    planes = _frustum_planes_world(K.double(), T_w2c.double(), bbox.double(), near, far)
    planes = planes.to(points_world.dtype).transpose(0, 1)  # (6, B, 4)
    normals = planes[..., :3].transpose(1, 2).contiguous()  # (6, 3, B)
    offsets = planes[..., 3]  # (6, B)
    rows = max(1, chunk_size // max(B, 1))
    batches, idxs = [], []
    for start in range(0, N, rows):
        pts = points_world[start : start + rows]
        inside = (pts @ normals[0] + offsets[0]) >= 0  # (n, B); inside a plane: >= 0
        for k in range(1, 6):
            inside &= (pts @ normals[k] + offsets[k]) >= 0
        if scene_idx is not None:
            inside &= scene_idx[start : start + rows, None] == frame_scene[None, :]
        b, i = torch.nonzero(inside.T, as_tuple=True)
        batches.append(b)
        idxs.append(i + start)
    if not batches:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return FrustumPoints(points_world.new_zeros(0, 3), empty, empty.clone(), B)
    batch_idx = torch.cat(batches)
    point_idx = torch.cat(idxs)
    # Chunks are point ranges in order and each is frame-major: a stable sort by frame
    # gives (frame, point) order.
    batch_idx, order = torch.sort(batch_idx, stable=True)
    point_idx = point_idx[order]
    T = T_w2c.to(points_world.dtype)
    R, t = T[:, :3, :3], T[:, :3, 3]
    pts = points_world[point_idx]
    points_cam = torch.einsum("mij,mj->mi", R[batch_idx], pts) + t[batch_idx]
    return FrustumPoints(points_cam, batch_idx, point_idx, B)


def _frustum_planes_world(
    K: Tensor, T_w2c: Tensor, bbox: Tensor, near: float, far: float
) -> Tensor:
    """The six half-spaces of each bbox frustum as world-frame planes.

    In the camera frame, ``x1 <= u`` with ``u = (fx x + s y) / z + cx`` and ``z > 0`` is the
    linear constraint ``fx x + s y + (cx - x1) z >= 0``; likewise for the other sides and
    ``near <= z <= far``. A camera plane ``n . p_cam + d`` becomes
    ``(R^T n) . p_world + (n . t + d)``.

    Returns:
        Tensor of shape (B, 6, 4): ``[n_world, d]`` per plane, inside where >= 0.
    """
    fx, fy = K[:, 0, 0], K[:, 1, 1]
    cx, cy, s = K[:, 0, 2], K[:, 1, 2], K[:, 0, 1]
    x1, y1, x2, y2 = bbox.unbind(-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    n_cam = torch.stack(
        [
            torch.stack([fx, s, cx - x1], -1),
            torch.stack([-fx, -s, x2 - cx], -1),
            torch.stack([zero, fy, cy - y1], -1),
            torch.stack([zero, -fy, y2 - cy], -1),
            torch.stack([zero, zero, one], -1),
            torch.stack([zero, zero, -one], -1),
        ],
        dim=1,
    )  # (B, 6, 3)
    d_cam = torch.stack([zero, zero, zero, zero, -near * one, far * one], dim=1)  # (B, 6)
    R, t = T_w2c[:, :3, :3], T_w2c[:, :3, 3]
    n_world = n_cam @ R  # rows: R^T n
    d_world = (n_cam * t[:, None, :]).sum(-1) + d_cam
    return torch.cat([n_world, d_world[..., None]], dim=-1)


def roi_select(
    points: Tensor,
    batch_idx: Tensor,
    anchors: Tensor,
    radius: float = 1.25,
) -> Tensor:
    """Mask the points lying within ``radius`` of any anchor of their own frame.

    Args:
        points: Tensor of shape (M, 3), any frame shared with ``anchors`` (e.g. camera).
        batch_idx: int64 Tensor of shape (M,), frame of each point.
        anchors: Tensor of shape (B, A, 3), ROI centres per frame, same frame and units.
        radius: ball radius, metres.

    Returns:
        bool Tensor of shape (M,). Use ``points[mask]``, ``batch_idx[mask]`` for the subset.
    """
    own = anchors.to(points.dtype)[batch_idx]  # (M, A, 3)
    d2 = (points.unsqueeze(1) - own).square().sum(-1)
    return (d2 <= radius * radius).any(dim=1)

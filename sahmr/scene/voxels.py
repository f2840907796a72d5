"""Voxelise packed per-frame points into a spconv sparse tensor (mean-pooled features).

Voxel ``(b, z, y, x)`` of frame b covers ``origin_b + voxel_size * [x, y, z] + [0, s)^3``
in the points' own frame (camera or world, whatever the caller passes), so the point's
x coordinate maps to the last (fastest) coordinate column, as spconv expects
(``[batch, z, y, x]`` int32). Torch only (no open3d), CPU or CUDA.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from sahmr.sparse import SparseConvTensor, sparse_tensor

logger = logging.getLogger(__name__)

__all__ = ["VoxelGrid", "voxelize"]


@dataclass
class VoxelGrid:
    """Occupied voxels of a batch of point sets.

    Attributes:
        tensor: spconv SparseConvTensor holding ``features`` at ``coords``.
        coords: int32 Tensor of shape (K, 4), ``[b, z, y, x]``, unique rows sorted
            lexicographically (b, then z, y, x).
        centres: Tensor of shape (K, 3), voxel centres (x, y, z) in the points' frame, metres.
        features: Tensor of shape (K, C), mean of the features of the points in each voxel.
        point2voxel: int64 Tensor of shape (M,), the voxel row of every input point.
        origin: Tensor of shape (B, 3), corner of voxel (0, 0, 0) per frame, metres.
        voxel_size: edge length, metres.
        spatial_shape: ``[D, H, W]``, grid size along z, y, x.
    """

    tensor: SparseConvTensor
    coords: Tensor
    centres: Tensor
    features: Tensor
    point2voxel: Tensor
    origin: Tensor
    voxel_size: float
    spatial_shape: list[int]

    def voxel_to_points(self, voxel_values: Tensor) -> Tensor:
        """Broadcast per-voxel values back to the points.

        Args:
            voxel_values: Tensor of shape (K, ...).

        Returns:
            Tensor of shape (M, ...), row i = value of the voxel holding point i.
        """
        return voxel_values[self.point2voxel]

    def gather(self, voxel_values: Tensor, point_mask: Tensor | None = None) -> Tensor:
        """Per-point values of their voxels, optionally for a subset of the points.

        Args:
            voxel_values: Tensor of shape (K, ...).
            point_mask: optional bool Tensor of shape (M,).

        Returns:
            Tensor of shape (M', ...).
        """
        idx = self.point2voxel if point_mask is None else self.point2voxel[point_mask]
        return voxel_values[idx]


def voxelize(
    points: Tensor,
    batch_idx: Tensor,
    features: Tensor,
    voxel_size: float = 0.05,
    origin: Tensor | None = None,
    spatial_shape: list[int] | tuple[int, int, int] | None = None,
    batch_size: int | None = None,
) -> VoxelGrid:
    """Group points into voxels and mean-pool their features.

    Args:
        points: Tensor of shape (M, 3), metres, any frame.
        batch_idx: int64 Tensor of shape (M,), frame of each point in ``0..B-1``.
        features: Tensor of shape (M, C).
        voxel_size: voxel edge, metres.
        origin: Tensor of shape (3,) (global) or (B, 3) (per frame), corner of voxel
            (0, 0, 0). None: the per-frame minimum of the points.
        spatial_shape: ``[D, H, W]`` grid size (z, y, x). None: the tightest shape holding
            every voxel. Points falling outside a given shape raise a ValueError (crop
            first, e.g. with :func:`sahmr.scene.frustum.roi_select`).
        batch_size: B; default ``batch_idx.max() + 1``.

    Returns:
        VoxelGrid.
    """
    if points.shape[0] != batch_idx.shape[0] or points.shape[0] != features.shape[0]:
        raise ValueError("points, batch_idx and features must have the same length M")
    device = points.device
    batch_idx = batch_idx.long()
    B = int(batch_size) if batch_size is not None else int(batch_idx.max().item()) + 1 if (
        batch_idx.numel()
    ) else 1
    if origin is None:
        origin = points.new_zeros(B, 3)
        if points.shape[0]:
            big = torch.finfo(points.dtype).max
            origin = torch.full((B, 3), big, dtype=points.dtype, device=device)
            origin = origin.scatter_reduce(
                0, batch_idx[:, None].expand(-1, 3), points, reduce="amin", include_self=True
            )
            origin = torch.where(origin == big, torch.zeros_like(origin), origin)
    else:
        origin = origin.to(device=device, dtype=points.dtype)
        origin = origin.expand(B, 3) if origin.ndim == 1 else origin
    ijk = torch.floor((points - origin[batch_idx]) / voxel_size).long()  # (M, 3) x, y, z
    if points.shape[0] and (ijk < 0).any():
        raise ValueError("points lie below the given origin")
    if spatial_shape is None:
        upper = ijk.max(0).values + 1 if points.shape[0] else ijk.new_ones(3)
        spatial_shape = [int(upper[2]), int(upper[1]), int(upper[0])]
    else:
        spatial_shape = [int(s) for s in spatial_shape]
        limit = torch.tensor(spatial_shape[::-1], device=device)
        if (ijk >= limit).any():
            raise ValueError(f"points fall outside spatial_shape {spatial_shape}")
    D, H, W = spatial_shape
    key = ((batch_idx * D + ijk[:, 2]) * H + ijk[:, 1]) * W + ijk[:, 0]
    ukey, point2voxel = torch.unique(key, sorted=True, return_inverse=True)
    K = ukey.shape[0]
    x = ukey % W
    y = (ukey // W) % H
    z = (ukey // (W * H)) % D
    b = ukey // (W * H * D)
    coords = torch.stack([b, z, y, x], dim=1).to(torch.int32).contiguous()
    counts = torch.bincount(point2voxel, minlength=K).clamp_min(1).to(features.dtype)
    pooled = features.new_zeros(K, features.shape[1]).index_add_(0, point2voxel, features)
    pooled = pooled / counts[:, None]
    centres = origin[b] + (torch.stack([x, y, z], 1).to(points.dtype) + 0.5) * voxel_size
    tensor = sparse_tensor(pooled, coords, spatial_shape, B)
    return VoxelGrid(
        tensor=tensor,
        coords=coords,
        centres=centres,
        features=pooled,
        point2voxel=point2voxel,
        origin=origin,
        voxel_size=float(voxel_size),
        spatial_shape=spatial_shape,
    )

"""The room SDF the contact placer works on: built from the room mesh, read by trilinear
lookups with an analytic gradient (faster than ``grid_sample`` + autograd on the CPU)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import Tensor

from sahmr.scene.sdf import SDFGrid, build_sdf_grid
from sahmr.synth.rooms import Room

logger = logging.getLogger(__name__)


def trilinear_sdf(
    points: Tensor, grid: Tensor, origin: Tensor, voxel: float
) -> tuple[Tensor, Tensor]:
    """Trilinear SDF value and its analytic gradient within the cell.

    Same values as :meth:`SDFGrid.sample` (clamped to the grid, plus the distance to the
    grid outside it). The eight corner values are gathered once and interpolated axis by
    axis with fused multiply-adds; the gradient reuses the same differences.

    Args:
        points: Tensor of shape (..., 3), world frame, metres.
        grid: (D, H, W) SDF values (``SDFGrid.values``), metres.
        origin: (3,) world position of node (0, 0, 0).
        voxel: node spacing, metres.

    Returns:
        ``(sdf (...), grad (..., 3))``, metres and metres per metre; the gradient ignores
        the outside-the-grid term.
    """
    D, H, W = grid.shape
    lead = points.shape[:-1]
    q = (points.reshape(-1, 3) - origin) / voxel
    hi = torch.tensor([W - 1.0001, H - 1.0001, D - 1.0001], dtype=q.dtype, device=q.device)
    qc = torch.minimum(q.clamp_min(0.0), hi)
    i0 = qc.floor()
    f = qc - i0
    i0 = i0.long()
    base = (i0[:, 2] * H + i0[:, 1]) * W + i0[:, 0]
    offs = torch.tensor(
        [0, 1, W, W + 1, H * W, H * W + 1, H * W + W, H * W + W + 1], device=q.device
    )
    c = grid.reshape(-1)[base[:, None] + offs].view(-1, 2, 2, 2)  # (N, z, y, x)
    fx, fy, fz = f.unbind(-1)
    dx = c[..., 1] - c[..., 0]  # (N, z, y)
    cx = torch.addcmul(c[..., 0], dx, fx[:, None, None])
    dy = cx[..., 1] - cx[..., 0]  # (N, z)
    cy = torch.addcmul(cx[..., 0], dy, fy[:, None])
    gz = cy[:, 1] - cy[:, 0]
    d = torch.addcmul(cy[:, 0], gz, fz)
    dxy = torch.addcmul(dx[..., 0], dx[..., 1] - dx[..., 0], fy[:, None])  # (N, z)
    gx = torch.addcmul(dxy[:, 0], dxy[:, 1] - dxy[:, 0], fz)
    gy = torch.addcmul(dy[:, 0], dy[:, 1] - dy[:, 0], fz)
    grad = torch.stack([gx, gy, gz], dim=-1).div_(voxel)
    outside = (q - qc).norm(dim=-1).mul_(voxel)
    return (d + outside).view(lead), grad.view(*lead, 3)


class SDFLookup(torch.autograd.Function):
    """:func:`trilinear_sdf` as a differentiable op (backward: the analytic cell gradient).

    Several times faster on CPU than ``grid_sample`` + autograd for the refinement's many
    small batches.
    """

    @staticmethod
    def forward(ctx, points: Tensor, grid: Tensor, origin: Tensor, voxel: float) -> Tensor:
        d, grad = trilinear_sdf(points, grid, origin, voxel)
        ctx.save_for_backward(grad)
        return d

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (grad,) = ctx.saved_tensors
        return grad_out[..., None] * grad, None, None, None


def clip_mesh_to_box(mesh, lo: np.ndarray, hi: np.ndarray):
    """Clip a trimesh to an axis-aligned box (faces cut at the box planes).

    Args:
        mesh: trimesh.Trimesh, world frame.
        lo: (3,) box minimum, metres.
        hi: (3,) box maximum, metres.

    Returns:
        trimesh.Trimesh: the part of the mesh inside the box.
    """
    import trimesh
    from trimesh.intersections import slice_faces_plane

    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    for axis in range(3):
        n = np.zeros(3)
        n[axis] = 1.0
        if vertices[:, axis].min() < lo[axis]:
            vertices, faces = slice_faces_plane(vertices, faces, n, lo * n)[:2]
        if vertices[:, axis].max() > hi[axis]:
            vertices, faces = slice_faces_plane(vertices, faces, -n, hi * n)[:2]
    return trimesh.Trimesh(vertices, faces, process=False)


def build_placer_sdf(
    room: Room,
    voxel_size: float = 0.025,
    region_xy: np.ndarray | None = None,
    *,
    backend: str = "auto",
    device: str | torch.device | None = "cpu",
) -> SDFGrid:
    """The SDF grid the :class:`Placer` refines and checks bodies on.

    The room mesh is clipped to 2.4 m height (and to ``region_xy`` +- 1 m when given), and
    the grid built by :func:`sahmr.scene.sdf.build_sdf_grid` with a 20 cm margin.

    Args:
        room: the room (z up, metres).
        voxel_size: grid pitch, metres.
        region_xy: optional (2, 2) ``[[xmin, ymin], [xmax, ymax]]`` (m).
        backend: ``"auto"`` (open3d when it imports, else brute-force torch), ``"open3d"``
            or ``"torch"``.
        device: device of the torch backend (``"cuda"`` on a GPU machine; keep the default
            ``"cpu"`` in forked worker processes, which must not touch CUDA).

    Returns:
        The grid (world frame).
    """
    lo = np.array([-1e3, -1e3, -1.0])
    hi = np.array([1e3, 1e3, 2.4])
    if region_xy is not None:
        lo[:2] = np.asarray(region_xy)[0] - 1.0
        hi[:2] = np.asarray(region_xy)[1] + 1.0
    mesh = clip_mesh_to_box(room.mesh, lo, hi)
    t0 = time.perf_counter()
    sdf = build_sdf_grid(mesh, voxel_size=voxel_size, margin=0.2, backend=backend, device=device)
    logger.info("placer SDF built in %.2f s", time.perf_counter() - t0)
    return sdf

"""The room SDF the contact placer works on: built from the room mesh, read by trilinear
lookups with an analytic gradient (`sahmr.scene.sdf.trilinear_sdf` / `SDFLookup`: faster than
``grid_sample`` + autograd on the CPU)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from sahmr.scene.sdf import SDFGrid, SDFLookup, build_sdf_grid, trilinear_sdf
from sahmr.synth.rooms import Room

logger = logging.getLogger(__name__)

__all__ = ["SDFLookup", "build_placer_sdf", "clip_mesh_to_box", "trilinear_sdf"]


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

    The room mesh is clipped to 2.4 m height (and to ``region_xy`` +- 1 m when given), the
    grid built by :func:`sahmr.scene.sdf.build_sdf_grid` with a 20 cm margin and joined with
    the room's solid ground (`Room.ground`: the floor slab alone is free space 2.5 cm below
    its top).

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
    sdf = sdf.with_solid_ground(room.ground)
    logger.info("placer SDF built in %.2f s", time.perf_counter() - t0)
    return sdf

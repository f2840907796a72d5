"""Scene point clouds: the dataclass the model path consumes, and the one scene-point sampler.

Meshes are turned into points by uniform area sampling (trimesh, two points per
``spacing**2`` of surface), then kept as the first point in each ``spacing`` voxel; point
clouds keep their first point per voxel. Training data, evaluation and the demo use the same
sampler (:func:`sample_scene_points`, :func:`voxel_downsample`), with or without open3d.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import trimesh

logger = logging.getLogger(__name__)

__all__ = [
    "NORMAL_NEIGHBOURS",
    "SCENE_VOXEL_SIZE_M",
    "ScenePoints",
    "estimate_normals",
    "face_towards",
    "sample_scene_points",
    "voxel_downsample",
]

SCENE_VOXEL_SIZE_M = 0.02
"""Pitch (metres) of the scene point clouds the models see: one point per 2 cm voxel, in the
generated rooms, the real datasets' scans and the demo. The only place this number is written."""


@dataclass
class ScenePoints:
    """A point cloud in the scan (world) frame.

    Attributes:
        points: float32 array of shape (N, 3), world frame, metres.
        normals: optional float32 array of shape (N, 3), unit length.
        colors: optional float32 array of shape (N, 3) in [0, 1].
        up_axis: gravity-up axis of the scan frame ('z', '-y', ...).
        voxel_size: pitch the points were down-sampled at (metres), None if raw.
    """

    points: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    up_axis: str = "z"
    voxel_size: float | None = None

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def to_torch(self, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Return the arrays as float32 tensors on ``device`` (keys: points, normals, colors;
        absent arrays are left out)."""
        out = {"points": torch.from_numpy(np.ascontiguousarray(self.points)).to(device)}
        for name in ("normals", "colors"):
            arr = getattr(self, name)
            if arr is not None:
                out[name] = torch.from_numpy(np.ascontiguousarray(arr, np.float32)).to(device)
        return out


def _first_point_per_voxel(points: np.ndarray, spacing: float) -> np.ndarray:
    """Indices (ascending) of the first point in each occupied ``spacing`` voxel."""
    cells = np.floor(points / spacing).astype(np.int64)
    cells -= cells.min(axis=0)
    dims = cells.max(axis=0) + 1
    keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    _, first = np.unique(keys, return_index=True)
    return np.sort(first)


def sample_scene_points(
    mesh: trimesh.Trimesh, spacing: float = SCENE_VOXEL_SIZE_M, seed: int = 0
) -> np.ndarray:
    """Surface points of a mesh, voxel-downsampled to ``spacing`` (one point per voxel).

    The one scene-point sampler: the generator's rooms, the real datasets' scans and the
    demo's scans all go through it (through :func:`voxel_downsample` for the demo).

    Args:
        mesh: ``trimesh.Trimesh``, world frame, metres.
        spacing: Voxel size, metres.
        seed: Seed of the surface sampling.

    Returns:
        (N, 3) float32 points, world frame.
    """
    import trimesh  # lazy: the model path imports this module for ScenePoints

    count = int(min(4e6, max(1000, 2.0 * mesh.area / spacing**2)))
    pts, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return pts[_first_point_per_voxel(pts, spacing)].astype(np.float32)


def voxel_downsample(scene, voxel_size: float = SCENE_VOXEL_SIZE_M) -> ScenePoints:
    """A scan as one point per occupied voxel, the points the models see.

    Args:
        scene: :class:`ScenePoints` or :class:`sahmr.scene.io.SceneMesh` (world frame).
        voxel_size: pitch, metres (default 2 cm).

    Returns:
        ScenePoints without normals or colours: a mesh through :func:`sample_scene_points`
        (the generator's sampler), a point cloud by its first point in each voxel.
    """
    import trimesh

    from sahmr.scene.io import SceneMesh

    if isinstance(scene, SceneMesh):
        mesh = trimesh.Trimesh(scene.vertices, scene.faces, process=False)
        pts = sample_scene_points(mesh, voxel_size)
    else:
        pts = scene.points[_first_point_per_voxel(scene.points, voxel_size)]
    out = ScenePoints(pts.astype(np.float32), up_axis=scene.up_axis, voxel_size=voxel_size)
    logger.info("down-sampled %d -> %d points at %.3f m", len(scene.vertices)
                if isinstance(scene, SceneMesh) else len(scene), len(out), voxel_size)
    return out


NORMAL_NEIGHBOURS = 8
"""Neighbours whose covariance gives a point's normal in `estimate_normals`: at the 2 cm scene
pitch a patch of about 3 cm, which keeps apart two surfaces 5 cm apart (a generated room's
floor slab; with 16 neighbours a quarter of its floor points took a tilted normal)."""


def estimate_normals(
    points: np.ndarray,
    *,
    k: int = NORMAL_NEIGHBOURS,
    towards: np.ndarray | None = None,
    chunk: int = 65536,
) -> np.ndarray:
    """Unit normals of a point cloud: the direction of least spread of each point's ``k``
    nearest neighbours (itself included), principal component analysis in float64.

    Args:
        points: (N, 3) world frame, metres.
        k: Neighbours per point (at least 3; fewer points than ``k``: all of them).
        towards: Optional (3,) world point, e.g. the camera that saw the scan: each normal is
            flipped to face it. Without it the sign is arbitrary.
        chunk: Points per batch of the covariance and eigen decomposition (memory bound).

    Returns:
        (N, 3) float32, unit length (a degenerate patch, e.g. repeated points, gets some unit
        vector).
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    n = len(pts)
    normals = np.zeros((n, 3), np.float64)
    if n == 0:
        return normals.astype(np.float32)
    k = max(3, min(int(k), n))
    _, idx = cKDTree(pts).query(pts, k=k)
    idx = idx.reshape(n, k)
    for start in range(0, n, chunk):
        nb = pts[idx[start:start + chunk]]  # (B, k, 3)
        nb = nb - nb.mean(axis=1, keepdims=True)
        cov = np.einsum("bki,bkj->bij", nb, nb)
        _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
        normals[start:start + chunk] = vecs[:, :, 0]
    if towards is not None:
        normals = face_towards(pts, normals, towards)
    return normals.astype(np.float32)


def face_towards(points: np.ndarray, normals: np.ndarray, towards: np.ndarray) -> np.ndarray:
    """``normals`` (N, 3), each flipped where it points away from the (3,) world point
    ``towards`` (``(towards - point) . normal < 0``), in ``normals``' dtype; a new array."""
    to_eye = np.asarray(towards, np.float64).reshape(1, 3) - np.asarray(points, np.float64)
    flip = (to_eye * normals).sum(1) < 0
    return np.where(flip[:, None], -normals, normals).astype(normals.dtype, copy=False)

"""Scene point clouds: the dataclass the model path consumes, and voxel down-sampling.

Down-sampling uses open3d (imported lazily). Meshes are first turned into points by
uniform area sampling at a density tied to the pitch (``samples_per_voxel`` points per
``voxel_size**2`` of surface), so every occupied surface voxel receives points.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["ScenePoints", "downsample", "sample_mesh_surface"]


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


def sample_mesh_surface(
    mesh, voxel_size: float = 0.02, samples_per_voxel: float = 4.0, seed: int = 0
) -> ScenePoints:
    """Uniformly area-sample a mesh's surface.

    Args:
        mesh: :class:`sahmr.scene.io.SceneMesh`.
        voxel_size: target pitch, metres; sets the density.
        samples_per_voxel: points per ``voxel_size**2`` of area.
        seed: RNG seed.

    Returns:
        ScenePoints with face normals of the sampled triangles (and colours if the mesh has
        vertex colours, interpolated).
    """
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces, np.int64)
    tri = v[f]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    dbl = np.linalg.norm(cross, axis=1)
    area = 0.5 * dbl
    n = max(1, int(np.ceil(area.sum() * samples_per_voxel / voxel_size**2)))
    rng = np.random.default_rng(seed)
    face = rng.choice(len(f), size=n, p=area / area.sum())
    r1 = np.sqrt(rng.random(n))
    r2 = rng.random(n)
    w = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)
    pts = (tri[face] * w[:, :, None]).sum(1)
    normals = cross[face] / dbl[face, None].clip(1e-20)
    colors = None
    if getattr(mesh, "vertex_colors", None) is not None:
        colors = (mesh.vertex_colors[f[face]] * w[:, :, None]).sum(1).astype(np.float32)
    return ScenePoints(
        pts.astype(np.float32), normals.astype(np.float32), colors, up_axis=mesh.up_axis
    )


def downsample(scene, voxel_size: float = 0.02, samples_per_voxel: float = 4.0) -> ScenePoints:
    """Voxel-down-sample a scan to one point per occupied voxel (open3d).

    Args:
        scene: :class:`ScenePoints` or :class:`sahmr.scene.io.SceneMesh`.
        voxel_size: pitch, metres (default 2 cm).
        samples_per_voxel: surface sampling density for meshes (see
            :func:`sample_mesh_surface`).

    Returns:
        ScenePoints (voxel means of points, normals, colours), normals estimated with a
        hybrid KNN/radius search (radius 3 pitches) when the input has none.
    """
    import open3d as o3d  # lazy

    from sahmr.scene.io import SceneMesh

    if isinstance(scene, SceneMesh):
        scene = sample_mesh_surface(scene, voxel_size, samples_per_voxel)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(scene.points.astype(np.float64)))
    if scene.normals is not None:
        pcd.normals = o3d.utility.Vector3dVector(scene.normals.astype(np.float64))
    if scene.colors is not None:
        pcd.colors = o3d.utility.Vector3dVector(scene.colors.astype(np.float64))
    down = pcd.voxel_down_sample(voxel_size)
    if not down.has_normals():
        down.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(3 * voxel_size, 30))
    normals = np.asarray(down.normals, np.float32)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)
    colors = np.asarray(down.colors, np.float32) if down.has_colors() else None
    out = replace(
        scene,
        points=np.asarray(down.points, np.float32),
        normals=normals,
        colors=colors,
        voxel_size=float(voxel_size),
    )
    logger.info("down-sampled %d -> %d points at %.3f m", len(scene), len(out), voxel_size)
    return out

"""Ray casting against triangle meshes: nearest hits, any-hit queries, pixel rays.

One caster per mesh (`MeshRaycaster`): an Embree scene through ``embreex`` built once (a room
or scan once per scene, a posed body once per frame), falling back to trimesh's intersector
when ``embreex`` is missing. Used by the generator's renderer (`sahmr.synth.render_sample`),
the body / scan visibility of real datasets (`sahmr.scene.visibility`) and the scene views
(`sahmr.viz`). Frames: any one frame shared by the mesh and the rays (the callers use the
world frame); pixels follow OpenCV (pixel ``(i, j)`` centred at ``(u, v) = (j, i)``), as
`sahmr.geometry.crops` and `sahmr.geometry.cameras.project`.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import trimesh

logger = logging.getLogger(__name__)


def fast_raycast_available() -> bool:
    """Whether ``embreex`` (Embree) is importable. Without it every cast falls back to trimesh's
    pure-Python tracer, which the generator cannot afford: on the 16-core GPU machine it built
    124 rooms but wrote no shard in 7.5 minutes (run 20, docs/results.md)."""
    import importlib.util

    return importlib.util.find_spec("embreex") is not None


def trimesh_intersector(mesh: trimesh.Trimesh) -> Any:
    """trimesh's ray intersector of a mesh: Embree's when available, else the slow pure one."""
    if trimesh.ray.has_embree:
        from trimesh.ray.ray_pyembree import RayMeshIntersector

        return RayMeshIntersector(mesh)
    logger.warning("embreex is not installed: falling back to trimesh's slow ray tracer")
    from trimesh.ray.ray_triangle import RayMeshIntersector

    return RayMeshIntersector(mesh)


class MeshRaycaster:
    """Nearest-hit and any-hit ray caster over one triangle mesh.

    Uses an Embree scene through ``embreex`` directly (vertices shifted to their minimum
    corner for float32 precision; distances along unit rays come from Embree's ``tfar``),
    falling back to trimesh's intersector when ``embreex`` is missing.

    Args:
        vertices: (N, 3) mesh vertices, metres.
        faces: (F, 3) triangle vertex indices.

    Attributes:
        vertices: (N, 3) float64 vertices as given.
        normals: (F, 3) float64 unit face normals (zero for degenerate faces).
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        vertices = np.asarray(vertices, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)
        tri = vertices[faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(normals, axis=1, keepdims=True)
        self.normals = normals / np.where(norm > 0, norm, 1.0)
        self._normals32 = self.normals.astype(np.float32)
        self.vertices = vertices
        self._origin = vertices.min(axis=0)
        try:
            from embreex import rtcore_scene
            from embreex.mesh_construction import TriangleMesh
        except ImportError:
            self._scene = None
            self._isect = trimesh_intersector(trimesh.Trimesh(vertices, faces, process=False))
        else:
            self._scene = rtcore_scene.EmbreeScene()
            TriangleMesh(
                scene=self._scene,
                vertices=(vertices - self._origin).astype(np.float32),
                indices=faces.astype(np.int32),
            )

    def occluded(self, origin: np.ndarray, dirs: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """Whether each ray hits the mesh within a distance.

        Args:
            origin: (3,) ray origin.
            dirs: (N, 3) unit directions.
            dist: (N,) distances along the rays, metres.

        Returns:
            (N,) bool, True where a hit lies at most ``dist`` away.
        """
        n = len(dirs)
        if self._scene is not None:
            o = np.broadcast_to((origin - self._origin).astype(np.float32), (n, 3))
            d = np.ascontiguousarray(dirs, dtype=np.float32)
            far = np.ascontiguousarray(dist, dtype=np.float32)
            return self._scene.run(np.ascontiguousarray(o), d, dists=far, query="OCCLUDED") >= 0
        _, hit = self.cast(origin, dirs)
        return hit <= dist

    def cast(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest hits of rays from one origin.

        Args:
            origin: (3,) ray origin.
            dirs: (N, 3) unit directions.

        Returns:
            ``(face (N,) int64, -1 on a miss; distance (N,) float64 along the ray, inf on a
            miss)``.
        """
        n = len(dirs)
        if self._scene is not None:
            o = np.broadcast_to((origin - self._origin).astype(np.float32), (n, 3))
            d = np.ascontiguousarray(dirs, dtype=np.float32)
            res = self._scene.run(np.ascontiguousarray(o), d, output=1)
            face = res["primID"].astype(np.int64)
            hit = res["geomID"] >= 0
            face[~hit] = -1
            dist = np.where(hit, res["tfar"].astype(np.float64), np.inf)
            return face, dist
        face = np.full(n, -1, dtype=np.int64)
        dist = np.full(n, np.inf)
        tri, ray, loc = self._isect.intersects_id(
            np.broadcast_to(origin, dirs.shape),
            dirs,
            multiple_hits=False,
            return_locations=True,
        )
        face[ray] = tri
        dist[ray] = np.linalg.norm(loc - origin, axis=1)
        return face, dist


@functools.lru_cache(maxsize=8)
def pixel_grid(width: int, height: int) -> np.ndarray:
    """(H * W, 3) float32 homogeneous pixel centres ``(u, v, 1)``, row-major (read-only)."""
    uu, vv = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    pix = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size, np.float32)], axis=-1)
    pix.flags.writeable = False
    return pix


def pixel_rays(
    K: np.ndarray, T_w2c: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unit rays through pixel centres, OpenCV convention (pixel ``(i, j)`` at ``(u, v) =
    (j, i)``, as `sahmr.geometry.crops` and `sahmr.geometry.cameras.project`).

    Args:
        K: (3, 3) intrinsics, pixels.
        T_w2c: (4, 4) world -> camera.
        width: W, pixels.
        height: H, pixels.

    Returns:
        ``(origin_world (3,) float64, directions_world (H * W, 3) float32)``, row-major
        pixel order.
    """
    R = np.asarray(T_w2c, dtype=np.float64)[:3, :3]
    # one 3x3 product for all pixels: d = R^T K^-1 (u, v, 1), as a row vector pix @ M
    M = (np.linalg.inv(np.asarray(K, dtype=np.float64)).T @ R).astype(np.float32)
    dirs = pixel_grid(width, height) @ M
    dirs *= (1.0 / np.sqrt(np.einsum("ij,ij->i", dirs, dirs)))[:, None]
    return -R.T @ np.asarray(T_w2c, dtype=np.float64)[:3, 3], dirs


def cast_in_projection(
    caster: MeshRaycaster,
    origin: np.ndarray,
    dirs: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hits of a small mesh, casting only the rays inside its projected bounding
    rectangle (+1 px), or every ray when a vertex lies at or behind the camera plane.

    Args:
        caster: The mesh's caster (``vertices`` (N, 3) world).
        origin: (3,) camera centre, world.
        dirs: (H * W, 3) unit pixel rays, world, row-major (`pixel_rays`).
        K: (3, 3) intrinsics, pixels.
        T_w2c: (4, 4) world -> camera.
        width: W, pixels.
        height: H, pixels.

    Returns:
        ``(face (H * W,) int64, -1 on a miss; distance (H * W,) float64, inf on a miss)``.
    """
    face = np.full(len(dirs), -1, dtype=np.int64)
    dist = np.full(len(dirs), np.inf)
    p = caster.vertices @ T_w2c[:3, :3].T + T_w2c[:3, 3]
    if not np.all(p[:, 2] > 1e-6):
        return caster.cast(origin, dirs)
    uv = p[:, :2] / p[:, 2:] @ K[:2, :2].T + K[:2, 2]
    j0, i0 = np.floor(uv.min(axis=0) - 1.0).astype(int)
    j1, i1 = np.ceil(uv.max(axis=0) + 1.0).astype(int)
    j0, i0, j1, i1 = max(j0, 0), max(i0, 0), min(j1, width - 1), min(i1, height - 1)
    if j0 <= j1 and i0 <= i1:
        jj, ii = np.meshgrid(np.arange(j0, j1 + 1), np.arange(i0, i1 + 1))
        sel = (ii * width + jj).ravel()
        face[sel], dist[sel] = caster.cast(origin, dirs[sel])
    return face, dist

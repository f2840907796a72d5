"""Load scanned scenes (meshes or point clouds) in their own frame, in metres.

World = the scan's own frame: nothing is rotated. ``up_axis`` (``'x'``, ``'y'``, ``'z'``,
``'-x'``, ``'-y'``, ``'-z'``) is stored as metadata for whoever needs gravity.
Formats: ``.ply`` (mesh or points), ``.obj``, ``.glb``/``.gltf`` (multi-mesh scenes are
merged with their node transforms applied), ``.npz`` (``points`` [+ ``normals``,
``colors``], read with ``allow_pickle=False``). trimesh reads the mesh formats; open3d is
not needed here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["MAX_EXTENT_M", "MIN_EXTENT_M", "UP_AXES", "SceneMesh", "load_scene"]

UP_AXES = ("x", "y", "z", "-x", "-y", "-z")
MAX_EXTENT_M = 200.0
MIN_EXTENT_M = 0.3


@dataclass
class SceneMesh:
    """A triangle mesh scan.

    Attributes:
        vertices: float32 array of shape (V, 3), world (scan) frame, metres.
        faces: int64 array of shape (F, 3), vertex indices.
        up_axis: gravity-up axis of the scan frame, one of ``UP_AXES``.
        vertex_colors: optional float32 array of shape (V, 3) in [0, 1].
    """

    vertices: np.ndarray
    faces: np.ndarray
    up_axis: str = "z"
    vertex_colors: np.ndarray | None = None


def _check_extent(xyz: np.ndarray, path: Path, scale: float) -> None:
    extent = float((xyz.max(0) - xyz.min(0)).max())
    if extent > MAX_EXTENT_M:
        guess = 0.001 if extent > 1000 * MIN_EXTENT_M else 0.01
        unit = "millimetres" if guess == 0.001 else "centimetres"
        raise ValueError(
            f"{path}: extent {extent:.0f} m (after scale {scale:g}): scan looks like {unit}, "
            f"pass --scale {guess:g}"
        )
    if extent < MIN_EXTENT_M:
        raise ValueError(
            f"{path}: extent {extent:.3g} m (after scale {scale:g}) is too small for a room; "
            "if the scan is not in metres, pass --scale with the factor to metres"
        )


def _validate(xyz: np.ndarray, path: Path, scale: float, what: str) -> None:
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{path}: {what} must have shape (N, 3), got {xyz.shape}")
    if xyz.shape[0] == 0:
        raise ValueError(f"{path}: no {what} in file")
    if not np.isfinite(xyz).all():
        raise ValueError(f"{path}: {what} contain NaN or inf values")
    _check_extent(xyz, path, scale)


def _load_npz(path: Path, scale: float, up_axis: str):
    from sahmr.scene.points import ScenePoints

    with np.load(path, allow_pickle=False) as data:
        if "points" not in data:
            raise ValueError(f"{path}: .npz needs a 'points' array, found {list(data.keys())}")
        points = np.asarray(data["points"], np.float64) * scale
        normals = np.asarray(data["normals"], np.float32) if "normals" in data else None
        colors = np.asarray(data["colors"], np.float32) if "colors" in data else None
    _validate(points, path, scale, "points")
    if colors is not None and colors.max(initial=0) > 1.0:
        colors = colors / 255.0
    return ScenePoints(points.astype(np.float32), normals, colors, up_axis=up_axis)


def _load_trimesh(path: Path, scale: float, up_axis: str):
    import trimesh

    from sahmr.scene.points import ScenePoints

    try:
        loaded = trimesh.load(path, process=False)
    except Exception as exc:  # trimesh raises many types for a bad file
        raise ValueError(f"{path}: cannot read scan ({exc})") from exc
    if isinstance(loaded, trimesh.Scene):
        if not loaded.geometry:
            raise ValueError(f"{path}: scene holds no geometry")
        loaded = loaded.to_geometry()  # applies node transforms, merges meshes
    if isinstance(loaded, trimesh.PointCloud):
        pts = np.asarray(loaded.vertices, np.float64) * scale
        _validate(pts, path, scale, "points")
        colors = None
        if getattr(loaded, "colors", None) is not None and len(loaded.colors) == len(pts):
            colors = np.asarray(loaded.colors, np.float32)[:, :3] / 255.0
        return ScenePoints(pts.astype(np.float32), None, colors, up_axis=up_axis)
    if not isinstance(loaded, trimesh.Trimesh):
        raise ValueError(f"{path}: unsupported content {type(loaded).__name__}")
    verts = np.asarray(loaded.vertices, np.float64) * scale
    faces = np.asarray(loaded.faces, np.int64)
    if faces.shape[0] == 0:
        _validate(verts, path, scale, "points")
        return ScenePoints(verts.astype(np.float32), None, None, up_axis=up_axis)
    _validate(verts, path, scale, "vertices")
    colors = None
    try:
        vc = loaded.visual.vertex_colors
        if vc is not None and len(vc) == len(verts) and loaded.visual.kind == "vertex":
            colors = np.asarray(vc, np.float32)[:, :3] / 255.0
    except AttributeError:
        pass
    return SceneMesh(verts.astype(np.float32), faces, up_axis=up_axis, vertex_colors=colors)


def load_scene(path: str | os.PathLike, *, up_axis: str = "z", scale: float = 1.0):
    """Load a scan as a mesh or a point cloud, in its own frame, scaled to metres.

    Args:
        path: ``.ply``, ``.obj``, ``.glb``, ``.gltf`` or ``.npz`` file.
        up_axis: gravity-up axis of the scan frame (metadata only), one of ``UP_AXES``.
        scale: factor from file units to metres (0.001 for millimetres).

    Returns:
        :class:`SceneMesh` when the file has faces, else
        :class:`sahmr.scene.points.ScenePoints`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable, empty, non-finite, or implausible extent (the largest side
            must be between 0.3 m and 200 m after ``scale``; the message names ``--scale``).
    """
    path = Path(path)
    if up_axis not in UP_AXES:
        raise ValueError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
    if not path.is_file():
        raise FileNotFoundError(f"scene file not found: {path}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        scene = _load_npz(path, scale, up_axis)
    elif suffix in (".ply", ".obj", ".glb", ".gltf"):
        scene = _load_trimesh(path, scale, up_axis)
    else:
        raise ValueError(f"{path}: unsupported scan format {suffix!r}")
    logger.info("loaded %s as %s", path, type(scene).__name__)
    return scene

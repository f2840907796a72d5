"""Rooms of a dataset on disk: ``rooms/<scene_id>/`` (room files, scene points, placer SDF).

Written once per room by the driver (main process) before the room's first shard is handed
out; workers rebuild the room from its recipe and load the cached SDF.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import trimesh

from sahmr.synth.plan import SceneRecipe
from sahmr.synth.rooms import Room

logger = logging.getLogger(__name__)

SCENE_POINT_SPACING = 0.02
"""Voxel size (m) of the stored scene point clouds."""


def sdf_cache_path(root: Path, scene_id: str, voxel_size: float) -> Path:
    """``rooms/<scene_id>/placer_sdf_<pitch in 0.1 mm>.npz``: a room's cached placer SDF."""
    return root / "rooms" / scene_id / f"placer_sdf_{round(voxel_size * 1e4):04d}.npz"


def resolve_sdf_device(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` when this process sees a GPU, else ``"cpu"``."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def write_placer_sdf(
    root: Path, scene_id: str, recipe: SceneRecipe, voxel_size: float, device: str
) -> Path:
    """Builds a room's placer SDF once and caches it (atomically) next to the room files.

    Run in the main process before workers start: with open3d the grid is built on the
    CPU in seconds; without it, by brute force on ``device`` (``"cuda"`` on a GPU machine).
    """
    path = sdf_cache_path(root, scene_id, voxel_size)
    if path.is_file():
        return path
    from sahmr.synth.placement import build_placer_sdf

    t0 = time.perf_counter()
    grid = build_placer_sdf(build_room(recipe), voxel_size, device=device)
    tmp = path.with_name(f".{path.stem}.tmp.{os.getpid()}.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(tmp)
    os.replace(tmp, path)
    logger.info("%s: placer SDF %s built in %.1f s", scene_id, grid.values.shape,
                time.perf_counter() - t0)  # fmt: skip
    return path


def build_room(recipe: SceneRecipe) -> Room:
    """Builds (bundled: loads) the room of a scene recipe."""
    if recipe["source"] == "bundled":
        from sahmr.synth.bundled import load_bundled_room

        return load_bundled_room(recipe["name"])
    from sahmr.synth.room_kinds import generate_room

    return generate_room(recipe["kind"], int(recipe["seed"]))


def sample_scene_points(
    mesh: trimesh.Trimesh, spacing: float = SCENE_POINT_SPACING, seed: int = 0
) -> np.ndarray:
    """Surface points of a mesh, voxel-downsampled to ``spacing`` (one point per voxel).

    Args:
        mesh: Room mesh, world frame, metres.
        spacing: Voxel size, metres.
        seed: Seed of the surface sampling.

    Returns:
        (N, 3) float32 points, world frame.
    """
    count = int(min(4e6, max(1000, 2.0 * mesh.area / spacing**2)))
    pts, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    cells = np.floor(pts / spacing).astype(np.int64)
    cells -= cells.min(axis=0)
    dims = cells.max(axis=0) + 1
    keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    _, first = np.unique(keys, return_index=True)
    return pts[np.sort(first)].astype(np.float32)


def write_room(root: Path, scene_id: str, recipe: SceneRecipe) -> Path:
    """Writes ``rooms/<scene_id>/`` (room files + ``scene_points.npz``) once, atomically.

    The folder is built under a temporary name and renamed; an existing folder is kept.
    """
    final = root / "rooms" / scene_id
    if (final / "scene_points.npz").is_file():
        return final
    tmp = root / "rooms" / f".{scene_id}.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    room = build_room(recipe)
    room.save(tmp)
    pts = sample_scene_points(room.mesh)
    np.savez(tmp / "scene_points.npz", points=pts, spacing=np.float32(SCENE_POINT_SPACING))
    try:
        os.replace(tmp, final)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
    return final

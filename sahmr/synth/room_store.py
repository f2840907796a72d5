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

from sahmr.atomic_write import atomic_open
from sahmr.scene.points import SCENE_VOXEL_SIZE_M, sample_scene_points
from sahmr.synth.plan import SceneRecipe
from sahmr.synth.rooms import Room

logger = logging.getLogger(__name__)

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
    from sahmr.synth.placer_sdf import build_placer_sdf

    t0 = time.perf_counter()
    grid = build_placer_sdf(build_room(recipe), voxel_size, device=device)
    with atomic_open(path, make_parents=True) as fh:
        grid.save(fh)
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
    np.savez(tmp / "scene_points.npz", points=pts, spacing=np.float32(SCENE_VOXEL_SIZE_M))
    try:
        os.replace(tmp, final)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
    return final

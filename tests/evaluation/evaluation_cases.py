"""Helpers for the evaluation tests: an exact box-room SDF and its mesh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

ROOM_LO = np.array([-3.0, -3.0, 0.0])
ROOM_HI = np.array([3.0, 3.0, 3.0])


class BoxRoomSDF:
    """Exact SDF of the inside of an axis-aligned box room (positive inside the room,
    negative beyond a wall, under the floor or above the ceiling): a test stand-in for
    ``sahmr.scene.sdf.SDFGrid`` with the same ``sample`` interface."""

    def __init__(self, lo: np.ndarray = ROOM_LO, hi: np.ndarray = ROOM_HI) -> None:
        self.lo = torch.as_tensor(lo, dtype=torch.float64)
        self.hi = torch.as_tensor(hi, dtype=torch.float64)

    def sample(self, points: torch.Tensor) -> torch.Tensor:
        p = points.to(torch.float64)
        d = torch.minimum(p - self.lo, self.hi - p)  # distance to each face, inward positive
        inside = (d > 0).all(-1)
        out_dist = torch.clamp(-d, min=0).norm(dim=-1)
        return torch.where(inside, d.min(-1).values, -out_dist).to(points.dtype)


def box_room_loader(mesh_path, **kwargs):
    return BoxRoomSDF()


def write_box_room(path: Path, lo: np.ndarray = ROOM_LO, hi: np.ndarray = ROOM_HI) -> Path:
    """Write the room (a box with inward normals) as a mesh file."""
    import trimesh

    box = trimesh.creation.box(extents=hi - lo)
    box.apply_translation((hi + lo) / 2)
    box.invert()  # normals point into the room
    box.export(path)
    return path

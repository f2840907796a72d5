"""Tiny stand-ins shared by the synthetic-data tests: a standing body and an empty room."""

from __future__ import annotations

import functools

import numpy as np
import trimesh

from sahmr.synth.appearance import Appearance


@functools.lru_cache(maxsize=1)
def body_model():
    """The shipped license-free body (loaded once per test session)."""
    from sahmr.body import BodyModel

    return BodyModel()


@functools.lru_cache(maxsize=1)
def standing_vertices() -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) zero-pose body rotated to z-up, feet on z = 0, pelvis above the origin; faces."""
    body = body_model()
    v = body().vertices[0].detach().numpy().astype(np.float64)
    v = v @ np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]).T  # y-up -> z-up
    v[:, 2] -= v[:, 2].min()
    return v, np.asarray(body.faces)


def plain_appearance(n_body_faces: int, n_room_faces: int) -> Appearance:
    """Flat colours, fixed light."""
    return Appearance(
        body_face_colors=np.tile([0.8, 0.3, 0.2], (n_body_faces, 1)),
        room_face_colors=np.tile([0.5, 0.6, 0.7], (n_room_faces, 1)),
        background=np.array([1.0, 1.0, 1.0]),
        ambient=0.3,
        light_dir_world=np.array([0.3, 0.2, 1.0]),
    )


def floor_mesh(extra: list[trimesh.Trimesh] | None = None) -> trimesh.Trimesh:
    """A 20 x 20 m floor slab (top at z = 0) plus optional extra meshes."""
    floor = trimesh.creation.box(extents=(20.0, 20.0, 0.1))
    floor.apply_translation((0.0, 0.0, -0.05))
    return trimesh.util.concatenate([floor, *(extra or [])])

"""Placers the generator can use: the interface, the contact placer or a standing fallback."""

from __future__ import annotations

from collections import Counter
from typing import Protocol

import numpy as np

from sahmr.body.model import BodyModel
from sahmr.body.pose_library import MIRROR_FRACTION
from sahmr.scene.contact import CONTACT_THRESHOLD_M
from sahmr.scene.sdf import MeshSignedDistance, SDFGrid
from sahmr.synth.placement import PlacedBody, Placer
from sahmr.synth.rooms import Room
from sahmr.synth.shapes import ShapeRanges, sample_shape


class PlacerLike(Protocol):
    """Samples bodies in a room: ``sample(rng, action) -> PlacedBody | None``."""

    def sample(self, rng: np.random.Generator, action: str | None = None) -> PlacedBody | None: ...


class StandingPlacer:
    """Fallback placer: a standing body (A-pose, random shape, small pose noise, random
    heading) with both feet on the floor at a walkable spot; feet vertices within
    ``contact_threshold`` of the floor are labelled in contact.

    Args:
        room: The room (z-up, floor at z = 0, floor object id 0).
        body: A `sahmr.body.BodyModel` (y-up rest frame, as SMPL).
        contact_threshold: Contact distance, metres (7 cm as DESIGN.md).
        shapes: The body shape distribution (None: `ShapeRanges` defaults).
    """

    def __init__(
        self,
        room: Room,
        body: BodyModel,
        contact_threshold: float = CONTACT_THRESHOLD_M,
        shapes: ShapeRanges | None = None,
    ) -> None:
        self.room = room
        self.body = body
        self.shapes = shapes if shapes is not None else ShapeRanges()
        self.contact_threshold = contact_threshold
        self.labels = np.asarray(body.topology.contact_labels[0], dtype=np.int64)
        self.stats: Counter[str] = Counter()
        cells = room.free_space.cell_centers()[room.free_space.walkable]
        self._cells = cells.reshape(-1, 2)

    def sample(self, rng: np.random.Generator, action: str | None = None) -> PlacedBody | None:
        """Draws one standing body; None when the footprint hits furniture."""
        import torch

        from sahmr.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

        self.stats["tries"] += 1
        if len(self._cells) == 0:
            return None
        xy = self._cells[int(rng.integers(len(self._cells)))]
        betas = sample_shape(rng, self.shapes).astype(np.float32)
        pose = rng.normal(0.0, 0.04, (23, 3))
        pose[15, 2] -= 1.2  # left shoulder (joint 16) down, about the rest z axis
        pose[16, 2] += 1.2  # right shoulder (joint 17) down
        yaw = rng.uniform(0.0, 2.0 * np.pi)
        rx = axis_angle_to_matrix(torch.tensor([np.pi / 2, 0.0, 0.0], dtype=torch.float64))
        rz = axis_angle_to_matrix(torch.tensor([0.0, 0.0, yaw], dtype=torch.float64))
        orient = matrix_to_axis_angle(rz @ rx).numpy().astype(np.float32)
        with torch.no_grad():
            out = self.body(
                betas=torch.as_tensor(betas)[None],
                global_orient=torch.as_tensor(orient)[None],
                body_pose=torch.as_tensor(pose.reshape(1, -1), dtype=torch.float32),
            )
        v = out.vertices[0].numpy().astype(np.float64)
        j = out.joints[0].numpy().astype(np.float64)
        transl = np.array([xy[0] - j[0, 0], xy[1] - j[0, 1], -v[:, 2].min()])
        v += transl
        j += transl
        if not np.all(self.room.free_space.is_walkable(v[::25, :2])):
            return None
        near = (v[:, 2] < self.contact_threshold) & np.isin(self.labels, (1, 2))
        contact = np.where(near, self.labels, 0)
        pts = v[near].copy()
        pts[:, 2] = 0.0
        self.stats["placed"] += 1
        return PlacedBody(
            betas=betas,
            global_orient=orient,
            body_pose=pose.reshape(-1).astype(np.float32),
            transl=transl.astype(np.float32),
            vertices_world=v.astype(np.float32),
            joints_world=j.astype(np.float32),
            vertex_contact=contact,
            contact_points_world=pts.astype(np.float32),
            contact_point_region=self.labels[near],
            action="stand",
            object_id=0,
            surface_kind="floor",
            max_penetration=0.0,  # the lowest vertex rests on the floor plane
            contact_gap={r: float(v[self.labels == r, 2].min()) for r in (1, 2)},
        )


def make_placer(
    room: Room,
    body: BodyModel,
    kind: str = "auto",
    sdf: SDFGrid | None = None,
    mesh_distance: MeshSignedDistance | None = None,
    shapes: ShapeRanges | None = None,
    mirror_fraction: float = MIRROR_FRACTION,
) -> PlacerLike:
    """The contact placer `sahmr.synth.placement.Placer` (``kind="auto"``), or the fast
    `StandingPlacer` (``kind="standing"``: feet on the floor only, for tests and benchmarks).

    Args:
        room: The room.
        body: The body model.
        kind: ``"auto"`` or ``"standing"``.
        sdf: The room's SDF grid for the real placer (None builds it on the CPU, seconds
            per room with open3d, minutes without).
        mesh_distance: The room's exact mesh distance of an earlier placer (None: built
            on first use).
        shapes: The body shape distribution (None: `ShapeRanges` defaults).
        mirror_fraction: Share of the contact placer's bodies drawn as their action's
            mirror image (`sahmr.body.pose_library.MIRROR_FRACTION`); the standing placer's
            poses are symmetric noise and ignore it.

    Returns:
        A placer. Build a fresh one per shard: the real placer queues accepted bodies
        between calls, which would make a shard depend on the shards before it.
    """
    if kind == "auto":
        return Placer(room, body, sdf=sdf, mesh_distance=mesh_distance, shapes=shapes,
                      mirror_fraction=mirror_fraction)  # fmt: skip
    if kind != "standing":
        raise ValueError(f"unknown placer {kind!r} (auto or standing)")
    return StandingPlacer(room, body, shapes=shapes)

"""A room's mesh and labels from its shell and layout: floor (with painted markings), walls
with their openings, an optional ceiling and the placed furniture, one object each."""

from __future__ import annotations

import numpy as np
import trimesh

from sahmr.synth.furniture import CATEGORY_COLORS, Surface, box_mesh, horizontal_surface
from sahmr.synth.room_layout import Layout, front_xy
from sahmr.synth.room_shell import INWARD, Shell, wall_pieces
from sahmr.synth.rooms import (
    BODY_RADIUS,
    FREE_OCCUPIED,
    FREE_UNREACHABLE,
    FREE_WALKABLE,
    FreeSpace,
    Opening,
    Room,
    SceneObject,
)

_FLOOR_COLORS = {
    "living_room": (0.72, 0.58, 0.42),
    "office": (0.60, 0.63, 0.68),
    "bedroom": (0.80, 0.70, 0.55),
    "lecture_hall": (0.70, 0.67, 0.60),
    "gym": (0.38, 0.40, 0.43),
    "outdoor_platform": (0.46, 0.46, 0.48),
}
_PAINT_COLOR = (0.95, 0.95, 0.92)
_PAINT = 0.004  # thickness of painted floor markings, metres


def _rgba(color: tuple[float, float, float]) -> np.ndarray:
    return np.array([*(np.round(np.asarray(color) * 255)), 255], dtype=np.uint8)


def assemble_room(kind: str, seed: int, shell: Shell, lay: Layout, ceiling: bool) -> Room:
    W, D, H, t = shell.width, shell.depth, shell.height, shell.thickness
    pieces: list[tuple[trimesh.Trimesh, np.ndarray]] = []  # (mesh, rgba) per object
    objects: list[SceneObject] = []

    def add_object(
        mesh: trimesh.Trimesh,
        color: np.ndarray,
        category: str,
        label: str,
        surfaces: list[Surface],
        params: dict | None = None,
        front: np.ndarray | None = None,
    ) -> int:
        oid = len(objects)
        b = mesh.bounds
        objects.append(
            SceneObject(
                oid, category, label, b[0].copy(), b[1].copy(), surfaces, dict(params or {}), front
            )
        )
        pieces.append((mesh, color))
        return oid

    floor_parts = [box_mesh((W + 2 * t, D + 2 * t, 0.05), (0.0, 0.0, -0.025))]
    floor_parts += [
        box_mesh(
            (r[2] - r[0], r[3] - r[1], _PAINT),
            (0.5 * (r[0] + r[2]), 0.5 * (r[1] + r[3]), _PAINT / 2),
        )
        for r in shell.markings
    ]
    floor_colors = np.concatenate(
        [
            np.tile(_rgba(_FLOOR_COLORS[kind] if i == 0 else _PAINT_COLOR), (len(m.faces), 1))
            for i, m in enumerate(floor_parts)
        ]
    )
    add_object(
        trimesh.util.concatenate(floor_parts),
        floor_colors,
        "floor",
        "floor",
        [horizontal_surface("floor", (0.0, 0.0, 0.0), (W / 2, D / 2))],
    )

    openings: list[Opening] = []
    for side in shell.sides:
        meshes, surfaces = wall_pieces(shell, side)
        n = np.array([*INWARD[side], 0.0])
        oid = add_object(
            trimesh.util.concatenate(meshes),
            _rgba(shell.wall_color),
            "wall",
            f"{shell.wall_label}_{side}",
            surfaces,
            front=n,
        )
        for h in shell.holes:
            if h.side != side:
                continue
            p = shell.to_world_xy(side, 0.5 * (h.s0 + h.s1), -t / 2)
            u = np.cross([0.0, 0.0, 1.0], n)
            openings.append(
                Opening(
                    h.kind,
                    oid,
                    np.array([p[0], p[1], 0.5 * (h.z0 + h.z1)]),
                    n,
                    u,
                    np.array([0.0, 0.0, 1.0]),
                    np.array([0.5 * (h.s1 - h.s0), 0.5 * (h.z1 - h.z0)]),
                    t,
                )
            )
    if ceiling:
        if not shell.sides:
            raise ValueError(f"a {kind} has no walls to carry a ceiling")
        add_object(
            box_mesh((W + 2 * t, D + 2 * t, 0.05), (0.0, 0.0, H + 0.025)),
            _rgba(CATEGORY_COLORS["ceiling"]),
            "ceiling",
            "ceiling",
            [],
        )

    for p in lay.placements:
        mesh, surfaces = p.model.placed(p.turns, p.xy)
        front = np.array([*front_xy(p.turns), 0.0])
        add_object(
            mesh,
            _rgba(CATEGORY_COLORS[p.model.category]),
            p.model.category,
            p.model.label,
            surfaces,
            p.model.params,
            front,
        )

    meshes = [m for m, _ in pieces]
    mesh = trimesh.util.concatenate(meshes)
    # Keep vertices float32-exact so a saved-and-loaded room equals the generated one.
    mesh.vertices = np.asarray(mesh.vertices, dtype=np.float32).astype(np.float64)
    mesh.visual.face_colors = np.concatenate(
        [np.broadcast_to(c, (len(m.faces), 4)) for m, c in pieces]
    )
    face_object_id = np.concatenate(
        [np.full(len(m.faces), i, dtype=np.int32) for i, m in enumerate(meshes)]
    )

    grid = np.full(lay.blocked.shape, FREE_UNREACHABLE, dtype=np.uint8)
    grid[lay.blocked] = FREE_OCCUPIED
    grid[lay.walkable(lay.blocked)] = FREE_WALKABLE
    free_space = FreeSpace(grid, lay.origin.copy(), lay.cell, BODY_RADIUS)
    return Room(
        mesh=mesh,
        face_object_id=face_object_id,
        objects=objects,
        kind=kind,
        seed=int(seed),
        free_space=free_space,
        openings=openings,
        floor_size=np.array([W, D]),
        wall_height=H if shell.sides else 0.0,
        has_ceiling=ceiling,
    )

"""Procedural rooms, the data: a room's objects, contact surfaces, openings, free space, files.

World frame = the room's frame: z up, metres, floor top at z = 0, the floor's interior
rectangle is ``[-W/2, W/2] x [-D/2, D/2]`` and walls stand OUTSIDE it (their inner faces lie
on its border). Furniture is rotated by quarter turns about z only, so every footprint is
an axis-aligned rectangle and overlap tests are exact.

Making a room, by job: `sahmr.synth.room_kinds` (the seeded recipe of each kind and
``generate_room(kind, seed)``), `sahmr.synth.room_shell` (walls, doors, windows),
`sahmr.synth.room_layout` (furniture footprints; walkable space is enforced while placing:
an object is kept only if, afterwards, the floor area a standing person (a disc of radius
:data:`BODY_RADIUS`) can reach from the door is at least :data:`MIN_WALKABLE_FRACTION` of the
floor, measured on a 2-D occupancy grid), `sahmr.synth.room_mesh` (the labelled mesh) and
`sahmr.synth.room_preview` (overview pictures).

Files written by :meth:`Room.save` (format :data:`METADATA_FORMAT`, version
:data:`METADATA_VERSION`; documented in ``scenes/README.md``): ``mesh.ply`` (binary, per-face
colours), ``meta.json``, ``face_object_id.npy`` (int32, (F,)), ``free_space.npy`` (uint8).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from sahmr.scene.sdf import GROUND_KEY, SolidGround
from sahmr.synth.furniture import Surface, _round_list

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0"
"""Bumped whenever the same (kind, seed) would give a different room."""
METADATA_FORMAT = "sahmr.room"
METADATA_VERSION = 1
ROOM_KINDS: tuple[str, ...] = (
    "living_room",
    "office",
    "bedroom",
    "lecture_hall",
    "gym",
    "outdoor_platform",
)
BODY_RADIUS = 0.2
"""Radius (m) of the disc a standing person needs; passages narrower than 2x are not walkable."""
MIN_WALKABLE_FRACTION = 0.35
"""Share of the floor that must stay reachable on foot from the door."""
CELL_SIZE = 0.05
"""Occupancy grid resolution, metres."""
GROUND_Z = 0.0
"""Height (m) of every generated room's floor top. The floor is a closed 5 cm slab, so a scan's
signed distance alone reads a point 3 cm or more below it as free space: the rooms declare
the ground below this height solid (``meta.json`` key `sahmr.scene.sdf.GROUND_KEY`)."""

FREE_OCCUPIED, FREE_UNREACHABLE, FREE_WALKABLE = 0, 1, 2
"""Values of :attr:`FreeSpace.grid`."""

# ----------------------------------------------------------------------------------------
# public data classes


@dataclass
class SceneObject:
    """One labelled object of a room (furniture, floor, a wall or the ceiling).

    Attributes:
        id: index into :attr:`Room.objects`; the value used in :attr:`Room.face_object_id`.
        category: ``"floor"``, ``"wall"``, ``"ceiling"`` or a furniture category.
        label: finer name (``"armchair"``, ``"wall_north"``...).
        bbox_min: (3,) axis-aligned bounding box minimum, world frame, metres.
        bbox_max: (3,) bounding box maximum, world frame, metres.
        surfaces: contact rectangles, world frame.
        params: randomised dimensions (metres) for furniture, empty otherwise.
        front: (3,) unit world direction the object faces (furniture; inward normal for
            walls), or None for floor and ceiling.
    """

    id: int
    category: str
    label: str
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    surfaces: list[Surface] = field(default_factory=list)
    params: dict[str, float] = field(default_factory=dict)
    front: np.ndarray | None = None

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {
            "id": self.id,
            "category": self.category,
            "label": self.label,
            "bbox_min": _round_list(self.bbox_min, 6),
            "bbox_max": _round_list(self.bbox_max, 6),
            "front": None if self.front is None else _round_list(self.front, 6),
            "params": {k: round(float(v), 6) for k, v in self.params.items()},
            "surfaces": [s.to_dict() for s in self.surfaces],
        }

    @classmethod
    def from_dict(cls, d: dict) -> SceneObject:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=int(d["id"]),
            category=d["category"],
            label=d["label"],
            bbox_min=np.asarray(d["bbox_min"], dtype=np.float64),
            bbox_max=np.asarray(d["bbox_max"], dtype=np.float64),
            surfaces=[Surface.from_dict(s) for s in d["surfaces"]],
            params={k: float(v) for k, v in d["params"].items()},
            front=None if d.get("front") is None else np.asarray(d["front"], dtype=np.float64),
        )


@dataclass
class Opening:
    """A hole through a wall (door or window), as a rectangle in the wall's mid-plane.

    Attributes:
        kind: ``"door"`` (reaches the floor; a walk-through gap for low outdoor walls) or
            ``"window"``.
        wall_id: object id of the wall it pierces.
        center: (3,) centre of the hole in the wall's mid-plane, world frame, metres.
        normal: (3,) the wall's inward unit normal.
        axis_u: (3,) horizontal unit axis along the wall.
        axis_v: (3,) (0, 0, 1).
        half_size: (2,) half width and half height, metres.
        wall_thickness: metres; the hole spans ``center +- normal * wall_thickness / 2``.
    """

    kind: str
    wall_id: int
    center: np.ndarray
    normal: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    half_size: np.ndarray
    wall_thickness: float

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {
            "kind": self.kind,
            "wall_id": self.wall_id,
            "center": _round_list(self.center, 6),
            "normal": _round_list(self.normal, 6),
            "axis_u": _round_list(self.axis_u, 6),
            "axis_v": _round_list(self.axis_v, 6),
            "half_size": _round_list(self.half_size, 6),
            "wall_thickness": round(float(self.wall_thickness), 6),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Opening:
        """Inverse of :meth:`to_dict`."""
        return cls(d["kind"], int(d["wall_id"]), *(np.asarray(d[k], dtype=np.float64) for k in
                                                   ("center", "normal", "axis_u", "axis_v",
                                                    "half_size")),
                   float(d["wall_thickness"]))


@dataclass
class FreeSpace:
    """2-D occupancy grid of the floor's interior rectangle.

    Cell ``grid[j, i]`` covers ``x in origin[0] + [i, i+1) * cell_size`` and
    ``y in origin[1] + [j, j+1) * cell_size``. Values: :data:`FREE_OCCUPIED` (under a
    furniture footprint other than a mat), :data:`FREE_UNREACHABLE` (free floor a person
    cannot reach from the door), :data:`FREE_WALKABLE`.

    Attributes:
        grid: uint8 array of shape (ny, nx).
        origin: (2,) world x, y of the grid's corner, metres.
        cell_size: metres.
        body_radius: radius (m) of the disc used for reachability.
    """

    grid: np.ndarray
    origin: np.ndarray
    cell_size: float
    body_radius: float = BODY_RADIUS

    @property
    def free(self) -> np.ndarray:
        """Bool (ny, nx): floor not covered by furniture (mats count as free)."""
        return self.grid != FREE_OCCUPIED

    @property
    def walkable(self) -> np.ndarray:
        """Bool (ny, nx): floor a standing person reaches from the door."""
        return self.grid == FREE_WALKABLE

    @property
    def free_fraction(self) -> float:
        """Share of floor cells that are free."""
        return float(self.free.mean())

    @property
    def walkable_fraction(self) -> float:
        """Share of floor cells that are walkable."""
        return float(self.walkable.mean())

    def cell_centers(self) -> np.ndarray:
        """World x, y of every cell centre, array of shape (ny, nx, 2), metres."""
        ny, nx = self.grid.shape
        xs = self.origin[0] + (np.arange(nx) + 0.5) * self.cell_size
        ys = self.origin[1] + (np.arange(ny) + 0.5) * self.cell_size
        xx, yy = np.meshgrid(xs, ys)
        return np.stack([xx, yy], axis=-1)

    def is_walkable(self, xy: np.ndarray) -> np.ndarray:
        """Whether world points lie on walkable cells.

        Args:
            xy: array of shape (N, 2) or (2,), world frame, metres.

        Returns:
            Bool array of shape (N,) (or a scalar array); points off the grid are False.
        """
        p = np.atleast_2d(np.asarray(xy, dtype=np.float64))
        ij = np.floor((p - self.origin) / self.cell_size).astype(np.int64)
        ny, nx = self.grid.shape
        ok = (ij[:, 0] >= 0) & (ij[:, 0] < nx) & (ij[:, 1] >= 0) & (ij[:, 1] < ny)
        out = np.zeros(len(p), dtype=bool)
        out[ok] = self.grid[ij[ok, 1], ij[ok, 0]] == FREE_WALKABLE
        return out if np.ndim(xy) > 1 else out[0]


@dataclass
class Room:
    """A generated (or loaded) room.

    Attributes:
        mesh: trimesh.Trimesh, world frame, metres, per-face colours; not watertight.
        face_object_id: int32 array of shape (F,), the :class:`SceneObject` id of each face.
        objects: every object; ``objects[i].id == i``. Floor first, then walls, then the
            ceiling if any, then furniture.
        kind: one of :data:`ROOM_KINDS`.
        seed: generator seed.
        free_space: occupancy grid of the floor.
        openings: door and window holes.
        floor_size: (2,) interior width (x) and depth (y), metres.
        wall_height: metres (0 where the room has no walls).
        has_ceiling: whether a ceiling slab closes the room.
        up_axis: ``"z"``.
        units: ``"m"``.
        generator_version: :data:`GENERATOR_VERSION` of the code that made it.
    """

    mesh: trimesh.Trimesh
    face_object_id: np.ndarray
    objects: list[SceneObject]
    kind: str
    seed: int
    free_space: FreeSpace
    openings: list[Opening]
    floor_size: np.ndarray
    wall_height: float
    has_ceiling: bool = False
    up_axis: str = "z"
    units: str = "m"
    generator_version: str = GENERATOR_VERSION

    @property
    def ground(self) -> SolidGround:
        """The solid ground under the floor (`GROUND_Z`), for every signed distance of the room."""
        return SolidGround(GROUND_Z, self.up_axis)

    @property
    def furniture(self) -> list[SceneObject]:
        """Objects that are neither floor, wall nor ceiling."""
        return [o for o in self.objects if o.category not in ("floor", "wall", "ceiling")]

    def surfaces(self, kind: str | None = None) -> list[tuple[int, Surface]]:
        """All contact surfaces, optionally of one kind.

        Args:
            kind: surface kind to keep, or None for all.

        Returns:
            ``(object_id, surface)`` pairs, world frame.
        """
        return [(o.id, s) for o in self.objects for s in o.surfaces
                if kind is None or s.kind == kind]

    def object_mesh(self, object_id: int) -> trimesh.Trimesh:
        """The faces of one object as their own mesh (world frame)."""
        return self.mesh.submesh([np.flatnonzero(self.face_object_id == object_id)],
                                 append=True)

    def to_metadata(self) -> dict:
        """JSON-serialisable description (everything except the mesh and the arrays)."""
        b = self.mesh.bounds
        fs = self.free_space
        return {
            "format": METADATA_FORMAT,
            "format_version": METADATA_VERSION,
            "generator": "sahmr.synth.rooms",
            "generator_version": self.generator_version,
            "kind": self.kind,
            "seed": int(self.seed),
            "up_axis": self.up_axis,
            "units": self.units,
            "floor_size": _round_list(self.floor_size, 6),
            "wall_height": round(float(self.wall_height), 6),
            "has_ceiling": bool(self.has_ceiling),
            GROUND_KEY: GROUND_Z,
            "extent": {"min": _round_list(b[0], 6), "max": _round_list(b[1], 6)},
            "num_vertices": len(self.mesh.vertices),
            "num_faces": len(self.mesh.faces),
            "files": {
                "mesh": "mesh.ply",
                "face_object_id": "face_object_id.npy",
                "free_space": "free_space.npy",
                "preview": "preview.png",
            },
            "free_space": {
                "origin": _round_list(fs.origin, 6),
                "cell_size": fs.cell_size,
                "shape": list(fs.grid.shape),
                "body_radius": fs.body_radius,
                "values": {str(FREE_OCCUPIED): "occupied",
                           str(FREE_UNREACHABLE): "free_unreachable",
                           str(FREE_WALKABLE): "walkable"},
                "free_fraction": round(fs.free_fraction, 4),
                "walkable_fraction": round(fs.walkable_fraction, 4),
            },
            "openings": [o.to_dict() for o in self.openings],
            "objects": [o.to_dict() for o in self.objects],
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``mesh.ply``, ``meta.json``, ``face_object_id.npy``, ``free_space.npy``.

        Args:
            folder: created if missing; existing files of these names are replaced.

        Returns:
            The folder as a Path.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mesh.ply").write_bytes(self.mesh.export(file_type="ply", encoding="binary"))
        np.save(folder / "face_object_id.npy", self.face_object_id.astype(np.int32))
        np.save(folder / "free_space.npy", self.free_space.grid.astype(np.uint8))
        text = json.dumps(self.to_metadata(), indent=1)
        (folder / "meta.json").write_text(text + "\n", encoding="utf-8")
        logger.info("saved %s room (seed %d) to %s", self.kind, self.seed, folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Room:
        """Read a room written by :meth:`save`.

        Args:
            folder: folder holding the files.

        Returns:
            The Room (mesh vertices are float32-exact, as stored in the PLY).
        """
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != METADATA_FORMAT:
            raise ValueError(f"{folder}: not a {METADATA_FORMAT} folder")
        if meta["format_version"] > METADATA_VERSION:
            raise ValueError(f"{folder}: format_version {meta['format_version']} is newer "
                             f"than this code ({METADATA_VERSION})")
        files = meta["files"]
        mesh = trimesh.load(folder / files["mesh"], file_type="ply", process=False)
        face_object_id = np.load(folder / files["face_object_id"], allow_pickle=False)
        grid = np.load(folder / files["free_space"], allow_pickle=False)
        fs = meta["free_space"]
        return cls(
            mesh=mesh,
            face_object_id=face_object_id.astype(np.int32),
            objects=[SceneObject.from_dict(o) for o in meta["objects"]],
            kind=meta["kind"],
            seed=int(meta["seed"]),
            free_space=FreeSpace(grid.astype(np.uint8), np.asarray(fs["origin"]),
                                 float(fs["cell_size"]), float(fs["body_radius"])),
            openings=[Opening.from_dict(o) for o in meta["openings"]],
            floor_size=np.asarray(meta["floor_size"], dtype=np.float64),
            wall_height=float(meta["wall_height"]),
            has_ceiling=bool(meta["has_ceiling"]),
            up_axis=meta["up_axis"],
            units=meta["units"],
            generator_version=meta["generator_version"],
        )

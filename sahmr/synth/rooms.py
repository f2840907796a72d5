"""Procedural rooms: floor, walls with real door/window holes, furniture, contact metadata.

World frame = the room's frame: z up, metres, floor top at z = 0, the floor's interior
rectangle is ``[-W/2, W/2] x [-D/2, D/2]`` and walls stand OUTSIDE it (their inner faces lie
on its border). Furniture is rotated by quarter turns about z only, so every footprint is
an axis-aligned rectangle and overlap tests are exact.

The generator is seeded: ``generate_room(kind, seed)`` always returns the same mesh, face
labels and metadata (one ``numpy.random.Generator`` drives every choice in a fixed order).
Walkable space is enforced while placing: an object is kept only if, afterwards, the floor
area a standing person (a disc of radius :data:`BODY_RADIUS`) can reach from the door is at
least :data:`MIN_WALKABLE_FRACTION` of the floor, measured on a 2-D occupancy grid.

Files written by :meth:`Room.save` (format :data:`METADATA_FORMAT`, version
:data:`METADATA_VERSION`; documented in ``scenes/README.md``): ``mesh.ply`` (binary, per-face
colours), ``meta.json``, ``face_object_id.npy`` (int32, (F,)), ``free_space.npy`` (uint8).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh
from scipy import ndimage

from sahmr.synth.furniture import (
    BUILDERS,
    CATEGORY_COLORS,
    FurnitureModel,
    Surface,
    _round_list,
    box_mesh,
    horizontal_surface,
    quarter_turn_rotation,
    vertical_surface,
)

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

FREE_OCCUPIED, FREE_UNREACHABLE, FREE_WALKABLE = 0, 1, 2
"""Values of :attr:`FreeSpace.grid`."""

WALL_SIDES: tuple[str, ...] = ("south", "east", "north", "west")
_INWARD = {"south": (0.0, 1.0), "north": (0.0, -1.0), "west": (1.0, 0.0), "east": (-1.0, 0.0)}
# Quarter turns that put an object's back (local -y) against a wall.
_BACK_TO_WALL_TURNS = {"south": 0, "east": 1, "north": 2, "west": 3}

_FLOOR_COLORS = {
    "living_room": (0.72, 0.58, 0.42),
    "office": (0.60, 0.63, 0.68),
    "bedroom": (0.80, 0.70, 0.55),
    "lecture_hall": (0.70, 0.67, 0.60),
    "gym": (0.38, 0.40, 0.43),
    "outdoor_platform": (0.46, 0.46, 0.48),
}
_PARAPET_COLOR = (0.68, 0.67, 0.64)
_PAINT_COLOR = (0.95, 0.95, 0.92)
_PAINT = 0.004  # thickness of painted floor markings, metres


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


# ----------------------------------------------------------------------------------------
# shell: floor, walls with holes, ceiling


@dataclass
class _HoleSpec:
    side: str
    kind: str
    s0: float  # along the wall's interior length, metres
    s1: float
    z0: float
    z1: float


@dataclass
class _Shell:
    width: float
    depth: float
    height: float
    thickness: float
    sides: tuple[str, ...]
    holes: list[_HoleSpec]
    wall_label: str = "wall"
    wall_color: tuple[float, float, float] = CATEGORY_COLORS["wall"]
    markings: list[np.ndarray] = field(default_factory=list)  # painted floor rects x0,y0,x1,y1

    def wall_length(self, side: str) -> float:
        return self.width if side in ("south", "north") else self.depth

    def to_world_xy(self, side: str, s: float, inset: float) -> np.ndarray:
        """World x, y of the point at ``s`` along a wall, ``inset`` metres into the room."""
        W, D = self.width, self.depth
        if side == "south":
            return np.array([s - W / 2, -D / 2 + inset])
        if side == "north":
            return np.array([s - W / 2, D / 2 - inset])
        if side == "west":
            return np.array([-W / 2 + inset, s - D / 2])
        return np.array([W / 2 - inset, s - D / 2])


def _interval_minus(lo: float, hi: float, cuts: list[tuple[float, float]]) -> list[tuple]:
    """Parts of [lo, hi] not covered by any cut."""
    parts, cur = [], lo
    for a, b in sorted(cuts):
        if a > cur + 1e-9:
            parts.append((cur, min(a, hi)))
        cur = max(cur, b)
    if cur < hi - 1e-9:
        parts.append((cur, hi))
    return [(a, b) for a, b in parts if b - a > 1e-9]


def _wall_pieces(shell: _Shell, side: str) -> tuple[list[trimesh.Trimesh], list[Surface]]:
    """Boxes making up one wall around its holes, and the inner-face surfaces."""
    W, D, H, t = shell.width, shell.depth, shell.height, shell.thickness
    L = shell.wall_length(side)
    ext = t if side in ("south", "north") else 0.0  # N/S walls cover the corners
    holes = [h for h in shell.holes if h.side == side]
    breaks = sorted({-ext, L + ext, *[h.s0 for h in holes], *[h.s1 for h in holes]})
    nx, ny = _INWARD[side]
    meshes, surfaces = [], []
    for sa, sb in itertools.pairwise(breaks):
        mid = 0.5 * (sa + sb)
        cuts = [(h.z0, h.z1) for h in holes if h.s0 <= mid <= h.s1]
        for za, zb in _interval_minus(0.0, H, cuts):
            if side == "south":
                lo, hi = (sa - W / 2, -D / 2 - t, za), (sb - W / 2, -D / 2, zb)
            elif side == "north":
                lo, hi = (sa - W / 2, D / 2, za), (sb - W / 2, D / 2 + t, zb)
            elif side == "west":
                lo, hi = (-W / 2 - t, sa - D / 2, za), (-W / 2, sb - D / 2, zb)
            else:
                lo, hi = (W / 2, sa - D / 2, za), (W / 2 + t, sb - D / 2, zb)
            lo, hi = np.array(lo), np.array(hi)
            meshes.append(box_mesh(tuple(hi - lo), tuple(0.5 * (lo + hi))))
            ca, cb = max(sa, 0.0), min(sb, L)  # inner face inside the room only
            if cb - ca > 1e-6:
                p = shell.to_world_xy(side, 0.5 * (ca + cb), 0.0)
                surfaces.append(vertical_surface("wall", (p[0], p[1], 0.5 * (za + zb)),
                                                 (nx, ny, 0.0), 0.5 * (cb - ca), 0.5 * (zb - za)))
    return meshes, surfaces


def _choose_holes(rng: np.random.Generator, width: float, depth: float, height: float,
                  door_sides: Sequence[str], window_sides: Sequence[str], n_windows: int,
                  door_width: tuple[float, float] = (0.85, 1.0),
                  door_height: tuple[float, float] = (2.0, 2.1),
                  door_s: tuple[float, float] | None = None) -> list[_HoleSpec]:
    """Pick one door and up to ``n_windows`` windows that do not overlap each other."""
    holes: list[_HoleSpec] = []

    def length(side: str) -> float:
        return width if side in ("south", "north") else depth

    side = door_sides[int(rng.integers(len(door_sides)))]
    dw = float(np.round(rng.uniform(*door_width), 3))
    L = length(side)
    lo, hi = (0.4 + dw / 2, L - 0.4 - dw / 2) if door_s is None else door_s
    sc = float(np.round(rng.uniform(lo, max(lo, hi)), 3))
    dz = min(float(np.round(rng.uniform(*door_height), 3)), height)
    holes.append(_HoleSpec(side, "door", sc - dw / 2, sc + dw / 2, 0.0, dz))
    for _ in range(n_windows):
        for _attempt in range(20):
            ws = window_sides[int(rng.integers(len(window_sides)))]
            L = length(ws)
            w = float(np.round(rng.uniform(0.8, 1.6), 3))
            if L < w + 1.0:
                continue
            sc = float(np.round(rng.uniform(0.5 + w / 2, L - 0.5 - w / 2), 3))
            s0, s1 = sc - w / 2, sc + w / 2
            if any(h.side == ws and s0 < h.s1 + 0.4 and h.s0 < s1 + 0.4 for h in holes):
                continue
            sill = float(np.round(rng.uniform(0.8, 1.0), 3))
            top = min(float(np.round(sill + rng.uniform(1.0, 1.4), 3)), height - 0.25)
            holes.append(_HoleSpec(ws, "window", s0, s1, sill, top))
            break
    return holes


# ----------------------------------------------------------------------------------------
# furniture layout on the floor


@dataclass
class _Placement:
    model: FurnitureModel
    turns: int
    xy: np.ndarray


class _Layout:
    """Footprint bookkeeping and walkability checks for one room."""

    def __init__(self, shell: _Shell, cell: float = CELL_SIZE) -> None:
        self.shell = shell
        self.cell = cell
        W, D = shell.width, shell.depth
        self.nx, self.ny = round(W / cell), round(D / cell)
        self.origin = np.array([-W / 2, -D / 2])
        self.blocked = np.zeros((self.ny, self.nx), dtype=bool)
        self.rects: list[np.ndarray] = []
        self.reserved: list[np.ndarray] = []
        self.placements: list[_Placement] = []
        self.seeds: list[tuple[int, int]] = []  # grid cells (j, i) just inside each door
        for h in shell.holes:
            if h.kind != "door":
                continue
            s_mid = 0.5 * (h.s0 + h.s1)
            a = shell.to_world_xy(h.side, h.s0 - 0.15, 0.0)
            b = shell.to_world_xy(h.side, h.s1 + 0.15, 1.0)
            self.reserved.append(np.array([*np.minimum(a, b), *np.maximum(a, b)]))
            p = shell.to_world_xy(h.side, s_mid, BODY_RADIUS + 2 * cell)
            i, j = np.floor((p - self.origin) / cell).astype(int)
            self.seeds.append((int(j), int(i)))

    # geometry -------------------------------------------------------------------------
    @staticmethod
    def footprint(model: FurnitureModel, turns: int, xy: np.ndarray) -> np.ndarray:
        hx, hy = model.half_extent_xy
        if turns % 2:
            hx, hy = hy, hx
        return np.array([xy[0] - hx, xy[1] - hy, xy[0] + hx, xy[1] + hy])

    def _cells(self, rect: np.ndarray) -> tuple[slice, slice]:
        """Grid cells whose centres fall inside ``rect``."""
        i0 = int(np.ceil((rect[0] - self.origin[0]) / self.cell - 0.5 - 1e-9))
        i1 = int(np.floor((rect[2] - self.origin[0]) / self.cell - 0.5 + 1e-9))
        j0 = int(np.ceil((rect[1] - self.origin[1]) / self.cell - 0.5 - 1e-9))
        j1 = int(np.floor((rect[3] - self.origin[1]) / self.cell - 0.5 + 1e-9))
        return slice(max(j0, 0), max(j1 + 1, 0)), slice(max(i0, 0), max(i1 + 1, 0))

    def fits(self, rect: np.ndarray, clearance: float, margin: float) -> bool:
        W, D = self.shell.width, self.shell.depth
        if (rect[0] < -W / 2 + margin - 1e-9 or rect[2] > W / 2 - margin + 1e-9
                or rect[1] < -D / 2 + margin - 1e-9 or rect[3] > D / 2 - margin + 1e-9):
            return False
        for r in self.rects:
            if (rect[0] < r[2] + clearance and r[0] < rect[2] + clearance
                    and rect[1] < r[3] + clearance and r[1] < rect[3] + clearance):
                return False
        return all(not (rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3])
                   for r in self.reserved)

    def walkable(self, blocked: np.ndarray) -> np.ndarray:
        """Cells a disc of radius BODY_RADIUS sweeps, starting from the door."""
        free = ~blocked
        dist = ndimage.distance_transform_edt(np.pad(free, 1))[1:-1, 1:-1] * self.cell
        centres = dist > BODY_RADIUS
        labels, n = ndimage.label(centres)
        if n == 0:
            return np.zeros_like(free)
        if self.seeds:
            ids = {int(labels[j, i]) for j, i in self.seeds
                   if 0 <= j < self.ny and 0 <= i < self.nx}
            ids.discard(0)
            if len(ids) != 1:  # a door is blocked, or two doors lead to separate regions
                return np.zeros_like(free)
            keep = ids.pop()
        else:
            keep = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
        comp = labels == keep
        reach = ndimage.distance_transform_edt(~comp) * self.cell <= BODY_RADIUS + 1e-9
        return reach & free

    def walkable_fraction(self, blocked: np.ndarray) -> float:
        return float(self.walkable(blocked).mean())

    # placing --------------------------------------------------------------------------
    def add(self, model: FurnitureModel, turns: int, xy: np.ndarray, *, clearance: float = 0.1,
            margin: float = 0.0) -> bool:
        """Place a model if it fits and the room stays walkable; returns whether it did."""
        xy = np.round(np.asarray(xy, dtype=np.float64), 4)
        rect = self.footprint(model, turns, xy)
        if not self.fits(rect, clearance, margin):
            return False
        blocks = model.category != "mat"
        if blocks:
            trial = self.blocked.copy()
            trial[self._cells(rect)] = True
            if self.walkable_fraction(trial) < MIN_WALKABLE_FRACTION:
                return False
            self.blocked = trial
        self.rects.append(rect)
        self.placements.append(_Placement(model, turns % 4, xy))
        return True

    def add_group(self, items: Sequence[tuple[FurnitureModel, int, np.ndarray, float]]) -> bool:
        """Place all ``(model, turns, xy, clearance)`` items or none of them."""
        state = (self.blocked.copy(), list(self.rects), list(self.placements))
        for model, turns, xy, clearance in items:
            if not self.add(model, turns, xy, clearance=clearance):
                self.blocked, self.rects, self.placements = state
                return False
        return True

    def wall_spot(self, model: FurnitureModel, rng: np.random.Generator, side: str,
                  gap: float = 0.02) -> tuple[int, np.ndarray] | None:
        """A random position with the model's back against a wall (None if it cannot fit).

        Tall objects avoid windows; nothing is put in front of a door (reserved zones).
        """
        turns = _BACK_TO_WALL_TURNS[side]
        hx, hy = model.half_extent_xy
        L = self.shell.wall_length(side)
        lo, hi = hx + 0.03, L - hx - 0.03
        if hi < lo:
            return None
        s = float(rng.uniform(lo, hi))
        for h in self.shell.holes:
            if (h.side == side and h.kind == "window" and model.height > h.z0 - 0.05
                    and s - hx < h.s1 + 0.1 and h.s0 - 0.1 < s + hx):
                return None
        return turns, self.shell.to_world_xy(side, s, gap + hy)

    def against_wall(self, model: FurnitureModel, rng: np.random.Generator,
                     sides: Sequence[str] | None = None, tries: int = 40,
                     clearance: float = 0.1) -> _Placement | None:
        sides = list(sides or self.shell.sides or WALL_SIDES)
        for _ in range(tries):
            spot = self.wall_spot(model, rng, sides[int(rng.integers(len(sides)))])
            if spot is not None and self.add(model, *spot, clearance=clearance):
                return self.placements[-1]
        return None

    def anywhere(self, model: FurnitureModel, rng: np.random.Generator,
                 turns: Sequence[int] = (0, 1, 2, 3), tries: int = 40, clearance: float = 0.1,
                 region: np.ndarray | None = None, margin: float = 0.3) -> _Placement | None:
        W, D = self.shell.width, self.shell.depth
        region = np.array([-W / 2, -D / 2, W / 2, D / 2]) if region is None else region
        for _ in range(tries):
            k = int(turns[int(rng.integers(len(turns)))])
            hx, hy = model.half_extent_xy
            if k % 2:
                hx, hy = hy, hx
            lo = region[:2] + np.array([hx, hy]) + margin
            hi = region[2:] - np.array([hx, hy]) - margin
            if np.any(hi < lo):
                continue
            xy = rng.uniform(lo, hi)
            if self.add(model, k, xy, clearance=clearance):
                return self.placements[-1]
        return None


def _front_xy(turns: int) -> np.ndarray:
    """World x, y direction of local +y after ``turns`` quarter turns."""
    return quarter_turn_rotation(turns)[:2, 1]


def _turns_facing(direction_xy: np.ndarray) -> int:
    """Quarter turns that make local +y point along an axis-aligned world direction."""
    return int(np.argmax([np.dot(_front_xy(k), direction_xy) for k in range(4)]))


def _in_front(anchor: _Placement, model: FurnitureModel, gap: float, turns: int,
              offset_lateral: float = 0.0) -> np.ndarray:
    """Position of ``model`` (rotated by ``turns``) ``gap`` metres in front of ``anchor``."""
    f = _front_xy(anchor.turns)
    lat = np.array([f[1], -f[0]])
    ahy = anchor.model.half_extent_xy[1]
    mhx, mhy = model.half_extent_xy
    depth_along_f = mhy if (turns - anchor.turns) % 2 == 0 else mhx
    return anchor.xy + f * (ahy + gap + depth_along_f) + lat * offset_lateral


def _chairs_around_table(layout: _Layout, rng: np.random.Generator, table: _Placement,
                         n_chairs: int, label: str = "chair") -> None:
    """Chairs on the table's long sides (then ends), each facing the table."""
    w = 2 * table.model.half_extent_xy[0]
    per_side = 1 if w < 1.3 else 2
    slots: list[tuple[int, float]] = []  # (side sign along table local y, lateral offset)
    for i in range(per_side):
        off = 0.0 if per_side == 1 else (i - 0.5) * w / 2
        slots += [(1, off), (-1, off)]
    order = [int(i) for i in rng.permutation(len(slots))][:n_chairs]
    for idx in order:
        sign, off = slots[idx]
        chair = BUILDERS["chair"](rng, label=label)
        anchor_turns = table.turns if sign > 0 else table.turns + 2
        anchor = _Placement(table.model, anchor_turns % 4, table.xy)
        turns = (anchor_turns + 2) % 4  # chair faces back towards the table
        gap = float(rng.uniform(0.02, 0.12))
        xy = _in_front(anchor, chair, gap, turns, off * sign)
        layout.add(chair, turns, xy, clearance=0.02)


def _desk_with_chair(layout: _Layout, rng: np.random.Generator, sides: Sequence[str],
                     tries: int = 40, label: str = "desk") -> bool:
    desk = BUILDERS["desk"](rng, label=label)
    chair = BUILDERS["chair"](rng, label="desk_chair")
    for _ in range(tries):
        spot = layout.wall_spot(desk, rng, sides[int(rng.integers(len(sides)))])
        if spot is None:
            continue
        turns, xy = spot
        anchor = _Placement(desk, turns, xy)
        chair_turns = (turns + 2) % 4
        chair_xy = _in_front(anchor, chair, float(rng.uniform(0.05, 0.2)), chair_turns)
        if layout.add_group([(desk, turns, xy, 0.1), (chair, chair_turns, chair_xy, 0.02)]):
            return True
    return False


def _other_sides(shell: _Shell, avoid_door: bool = True) -> list[str]:
    door_sides = {h.side for h in shell.holes if h.kind == "door"}
    sides = [s for s in shell.sides if not (avoid_door and s in door_sides)]
    return sides or list(shell.sides)


def _round5(x: float) -> float:
    return float(np.round(x / CELL_SIZE) * CELL_SIZE)


def _indoor_shell(rng: np.random.Generator, w: tuple[float, float], d: tuple[float, float],
                  h: tuple[float, float], n_windows: int, door_sides: Sequence[str] = WALL_SIDES,
                  window_sides: Sequence[str] = WALL_SIDES) -> _Shell:
    W, D = _round5(rng.uniform(*w)), _round5(rng.uniform(*d))
    H = float(np.round(rng.uniform(*h), 3))
    holes = _choose_holes(rng, W, D, H, door_sides, window_sides, n_windows)
    return _Shell(W, D, H, 0.12, WALL_SIDES, holes)


# ----------------------------------------------------------------------------------------
# room kinds


def _living_room(rng: np.random.Generator) -> tuple[_Shell, _Layout]:
    shell = _indoor_shell(rng, (5.0, 7.0), (4.2, 5.5), (2.5, 2.8), int(rng.integers(1, 3)))
    lay = _Layout(shell)
    quiet = _other_sides(shell)
    sofa = lay.against_wall(BUILDERS["sofa"](rng, label="sofa"), rng, quiet)
    if sofa is not None:
        table = BUILDERS["low_table"](rng)
        lay.add(table, sofa.turns, _in_front(sofa, table, float(rng.uniform(0.35, 0.5)),
                                             sofa.turns), clearance=0.05)
        table_p = lay.placements[-1] if lay.placements[-1].model is table else None
        if table_p is not None:
            # An armchair beside the coffee table, facing it.
            arm = BUILDERS["chair"](rng, label="armchair")
            f = _front_xy(sofa.turns)
            lat = np.array([f[1], -f[0]]) * (1 if rng.uniform() < 0.5 else -1)
            turns = _turns_facing(-lat)
            depth = arm.half_extent_xy[1]
            pos = table_p.xy + lat * (table_p.model.half_extent_xy[0] + 0.35 + depth)
            lay.add(arm, turns, pos, clearance=0.1)
    if rng.uniform() < 0.5:
        lay.against_wall(BUILDERS["sofa"](rng, label="loveseat"), rng, quiet)
    dining = lay.anywhere(BUILDERS["table"](rng, label="dining_table"), rng, (0, 1),
                          clearance=0.6, tries=80)
    if dining is not None:
        _chairs_around_table(lay, rng, dining, int(rng.integers(2, 5)))
    for _ in range(int(rng.integers(1, 3))):
        lay.against_wall(BUILDERS["shelf"](rng, label="bookshelf"), rng)
    if rng.uniform() < 0.7:
        lay.anywhere(BUILDERS["mat"](rng, label="rug"), rng, (0, 1), clearance=0.1)
    if rng.uniform() < 0.6:
        lay.anywhere(BUILDERS["stool"](rng), rng, clearance=0.3)
    return shell, lay


def _office(rng: np.random.Generator) -> tuple[_Shell, _Layout]:
    shell = _indoor_shell(rng, (5.0, 7.5), (4.5, 6.0), (2.6, 3.0), int(rng.integers(1, 4)))
    lay = _Layout(shell)
    n_desks = int(rng.integers(2, 5))
    for _ in range(n_desks):
        _desk_with_chair(lay, rng, list(shell.sides))
    for _ in range(int(rng.integers(1, 3))):
        lay.against_wall(BUILDERS["shelf"](rng, label="filing_shelf"), rng)
    if rng.uniform() < 0.7:
        meeting = lay.anywhere(BUILDERS["table"](rng, label="meeting_table"), rng, (0, 1),
                               clearance=0.7)
        if meeting is not None:
            _chairs_around_table(lay, rng, meeting, int(rng.integers(2, 5)))
    if rng.uniform() < 0.5:
        lay.against_wall(BUILDERS["sofa"](rng, label="loveseat"), rng, _other_sides(shell))
    if rng.uniform() < 0.5:
        lay.anywhere(BUILDERS["stool"](rng), rng, clearance=0.3)
    return shell, lay


def _bedroom(rng: np.random.Generator) -> tuple[_Shell, _Layout]:
    shell = _indoor_shell(rng, (3.6, 5.0), (3.6, 4.6), (2.5, 2.7), int(rng.integers(1, 3)))
    lay = _Layout(shell)
    label = "single_bed" if rng.uniform() < 0.3 else "double_bed"
    bed = lay.against_wall(BUILDERS["bed"](rng, label=label), rng, _other_sides(shell), tries=80)
    if bed is not None and rng.uniform() < 0.6:
        bench = BUILDERS["bench"](rng, label="bed_bench")
        if bench.half_extent_xy[0] <= bed.model.half_extent_xy[0]:
            lay.add(bench, bed.turns, _in_front(bed, bench, 0.1, bed.turns), clearance=0.05)
    lay.against_wall(BUILDERS["shelf"](rng, label="bookshelf"), rng)
    if rng.uniform() < 0.85:
        _desk_with_chair(lay, rng, list(shell.sides))
    if bed is not None and rng.uniform() < 0.7:
        rug = BUILDERS["mat"](rng, label="rug")
        f = _front_xy(bed.turns)
        lat = np.array([f[1], -f[0]]) * (1 if rng.uniform() < 0.5 else -1)
        turns = bed.turns + 1  # long side of the rug along the bed
        xy = bed.xy + lat * (bed.model.half_extent_xy[0] + 0.05 + rug.half_extent_xy[1])
        lay.add(rug, turns, xy, clearance=0.02)
    if rng.uniform() < 0.5:
        lay.anywhere(BUILDERS["stool"](rng), rng, clearance=0.3)
    return shell, lay


def _lecture_hall(rng: np.random.Generator) -> tuple[_Shell, _Layout]:
    W, D = _round5(rng.uniform(9.0, 12.0)), _round5(rng.uniform(8.5, 11.0))
    H = float(np.round(rng.uniform(3.0, 3.6), 3))
    # Front (lecturer) wall is north; the door is on a side wall near the back.
    holes = _choose_holes(rng, W, D, H, ("east", "west"), ("east", "west"),
                          int(rng.integers(2, 5)), door_width=(0.9, 1.2),
                          door_height=(2.1, 2.3), door_s=(1.2, 2.0))
    shell = _Shell(W, D, H, 0.15, WALL_SIDES, holes)
    lay = _Layout(shell)
    platform = BUILDERS["step"](rng, label="platform")
    py = D / 2 - 0.02 - platform.half_extent_xy[1]
    px = float(rng.uniform(-0.5, 0.5))
    lay.add(platform, 0, np.array([px, py]), clearance=0.05)
    lectern = BUILDERS["desk"](rng, label="lecturer_desk", width_range=(1.2, 1.6))
    lx = px + (1 if rng.uniform() < 0.5 else -1) * (
        platform.half_extent_xy[0] + 0.4 + lectern.half_extent_xy[0])
    ly = D / 2 - 0.9 - lectern.half_extent_xy[1]
    if lay.add(lectern, 0, np.array([lx, ly]), clearance=0.1):
        chair = BUILDERS["chair"](rng, label="lecturer_chair")
        lay.add(chair, 2, _in_front(lay.placements[-1], chair, 0.1, 2), clearance=0.02)
    # Audience: rows of desks, two chairs behind each, facing north; aisles between.
    desk_w = float(np.round(rng.uniform(1.2, 1.5), 3))
    desk_d = float(np.round(rng.uniform(0.55, 0.62), 3))
    centre_aisle, side_aisle = 1.2, 0.8
    block = (W - centre_aisle - 2 * side_aisle) / 2
    per_block = max(int((block + 0.05) // (desk_w + 0.05)), 1)
    row_gap = float(rng.uniform(0.5, 0.65))
    y_top = D / 2 - max(2 * platform.half_extent_xy[1], 1.9) - 1.0
    while y_top - desk_d - 0.06 - 0.46 > -D / 2 + 1.2:
        for sgn in (-1, 1):
            for c in range(per_block):
                x = sgn * (centre_aisle / 2 + desk_w / 2 + c * (desk_w + 0.05))
                d = BUILDERS["desk"](rng, label="row_desk", width_range=(desk_w, desk_w),
                                     depth_range=(desk_d, desk_d))
                if not lay.add(d, 2, np.array([x, y_top - desk_d / 2]), clearance=0.02):
                    continue
                for off in (-desk_w / 4, desk_w / 4):
                    ch = BUILDERS["chair"](rng, label="chair")
                    cy = y_top - desk_d - 0.06 - ch.half_extent_xy[1]
                    lay.add(ch, 0, np.array([x + off, cy]), clearance=0.02)
        y_top -= desk_d + 0.06 + 0.46 + row_gap
    return shell, lay


def _gym(rng: np.random.Generator) -> tuple[_Shell, _Layout]:
    shell = _indoor_shell(rng, (8.0, 12.0), (7.0, 10.0), (3.0, 3.6), int(rng.integers(2, 5)))
    lay = _Layout(shell)
    # A block of exercise mats in one half of the hall.
    W, D = shell.width, shell.depth
    left = rng.uniform() < 0.5
    region = np.array([-W / 2, -D / 2, 0.0, D / 2]) if left else np.array([0.0, -D / 2, W / 2,
                                                                           D / 2])
    for _ in range(int(rng.integers(3, 7))):
        lay.anywhere(BUILDERS["mat"](rng, label="gym_mat"), rng, (0, 1), clearance=0.15,
                     region=region, margin=0.3)
    for _ in range(int(rng.integers(2, 4))):
        lay.against_wall(BUILDERS["bench"](rng, label="bench"), rng)
    if rng.uniform() < 0.8:
        lay.against_wall(BUILDERS["step"](rng, label="platform"), rng)
    other = np.array([0.0, -D / 2, W / 2, D / 2]) if left else np.array([-W / 2, -D / 2, 0.0,
                                                                         D / 2])
    for _ in range(int(rng.integers(2, 5))):
        lay.anywhere(BUILDERS["step"](rng, label="step"), rng, (0, 1), clearance=0.4,
                     region=other)
    for _ in range(int(rng.integers(1, 3))):
        lay.anywhere(BUILDERS["box"](rng, label="plyo_box"), rng, (0, 1), clearance=0.4,
                     region=other)
    if rng.uniform() < 0.7:
        lay.against_wall(BUILDERS["shelf"](rng, label="equipment_rack"), rng)
    return shell, lay


def _outdoor_platform(rng: np.random.Generator) -> tuple[_Shell, _Layout]:
    W, D = _round5(rng.uniform(12.0, 16.0)), _round5(rng.uniform(10.0, 14.0))
    if rng.uniform() < 0.65:  # low parapet walls with walk-through gaps
        H = float(np.round(rng.uniform(0.6, 1.1), 3))
        holes = _choose_holes(rng, W, D, H, WALL_SIDES, WALL_SIDES, 0, door_width=(1.8, 3.0),
                              door_height=(H, H))
        shell = _Shell(W, D, H, 0.2, WALL_SIDES, holes, "parapet", _PARAPET_COLOR)
    else:
        shell = _Shell(W, D, 0.0, 0.0, (), [], "parapet", _PARAPET_COLOR)
    # A raised platform along one edge, parking bays painted along the opposite edge.
    side = WALL_SIDES[int(rng.integers(4))]
    bay_side = WALL_SIDES[(WALL_SIDES.index(side) + 2) % 4]
    door_span = [(h.s0, h.s1) for h in shell.holes if h.side == bay_side]
    L = shell.wall_length(bay_side)
    bay_w, bay_l, line = 2.5, 4.8, 0.12
    n_bays = int((L - 1.0) // bay_w)
    s0 = 0.5 * (L - n_bays * bay_w)
    bays = []
    for i in range(n_bays + 1):
        s = s0 + i * bay_w
        if any(a - 0.3 < s < b + 0.3 for a, b in door_span):
            continue
        a = shell.to_world_xy(bay_side, s - line / 2, 0.4)
        b = shell.to_world_xy(bay_side, s + line / 2, 0.4 + bay_l)
        bays.append(np.array([*np.minimum(a, b), *np.maximum(a, b)]))
    shell.markings = bays
    lay = _Layout(shell)
    a = shell.to_world_xy(bay_side, s0, 0.0)
    b = shell.to_world_xy(bay_side, L - s0, 0.4 + bay_l)
    lay.reserved.append(np.array([*np.minimum(a, b), *np.maximum(a, b)]))  # keep bays clear
    platform = BUILDERS["step"](rng, label="platform")
    spot = None
    for _ in range(30):
        spot = lay.wall_spot(platform, rng, side, gap=0.0 if not shell.sides else 0.02)
        if spot is not None and lay.add(platform, *spot):
            break
        spot = None
    if spot is not None:
        anchor = lay.placements[-1]
        for off in (-0.5, 0.5)[: int(rng.integers(1, 3))]:
            step = BUILDERS["step"](rng, label="step")
            lay.add(step, anchor.turns, _in_front(anchor, step, 0.0, anchor.turns,
                                                  off * anchor.model.half_extent_xy[0]),
                    clearance=0.0)
    # A row of bollards separating the parking bays from the pedestrian area.
    n_bollards = int(rng.integers(4, 9))
    spacing = float(rng.uniform(1.2, 1.8))
    for i in range(n_bollards):
        s = 0.5 * L + (i - (n_bollards - 1) / 2) * spacing
        xy = shell.to_world_xy(bay_side, s, 0.4 + bay_l + 0.6)
        lay.add(BUILDERS["bollard"](rng), 0, xy, clearance=0.3)
    for _ in range(int(rng.integers(3, 7))):
        bench = BUILDERS["bench"](rng, label="bench")
        if shell.sides and rng.uniform() < 0.5:
            lay.against_wall(bench, rng)
        else:
            lay.anywhere(bench, rng, clearance=0.6)
    for _ in range(int(rng.integers(2, 5))):
        label = "concrete_block" if rng.uniform() < 0.5 else "crate"
        lay.anywhere(BUILDERS["box"](rng, label=label), rng, clearance=0.5)
    return shell, lay


_KIND_BUILDERS: dict[str, Callable[[np.random.Generator], tuple[_Shell, _Layout]]] = {
    "living_room": _living_room,
    "office": _office,
    "bedroom": _bedroom,
    "lecture_hall": _lecture_hall,
    "gym": _gym,
    "outdoor_platform": _outdoor_platform,
}


# ----------------------------------------------------------------------------------------
# assembly


def _rgba(color: tuple[float, float, float]) -> np.ndarray:
    return np.array([*(np.round(np.asarray(color) * 255)), 255], dtype=np.uint8)


def _assemble(kind: str, seed: int, shell: _Shell, lay: _Layout, ceiling: bool) -> Room:
    W, D, H, t = shell.width, shell.depth, shell.height, shell.thickness
    pieces: list[tuple[trimesh.Trimesh, np.ndarray]] = []  # (mesh, rgba) per object
    objects: list[SceneObject] = []

    def add_object(mesh: trimesh.Trimesh, color: np.ndarray, category: str, label: str,
                   surfaces: list[Surface], params: dict | None = None,
                   front: np.ndarray | None = None) -> int:
        oid = len(objects)
        b = mesh.bounds
        objects.append(SceneObject(oid, category, label, b[0].copy(), b[1].copy(), surfaces,
                                   dict(params or {}), front))
        pieces.append((mesh, color))
        return oid

    floor_parts = [box_mesh((W + 2 * t, D + 2 * t, 0.05), (0.0, 0.0, -0.025))]
    floor_parts += [box_mesh((r[2] - r[0], r[3] - r[1], _PAINT), (0.5 * (r[0] + r[2]),
                                                                 0.5 * (r[1] + r[3]), _PAINT / 2))
                    for r in shell.markings]
    floor_colors = np.concatenate(
        [np.tile(_rgba(_FLOOR_COLORS[kind] if i == 0 else _PAINT_COLOR), (len(m.faces), 1))
         for i, m in enumerate(floor_parts)])
    add_object(trimesh.util.concatenate(floor_parts), floor_colors, "floor", "floor",
               [horizontal_surface("floor", (0.0, 0.0, 0.0), (W / 2, D / 2))])

    openings: list[Opening] = []
    for side in shell.sides:
        meshes, surfaces = _wall_pieces(shell, side)
        n = np.array([*_INWARD[side], 0.0])
        oid = add_object(trimesh.util.concatenate(meshes), _rgba(shell.wall_color), "wall",
                         f"{shell.wall_label}_{side}", surfaces, front=n)
        for h in shell.holes:
            if h.side != side:
                continue
            p = shell.to_world_xy(side, 0.5 * (h.s0 + h.s1), -t / 2)
            u = np.cross([0.0, 0.0, 1.0], n)
            openings.append(Opening(h.kind, oid, np.array([p[0], p[1], 0.5 * (h.z0 + h.z1)]), n,
                                    u, np.array([0.0, 0.0, 1.0]),
                                    np.array([0.5 * (h.s1 - h.s0), 0.5 * (h.z1 - h.z0)]), t))
    if ceiling:
        if not shell.sides:
            raise ValueError(f"a {kind} has no walls to carry a ceiling")
        add_object(box_mesh((W + 2 * t, D + 2 * t, 0.05), (0.0, 0.0, H + 0.025)),
                   _rgba(CATEGORY_COLORS["ceiling"]), "ceiling", "ceiling", [])

    for p in lay.placements:
        mesh, surfaces = p.model.placed(p.turns, p.xy)
        front = np.array([*_front_xy(p.turns), 0.0])
        add_object(mesh, _rgba(CATEGORY_COLORS[p.model.category]), p.model.category,
                   p.model.label, surfaces, p.model.params, front)

    meshes = [m for m, _ in pieces]
    mesh = trimesh.util.concatenate(meshes)
    # Keep vertices float32-exact so a saved-and-loaded room equals the generated one.
    mesh.vertices = np.asarray(mesh.vertices, dtype=np.float32).astype(np.float64)
    mesh.visual.face_colors = np.concatenate(
        [np.broadcast_to(c, (len(m.faces), 4)) for m, c in pieces])
    face_object_id = np.concatenate(
        [np.full(len(m.faces), i, dtype=np.int32) for i, m in enumerate(meshes)])

    grid = np.full(lay.blocked.shape, FREE_UNREACHABLE, dtype=np.uint8)
    grid[lay.blocked] = FREE_OCCUPIED
    grid[lay.walkable(lay.blocked)] = FREE_WALKABLE
    free_space = FreeSpace(grid, lay.origin.copy(), lay.cell, BODY_RADIUS)
    return Room(mesh=mesh, face_object_id=face_object_id, objects=objects, kind=kind,
                seed=int(seed), free_space=free_space, openings=openings,
                floor_size=np.array([W, D]), wall_height=H if shell.sides else 0.0,
                has_ceiling=ceiling)


def generate_room(kind: str, seed: int, *, ceiling: bool = False) -> Room:
    """Generate a furnished room.

    Args:
        kind: one of :data:`ROOM_KINDS`.
        seed: any non-negative integer; the same (kind, seed, GENERATOR_VERSION) always gives
            the same room.
        ceiling: add a ceiling slab (off by default so that cameras see in); not allowed for
            rooms without walls.

    Returns:
        The Room, world frame z up, metres, floor top at z = 0.
    """
    if kind not in _KIND_BUILDERS:
        raise KeyError(f"unknown room kind {kind!r}; choose one of {', '.join(ROOM_KINDS)}")
    rng = np.random.default_rng([int(seed), ROOM_KINDS.index(kind)])
    shell, lay = _KIND_BUILDERS[kind](rng)
    room = _assemble(kind, seed, shell, lay, ceiling)
    logger.debug("%s seed %d: %d objects, %d faces, walkable %.2f", kind, seed,
                 len(room.objects), len(room.mesh.faces), room.free_space.walkable_fraction)
    return room


# ----------------------------------------------------------------------------------------
# preview


def render_preview(room: Room, width: int = 640, height: int = 480, *, pitch_deg: float = 35.0,
                   fov_x_deg: float = 60.0, supersample: int = 2) -> np.ndarray:
    """Overview picture from above one corner, looking down at ``pitch_deg``.

    The camera sits beyond the corner farthest from the (first) door; the two walls meeting
    at that corner are cut away so that the furniture is visible. Faces keep their category
    colours.

    Args:
        room: the room to draw.
        width: image width in pixels.
        height: image height in pixels.
        pitch_deg: angle of the optical axis below the horizontal, degrees.
        fov_x_deg: horizontal field of view, degrees.
        supersample: rays per pixel along each axis.

    Returns:
        uint8 array of shape (height, width, 3).
    """
    from sahmr.viz.render import MeshToRender, intrinsics_from_fov, look_at, render

    W, D = room.floor_size
    door_walls = {room.objects[o.wall_id].label.rsplit("_", 1)[-1] for o in room.openings
                  if o.kind == "door"}
    corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    side_of = {(-1, 0): "west", (1, 0): "east", (0, -1): "south", (0, 1): "north"}
    corner = corners[0]
    for c in corners:
        if not door_walls & {side_of[(c[0], 0)], side_of[(0, c[1])]}:
            corner = c
            break
    cut = {side_of[(corner[0], 0)], side_of[(0, corner[1])]}
    keep = np.ones(len(room.objects), dtype=bool)
    for o in room.objects:
        if o.category == "wall" and o.label.rsplit("_", 1)[-1] in cut:
            keep[o.id] = False
        if o.category == "ceiling":
            keep[o.id] = False
    faces_keep = keep[room.face_object_id]
    colors = np.asarray(room.mesh.visual.face_colors[:, :3], dtype=np.float64) / 255.0
    draw = MeshToRender(room.mesh.vertices, room.mesh.faces[faces_keep],
                        face_colors=colors[faces_keep])

    K = intrinsics_from_fov(width, height, fov_x_deg)
    horiz = np.array([corner[0] * W, corner[1] * D], dtype=np.float64)
    horiz /= np.linalg.norm(horiz)
    pitch = np.deg2rad(pitch_deg)
    back = np.array([horiz[0] * np.cos(pitch), horiz[1] * np.cos(pitch), np.sin(pitch)])
    top = max(room.wall_height, 1.0)
    pts = np.array([[x, y, z] for x in (-W / 2, W / 2) for y in (-D / 2, D / 2)
                    for z in (0.0, top)])
    target = np.array([0.0, 0.0, 0.25 * top])

    def fits(dist: float) -> bool:
        T = look_at(target + back * dist, target, np.array([0.0, 0.0, 1.0]))
        pc = pts @ T[:3, :3].T + T[:3, 3]
        if np.any(pc[:, 2] <= 0.1):
            return False
        uv = pc[:, :2] / pc[:, 2:3] * K[0, 0] + K[:2, 2]
        m = 0.04 * width
        return bool(np.all((uv[:, 0] > m) & (uv[:, 0] < width - m) & (uv[:, 1] > m)
                           & (uv[:, 1] < height - m)))

    lo, hi = 0.5, 200.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    T_w2c = look_at(target + back * hi, target, np.array([0.0, 0.0, 1.0]))
    out = render([draw], K, T_w2c, width, height, supersample=supersample,
                 background=(0.97, 0.97, 0.97))
    return out.rgb


def save_preview(room: Room, path: str | Path, **kwargs) -> Path:
    """Render :func:`render_preview` and write it as PNG.

    Args:
        room: the room to draw.
        path: output file.
        **kwargs: passed to :func:`render_preview`.

    Returns:
        The path written.
    """
    from PIL import Image

    path = Path(path)
    Image.fromarray(render_preview(room, **kwargs)).save(path, optimize=True)
    return path

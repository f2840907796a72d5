"""Procedural furniture: small closed box/cylinder meshes with labelled contact surfaces.

Every builder returns a :class:`FurnitureModel` in the object's LOCAL frame:

* z up, metres, the object stands on the floor plane z = 0;
* the footprint (axis-aligned bounding box in x-y) is centred on the origin;
* +y is the object's FRONT: the direction a person sitting on it faces (chair, sofa,
  bench), the side a person uses (desk, shelf), the foot end of a bed. Backrests and
  headboards are on the -y side.

A room places a model with a quarter-turn yaw about z and a floor translation
(:meth:`FurnitureModel.placed`). Dimensions are drawn from :data:`DIMENSION_RANGES`
(metres) with the caller's random generator, so a seeded generator reproduces the model
exactly. Each model reports the values it drew in ``params`` under the names used in
:data:`DIMENSION_RANGES`.

Contact surfaces (:class:`Surface`) are oriented rectangles lying ON the mesh, with a
``kind`` from :data:`SURFACE_KINDS`; :data:`REQUIRED_SURFACES` says which kinds each
category always carries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import trimesh

logger = logging.getLogger(__name__)

SURFACE_KINDS: tuple[str, ...] = (
    "floor",
    "seat",
    "backrest",
    "bed",
    "tabletop",
    "wall",
    "step",
    "mat",
    "armrest",
    "shelf",
)
"""Kinds of contact surface a body may touch."""

FURNITURE_CATEGORIES: tuple[str, ...] = (
    "chair",
    "stool",
    "sofa",
    "bed",
    "table",
    "low_table",
    "desk",
    "shelf",
    "step",
    "bench",
    "mat",
    "bollard",
    "box",
)
"""Categories the builders in this module produce."""

DIMENSION_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "chair": {
        "seat_height": (0.42, 0.50),
        "seat_width": (0.40, 0.48),
        "seat_depth": (0.40, 0.46),
        "backrest_height": (0.35, 0.50),
    },
    "stool": {"seat_height": (0.45, 0.75), "seat_radius": (0.15, 0.20)},
    "sofa": {
        "seat_height": (0.38, 0.48),
        "width": (1.20, 2.30),
        "depth": (0.80, 0.95),
        "back_height": (0.75, 0.90),
        "armrest_height": (0.55, 0.65),
    },
    "bed": {
        "top_height": (0.45, 0.60),
        "length": (1.95, 2.15),
        "width": (0.90, 1.80),
        "headboard_height": (0.90, 1.20),
    },
    "table": {"top_height": (0.70, 0.78), "width": (1.20, 1.80), "depth": (0.75, 1.00)},
    "low_table": {"top_height": (0.35, 0.50), "width": (0.80, 1.20), "depth": (0.50, 0.70)},
    "desk": {"top_height": (0.70, 0.78), "width": (1.00, 1.60), "depth": (0.55, 0.75)},
    "shelf": {"height": (1.20, 2.00), "width": (0.60, 1.20), "depth": (0.28, 0.40)},
    "step": {"height": (0.15, 0.40), "width": (0.60, 3.00), "depth": (0.35, 2.00)},
    "bench": {"seat_height": (0.40, 0.48), "length": (1.20, 2.00), "depth": (0.30, 0.45)},
    "mat": {"thickness": (0.01, 0.06), "length": (1.40, 2.40), "width": (0.80, 1.70)},
    "bollard": {"height": (0.45, 0.75), "radius": (0.08, 0.15)},
    "box": {"height": (0.40, 0.60), "width": (0.40, 0.80), "depth": (0.40, 0.80)},
}
"""Per category, the range (low, high) in metres of every randomised dimension."""

REQUIRED_SURFACES: dict[str, frozenset[str]] = {
    "floor": frozenset({"floor"}),
    "wall": frozenset({"wall"}),
    "ceiling": frozenset(),
    "chair": frozenset({"seat", "backrest"}),
    "stool": frozenset({"seat"}),
    "sofa": frozenset({"seat", "backrest", "armrest"}),
    "bed": frozenset({"bed", "backrest"}),
    "table": frozenset({"tabletop"}),
    "low_table": frozenset({"tabletop"}),
    "desk": frozenset({"tabletop"}),
    "shelf": frozenset({"shelf"}),
    "step": frozenset({"step"}),
    "bench": frozenset({"seat"}),
    "mat": frozenset({"mat"}),
    "bollard": frozenset({"seat"}),
    "box": frozenset({"seat"}),
}
"""Surface kinds every object of a category carries (it may carry more)."""

CATEGORY_COLORS: dict[str, tuple[float, float, float]] = {
    "floor": (0.80, 0.76, 0.70),
    "wall": (0.90, 0.90, 0.88),
    "ceiling": (0.95, 0.95, 0.95),
    "chair": (0.90, 0.45, 0.15),
    "stool": (0.95, 0.78, 0.20),
    "sofa": (0.20, 0.42, 0.78),
    "bed": (0.60, 0.35, 0.70),
    "table": (0.50, 0.32, 0.18),
    "low_table": (0.68, 0.50, 0.32),
    "desk": (0.30, 0.62, 0.35),
    "shelf": (0.40, 0.25, 0.15),
    "step": (0.78, 0.74, 0.30),
    "bench": (0.70, 0.20, 0.28),
    "mat": (0.15, 0.62, 0.66),
    "bollard": (0.95, 0.55, 0.05),
    "box": (0.50, 0.52, 0.60),
}
"""RGB in [0, 1] per category, used for mesh face colours and previews."""

_SEGMENTS = 12  # sides of every cylinder; keeps meshes small


@dataclass
class Surface:
    """An oriented contact rectangle.

    Points of the rectangle are ``center + a * axis_u + b * axis_v`` with
    ``|a| <= half_size[0]`` and ``|b| <= half_size[1]``; ``axis_u x axis_v = normal``.

    Attributes:
        kind: one of :data:`SURFACE_KINDS`.
        center: (3,) rectangle centre, metres, in the frame of the owner (object-local
            for a :class:`FurnitureModel`, world for a placed object).
        normal: (3,) unit normal pointing out of the solid, towards where a body touches
            (up for seats, inward for walls, towards the sitter for backrests).
        axis_u: (3,) unit in-plane axis.
        axis_v: (3,) unit in-plane axis, ``normal x axis_u``.
        half_size: (2,) half extents along ``axis_u`` and ``axis_v``, metres.
    """

    kind: str
    center: np.ndarray
    normal: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    half_size: np.ndarray

    def __post_init__(self) -> None:
        if self.kind not in SURFACE_KINDS:
            raise ValueError(f"unknown surface kind {self.kind!r}; expected one of {SURFACE_KINDS}")
        for name in ("center", "normal", "axis_u", "axis_v"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64).reshape(3))
        self.half_size = np.asarray(self.half_size, dtype=np.float64).reshape(2)

    @property
    def area(self) -> float:
        """Area of the rectangle in square metres."""
        return float(4.0 * self.half_size[0] * self.half_size[1])

    def corners(self) -> np.ndarray:
        """Corners of the rectangle, array of shape (4, 3), counter-clockwise about ``normal``."""
        u = self.axis_u * self.half_size[0]
        v = self.axis_v * self.half_size[1]
        return np.stack([self.center - u - v, self.center + u - v, self.center + u + v,
                         self.center - u + v])

    def grid_points(self, n_u: int = 5, n_v: int = 5, inset: float = 0.0) -> np.ndarray:
        """Regular grid of points on the rectangle.

        Args:
            n_u: number of points along ``axis_u``.
            n_v: number of points along ``axis_v``.
            inset: distance in metres kept from the rectangle's edges.

        Returns:
            Array of shape (n_u * n_v, 3), same frame as ``center``.
        """
        hu = max(self.half_size[0] - inset, 0.0)
        hv = max(self.half_size[1] - inset, 0.0)
        a = np.linspace(-hu, hu, n_u)
        b = np.linspace(-hv, hv, n_v)
        aa, bb = np.meshgrid(a, b, indexing="ij")
        return (self.center + aa.reshape(-1, 1) * self.axis_u
                + bb.reshape(-1, 1) * self.axis_v)

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> Surface:
        """The rectangle moved by ``x -> rotation @ x + translation``.

        Args:
            rotation: (3, 3) rotation matrix.
            translation: (3,) translation, metres.

        Returns:
            A new Surface in the target frame.
        """
        R = np.asarray(rotation, dtype=np.float64)
        t = np.asarray(translation, dtype=np.float64)
        return Surface(self.kind, R @ self.center + t, R @ self.normal, R @ self.axis_u,
                       R @ self.axis_v, self.half_size.copy())

    def to_dict(self, decimals: int = 6) -> dict:
        """JSON-serialisable form (floats rounded to ``decimals``)."""
        return {
            "kind": self.kind,
            "center": _round_list(self.center, decimals),
            "normal": _round_list(self.normal, decimals),
            "axis_u": _round_list(self.axis_u, decimals),
            "axis_v": _round_list(self.axis_v, decimals),
            "half_size": _round_list(self.half_size, decimals),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Surface:
        """Inverse of :meth:`to_dict`."""
        return cls(d["kind"], d["center"], d["normal"], d["axis_u"], d["axis_v"], d["half_size"])


def _round_list(x: np.ndarray, decimals: int) -> list[float]:
    # "+ 0.0" turns -0.0 into 0.0 so that files do not depend on the sign of zeros.
    return [float(v) + 0.0 for v in np.round(np.asarray(x, dtype=np.float64), decimals)]


def quarter_turn_rotation(quarter_turns: int) -> np.ndarray:
    """Exact rotation about +z by ``quarter_turns * 90`` degrees (counter-clockwise).

    Args:
        quarter_turns: any integer; taken modulo 4.

    Returns:
        (3, 3) rotation matrix with entries in {-1, 0, 1}.
    """
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][quarter_turns % 4]
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


@dataclass
class FurnitureModel:
    """One piece of furniture in its local frame (see the module docstring).

    Attributes:
        category: one of :data:`FURNITURE_CATEGORIES`.
        label: finer name (``"armchair"``, ``"gym_mat"``, ``"platform"``...).
        mesh: trimesh.Trimesh, local frame, metres; closed boxes and cylinders.
        surfaces: contact rectangles in the local frame.
        params: the randomised dimensions (metres), keys from :data:`DIMENSION_RANGES`.
    """

    category: str
    label: str
    mesh: trimesh.Trimesh
    surfaces: list[Surface]
    params: dict[str, float] = field(default_factory=dict)

    @property
    def half_extent_xy(self) -> np.ndarray:
        """Half size of the footprint along local x and y, shape (2,), metres."""
        b = self.mesh.bounds
        return 0.5 * (b[1, :2] - b[0, :2])

    @property
    def height(self) -> float:
        """Top of the object above the floor, metres."""
        return float(self.mesh.bounds[1, 2])

    def placed(self, quarter_turns: int, xy: np.ndarray) -> tuple[trimesh.Trimesh, list[Surface]]:
        """Mesh and surfaces moved into the room.

        Args:
            quarter_turns: yaw about +z in multiples of 90 degrees (counter-clockwise).
            xy: (2,) world position of the footprint centre, metres.

        Returns:
            ``(mesh_world, surfaces_world)``; the model itself is left untouched.
        """
        R = quarter_turn_rotation(quarter_turns)
        t = np.array([xy[0], xy[1], 0.0], dtype=np.float64)
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = t
        mesh = self.mesh.copy()
        mesh.apply_transform(T)
        return mesh, [s.transformed(R, t) for s in self.surfaces]


# ----------------------------------------------------------------------------------------
# primitives and surface helpers


def box_mesh(size: tuple[float, float, float],
             center: tuple[float, float, float]) -> trimesh.Trimesh:
    """Closed axis-aligned box (8 vertices, 12 faces).

    Args:
        size: (3,) extents along x, y, z in metres.
        center: (3,) box centre, metres.

    Returns:
        trimesh.Trimesh with outward-facing faces.
    """
    T = np.eye(4)
    T[:3, 3] = center
    return trimesh.creation.box(extents=np.asarray(size, dtype=np.float64), transform=T)


def cylinder_mesh(radius: float, z0: float, z1: float, xy: tuple[float, float] = (0.0, 0.0),
                  sections: int = _SEGMENTS) -> trimesh.Trimesh:
    """Closed vertical cylinder (a prism with ``sections`` sides).

    Args:
        radius: metres (circumscribed radius of the polygon).
        z0: bottom height, metres.
        z1: top height, metres.
        xy: (2,) axis position, metres.
        sections: number of sides.

    Returns:
        trimesh.Trimesh.
    """
    T = np.eye(4)
    T[:3, 3] = (xy[0], xy[1], 0.5 * (z0 + z1))
    return trimesh.creation.cylinder(radius=radius, height=z1 - z0, sections=sections, transform=T)


def horizontal_surface(kind: str, center: tuple[float, float, float],
                       half_size: tuple[float, float]) -> Surface:
    """Upward-facing rectangle with ``axis_u = +x``, ``axis_v = +y``.

    Args:
        kind: surface kind.
        center: (3,) centre, metres.
        half_size: (2,) half extents along x and y, metres.
    """
    return Surface(kind, center, (0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), half_size)


def vertical_surface(kind: str, center: tuple[float, float, float],
                     normal: tuple[float, float, float], half_width: float,
                     half_height: float) -> Surface:
    """Vertical rectangle with horizontal ``normal``; ``axis_v = +z``.

    Args:
        kind: surface kind.
        center: (3,) centre, metres.
        normal: (3,) horizontal unit normal.
        half_width: half extent along the horizontal in-plane axis, metres.
        half_height: half extent along z, metres.
    """
    n = np.asarray(normal, dtype=np.float64)
    v = np.array([0.0, 0.0, 1.0])
    u = np.cross(v, n)
    return Surface(kind, center, n, u, v, (half_width, half_height))


def _uniform(rng: np.random.Generator, category: str, name: str,
             low: float | None = None, high: float | None = None) -> float:
    """Draw a dimension in its range (optionally narrowed), rounded to millimetres."""
    lo, hi = DIMENSION_RANGES[category][name]
    lo = lo if low is None else max(lo, low)
    hi = hi if high is None else min(hi, high)
    if hi < lo:
        raise ValueError(f"{category}.{name}: requested range lies outside "
                         f"{DIMENSION_RANGES[category][name]}")
    return float(np.round(rng.uniform(lo, hi), 3))


def _finish(category: str, label: str, parts: list[trimesh.Trimesh], surfaces: list[Surface],
            params: dict[str, float]) -> FurnitureModel:
    """Merge the parts and re-centre the footprint on the origin."""
    mesh = trimesh.util.concatenate(parts)
    b = mesh.bounds
    shift = np.array([-0.5 * (b[0, 0] + b[1, 0]), -0.5 * (b[0, 1] + b[1, 1]), 0.0])
    mesh.apply_translation(shift)
    surfaces = [s.transformed(np.eye(3), shift) for s in surfaces]
    return FurnitureModel(category, label, mesh, surfaces, params)


# ----------------------------------------------------------------------------------------
# builders


def build_chair(rng: np.random.Generator, *, label: str = "chair") -> FurnitureModel:
    """Chair: seat slab, four legs and a backrest on the -y side.

    Args:
        rng: random generator.
        label: object label.
    """
    h = _uniform(rng, "chair", "seat_height")
    w = _uniform(rng, "chair", "seat_width")
    d = _uniform(rng, "chair", "seat_depth")
    bh = _uniform(rng, "chair", "backrest_height")
    t, bt, leg = 0.04, 0.04, 0.035
    parts = [box_mesh((w, d, t), (0.0, 0.0, h - t / 2))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(box_mesh((leg, leg, h - t),
                                  (sx * (w / 2 - leg / 2), sy * (d / 2 - leg / 2), (h - t) / 2)))
    parts.append(box_mesh((w, bt, bh), (0.0, -d / 2 + bt / 2, h + bh / 2)))
    surfaces = [
        horizontal_surface("seat", (0.0, bt / 2, h), (w / 2, (d - bt) / 2)),
        vertical_surface("backrest", (0.0, -d / 2 + bt, h + bh / 2), (0.0, 1.0, 0.0), w / 2,
                         bh / 2),
    ]
    params = {"seat_height": h, "seat_width": w, "seat_depth": d, "backrest_height": bh}
    return _finish("chair", label, parts, surfaces, params)


def build_stool(rng: np.random.Generator, *, label: str = "stool") -> FurnitureModel:
    """Stool: round seat on four legs; the seat surface is the inscribed square.

    Args:
        rng: random generator.
        label: object label.
    """
    h = _uniform(rng, "stool", "seat_height")
    r = _uniform(rng, "stool", "seat_radius")
    t, leg = 0.04, 0.03
    parts = [cylinder_mesh(r, h - t, h)]
    a = 0.6 * r / np.sqrt(2.0)
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(box_mesh((leg, leg, h - t), (sx * a, sy * a, (h - t) / 2)))
    surfaces = [horizontal_surface("seat", (0.0, 0.0, h), (0.65 * r, 0.65 * r))]
    return _finish("stool", label, parts, surfaces, {"seat_height": h, "seat_radius": r})


def build_sofa(rng: np.random.Generator, *, label: str = "sofa") -> FurnitureModel:
    """Sofa: seat block, backrest block on -y, an armrest block at each end.

    Args:
        rng: random generator.
        label: ``"sofa"`` (1.6-2.3 m wide) or ``"loveseat"`` (1.2-1.5 m wide).
    """
    h = _uniform(rng, "sofa", "seat_height")
    w = _uniform(rng, "sofa", "width", *((1.2, 1.5) if label == "loveseat" else (1.6, 2.3)))
    d = _uniform(rng, "sofa", "depth")
    bh = _uniform(rng, "sofa", "back_height")
    ah = _uniform(rng, "sofa", "armrest_height")
    bt = float(np.round(rng.uniform(0.15, 0.22), 3))
    aw = float(np.round(rng.uniform(0.12, 0.20), 3))
    sd = d - bt  # seat depth in front of the back
    parts = [
        box_mesh((w - 2 * aw, sd, h), (0.0, -d / 2 + bt + sd / 2, h / 2)),
        box_mesh((w, bt, bh), (0.0, -d / 2 + bt / 2, bh / 2)),
    ]
    surfaces = [
        horizontal_surface("seat", (0.0, -d / 2 + bt + sd / 2, h), ((w - 2 * aw) / 2, sd / 2)),
        vertical_surface("backrest", (0.0, -d / 2 + bt, (h + bh) / 2), (0.0, 1.0, 0.0),
                         (w - 2 * aw) / 2, (bh - h) / 2),
    ]
    for sx in (-1, 1):
        cx = sx * (w / 2 - aw / 2)
        parts.append(box_mesh((aw, sd, ah), (cx, -d / 2 + bt + sd / 2, ah / 2)))
        surfaces.append(horizontal_surface("armrest", (cx, -d / 2 + bt + sd / 2, ah),
                                           (aw / 2, sd / 2)))
    params = {"seat_height": h, "width": w, "depth": d, "back_height": bh, "armrest_height": ah}
    return _finish("sofa", label, parts, surfaces, params)


def build_bed(rng: np.random.Generator, *, label: str = "bed") -> FurnitureModel:
    """Bed: base frame, mattress on top, headboard on the -y side.

    Args:
        rng: random generator.
        label: ``"single_bed"`` (0.9-1.0 m wide), anything else is a double (1.4-1.8 m).
    """
    top = _uniform(rng, "bed", "top_height")
    length = _uniform(rng, "bed", "length")
    w = _uniform(rng, "bed", "width", *((0.9, 1.0) if label == "single_bed" else (1.4, 1.8)))
    hh = _uniform(rng, "bed", "headboard_height")
    mt = float(np.round(rng.uniform(0.18, 0.25), 3))
    ht = 0.06
    body = length - ht
    base_h = top - mt
    cy = -length / 2 + ht + body / 2
    parts = [
        box_mesh((w, body, base_h), (0.0, cy, base_h / 2)),
        box_mesh((w - 0.02, body - 0.02, mt), (0.0, cy, base_h + mt / 2)),
        box_mesh((w, ht, hh), (0.0, -length / 2 + ht / 2, hh / 2)),
    ]
    surfaces = [
        horizontal_surface("bed", (0.0, cy, top), ((w - 0.02) / 2, (body - 0.02) / 2)),
        vertical_surface("backrest", (0.0, -length / 2 + ht, (top + hh) / 2), (0.0, 1.0, 0.0),
                         w / 2, (hh - top) / 2),
    ]
    params = {"top_height": top, "length": length, "width": w, "headboard_height": hh}
    return _finish("bed", label, parts, surfaces, params)


def _table_like(rng: np.random.Generator, category: str, label: str,
                width_range: tuple[float, float] | None = None,
                depth_range: tuple[float, float] | None = None) -> FurnitureModel:
    h = _uniform(rng, category, "top_height")
    w = _uniform(rng, category, "width", *(width_range or (None, None)))
    d = _uniform(rng, category, "depth", *(depth_range or (None, None)))
    t, leg, inset = 0.04, 0.05, 0.04
    parts = [box_mesh((w, d, t), (0.0, 0.0, h - t / 2))]
    if category == "desk":
        # Two side panels and a modesty panel at the back (-y), knee space in front.
        pt = 0.03
        for sx in (-1, 1):
            parts.append(box_mesh((pt, d - 0.04, h - t), (sx * (w / 2 - pt / 2 - 0.01), 0.0,
                                                          (h - t) / 2)))
        parts.append(box_mesh((w - 2 * pt - 0.04, 0.02, 0.35),
                              (0.0, -d / 2 + 0.05, h - t - 0.175)))
    else:
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(box_mesh((leg, leg, h - t), (sx * (w / 2 - inset - leg / 2),
                                                          sy * (d / 2 - inset - leg / 2),
                                                          (h - t) / 2)))
    surfaces = [horizontal_surface("tabletop", (0.0, 0.0, h), (w / 2, d / 2))]
    return _finish(category, label, parts, surfaces, {"top_height": h, "width": w, "depth": d})


def build_table(rng: np.random.Generator, *, label: str = "table") -> FurnitureModel:
    """Dining/meeting table: top slab on four legs; x is the long side.

    Args:
        rng: random generator.
        label: object label.
    """
    return _table_like(rng, "table", label)


def build_low_table(rng: np.random.Generator, *, label: str = "coffee_table") -> FurnitureModel:
    """Coffee table: low top slab on four legs.

    Args:
        rng: random generator.
        label: object label.
    """
    return _table_like(rng, "low_table", label)


def build_desk(rng: np.random.Generator, *, label: str = "desk",
               width_range: tuple[float, float] | None = None,
               depth_range: tuple[float, float] | None = None) -> FurnitureModel:
    """Desk: top slab on two side panels, modesty panel at the back (-y).

    Args:
        rng: random generator.
        label: object label.
        width_range: optional narrower (low, high) for the width, metres.
        depth_range: optional narrower (low, high) for the depth, metres.
    """
    return _table_like(rng, "desk", label, width_range, depth_range)


def build_shelf(rng: np.random.Generator, *, label: str = "shelf") -> FurnitureModel:
    """Open bookshelf: side panels, back panel, top and boards; open towards +y.

    Args:
        rng: random generator.
        label: object label.
    """
    h = _uniform(rng, "shelf", "height")
    w = _uniform(rng, "shelf", "width")
    d = _uniform(rng, "shelf", "depth")
    t = 0.02
    n_levels = max(int(h // 0.38), 3)
    parts = [
        box_mesh((t, d, h), (-w / 2 + t / 2, 0.0, h / 2)),
        box_mesh((t, d, h), (w / 2 - t / 2, 0.0, h / 2)),
        box_mesh((w - 2 * t, t, h), (0.0, -d / 2 + t / 2, h / 2)),
    ]
    surfaces = []
    inner_w = w - 2 * t
    for i in range(n_levels + 1):
        z_top = 0.05 + i * (h - 0.05) / n_levels
        parts.append(box_mesh((inner_w, d - t, t), (0.0, t / 2, z_top - t / 2)))
        surfaces.append(horizontal_surface("shelf", (0.0, t / 2, z_top), (inner_w / 2,
                                                                           (d - t) / 2)))
    return _finish("shelf", label, parts, surfaces, {"height": h, "width": w, "depth": d})


def build_step(rng: np.random.Generator, *, label: str = "step") -> FurnitureModel:
    """Step or platform: one closed block.

    Args:
        rng: random generator.
        label: ``"step"`` (0.6-1.2 x 0.35-0.6 m) or ``"platform"`` (1.5-3.0 x 1.0-2.0 m).
    """
    big = label == "platform"
    h = _uniform(rng, "step", "height", *((0.20, 0.40) if big else (0.15, 0.30)))
    w = _uniform(rng, "step", "width", *((1.5, 3.0) if big else (0.6, 1.2)))
    d = _uniform(rng, "step", "depth", *((1.0, 2.0) if big else (0.35, 0.6)))
    parts = [box_mesh((w, d, h), (0.0, 0.0, h / 2))]
    surfaces = [horizontal_surface("step", (0.0, 0.0, h), (w / 2, d / 2))]
    return _finish("step", label, parts, surfaces, {"height": h, "width": w, "depth": d})


def build_bench(rng: np.random.Generator, *, label: str = "bench") -> FurnitureModel:
    """Backless bench: seat plank on two leg panels; x is the long side.

    Args:
        rng: random generator.
        label: object label.
    """
    h = _uniform(rng, "bench", "seat_height")
    length = _uniform(rng, "bench", "length")
    d = _uniform(rng, "bench", "depth")
    t, pt = 0.05, 0.05
    parts = [box_mesh((length, d, t), (0.0, 0.0, h - t / 2))]
    for sx in (-1, 1):
        parts.append(box_mesh((pt, d - 0.04, h - t), (sx * (length / 2 - 0.12), 0.0, (h - t) / 2)))
    surfaces = [horizontal_surface("seat", (0.0, 0.0, h), (length / 2, d / 2))]
    return _finish("bench", label, parts, surfaces,
                   {"seat_height": h, "length": length, "depth": d})


def build_mat(rng: np.random.Generator, *, label: str = "gym_mat") -> FurnitureModel:
    """Floor mat or rug: a thin slab; x is the long side.

    Args:
        rng: random generator.
        label: ``"gym_mat"`` (1.8-2.0 x 0.9-1.2 m, 3-6 cm) or ``"rug"`` (thin, larger).
    """
    if label == "rug":
        t = _uniform(rng, "mat", "thickness", 0.01, 0.02)
        length = _uniform(rng, "mat", "length", 1.6, 2.4)
        w = _uniform(rng, "mat", "width", 1.0, 1.7)
    else:
        t = _uniform(rng, "mat", "thickness", 0.03, 0.06)
        length = _uniform(rng, "mat", "length", 1.8, 2.0)
        w = _uniform(rng, "mat", "width", 0.9, 1.2)
    parts = [box_mesh((length, w, t), (0.0, 0.0, t / 2))]
    surfaces = [horizontal_surface("mat", (0.0, 0.0, t), (length / 2, w / 2))]
    return _finish("mat", label, parts, surfaces, {"thickness": t, "length": length, "width": w})


def build_bollard(rng: np.random.Generator, *, label: str = "bollard") -> FurnitureModel:
    """Low bollard (a sitting post): a vertical cylinder.

    Args:
        rng: random generator.
        label: object label.
    """
    h = _uniform(rng, "bollard", "height")
    r = _uniform(rng, "bollard", "radius")
    parts = [cylinder_mesh(r, 0.0, h)]
    surfaces = [horizontal_surface("seat", (0.0, 0.0, h), (0.65 * r, 0.65 * r))]
    return _finish("bollard", label, parts, surfaces, {"height": h, "radius": r})


def build_box(rng: np.random.Generator, *, label: str = "crate") -> FurnitureModel:
    """Box, crate or concrete block one can sit or stand on.

    Args:
        rng: random generator.
        label: object label.
    """
    h = _uniform(rng, "box", "height")
    w = _uniform(rng, "box", "width")
    d = _uniform(rng, "box", "depth")
    parts = [box_mesh((w, d, h), (0.0, 0.0, h / 2))]
    surfaces = [horizontal_surface("seat", (0.0, 0.0, h), (w / 2, d / 2))]
    return _finish("box", label, parts, surfaces, {"height": h, "width": w, "depth": d})


BUILDERS: dict[str, Callable[..., FurnitureModel]] = {
    "chair": build_chair,
    "stool": build_stool,
    "sofa": build_sofa,
    "bed": build_bed,
    "table": build_table,
    "low_table": build_low_table,
    "desk": build_desk,
    "shelf": build_shelf,
    "step": build_step,
    "bench": build_bench,
    "mat": build_mat,
    "bollard": build_bollard,
    "box": build_box,
}
"""Builder per category; each takes ``(rng, *, label=...)``."""

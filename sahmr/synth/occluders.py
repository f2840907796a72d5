"""Synthetic occluders: a box or a cylinder standing on the floor between camera and person.

Furniture already hides people at times; these occluders make partial occlusion common and
controlled. An occluder is drawn for a view (camera + posed body), not for the room: it is
not part of the scan (``scene_points``), of the contact labels or of the placer's SDF, only
of the rendered crop (RGB, depth, person mask: person pixels it hides become
``MASK_OCCLUDED``; the occlusion ratio counts them). Like a person or a bag that walked in
after the scan.

Placement: a point ``t`` of the way from the camera to the pelvis (horizontally), moved
sideways by up to the body's half-width, stands the occluder on the floor (z = 0), turned
to face the camera (box) or upright (cylinder). It is kept when it stands over the room's
floor rectangle, keeps ``clearance`` from every body vertex below its top, from the camera
and from furniture boxes, lies wholly in front of the camera, and its projected box covers
a share of the person's box within ``coverage``; otherwise another is drawn
(``max_tries``). Frames: world z-up, metres; camera OpenCV.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import trimesh

from sahmr.synth.appearance import sample_color
from sahmr.synth.cameras import Camera, project_points
from sahmr.synth.rooms import Room

logger = logging.getLogger(__name__)

__all__ = ["OCCLUDER_KINDS", "Occluder", "OccluderRanges", "sample_occluder"]

OCCLUDER_KINDS: tuple[str, ...] = ("none", "box", "cylinder")
"""Occluder kinds by the code the dataset stores (``occluder`` field): 0 none, 1 box,
2 cylinder."""
CYLINDER_SECTIONS = 16
"""Facets around a cylinder occluder."""


@dataclass(kw_only=True)
class OccluderRanges:
    """How often and what synthetic occluders are drawn.

    Attributes:
        fraction: Share of single-body views that get an occluder (motions get none).
        kinds: Relative weights of ``box`` and ``cylinder``.
        coverage: (min, max) share of the person's box area the occluder's projected box
            covers.
        along: (min, max) position between camera (0) and pelvis (1), horizontally.
        box_size: ((w lo, w hi), (d lo, d hi), (h lo, h hi)) box width (across the view),
            depth and height, metres (crates, cabinets, low walls).
        cylinder_size: ((r lo, r hi), (h lo, h hi)) radius and height, metres (poles,
            pillars, plants, lamps).
        clearance: Smallest gap (m) to the body, the camera and furniture boxes.
        max_tries: Placements tried before the view goes without an occluder.
    """

    fraction: float = 0.25
    kinds: dict[str, float] = field(default_factory=lambda: {"box": 1.0, "cylinder": 1.0})
    coverage: tuple[float, float] = (0.1, 0.5)
    along: tuple[float, float] = (0.2, 0.8)
    box_size: Sequence[Sequence[float]] = ((0.3, 1.2), (0.2, 0.8), (0.4, 1.4))
    cylinder_size: Sequence[Sequence[float]] = ((0.04, 0.3), (0.8, 2.6))
    clearance: float = 0.1
    max_tries: int = 12

    def __post_init__(self) -> None:
        self.kinds = {str(k): float(v) for k, v in dict(self.kinds).items()}
        unknown = set(self.kinds) - set(OCCLUDER_KINDS[1:])
        if unknown or not self.kinds or min(self.kinds.values()) < 0:
            raise ValueError(
                f"occluders.kinds {self.kinds}: weights >= 0 for {list(OCCLUDER_KINDS[1:])}"
            )
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"occluders.fraction {self.fraction} is not in [0, 1]")
        self.coverage = (float(self.coverage[0]), float(self.coverage[1]))
        self.along = (float(self.along[0]), float(self.along[1]))
        self.box_size = tuple(tuple(float(x) for x in r) for r in self.box_size)
        self.cylinder_size = tuple(tuple(float(x) for x in r) for r in self.cylinder_size)
        if len(self.box_size) != 3 or len(self.cylinder_size) != 2:
            raise ValueError("occluders: box_size needs 3 ranges, cylinder_size 2")


@dataclass
class Occluder:
    """One occluder mesh.

    Attributes:
        kind: ``"box"`` or ``"cylinder"``.
        vertices_world: (N, 3) float64, world frame, metres.
        faces: (F, 3) int64.
        color: (3,) float RGB in [0, 1].
        coverage: Share of the person's box its projected box covers.
    """

    kind: str
    vertices_world: np.ndarray
    faces: np.ndarray
    color: np.ndarray
    coverage: float

    @property
    def code(self) -> int:
        """The ``occluder`` code the dataset stores (`OCCLUDER_KINDS` index)."""
        return OCCLUDER_KINDS.index(self.kind)

    @property
    def face_colors(self) -> np.ndarray:
        """(F, 3) float32 per-face colours."""
        return np.tile(np.asarray(self.color, dtype=np.float32), (len(self.faces), 1))


@functools.lru_cache(maxsize=2)
def _unit_mesh(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A unit box (extents 1) or cylinder (radius 1, height 1, `CYLINDER_SECTIONS` facets)
    standing on z = 0, centred on the z axis: ``(vertices (N, 3) float64, faces (F, 3))``
    (read-only; built once)."""
    if kind == "box":
        mesh = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    else:
        mesh = trimesh.creation.cylinder(radius=1.0, height=1.0, sections=CYLINDER_SECTIONS)
    v = np.asarray(mesh.vertices, dtype=np.float64) + np.array([0.0, 0.0, 0.5])
    f = np.asarray(mesh.faces, dtype=np.int64)
    v.flags.writeable = False
    f.flags.writeable = False
    return v, f


def _box_overlap_area(a: np.ndarray, b: np.ndarray) -> float:
    """Area of the intersection of two ``[x0, y0, x1, y1]`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return float(max(w, 0.0) * max(h, 0.0))


def _footprint_distance(
    points_xy: np.ndarray, kind: str, center_xy: np.ndarray, axes: np.ndarray, half: np.ndarray
) -> np.ndarray:
    """Horizontal distance (m) of points to an occluder's footprint (0 inside).

    Args:
        points_xy: (N, 2) world x, y.
        kind: ``"box"`` (a rectangle with unit ``axes`` (2, 2) rows and half sizes ``half``
            (2,)) or ``"cylinder"`` (a disc of radius ``half[0]``).
        center_xy: (2,) footprint centre.
        axes: (2, 2) rectangle axes (rows), unused for a cylinder.
        half: (2,) half sizes.

    Returns:
        (N,) distances.
    """  # fmt: skip
    rel = np.asarray(points_xy, dtype=np.float64) - center_xy
    if kind == "cylinder":
        return np.maximum(np.linalg.norm(rel, axis=1) - half[0], 0.0)
    local = np.abs(rel @ axes.T) - half
    return np.linalg.norm(np.maximum(local, 0.0), axis=1)


def sample_occluder(
    rng: np.random.Generator,
    room: Room,
    camera: Camera,
    vertices_world: np.ndarray,
    pelvis_world: np.ndarray,
    person_box: np.ndarray,
    ranges: OccluderRanges,
) -> Occluder | None:
    """Draws an occluder between a camera and a posed body (module docstring).

    Args:
        rng: Random generator.
        room: The room (floor rectangle, furniture boxes).
        camera: The view's camera.
        vertices_world: (V, 3) posed body vertices, world, metres.
        pelvis_world: (3,) pelvis, world, metres.
        person_box: (4,) person box ``[x0, y0, x1, y1]``, full-image pixels.
        ranges: Occluder ranges.

    Returns:
        The occluder, or None when no placement passed within ``max_tries``.
    """
    eye = camera.center_world
    pelvis = np.asarray(pelvis_world, dtype=np.float64)
    verts = np.asarray(vertices_world, dtype=np.float64)
    view = pelvis[:2] - eye[:2]
    span = float(np.linalg.norm(view))
    if span < 1e-6:
        return None
    forward = view / span
    side = np.array([-forward[1], forward[0]])
    body_half_width = float(np.abs((verts[:, :2] - pelvis[:2]) @ side).max())
    person_area = max((person_box[2] - person_box[0]) * (person_box[3] - person_box[1]), 1e-9)
    fs = room.free_space
    floor_lo = np.asarray(fs.origin, dtype=np.float64)
    floor_hi = floor_lo + np.array(fs.grid.shape[::-1], dtype=np.float64) * fs.cell_size
    furniture = room.furniture
    furniture_lo = np.array([o.bbox_min for o in furniture], dtype=np.float64).reshape(-1, 3)
    furniture_hi = np.array([o.bbox_max for o in furniture], dtype=np.float64).reshape(-1, 3)
    names = list(ranges.kinds)
    weights = np.array([ranges.kinds[k] for k in names], dtype=np.float64)
    if weights.sum() <= 0:
        return None
    for _ in range(ranges.max_tries):
        kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        t = rng.uniform(*ranges.along)
        center = eye[:2] + t * view + side * rng.uniform(-1.0, 1.0) * body_half_width
        if kind == "box":
            (w0, w1), (d0, d1), (h0, h1) = ranges.box_size
            width, depth, height = rng.uniform(w0, w1), rng.uniform(d0, d1), rng.uniform(h0, h1)
            yaw = np.arctan2(forward[1], forward[0]) + rng.normal(0.0, np.deg2rad(15.0))
            c, s = np.cos(yaw), np.sin(yaw)
            axes = np.array([[c, s], [-s, c]])  # rows: depth axis (along the view), width
            half = np.array([depth / 2.0, width / 2.0])
            unit, faces = _unit_mesh("box")
            R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            v = (unit * np.array([depth, width, height])) @ R.T + np.array([*center, 0.0])
        else:
            (r0, r1), (h0, h1) = ranges.cylinder_size
            radius, height = rng.uniform(r0, r1), rng.uniform(h0, h1)
            axes, half = np.eye(2), np.array([radius, radius])
            unit, faces = _unit_mesh("cylinder")
            v = unit * np.array([radius, radius, height]) + np.array([*center, 0.0])
        lo, hi = v.min(axis=0), v.max(axis=0)
        if np.any(lo[:2] < floor_lo) or np.any(hi[:2] > floor_hi):
            continue
        uv, z = project_points(camera, v)
        if np.any(z < 0.05):
            continue
        box = np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])
        coverage = _box_overlap_area(box, person_box) / person_area
        if not ranges.coverage[0] <= coverage <= ranges.coverage[1]:
            continue
        if eye[2] < height + ranges.clearance and _footprint_distance(
            eye[None, :2], kind, center, axes, half
        )[0] < max(ranges.clearance, 0.3):
            continue
        m = ranges.clearance
        if np.any(np.all(hi > furniture_lo - m, axis=1) & np.all(lo < furniture_hi + m, axis=1)):
            continue
        low = verts[:, 2] < height + ranges.clearance
        if low.any() and _footprint_distance(verts[low, :2], kind, center, axes, half).min() < (
            ranges.clearance
        ):
            continue
        return Occluder(kind, v, faces.copy(), sample_color(rng), coverage)
    return None

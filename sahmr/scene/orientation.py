"""Is a scan's surface oriented towards the room? (Face normals must point into free space.)

Signed distances (`sahmr.scene.sdf`) take their sign from the face normals, so a scan whose
normals face away from the room reads every point of the room as inside a wall: a body
standing on the floor then "penetrates" with nearly every vertex and penetration / contact
figures are silently wrong.

The test: vertical rays cast down from mid-height of the scan on a regular grid over its
footprint. The first surface each ray meets (a floor, a seat, a table top) is seen from the
room, so its normal must point up; in a flipped scan it points down. This holds for open,
single-sided scans oriented to the room and for closed (watertight) models alike, and
ignores walls (vertical faces are never met first by a vertical ray) and ceilings (above the
rays' start). A scan that no ray meets (no floor, nothing below mid-height) is not judged.

Units: metres, world (scan) frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "GRID_SIDE",
    "MIN_HIT_FRACTION",
    "MIN_UP_FRACTION",
    "ScanOrientation",
    "UnorientedScanError",
    "check_scan_orientation",
    "scan_orientation",
    "up_vector",
]

GRID_SIDE = 48
"""Rays per side of the footprint grid (48 x 48 = 2304 rays)."""
MIN_HIT_FRACTION = 0.05
"""Fewer rays than this share meeting a surface and the scan is not judged."""
MIN_UP_FRACTION = 0.5
"""Share of the surfaces met that must face up for the scan to face the room."""


class UnorientedScanError(ValueError):
    """The scan's normals face away from the room (signed distances would be inverted)."""


def up_vector(up_axis: str) -> np.ndarray:
    """(3,) unit vector of an up-axis name (``"z"``, ``"-y"`` ...)."""
    sign = -1.0 if up_axis.startswith("-") else 1.0
    axis = "xyz".index(up_axis.lstrip("+-"))
    out = np.zeros(3)
    out[axis] = sign
    return out


@dataclass(frozen=True)
class ScanOrientation:
    """What the downward rays met.

    Attributes:
        rays: Rays cast.
        hits: Rays that met a surface below mid-height.
        up_fraction: Share of the hits whose surface normal points up (nan without hits).
    """

    rays: int
    hits: int
    up_fraction: float

    @property
    def judged(self) -> bool:
        """Enough rays met a surface to decide."""
        return self.hits >= MIN_HIT_FRACTION * self.rays

    @property
    def faces_room(self) -> bool:
        """True unless enough rays met surfaces and most of those face down."""
        return (not self.judged) or bool(self.up_fraction >= MIN_UP_FRACTION)


def _frame(up: np.ndarray) -> np.ndarray:
    """(3, 3) rows: two horizontal unit axes and ``up`` (a right-handed frame)."""
    helper = np.eye(3)[int(np.argmin(np.abs(up)))]
    a = np.cross(up, helper)
    a /= np.linalg.norm(a)
    return np.stack([a, np.cross(up, a), up])


def scan_orientation(
    vertices: np.ndarray, faces: np.ndarray, up: np.ndarray, *, grid_side: int = GRID_SIDE
) -> ScanOrientation:
    """Cast vertical rays down from mid-height and record which way the first surface faces.

    Args:
        vertices: (V, 3) world frame, metres.
        faces: (F, 3) vertex indices; a face's normal follows the right-hand rule.
        up: (3,) unit gravity-up vector of the scan frame.
        grid_side: Rays per side of the footprint grid.

    Returns:
        `ScanOrientation`.
    """
    R = _frame(np.asarray(up, dtype=np.float64) / np.linalg.norm(up))
    local = np.asarray(vertices, dtype=np.float64) @ R.T  # (V, 3): x, y horizontal, z up
    tri = local[np.asarray(faces, dtype=np.int64)]  # (F, 3, 3)
    start_z = 0.5 * (local[:, 2].min() + local[:, 2].max())
    lo, hi = local[:, :2].min(axis=0), local[:, :2].max(axis=0)
    step = (hi - lo) / grid_side
    # ray k = (i, j) at the centre of grid cell (i, j) of the footprint
    # 2-D edge functions of every face; vertical faces have (almost) no projected area
    e1, e2 = tri[:, 1, :2] - tri[:, 0, :2], tri[:, 2, :2] - tri[:, 0, :2]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    flat = np.abs(det) > 1e-12
    low = tri[:, :, 2].min(axis=1) < start_z
    cand = np.nonzero(flat & low)[0]
    tmin = np.floor((tri[cand, :, :2].min(axis=1) - lo) / step - 0.5).astype(np.int64) + 1
    tmax = np.floor((tri[cand, :, :2].max(axis=1) - lo) / step - 0.5).astype(np.int64)
    tmin, tmax = np.clip(tmin, 0, grid_side - 1), np.clip(tmax, -1, grid_side - 1)
    span = np.maximum(tmax - tmin + 1, 0)
    count = span[:, 0] * span[:, 1]
    face = np.repeat(cand, count)  # one (face, ray) pair per ray inside the face's box
    first = np.repeat(np.cumsum(count) - count, count)
    offset = np.arange(face.size) - first
    w = np.repeat(span[:, 1], count)
    w = np.maximum(w, 1)
    i = np.repeat(tmin[:, 0], count) + offset // w
    j = np.repeat(tmin[:, 1], count) + offset % w
    px = lo[0] + (i + 0.5) * step[0]
    py = lo[1] + (j + 0.5) * step[1]
    # barycentric coordinates of the ray's foot in the projected triangle
    dx, dy = px - tri[face, 0, 0], py - tri[face, 0, 1]
    d = det[face]
    b1 = (dx * e2[face, 1] - dy * e2[face, 0]) / d
    b2 = (e1[face, 0] * dy - e1[face, 1] * dx) / d
    inside = (b1 >= 0) & (b2 >= 0) & (b1 + b2 <= 1)
    z = tri[face, 0, 2] + b1 * (tri[face, 1, 2] - tri[face, 0, 2]) + b2 * (
        tri[face, 2, 2] - tri[face, 0, 2])  # fmt: skip
    ok = inside & (z < start_z)
    ray = (i * grid_side + j)[ok]
    z, face = z[ok], face[ok]
    rays = grid_side * grid_side
    if ray.size == 0:
        return ScanOrientation(rays, 0, float("nan"))
    order = np.lexsort((-z, ray))  # per ray, highest hit first
    ray, face = ray[order], face[order]
    firsts = np.ones(ray.size, dtype=bool)
    firsts[1:] = ray[1:] != ray[:-1]
    hit_faces = face[firsts]
    # the face normal's up component has the sign of the projected (signed) area
    up_share = float((det[hit_faces] > 0).mean())
    return ScanOrientation(rays, int(firsts.sum()), up_share)


def check_scan_orientation(
    vertices: np.ndarray, faces: np.ndarray, up_axis: str, source: str
) -> ScanOrientation:
    """Raise unless the scan's normals face the room (see the module notes).

    Args:
        vertices: (V, 3) world frame, metres.
        faces: (F, 3) vertex indices.
        up_axis: Gravity-up axis name of the scan frame.
        source: The scan's file, named in the error.

    Returns:
        What the rays met, when the scan faces the room (or cannot be judged).

    Raises:
        UnorientedScanError: It does not (one line naming the file and the share).
    """
    votes = scan_orientation(vertices, faces, up_vector(up_axis))
    if not votes.faces_room:
        raise UnorientedScanError(
            f"{source}: the scan's normals face away from the room ({(1 - votes.up_fraction):.0%}"
            f" of the floor and seats seen from above face down, up axis {up_axis}): every "
            "point of the room would read as inside a wall; flip its faces (e.g. trimesh's "
            "mesh.invert()) or check --up-axis"
        )
    return votes

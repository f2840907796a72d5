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

A single solid object (a box, a sofa scanned alone) is the one thing the downward rays
misjudge: the rays then start inside it and meet its bottom face. Geometry alone cannot tell
an inward-facing room turned inside out from a solid box; a known point of free space can.
`camera_facing_fraction` uses the camera (which stands in free space): of the surface it
sees (a z-buffer of points sampled on the faces), the share facing it must be the majority.
The demo, which knows its camera, uses that vote.

Units: metres, world (scan) frame; camera = OpenCV, ``T_w2c`` world -> camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "CAMERA_SAMPLES",
    "GRID_SIDE",
    "MIN_HIT_FRACTION",
    "MIN_UP_FRACTION",
    "ScanOrientation",
    "UnorientedScanError",
    "camera_facing_fraction",
    "check_scan_faces_camera",
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


CAMERA_SAMPLES = 200_000
"""Points sampled on the scan's faces for the camera's z-buffer."""
CAMERA_GRID = (80, 60)
"""Z-buffer resolution (columns, rows) of the camera vote."""
MIN_VISIBLE_CELLS = 50
"""Fewer z-buffer cells showing the scan and the camera vote is not used."""


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


def camera_facing_fraction(
    vertices: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    image_size: tuple[int, int],
    *,
    samples: int = CAMERA_SAMPLES,
    grid: tuple[int, int] = CAMERA_GRID,
    seed: int = 0,
) -> tuple[float, int]:
    """Share of the scan surface seen by a camera whose normals face that camera.

    Points are sampled on the faces (area-weighted, seeded), projected, and per cell of a
    coarse image grid the nearest one is kept (a z-buffer): what the camera sees.

    Args:
        vertices: (V, 3) world frame, metres.
        faces: (F, 3) vertex indices.
        K: (3, 3) intrinsics, pixels.
        T_w2c: (4, 4) world -> camera (OpenCV: z forward).
        image_size: ``(W, H)`` pixels.
        samples: Points sampled on the surface.
        grid: Z-buffer columns and rows.
        seed: Sampling seed.

    Returns:
        ``(share facing the camera, cells seen)``; the share is nan when no cell is seen.
    """
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[np.asarray(faces, dtype=np.int64)]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    if not area.sum() > 0:
        return float("nan"), 0
    rng = np.random.default_rng(seed)
    face = rng.choice(len(tri), size=samples, p=area / area.sum())
    u, w = rng.random(samples), rng.random(samples)
    flip = u + w > 1
    u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
    t = tri[face]
    pts = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + w[:, None] * (t[:, 2] - t[:, 0])
    R, tr = np.asarray(T_w2c, dtype=np.float64)[:3, :3], np.asarray(T_w2c)[:3, 3]
    cam = pts @ R.T + tr
    front = cam[:, 2] > 1e-3
    cam, face, pts = cam[front], face[front], pts[front]
    uv = cam[:, :2] / cam[:, 2:3] @ np.asarray(K, dtype=np.float64)[:2, :2].T + np.asarray(K)[:2, 2]
    W, H = image_size
    col = np.floor(uv[:, 0] / W * grid[0]).astype(np.int64)
    row = np.floor(uv[:, 1] / H * grid[1]).astype(np.int64)
    inside = (col >= 0) & (col < grid[0]) & (row >= 0) & (row < grid[1])
    if not inside.any():
        return float("nan"), 0
    cell = (row * grid[0] + col)[inside]
    depth, face, pts = cam[inside, 2], face[inside], pts[inside]
    order = np.lexsort((depth, cell))
    first = np.ones(order.size, dtype=bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    seen = order[first]
    centre = -R.T @ tr  # camera centre, world
    facing = (cross[face[seen]] * (centre - pts[seen])).sum(axis=1) > 0
    return float(facing.mean()), int(seen.size)


def check_scan_faces_camera(
    vertices: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    image_size: tuple[int, int],
    source: str,
) -> float:
    """Raise unless most of the surface a camera sees faces it (the camera is in free space).

    Returns:
        The facing share (nan when the camera sees too little of the scan to judge).

    Raises:
        UnorientedScanError: Most of what the camera sees faces away from it.
    """
    share, cells = camera_facing_fraction(vertices, faces, K, T_w2c, image_size)
    if cells >= MIN_VISIBLE_CELLS and share < MIN_UP_FRACTION:
        raise UnorientedScanError(
            f"{source}: the scan's normals face away from the room ({1 - share:.0%} of the "
            "surface the camera sees faces away from it): every point of the room would read "
            "as inside a wall; flip its faces (e.g. trimesh's mesh.invert())"
        )
    return share

"""Can a camera see the person where the scan says they are? (Checks before any model runs.)

A camera given the wrong way round (camera-to-world where world-to-camera is meant), turned
away from the person, standing outside the scan or upside down still gives a frustum and a
model still regresses a body in it: 4 m off, exit 0. Three properties of a plausible camera,
from its extrinsics, intrinsics, the person box and the scan's points alone:

1. Its centre lies inside the scan: within the bounds of the scan's points widened by
   `CENTRE_MARGIN_M`; above an open scan (an outdoor platform, whose highest point is a low
   parapet) up to `OPEN_SCAN_CAMERA_HEIGHT_M` over its lowest point.
2. The person box looks at the scan where a person can be. The box is cut into
   `BOX_GRID` x `BOX_GRID` cells; in each cell the nearest scan point between the depths of
   `DEPTH_RANGE_M` is the first surface the cell's rays meet (a z-buffer). At least
   `MIN_BOX_HIT_FRACTION` of the cells must meet a surface; the farthest surface must lie
   beyond the nearest depth a person of that box size can have (`PERSON_EXTENT_M`: a person
   cannot stand behind a wall that fills the whole box), and the nearest surface within
   `SUPPORT_SLACK_M` beyond the farthest such depth (else nothing in the box is near enough
   to stand on or touch).
3. Gravity: the scan's up axis seen by the camera points within `MAX_UP_ANGLE_DEG` of
   image-up (the camera's -y axis); a tilted phone passes, an upside-down camera does not.

`check_camera_view` also tries the inverse matrix: when the given one fails and its inverse
passes, the message says the extrinsics look like camera-to-world.

Measured (2 cm points; 903 generated views of 50 rooms, default and ``make_dataset_away``
cameras, and the 3 bundled demo frames): every view passes. Of their wrong forms: upside
down and moved 1 m outside the room 100 % refused, camera-to-world given 79 %, turned 180
degrees about the vertical 47 % (a camera turned inside a room may face surfaces where a
person could stand: geometry alone cannot tell; the demo's checks after the run catch more).

Frames: world = the scan's frame, metres, gravity along ``up_axis``; camera = OpenCV (x right,
y down, z forward); ``T_w2c`` maps world to camera. Pixels for the box and ``K``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sahmr.scene.io import UP_AXES
from sahmr.scene.orientation import up_vector

__all__ = [
    "BOX_GRID",
    "CENTRE_MARGIN_M",
    "DEPTH_RANGE_M",
    "MAX_UP_ANGLE_DEG",
    "MIN_BOX_HIT_FRACTION",
    "OPEN_SCAN_CAMERA_HEIGHT_M",
    "PERSON_EXTENT_M",
    "ROOT_MIN_DEPTH_M",
    "SUPPORT_SLACK_M",
    "CameraView",
    "OddCameraError",
    "camera_view",
    "check_camera_view",
    "invert_extrinsics",
    "root_placement_problem",
]

CENTRE_MARGIN_M = 0.5
"""How far (metres) a camera centre may lie outside the bounds of the scan's points (a scan
cut at the walls, a camera held in a doorway)."""
OPEN_SCAN_CAMERA_HEIGHT_M = 3.0
"""Highest camera centre (metres above the scan's lowest point) accepted over a scan lower
than that (outdoor platforms: parapets of 0.6-1.1 m, cameras up to 2.8 m on tripods)."""
DEPTH_RANGE_M = (0.3, 30.0)
"""Depths (metres) at which the rays through the person box may meet the scan."""
BOX_GRID = 8
"""Cells per side of the person box's z-buffer."""
MIN_BOX_HIT_FRACTION = 0.1
"""Share of the box's cells whose rays must meet the scan. Generated views meet 12.5-100 %
(the lowest: a floor-level camera on an outdoor platform, the person against the sky above
the bottom row); a camera turned to a wall it stands at meets none (the wall is nearer than
the depth range, nothing lies beyond it)."""
PERSON_EXTENT_M = (0.5, 2.5)
"""Smallest and largest world extent (metres) of the longer side of a person's box: a
crouching or partly seen person to a person with raised arms. With focal length f and the
box's longer side L pixels, the person stands between ``f * 0.5 / L`` and ``f * 2.5 / L``.
Generated views: pelvis depth x L / f is 0.61-2.11 m (0.61: a person lying along the view,
seen from low)."""
SUPPORT_SLACK_M = 1.5
"""How far (metres) beyond the farthest depth a person of that box can have the nearest
surface in the box may lie: the floor under the feet (or a seat, a wall leant on) is about
as far as the person; a person seen floating before a far wall means a wrong camera.
Generated views: the nearest surface lies 1.8 m or more inside that limit."""
MAX_UP_ANGLE_DEG = 75.0
"""Largest angle (degrees) between the scan's up axis seen by the camera and image-up (the
camera's -y axis). Generated cameras (pitch up to ~65 degrees down, roll ~2 degrees) are at
64 degrees or less; upside-down cameras at ~180 degrees."""
ROOT_MIN_DEPTH_M = 0.1
"""Nearest depth (metres) of a recovered root in front of the camera."""


class OddCameraError(ValueError):
    """The camera cannot see the person where the scan says they could be."""


@dataclass(frozen=True)
class CameraView:
    """What a camera sees of the scan through the person box.

    Attributes:
        centre_world: (3,) camera centre, world frame, metres.
        centre_outside_m: How far the centre lies outside the accepted region, metres
            (0 inside).
        up_angle_deg: Angle between the scan's up axis in the camera and image-up, degrees.
        box_hit_fraction: Share of the box's cells whose rays meet the scan (nan without a
            usable box).
        nearest_surface_m: Depth of the nearest first surface in the box, metres (nan: none).
        farthest_surface_m: Depth of the farthest first surface in the box, metres (nan: none).
        person_depth_m: ``(lo, hi)`` depths a person of the box's size can have, metres
            (nan without a usable box).
    """

    centre_world: np.ndarray
    centre_outside_m: float
    up_angle_deg: float
    box_hit_fraction: float
    nearest_surface_m: float
    farthest_surface_m: float
    person_depth_m: tuple[float, float]

    @property
    def centre_ok(self) -> bool:
        return self.centre_outside_m <= 0.0

    @property
    def up_ok(self) -> bool:
        return self.up_angle_deg <= MAX_UP_ANGLE_DEG

    @property
    def box_ok(self) -> bool:
        """Box rays meet enough scan, a person fits before the farthest surface and something
        lies near enough to stand on (true without a usable box: nothing to judge)."""
        if math.isnan(self.box_hit_fraction):
            return True
        if self.box_hit_fraction < MIN_BOX_HIT_FRACTION:
            return False
        lo, hi = self.person_depth_m
        return self.farthest_surface_m >= lo and self.nearest_surface_m <= hi + SUPPORT_SLACK_M

    @property
    def ok(self) -> bool:
        return self.centre_ok and self.up_ok and self.box_ok

    def problems(self) -> list[str]:
        """One phrase per failed property (empty when the camera is plausible)."""
        out = []
        if not self.centre_ok:
            c = np.round(self.centre_world, 2).tolist()
            out.append(f"its centre {c} lies {self.centre_outside_m:.1f} m outside the scan")
        if not self.up_ok:
            out.append(f"the scan's up axis points {self.up_angle_deg:.0f} deg from image-up "
                       f"(at most {MAX_UP_ANGLE_DEG:g}; OpenGL camera axes, y up and z "
                       "backward? another up axis?)")
        if not self.box_ok:
            out.append(self._box_problem())
        return out

    def short_problems(self) -> list[str]:
        """The failed properties in a few words each."""
        out = []
        if not self.centre_ok:
            out.append("centre outside the scan")
        if not self.up_ok:
            out.append("up axis points down in the image" if self.up_angle_deg > 90.0
                       else "up axis far from image-up")
        if not self.box_ok:
            out.append("the person box sees no place for a person")
        return out

    def _box_problem(self) -> str:
        near, far = DEPTH_RANGE_M
        lo, hi = self.person_depth_m
        if self.box_hit_fraction < MIN_BOX_HIT_FRACTION:
            return (f"the rays through the person box meet the scan between {near:g} and "
                    f"{far:g} m in {self.box_hit_fraction:.0%} of the box (at least "
                    f"{MIN_BOX_HIT_FRACTION:.0%})")
        if self.farthest_surface_m < lo:
            return (f"the scan fills the person box at {self.farthest_surface_m:.1f} m, nearer "
                    f"than a person of that box can stand ({lo:.1f} m or more)")
        return (f"the nearest scan surface in the person box is {self.nearest_surface_m:.1f} m "
                f"away, farther than a person of that box can stand ({hi:.1f} m or less): "
                "nothing to stand on or touch")


def _centre_outside(centre: np.ndarray, points: np.ndarray, up: np.ndarray) -> float:
    """Distance (metres) of ``centre`` outside the scan's widened bounds (0 inside)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    excess = np.maximum(lo - CENTRE_MARGIN_M - centre, 0.0)
    excess += np.maximum(centre - hi - CENTRE_MARGIN_M, 0.0)
    axis = int(np.argmax(np.abs(up)))
    height = points @ up.astype(points.dtype)  # along gravity
    top = max(float(height.max()) + CENTRE_MARGIN_M,
              float(height.min()) + OPEN_SCAN_CAMERA_HEIGHT_M)
    h = float(centre @ up)
    excess[axis] = max(float(height.min()) - CENTRE_MARGIN_M - h, h - top, 0.0)
    return float(np.linalg.norm(excess))


def _box_surfaces(
    points_cam: np.ndarray, K: np.ndarray, bbox: np.ndarray, grid: int
) -> np.ndarray:
    """Per cell of the box, the depth of the nearest scan point (inf: none), (grid * grid,)."""
    near, far = DEPTH_RANGE_M
    z = points_cam[:, 2]
    p = points_cam[(z >= near) & (z <= far)]
    uv = p[:, :2] / p[:, 2:3] @ K[:2, :2].T + K[:2, 2]
    x0, y0, x1, y1 = bbox
    col = np.floor((uv[:, 0] - x0) / (x1 - x0) * grid)
    row = np.floor((uv[:, 1] - y0) / (y1 - y0) * grid)
    inside = (col >= 0) & (col < grid) & (row >= 0) & (row < grid)
    depth = np.full(grid * grid, np.inf)
    np.minimum.at(depth, (row[inside] * grid + col[inside]).astype(np.int64), p[inside, 2])
    return depth


def camera_view(
    points_world: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    bbox: np.ndarray | None,
    up_axis: str = "z",
    *,
    grid: int = BOX_GRID,
) -> CameraView:
    """Measure what a camera sees of a scan through a person box (see the module doc).

    Args:
        points_world: (N, 3) scan points, world frame, metres (down-sampled; ~2 cm apart).
        K: (3, 3) intrinsics, pixels.
        T_w2c: (4, 4) world -> camera (OpenCV).
        bbox: (4,) person box ``x0, y0, x1, y1``, pixels; None (or an empty / non-finite box)
            leaves the box unjudged.
        up_axis: The scan's gravity-up axis (``"z"``, ``"-y"`` ...).
        grid: Cells per side of the box's z-buffer.

    Returns:
        `CameraView`.
    """
    pts = np.asarray(points_world).reshape(-1, 3)
    if not np.issubdtype(pts.dtype, np.floating):
        pts = pts.astype(np.float64)
    K = np.asarray(K, dtype=np.float64)
    T = np.asarray(T_w2c, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    up = up_vector(up_axis)
    centre = -R.T @ t
    up_cam = R @ up
    up_angle = math.degrees(math.acos(float(np.clip(-up_cam[1], -1.0, 1.0))))
    nan = float("nan")
    hit, nearest, farthest, person = nan, nan, nan, (nan, nan)
    box = None if bbox is None else np.asarray(bbox, dtype=np.float64).reshape(-1)
    if (box is not None and box.size == 4 and np.isfinite(box).all()
            and box[2] > box[0] and box[3] > box[1]):
        depth = _box_surfaces(pts @ R.T.astype(pts.dtype) + t.astype(pts.dtype), K, box, grid)
        seen = depth[np.isfinite(depth)]
        hit = seen.size / depth.size
        nearest = float(seen.min()) if seen.size else nan
        farthest = float(seen.max()) if seen.size else nan
        side = max((box[2] - box[0]) / K[0, 0], (box[3] - box[1]) / K[1, 1])  # per metre depth
        person = (PERSON_EXTENT_M[0] / side, PERSON_EXTENT_M[1] / side)
    return CameraView(
        centre_world=centre,
        centre_outside_m=_centre_outside(centre, pts, up) if len(pts) else 0.0,
        up_angle_deg=up_angle,
        box_hit_fraction=hit,
        nearest_surface_m=nearest,
        farthest_surface_m=farthest,
        person_depth_m=person,
    )


def invert_extrinsics(T: np.ndarray) -> np.ndarray:
    """The inverse of a rigid (4, 4) camera transform (world-to-camera <-> camera-to-world)."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def check_camera_view(
    points_world: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    bbox: np.ndarray | None,
    up_axis: str = "z",
    source: str = "camera",
) -> CameraView:
    """Raise unless the camera can see the person in the scan (`camera_view`'s properties).

    Args:
        points_world: (N, 3) scan points, world frame, metres.
        K: (3, 3) intrinsics, pixels.
        T_w2c: (4, 4) world -> camera (OpenCV).
        bbox: (4,) person box, pixels, or None.
        up_axis: The scan's gravity-up axis.
        source: The camera, named first in the message (a file, a frame).

    Returns:
        The `CameraView` (all properties hold).

    Raises:
        OddCameraError: One line naming the failed properties; when the inverse matrix
            passes, saying that the extrinsics look like camera-to-world.
    """
    view = camera_view(points_world, K, T_w2c, bbox, up_axis)
    if view.ok:
        return view
    T = np.asarray(T_w2c, dtype=np.float64)
    if camera_view(points_world, K, invert_extrinsics(T), bbox, up_axis).ok:
        raise OddCameraError(
            f"{source}: the extrinsics look like camera-to-world "
            f"({', '.join(view.short_problems())}; their inverse passes these checks); pass "
            "world-to-camera, or its inverse")
    hint = ""
    if not view.up_ok:  # a scan in another convention (y-up glTF / OBJ exports, ...)?
        views = {a: camera_view(points_world, K, T, bbox, a) for a in UP_AXES
                 if a != up_axis.strip().lower()}  # fmt: skip
        passing = sorted((v.up_angle_deg, a) for a, v in views.items() if v.ok)
        if passing:  # the axis nearest image-up among those that pass
            best = passing[0][1]
            hint = f"; with up axis {best!r} it passes them (--up-axis {best})"
    raise OddCameraError(
        f"{source}: the camera cannot see the person in the scan: "
        f"{'; '.join(view.problems())} (extrinsics must be world-to-camera, OpenCV axes: x "
        f"right, y down, z forward){hint}")


def root_placement_problem(
    root_world: np.ndarray,
    points_world: np.ndarray,
    T_w2c: np.ndarray | None,
    margin: float,
) -> str | None:
    """Why a recovered root cannot be right, or None: outside the scan or not in front of the
    camera (nearer than `ROOT_MIN_DEPTH_M`).

    Args:
        root_world: (3,) recovered root (pelvis), world frame, metres.
        points_world: (N, 3) scan points, world frame, metres.
        T_w2c: (4, 4) world -> camera; None skips the in-front check.
        margin: How far (metres) the root may lie outside the scan's bounds.

    Returns:
        A phrase naming the value, or None when the root is inside and in front.
    """
    root = np.asarray(root_world, dtype=np.float64).reshape(3)
    pts = np.asarray(points_world, dtype=np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    outside = float(np.linalg.norm(np.maximum(lo - root, 0.0) + np.maximum(root - hi, 0.0)))
    where = np.round(root, 2).tolist()
    if not np.isfinite(outside) or outside > margin:
        return f"the body lands {outside:.1f} m outside the scan's bounds (root {where})"
    if T_w2c is None:
        return None
    T = np.asarray(T_w2c, dtype=np.float64)
    depth = float(T[2, :3] @ root + T[2, 3])
    if depth < ROOT_MIN_DEPTH_M:
        return (f"the body does not land in front of the camera (root {where} at depth "
                f"{depth:.2f} m; at least {ROOT_MIN_DEPTH_M:g} m)")
    return None

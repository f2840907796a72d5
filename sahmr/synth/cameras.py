"""Random, realistic cameras around a placed person, for the synthetic data generator.

Intrinsics imitate phones and DSLRs: image sizes 640x480 to 1920x1080, a share of them held
upright (portrait, H > W), 35 mm-equivalent focal lengths log-uniform in 14-85 mm (an
ultra-wide phone lens 13-16 mm, a phone's main lens 24-28 mm, a 35 mm / 50 mm prime, a
phone's 2-3x tele 48-77 mm, a short DSLR tele 85 mm; across the long image side that is a
field of view of 104-24 degrees), principal point near the centre. Extrinsics put the camera
0.3-2.8 m above the floor (never above the ceiling or the top of room-high walls; a low
outdoor parapet is no ceiling), 1.2-8 m from the person (horizontal distance; far where the
room allows, near where the person fits the frame), inside the room's floor rectangle,
outside every furniture box, aimed at the pelvis with a small jitter: the pitch follows,
from about 35 degrees up (a floor-level camera near a standing person) to about 65 degrees
down (a camera under the ceiling near a person lying on the floor). Given the body's
vertices, a camera is accepted only when the whole body projects inside the frame.
Height, distance and focal ranges may be unions of intervals ("bands", e.g. only low and
high cameras) for evaluation sets away from the defaults.

Frames follow DESIGN.md: world z-up, metres; camera OpenCV (x right, y down, z forward);
``T_w2c`` maps world to camera.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sahmr.synth.rooms import Room
from sahmr.viz.render import look_at

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZES: tuple[tuple[int, int], ...] = (
    (640, 480),
    (960, 540),
    (1024, 768),
    (1280, 720),
    (1280, 960),
    (1440, 1080),
    (1920, 1080),
)
"""(W, H) pixel sizes of common consumer / dataset cameras."""


FULL_FRAME_WIDTH_MM = 36.0
"""Long side of a 35 mm ("full-frame") sensor: a 35 mm-equivalent focal length ``f_mm`` is
``f_mm / 36 * long image side`` pixels."""
CEILING_CLEARANCE = 0.1
"""Smallest gap (m) between a camera centre and the ceiling / the top of room-high walls."""
PARAPET_MAX_HEIGHT = 1.5
"""Walls at most this high (m) are parapets (outdoor platforms: 0.6-1.1 m) that a camera may
rise above; higher walls (rooms: 2.5 m and up) cap the camera height like a ceiling."""

MIN_IMAGE_SIDE_PX = 64
"""Smallest side (pixels) of a generated image: smaller holds no usable person crop."""

Band = tuple[float, float]
"""A closed interval ``(lo, hi)``."""


def as_bands(value: Sequence[float] | Sequence[Sequence[float]]) -> tuple[Band, ...]:
    """A range given as one ``(lo, hi)`` pair or as a list of such pairs (a union).

    Args:
        value: ``(lo, hi)`` or ``((lo0, hi0), (lo1, hi1), ...)``.

    Returns:
        The intervals as a tuple of float pairs.

    Raises:
        ValueError: Not pairs, an empty list, or ``lo > hi``.
    """
    items = list(value)
    if items and not isinstance(items[0], (Sequence, np.ndarray)):
        items = [items]
    bands: list[Band] = []
    for item in items:
        pair = [float(x) for x in item]
        if len(pair) != 2 or not all(math.isfinite(x) for x in pair) or pair[0] > pair[1]:
            raise ValueError(f"range {list(value)!r}: need [lo, hi] or [[lo, hi], ...], finite, "
                             "lo <= hi")
        bands.append((pair[0], pair[1]))
    if not bands:
        raise ValueError("empty range")
    return tuple(bands)


def normalize_range(value: Sequence[float] | Sequence[Sequence[float]]) -> tuple:
    """``(lo, hi)`` for one interval, else a tuple of pairs (config values as tuples)."""
    bands = as_bands(value)
    return bands[0] if len(bands) == 1 else bands


def draw_in_bands(
    rng: np.random.Generator,
    bands: Sequence[float] | Sequence[Sequence[float]],
    lo: float = -np.inf,
    hi: float = np.inf,
    *,
    log: bool = False,
) -> float | None:
    """Draws uniformly from a union of intervals clipped to ``[lo, hi]``.

    An interval is chosen with probability proportional to its (clipped) length, then a
    value uniformly inside it (uniformly in log space with ``log=True``; lengths are then
    measured in log space too).

    Args:
        rng: Random generator.
        bands: ``(lo, hi)`` or a list of intervals (`as_bands`).
        lo: Lower clip.
        hi: Upper clip.
        log: Draw log-uniformly (all bounds must be > 0).

    Returns:
        The value, or None when nothing of the bands lies inside ``[lo, hi]``.
    """
    parts = [(max(a, lo), min(b, hi)) for a, b in as_bands(bands)]
    parts = [(a, b) for a, b in parts if a <= b]
    if not parts:
        return None
    if log:
        parts = [(np.log(a), np.log(b)) for a, b in parts]
    lengths = np.array([b - a for a, b in parts], dtype=np.float64)
    if lengths.sum() > 0:
        k = int(rng.choice(len(parts), p=lengths / lengths.sum()))
    else:  # only single points are left
        k = int(rng.integers(len(parts)))
    x = float(rng.uniform(*parts[k]))
    return float(np.exp(x)) if log else x


@dataclass(kw_only=True)
class CameraRanges:
    """Ranges cameras are drawn from (uniform unless stated).

    ``focal_35mm``, ``height`` and ``distance`` take one ``(lo, hi)`` interval or a list of
    intervals (a union, drawn by length: `draw_in_bands`).

    Attributes:
        image_sizes: Candidate (W, H) landscape image sizes in pixels; one is chosen
            uniformly.
        portrait_fraction: Share of images turned upright (W and H swapped).
        focal_35mm: 35 mm-equivalent focal length, mm, drawn log-uniformly
            (`FULL_FRAME_WIDTH_MM`: 14 mm = 104 degrees across the long side, 85 mm = 24).
        principal_jitter: Principal point offset from the centre, as a fraction of W / H.
        height: Camera centre height above the floor (world z), metres; capped by
            `camera_height_limit`.
        distance: Horizontal distance camera -> person pelvis, metres; the part of it where
            the person does not fit the frame or the room ends is not drawn.
        aim_jitter: Standard deviation (m) of the aim point around the pelvis, per axis.
        roll_deg: Standard deviation of the camera roll about its optical axis, degrees.
        wall_margin: Minimum distance (m) of the camera from the floor rectangle's border.
        furniture_margin: Furniture boxes are grown by this much (m) before the inside test.
        bbox_margin: The person's box must stay this many pixels inside the full frame.
        min_bbox_height: Minimum person box height as a fraction of the image height.
        max_occlusion: Samples whose occlusion ratio exceeds this are rejected.
        hidden_fraction: Share of the views of placed bodies (a short motion keeps its first
            draw) whose camera is, of ``hidden_candidates`` draws, the one behind which the
            room hides the largest share of the body
            (`sahmr.scene.visibility.scene_hidden_share`, at most ``max_occlusion``); the
            other views take their first draw. People half hidden by the room's own furniture
            are rare in plain draws (3 % of views hide 40-60 % of the person) and are where
            the shipped model fails most (docs/results.md, section (z)). A split may set its
            own (`sahmr.synth.plan.SplitSpec.hidden_fraction`).
        hidden_candidates: Cameras drawn for such a view (the first included).
    """

    image_sizes: Sequence[Sequence[int]] = field(default=DEFAULT_IMAGE_SIZES)
    portrait_fraction: float = 0.2
    focal_35mm: tuple = (14.0, 85.0)
    principal_jitter: float = 0.01
    height: tuple = (0.3, 2.8)
    distance: tuple = (1.2, 8.0)
    aim_jitter: float = 0.15
    roll_deg: float = 2.0
    wall_margin: float = 0.15
    furniture_margin: float = 0.1
    bbox_margin: float = 2.0
    min_bbox_height: float = 0.1
    max_occlusion: float = 0.6
    hidden_fraction: float = 0.0
    hidden_candidates: int = 4

    def __post_init__(self) -> None:
        for name in ("focal_35mm", "height", "distance"):
            try:
                setattr(self, name, normalize_range(getattr(self, name)))
            except (TypeError, ValueError) as err:
                raise ValueError(f"camera.{name}: {err}") from err
        if min(a for a, _ in as_bands(self.focal_35mm)) <= 0:
            raise ValueError(f"camera.focal_35mm {self.focal_35mm}: focal lengths must be > 0")
        if min(a for a, _ in as_bands(self.distance)) <= 0:
            raise ValueError(f"camera.distance {self.distance}: distances must be > 0")
        if not 0.0 <= self.portrait_fraction <= 1.0:
            raise ValueError(f"camera.portrait_fraction {self.portrait_fraction} is not in [0, 1]")
        if not 0.0 <= self.hidden_fraction <= 1.0:
            raise ValueError(f"camera.hidden_fraction {self.hidden_fraction} is not in [0, 1]")
        if int(self.hidden_candidates) != self.hidden_candidates or self.hidden_candidates < 1:
            raise ValueError(f"camera.hidden_candidates {self.hidden_candidates}: need a whole "
                             "number >= 1")  # fmt: skip
        sizes = [tuple(s) for s in self.image_sizes]
        if not sizes or not all(len(s) == 2 and min(s) >= MIN_IMAGE_SIDE_PX for s in sizes):
            raise ValueError(f"camera.image_sizes {[list(s) for s in sizes]}: need one or more "
                             f"[W, H] of at least {MIN_IMAGE_SIDE_PX} pixels")  # fmt: skip


@dataclass
class Camera:
    """A full-image pinhole camera.

    Attributes:
        K: (3, 3) float64 intrinsics, pixels.
        T_w2c: (4, 4) float64 world -> camera (OpenCV), metres.
        width: Image width W, pixels.
        height: Image height H, pixels.
    """

    K: np.ndarray
    T_w2c: np.ndarray
    width: int
    height: int

    @property
    def center_world(self) -> np.ndarray:
        """(3,) camera centre, world frame, metres."""
        R, t = self.T_w2c[:3, :3], self.T_w2c[:3, 3]
        return -R.T @ t

    def scaled(self, scale: float) -> Camera:
        """The same camera for an image resized by ``scale`` (pixel-centre consistent).

        Args:
            scale: Resize factor (> 0); the new size is ``round(W * scale)``.

        Returns:
            A Camera whose K maps to the resized image's pixels.
        """
        w, h = max(1, round(self.width * scale)), max(1, round(self.height * scale))
        sx, sy = w / self.width, h / self.height
        S = np.diag([sx, sy, 1.0])
        return Camera(S @ self.K, self.T_w2c.copy(), w, h)


def sample_intrinsics(
    rng: np.random.Generator, ranges: CameraRanges
) -> tuple[np.ndarray, int, int]:
    """Draws an image size (landscape or, with ``portrait_fraction``, upright) and a K.

    Args:
        rng: Random generator.
        ranges: Camera ranges.

    Returns:
        ``(K (3, 3) float64, W, H)``; square pixels, principal point near the centre, focal
        length ``f_35mm / FULL_FRAME_WIDTH_MM * max(W, H)`` pixels.
    """
    sizes = [tuple(int(v) for v in s) for s in ranges.image_sizes]
    w, h = sizes[int(rng.integers(len(sizes)))]
    if rng.random() < ranges.portrait_fraction:
        w, h = min(w, h), max(w, h)
    focal_mm = draw_in_bands(rng, ranges.focal_35mm, log=True)
    f = float(focal_mm) / FULL_FRAME_WIDTH_MM * max(w, h)
    cx = w / 2.0 + rng.normal(0.0, ranges.principal_jitter) * w
    cy = h / 2.0 + rng.normal(0.0, ranges.principal_jitter) * h
    K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    return K, w, h


def focal_35mm_of(K: np.ndarray, width: int, height: int) -> float:
    """The 35 mm-equivalent focal length (mm) of intrinsics (inverse of `sample_intrinsics`)."""
    return float(K[0, 0]) * FULL_FRAME_WIDTH_MM / max(width, height)


def camera_height_limit(room: Room) -> float:
    """Highest camera centre (world z, m) a room allows; inf when nothing caps it.

    A ceiling caps it, and so do walls higher than `PARAPET_MAX_HEIGHT` (rooms built without
    a ceiling slab so that renders see in: a camera above their walls would look down into
    a box). The low parapet of an outdoor platform is no ceiling.

    Args:
        room: The room (world z-up, floor at z = 0).

    Returns:
        ``wall_height - CEILING_CLEARANCE`` for closed or room-high walls, else inf.
    """
    if room.wall_height > 0 and (room.has_ceiling or room.wall_height > PARAPET_MAX_HEIGHT):
        return float(room.wall_height) - CEILING_CLEARANCE
    return float("inf")


def camera_floor_box(room: Room, ranges: CameraRanges) -> tuple[np.ndarray, np.ndarray]:
    """The xy rectangle a camera centre may stand over: the floor grid less the wall margin.

    Args:
        room: The room.
        ranges: Provides ``wall_margin``.

    Returns:
        ``(lo (2,), hi (2,))`` world x, y, metres.
    """
    fs = room.free_space
    origin = np.asarray(fs.origin, dtype=np.float64)
    lo = origin + ranges.wall_margin
    hi = origin + np.array(fs.grid.shape[::-1], dtype=np.float64) * fs.cell_size
    return lo, hi - ranges.wall_margin


def camera_position_ok(
    room: Room, eye_world: np.ndarray, ranges: CameraRanges, reason: list[str] | None = None
) -> bool:
    """Whether a camera centre lies inside the room and outside all furniture boxes.

    Args:
        room: The room (world z-up, floor at z = 0).
        eye_world: (3,) camera centre, world frame, metres.
        ranges: Provides ``wall_margin`` and ``furniture_margin``.
        reason: When given, the reason of a rejection is appended (``"outside"``,
            ``"ceiling"``, ``"floor"`` or ``"furniture"``).

    Returns:
        True when the centre is over the floor rectangle (shrunk by the wall margin), above
        the floor, below `camera_height_limit`, and not inside any furniture box grown by
        the furniture margin.
    """
    lo, hi = camera_floor_box(room, ranges)
    why = ""
    if np.any(eye_world[:2] < lo) or np.any(eye_world[:2] > hi):
        why = "outside"
    elif eye_world[2] > camera_height_limit(room):
        why = "ceiling"
    elif eye_world[2] <= 0.0:
        why = "floor"
    else:
        m = ranges.furniture_margin
        for obj in room.furniture:
            if np.all(eye_world > np.asarray(obj.bbox_min) - m) and np.all(
                eye_world < np.asarray(obj.bbox_max) + m
            ):
                why = "furniture"
                break
    if why and reason is not None:
        reason.append(why)
    return not why


def _ray_box_span(
    start_xy: np.ndarray, direction_xy: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[float, float]:
    """Distances ``(t0, t1)`` along a unit xy ray from a point between which the ray lies
    inside a rectangle (slab method; ``t0 > t1`` when it never enters it ahead)."""
    t0, t1 = 0.0, np.inf
    for k in range(2):
        d = direction_xy[k]
        if abs(d) < 1e-12:
            if not lo[k] <= start_xy[k] <= hi[k]:
                return 1.0, 0.0
            continue
        a, b = (lo[k] - start_xy[k]) / d, (hi[k] - start_xy[k]) / d
        t0, t1 = max(t0, min(a, b)), min(t1, max(a, b))
    return float(t0), float(t1)


def sample_camera(
    rng: np.random.Generator,
    room: Room,
    target_world: np.ndarray,
    ranges: CameraRanges,
    *,
    max_tries: int = 50,
    subject_radius: float = 0.9,
    vertices_world: np.ndarray | None = None,
    stats: Counter[str] | None = None,
) -> Camera | None:
    """Draws a camera looking at a person, inside the room and outside furniture.

    Each try draws intrinsics, an azimuth around the person, a distance in
    ``ranges.distance`` clipped to where the person fits the frame (half-extent
    ``subject_radius`` within the shorter image side) and to where the room's floor
    rectangle ends along that azimuth, and a height in ``ranges.height`` below
    `camera_height_limit`; the position must pass `camera_position_ok` and, when
    ``vertices_world`` is given, the body's box must pass `person_bbox_ok`.

    Args:
        rng: Random generator.
        room: The room (world z-up).
        target_world: (3,) the person's pelvis, world frame, metres.
        ranges: Camera ranges.
        max_tries: Draws before giving up.
        subject_radius: Half-extent (m) of the person (e.g. the largest pelvis-to-vertex
            distance).
        vertices_world: Optional (V, 3) body vertices, world, metres: accept only cameras
            that see the whole body inside the frame.
        stats: Optional counter of failed tries by reason (``"distance"``: no distance fits
            at this azimuth and focal length; ``"height"``: the room is lower than every
            height band; ``"outside"`` / ``"ceiling"`` / ``"floor"`` / ``"furniture"``: the
            position; ``"bbox"``: the body leaves the frame) and of ``"tries"``.

    Returns:
        The Camera, or None when no try succeeded. Occlusion is checked later.
    """
    target = np.asarray(target_world, dtype=np.float64)
    stats = stats if stats is not None else Counter()
    lo, hi = camera_floor_box(room, ranges)
    z_cap = camera_height_limit(room)
    for _ in range(max_tries):
        stats["tries"] += 1
        K, w, h = sample_intrinsics(rng, ranges)
        # Nearest distance at which a person of half-extent `subject_radius` fits the frame.
        half_fov = np.arctan(0.5 * min(w, h) / K[0, 0])
        azim = rng.uniform(0.0, 2.0 * np.pi)
        direction = np.array([np.cos(azim), np.sin(azim)])
        t0, t1 = _ray_box_span(target[:2], direction, lo, hi)
        d_fit = subject_radius / np.tan(half_fov)
        dist = draw_in_bands(rng, ranges.distance, max(t0, d_fit), t1) if t0 <= t1 else None
        if dist is None:
            stats["distance"] += 1
            continue
        z = draw_in_bands(rng, ranges.height, 0.0, z_cap)
        if z is None:
            stats["height"] += 1
            continue
        eye = np.array([target[0] + dist * direction[0], target[1] + dist * direction[1], z])
        why: list[str] = []
        if not camera_position_ok(room, eye, ranges, why):
            stats[why[0]] += 1
            continue
        aim = target + rng.normal(0.0, ranges.aim_jitter, size=3)
        T = look_at(eye, aim, np.array([0.0, 0.0, 1.0]))
        roll = np.deg2rad(rng.normal(0.0, ranges.roll_deg))
        c, s = np.cos(roll), np.sin(roll)
        Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        T[:3, :] = Rz @ T[:3, :]
        camera = Camera(K, T, w, h)
        if vertices_world is not None and not person_bbox_ok(
            camera, person_bbox(camera, vertices_world), ranges
        ):
            stats["bbox"] += 1
            continue
        return camera
    return None


def camera_pitch_deg(camera: Camera) -> float:
    """Angle of the optical axis below the horizontal, degrees (negative: looking up)."""
    axis_world = camera.T_w2c[2, :3]
    return float(np.rad2deg(np.arcsin(np.clip(-axis_world[2], -1.0, 1.0))))


def project_points(camera: Camera, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projects world points with a camera.

    Args:
        camera: The camera.
        points_world: (N, 3) world frame, metres.

    Returns:
        ``(uv (N, 2) pixels, z (N,) camera depth in metres)``.
    """
    p = points_world @ camera.T_w2c[:3, :3].T + camera.T_w2c[:3, 3]
    z = p[:, 2]
    uv = (p[:, :2] / np.maximum(z, 1e-9)[:, None]) @ camera.K[:2, :2].T + camera.K[:2, 2]
    return uv, z


def person_bbox(camera: Camera, vertices_world: np.ndarray) -> np.ndarray | None:
    """Tight ``[x0, y0, x1, y1]`` box (pixels) of projected vertices; None if any is behind.

    Args:
        camera: The camera.
        vertices_world: (V, 3) body vertices, world frame, metres.

    Returns:
        (4,) float64 box or None when some vertex lies within 5 cm of the camera plane.
    """
    uv, z = project_points(camera, vertices_world)
    if np.any(z < 0.05):
        return None
    return np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])


def person_bbox_ok(camera: Camera, bbox: np.ndarray | None, ranges: CameraRanges) -> bool:
    """Whether a person box lies inside the full frame and is tall enough.

    Args:
        camera: The camera.
        bbox: (4,) box from `person_bbox`, or None.
        ranges: Provides ``bbox_margin`` and ``min_bbox_height``.

    Returns:
        True when the box is inside ``[margin, W - margin] x [margin, H - margin]`` and at
        least ``min_bbox_height * H`` tall.
    """
    if bbox is None:
        return False
    m = ranges.bbox_margin
    inside = (
        bbox[0] >= m
        and bbox[1] >= m
        and bbox[2] <= camera.width - m
        and bbox[3] <= camera.height - m
    )
    return bool(inside and (bbox[3] - bbox[1]) >= ranges.min_bbox_height * camera.height)

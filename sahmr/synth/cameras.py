"""Random, realistic cameras around a placed person, for the synthetic data generator.

Intrinsics imitate consumer and dataset cameras (image sizes 640x480 to 1920x1080, 50-90
degree horizontal field of view, principal point near the centre). Extrinsics put the camera
0.5-2.5 m above the floor, 1.5-8 m from the person (horizontal distance), inside the room's
floor rectangle, outside every furniture bounding box, aimed at the person's pelvis with a
small jitter. Frames follow DESIGN.md: world z-up, metres; camera OpenCV (x right, y down,
z forward); ``T_w2c`` maps world to camera.
"""

from __future__ import annotations

import logging
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


@dataclass(kw_only=True)
class CameraRanges:
    """Ranges cameras are drawn from (uniform unless stated).

    Attributes:
        image_sizes: Candidate (W, H) full-image sizes in pixels; one is chosen uniformly.
        fov_x_deg: (min, max) horizontal field of view, degrees.
        principal_jitter: Principal point offset from the centre, as a fraction of W / H.
        height: (min, max) camera centre height above the floor (world z), metres.
        distance: (min, max) horizontal distance camera -> person pelvis, metres.
        aim_jitter: Standard deviation (m) of the aim point around the pelvis, per axis.
        roll_deg: Standard deviation of the camera roll about its optical axis, degrees.
        wall_margin: Minimum distance (m) of the camera from the floor rectangle's border.
        furniture_margin: Furniture boxes are grown by this much (m) before the inside test.
        bbox_margin: The person's box must stay this many pixels inside the full frame.
        min_bbox_height: Minimum person box height as a fraction of the image height.
        max_occlusion: Samples whose occlusion ratio exceeds this are rejected.
    """

    image_sizes: Sequence[Sequence[int]] = field(default=DEFAULT_IMAGE_SIZES)
    fov_x_deg: tuple[float, float] = (50.0, 90.0)
    principal_jitter: float = 0.01
    height: tuple[float, float] = (0.5, 2.5)
    distance: tuple[float, float] = (1.5, 8.0)
    aim_jitter: float = 0.15
    roll_deg: float = 2.0
    wall_margin: float = 0.15
    furniture_margin: float = 0.1
    bbox_margin: float = 2.0
    min_bbox_height: float = 0.1
    max_occlusion: float = 0.6


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
    """Draws an image size and a pinhole K.

    Args:
        rng: Random generator.
        ranges: Camera ranges.

    Returns:
        ``(K (3, 3) float64, W, H)``; square pixels, principal point near the centre.
    """
    sizes = [tuple(int(v) for v in s) for s in ranges.image_sizes]
    w, h = sizes[int(rng.integers(len(sizes)))]
    fov = np.deg2rad(rng.uniform(*ranges.fov_x_deg))
    f = 0.5 * w / np.tan(fov / 2.0)
    cx = w / 2.0 + rng.normal(0.0, ranges.principal_jitter) * w
    cy = h / 2.0 + rng.normal(0.0, ranges.principal_jitter) * h
    K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    return K, w, h


def camera_position_ok(room: Room, eye_world: np.ndarray, ranges: CameraRanges) -> bool:
    """Whether a camera centre lies inside the room and outside all furniture boxes.

    Args:
        room: The room (world z-up, floor at z = 0).
        eye_world: (3,) camera centre, world frame, metres.
        ranges: Provides ``wall_margin`` and ``furniture_margin``.

    Returns:
        True when the centre is inside the floor rectangle (shrunk by the wall margin) and
        not inside any furniture box grown by the furniture margin.
    """
    fs = room.free_space
    lo = np.asarray(fs.origin, dtype=np.float64) + ranges.wall_margin
    hi = (
        np.asarray(fs.origin, dtype=np.float64)
        + np.array(fs.grid.shape[::-1], dtype=np.float64) * fs.cell_size
        - ranges.wall_margin
    )
    if np.any(eye_world[:2] < lo) or np.any(eye_world[:2] > hi):
        return False
    if room.wall_height > 0 and eye_world[2] > room.wall_height - 0.05:
        return False
    m = ranges.furniture_margin
    for obj in room.furniture:
        if np.all(eye_world > np.asarray(obj.bbox_min) - m) and np.all(
            eye_world < np.asarray(obj.bbox_max) + m
        ):
            return False
    return True


def sample_camera(
    rng: np.random.Generator,
    room: Room,
    target_world: np.ndarray,
    ranges: CameraRanges,
    *,
    max_tries: int = 50,
    subject_radius: float = 0.9,
) -> Camera | None:
    """Draws a camera looking at a person, inside the room and outside furniture.

    Args:
        rng: Random generator.
        room: The room (world z-up).
        target_world: (3,) the person's pelvis, world frame, metres.
        ranges: Camera ranges.
        max_tries: Position draws before giving up.
        subject_radius: Half-extent (m) of the person; distances at which it would not fit
            the shorter image side are not drawn (within ``ranges.distance``).

    Returns:
        The Camera, or None when no valid position was found. The person's visibility in the
        image is checked later (`person_bbox_ok`, occlusion).
    """
    target = np.asarray(target_world, dtype=np.float64)
    K, w, h = sample_intrinsics(rng, ranges)
    # Nearest distance at which a person of half-extent `subject_radius` fits the frame.
    half_fov = np.arctan(0.5 * min(w, h) / K[0, 0])
    d_lo = min(max(ranges.distance[0], subject_radius / np.tan(half_fov)), ranges.distance[1])
    for _ in range(max_tries):
        dist = rng.uniform(d_lo, ranges.distance[1])
        azim = rng.uniform(0.0, 2.0 * np.pi)
        eye = np.array(
            [
                target[0] + dist * np.cos(azim),
                target[1] + dist * np.sin(azim),
                rng.uniform(*ranges.height),
            ]
        )
        if not camera_position_ok(room, eye, ranges):
            continue
        aim = target + rng.normal(0.0, ranges.aim_jitter, size=3)
        T = look_at(eye, aim, np.array([0.0, 0.0, 1.0]))
        roll = np.deg2rad(rng.normal(0.0, ranges.roll_deg))
        c, s = np.cos(roll), np.sin(roll)
        Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        T[:3, :] = Rz @ T[:3, :]
        return Camera(K, T, w, h)
    return None


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

"""Errors for bad demo / inference input, and the checks that raise them.

Every check raises an `InputError` subclass whose message says what is wrong and what to do
about it; the CLI prints the message and exits non-zero without writing any output. Checks
take plain numpy arrays (world = the scan's frame, camera = OpenCV, metres, pixels).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_SCAN_EXTENT_M",
    "MIN_BBOX_INSIDE_FRACTION",
    "MIN_FRUSTUM_POINTS",
    "BBoxError",
    "CameraError",
    "CheckpointError",
    "EmptyFrustumError",
    "ImageSizeError",
    "InputError",
    "MissingFileError",
    "ScanUnitsError",
    "check_bbox",
    "check_camera_sees_scan",
    "check_frustum",
    "check_image_size",
    "check_scan_extent",
    "require_file",
]

MAX_SCAN_EXTENT_M = 100.0
"""Largest plausible side of a scan, metres; more usually means millimetres or centimetres."""
MIN_BBOX_INSIDE_FRACTION = 0.5
"""Share of the person box's area that must lie inside the image."""
MIN_FRUSTUM_POINTS = 1
"""Fewest scene points the person box's frustum must hold."""


class InputError(ValueError):
    """Bad user input: the message is meant for the user, no traceback needed."""


class MissingFileError(InputError, FileNotFoundError):
    """An input file is missing or cannot be read."""


class ScanUnitsError(InputError):
    """The scan's extent is implausible for a room in metres."""


class CameraError(InputError):
    """The camera is malformed or does not see the scan."""


class EmptyFrustumError(InputError):
    """No scene point lies in the person box's frustum."""


class BBoxError(InputError):
    """The person box is malformed or (mostly) outside the image."""


class ImageSizeError(InputError):
    """The image does not have the size the camera was calibrated for."""


class CheckpointError(InputError):
    """The checkpoint is missing or cannot be loaded."""


def require_file(path: str | Path | None, what: str) -> Path:
    """Return ``path`` as a Path, or raise `MissingFileError` naming ``what``.

    Args:
        path: The file.
        what: What the file is, for the message ("image", "camera file"...).

    Raises:
        MissingFileError: ``path`` is None, missing, not a file or not readable.
    """
    if path is None:
        raise MissingFileError(f"no {what} given")
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"{what} not found: {p}")
    if not p.is_file():
        raise MissingFileError(f"{what} is not a file: {p}")
    try:
        with p.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise MissingFileError(f"{what} cannot be read: {p} ({exc.strerror or exc})") from exc
    return p


def check_scan_extent(points_world: np.ndarray, path: str | Path, scale: float = 1.0) -> float:
    """Reject scans whose largest side is not plausible for metres.

    Args:
        points_world: (N, 3) scan vertices or points, world frame, after ``scale``.
        path: The scan file, for the message.
        scale: The factor already applied, for the message.

    Returns:
        The largest side of the bounding box, metres.

    Raises:
        ScanUnitsError: The extent exceeds `MAX_SCAN_EXTENT_M`.
    """
    pts = np.asarray(points_world, dtype=np.float64)
    extent = float((pts.max(0) - pts.min(0)).max()) if len(pts) else 0.0
    if extent > MAX_SCAN_EXTENT_M:
        guess = 0.001 if extent > 1000.0 else 0.01
        unit = "millimetres" if guess == 0.001 else "centimetres"
        raise ScanUnitsError(
            f"{path}: the scan is {extent:.0f} m across (after scale {scale:g}); rooms are "
            f"metres, this looks like {unit}: pass --scale {guess:g}"
        )
    return extent


def check_bbox(bbox: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Validate a person box against the image.

    Args:
        bbox: (4,) ``x0, y0, x1, y1`` in pixels.
        image_size: ``(W, H)`` of the image.

    Returns:
        The box as float64 (4,).

    Raises:
        BBoxError: Not 4 finite numbers, empty, or less than `MIN_BBOX_INSIDE_FRACTION` of
            its area inside the image.
    """
    b = np.asarray(bbox, dtype=np.float64).reshape(-1)
    if b.size != 4 or not np.isfinite(b).all():
        raise BBoxError(f"bbox must be 4 finite numbers x0,y0,x1,y1; got {b.tolist()}")
    x0, y0, x1, y1 = b
    if x1 <= x0 or y1 <= y0:
        raise BBoxError(f"bbox {b.tolist()} is empty: need x1 > x0 and y1 > y0")
    W, H = image_size
    iw = max(0.0, min(x1, W) - max(x0, 0.0))
    ih = max(0.0, min(y1, H) - max(y0, 0.0))
    inside = iw * ih / ((x1 - x0) * (y1 - y0))
    if inside < MIN_BBOX_INSIDE_FRACTION:
        raise BBoxError(
            f"bbox {np.round(b, 1).tolist()} lies outside the {W}x{H} image "
            f"({100 * inside:.0f}% of it inside; at least "
            f"{100 * MIN_BBOX_INSIDE_FRACTION:.0f}% needed)"
        )
    return b


def check_image_size(
    image_size: tuple[int, int], camera_size: tuple[int, int] | None, K: np.ndarray
) -> None:
    """Check that an image fits the camera it is said to come from.

    With a calibrated size the two must be equal; without one, the principal point must lie
    inside the image (a sign of a down-scaled or wrong image).

    Args:
        image_size: ``(W, H)`` of the image, pixels.
        camera_size: ``(W, H)`` the camera was calibrated at, or None when unknown.
        K: (3, 3) intrinsics, pixels.

    Raises:
        ImageSizeError: On a mismatch.
    """
    W, H = image_size
    if camera_size is not None:
        cw, ch = (int(v) for v in camera_size)
        if (cw, ch) != (W, H):
            hint = ""
            if cw * H == ch * W:
                hint = f" (same aspect: pass --camera-scale {W / cw:g} for a resized image)"
            elif cw * W == ch * H:
                hint = (" (turned by 90 degrees against the calibration: images are read as "
                        "shown, after their EXIF orientation; turn the image, or calibrate on "
                        "it as shown)")
            raise ImageSizeError(
                f"image is {W}x{H} but the camera was calibrated at {cw}x{ch}{hint}"
            )
        return
    cx, cy = float(K[0, 2]), float(K[1, 2])
    if not (0.0 <= cx <= W and 0.0 <= cy <= H):
        raise ImageSizeError(
            f"the camera's principal point ({cx:.0f}, {cy:.0f}) lies outside the {W}x{H} "
            "image: the image does not match the calibration (down-scaled image? pass "
            "--camera-scale, e.g. 0.25 for RICH images_ds4)"
        )


def check_camera_sees_scan(
    points_world: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    image_size: tuple[int, int],
    near: float,
    far: float,
) -> int:
    """Check that some of the scan projects into the image in front of the camera.

    Args:
        points_world: (N, 3) scene points, world frame, metres.
        K: (3, 3) intrinsics, pixels.
        T_w2c: (4, 4) world -> camera.
        image_size: ``(W, H)`` pixels.
        near: Nearest depth counted, metres.
        far: Farthest depth counted, metres.

    Returns:
        The number of scene points seen.

    Raises:
        CameraError: No scene point is seen.
    """
    pts = np.asarray(points_world, dtype=np.float64)
    p = pts @ T_w2c[:3, :3].T + T_w2c[:3, 3]
    z = p[:, 2]
    front = (z >= near) & (z <= far)
    uv = p[front, :2] / z[front, None] @ K[:2, :2].T + K[:2, 2]
    W, H = image_size
    seen = int(((uv[:, 0] >= -0.5) & (uv[:, 0] <= W - 0.5) & (uv[:, 1] >= -0.5)
                & (uv[:, 1] <= H - 0.5)).sum())
    if seen == 0:
        behind = int((z < 0).sum())
        hint = (
            "most of the scan is behind the camera: is the extrinsic camera-to-world "
            "rather than world-to-camera (use T_c2w in the camera file)?"
            if behind > len(z) // 2
            else "check the extrinsics and that the scan is in the camera's world frame"
        )
        raise CameraError(
            f"the camera sees none of the scan between {near:g} and {far:g} m: {hint}"
        )
    return seen


def check_frustum(num_points: int, bbox: np.ndarray, near: float, far: float) -> None:
    """Check that the person box's frustum holds scene points.

    Args:
        num_points: Scene points inside the frustum.
        bbox: (4,) the person box, pixels (for the message).
        near: Nearest depth, metres.
        far: Farthest depth, metres.

    Raises:
        EmptyFrustumError: Fewer than `MIN_FRUSTUM_POINTS` points.
    """
    if num_points < MIN_FRUSTUM_POINTS:
        raise EmptyFrustumError(
            f"no scene point lies behind the bbox {np.round(np.asarray(bbox), 1).tolist()} "
            f"between {near:g} and {far:g} m: the camera does not see the scan where the "
            "person is (wrong bbox, camera or scan?)"
        )

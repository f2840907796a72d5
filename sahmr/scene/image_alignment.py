"""Does the scan, seen from the given camera, line up with the photo? (A check before the run.)

A camera given camera-to-world instead of world-to-camera, or turned about the vertical, can
pass every geometric check of `sahmr.scene.camera_checks` (its inverse or its turned view may
be a plausible camera itself) and SA-HMR then places a plausible body metres from the right
place. The image tells: it was taken of the scanned room, so the scan's structure rendered
from the right camera (depth discontinuities, creases between walls, floor and furniture)
lies on the photo's edges; from a wrong camera it does not.

The check, at a reduced resolution (longer side `ALIGN_LONG_SIDE` px):

1. Ray-cast the scan's depth and face normals from the camera (`MeshRaycaster`).
2. Scan edges: hit / miss boundaries, jumps of inverse depth (whose second difference is zero
   on any plane) and creases where neighbouring normals turn by more than `CREASE_DEG`.
3. Orientation fields: the doubled-angle gradient ``(g_x + i g_y)^2 / |g|`` of the grey photo
   (resized to the same size) and of the scan edge map (smoothed by `EDGE_BLUR_PX`), each
   averaged over a Gaussian of `ORIENTATION_SIGMA_FRACTION` of the diagonal (a structure
   tensor: long straight boundaries add up, texture of random orientation cancels out).
4. The person box (widened by `BOX_MARGIN`) is left out: the person is not in the scan.
5. Score: the normalised correlation of the two fields outside the box, at the best of small
   shifts (`MAX_SHIFT_FRACTION`), in [-1, 1]: ~0 for a view unrelated to the photo; for the
   right camera 0.65-0.8 on the generator's flat-shaded frames, 0.37-0.63 on textured ones
   (5th percentile to median).
6. The same score for alternative cameras: the inverse matrix and the camera turned 90, 180 and
   270 degrees about the scan's up axis through its centre. A right camera scores best; when
   an alternative scores `MARGIN` more than the given camera (and at least
   `MIN_ALTERNATIVE_SCORE`), the given one is refused: the alternative undoes the mistake. A
   given camera that sees too little structure to be scored counts as 0.

Measured (docs/demo.md, "Geometry checks"): 120 generated full frames of the 6 bundled rooms
and the 3 bundled demo frames; right cameras refused 0 of 123 (0 of 120 textured); their
camera-to-world and turned forms refused 100 % (flat-shaded), 94 % (textured), 91 % (textured,
scan missing a third of the furniture), 85 % (textured, camera 1.5 deg off: 2 of 120 right
cameras refused). About 40 ms a frame on one CPU core.

Frames: world = the scan's frame, metres; camera = OpenCV (x right, y down, z forward);
``T_w2c`` maps world to camera; ``K`` and the person box in pixels of the full image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from sahmr.geometry.raycast import MeshRaycaster, pixel_rays
from sahmr.scene.camera_checks import invert_extrinsics
from sahmr.scene.orientation import up_vector

__all__ = [
    "ALIGN_LONG_SIDE",
    "BOX_MARGIN",
    "CREASE_DEG",
    "EDGE_BLUR_PX",
    "INVERSE_DEPTH_JUMP",
    "MARGIN",
    "MAX_SHIFT_FRACTION",
    "MIN_ALTERNATIVE_SCORE",
    "MIN_SCAN_EDGE_FRACTION",
    "ORIENTATION_SIGMA_FRACTION",
    "Alignment",
    "ImageAlignmentError",
    "alignment_score",
    "alternative_cameras",
    "check_image_alignment",
    "image_alignment",
    "orientation_field",
    "scan_edges",
]

ALIGN_LONG_SIDE = 192
"""Longer side (pixels) of the renders and the resized photo."""
INVERSE_DEPTH_JUMP = 0.05
"""A scan edge where the second difference of inverse depth across a pixel exceeds this share
of the pixel's inverse depth (a plane has none; a step from 2 to 3 m has 0.33)."""
CREASE_DEG = 30.0
"""A scan edge where neighbouring pixels' surface normals turn by more than this, degrees."""
EDGE_BLUR_PX = 1.0
"""Gaussian sigma (pixels) of the scan edge map before its gradient is taken."""
ORIENTATION_SIGMA_FRACTION = 0.0125
"""Gaussian sigma of the orientation fields' averaging, as a share of the image diagonal
(192 x 144: 3 px): the tolerance between a scan edge and an image edge."""
BOX_MARGIN = 0.1
"""The person box is widened by this share of its size on each side before it is left out."""
MAX_SHIFT_FRACTION = 0.01
"""Largest shift (share of the image diagonal; 192 x 144: 2 px) between the scan's edges and
the photo's tried for each camera: calibration a little off (a degree, a few per cent of
focal length) still lines up."""
MIN_SCAN_EDGE_FRACTION = 0.005
"""Fewest scan edge pixels (share of the pixels outside the box) for a camera to be scored."""
MARGIN = 0.2
"""How much more an alternative camera must score than the given one to refuse it."""
MIN_ALTERNATIVE_SCORE = 0.2
"""Smallest score of an alternative camera that refuses the given one."""

ALTERNATIVES: tuple[tuple[str, str, float], ...] = (
    ("inverse", "its inverse (the extrinsics look like camera-to-world)", 0.0),
    ("turned 90 deg", "the camera turned 90 deg about the up axis", 90.0),
    ("turned 180 deg", "the camera turned 180 deg about the up axis", 180.0),
    ("turned 270 deg", "the camera turned 270 deg about the up axis", 270.0),
)
"""(short name, phrase, turn in degrees; 0 for the inverse) of each alternative camera."""


class ImageAlignmentError(ValueError):
    """The scan seen from the camera does not line up with the image."""


@dataclass(frozen=True)
class Alignment:
    """How well the scan seen from a camera lines up with the photo.

    Attributes:
        score: The given camera's score (chance-corrected share of its scan edges on image
            edges; nan when it sees too little structure to judge).
        best_alternative_score: The best alternative camera's score (nan: none judged).
        best_alternative: Its short name (``"inverse"``, ``"turned 180 deg"`` ...), or "".
        alternative_scores: Score of each alternative, by short name.
        verdict: ``"ok"``, ``"misaligned"`` or ``"unjudged"``.
        reason: A phrase saying why.
    """

    score: float
    best_alternative_score: float
    best_alternative: str
    alternative_scores: dict[str, float]
    verdict: str
    reason: str

    @property
    def ok(self) -> bool:
        """False only when an alternative camera lines up clearly better."""
        return self.verdict != "misaligned"

    def message(self, source: str = "camera") -> str:
        """One line: ``source`` first, then the verdict and the scores."""
        if self.verdict == "misaligned":
            phrase = dict((s, p) for s, p, _ in ALTERNATIVES)[self.best_alternative]
            return (
                f"{source}: the scan seen from this camera does not line up with the image "
                f"(edge alignment {self.score:.2f}); {phrase} lines up better "
                f"({self.best_alternative_score:.2f})"
            )
        return f"{source}: {self.reason}"


def _resize_camera(
    K: np.ndarray, size: tuple[int, int], long_side: int
) -> tuple[np.ndarray, int, int]:
    """Intrinsics and (w, h) of the image resized to a longer side of ``long_side`` px."""
    W, H = size
    s = long_side / max(W, H)
    w, h = max(1, round(W * s)), max(1, round(H * s))
    sx, sy = w / W, h / H
    K2 = np.asarray(K, dtype=np.float64).copy()
    K2[0, :] *= sx
    K2[1, :] *= sy
    # pixel centres: u' + 0.5 = (u + 0.5) * s
    K2[0, 2] += 0.5 * sx - 0.5
    K2[1, 2] += 0.5 * sy - 0.5
    return K2, w, h


def _box_mask(bbox: np.ndarray | None, size: tuple[int, int], w: int, h: int) -> np.ndarray:
    """(h, w) bool: pixels of the widened person box."""
    mask = np.zeros((h, w), dtype=bool)
    if bbox is None:
        return mask
    box = np.asarray(bbox, dtype=np.float64).reshape(-1)
    if box.size != 4 or not np.isfinite(box).all():
        return mask
    x0, y0, x1, y1 = box
    mx, my = BOX_MARGIN * (x1 - x0), BOX_MARGIN * (y1 - y0)
    sx, sy = w / size[0], h / size[1]
    j0, j1 = math.floor((x0 - mx) * sx), math.ceil((x1 + mx) * sx)
    i0, i1 = math.floor((y0 - my) * sy), math.ceil((y1 + my) * sy)
    mask[max(i0, 0) : max(i1, 0), max(j0, 0) : max(j1, 0)] = True
    return mask


def scan_edges(
    caster: MeshRaycaster, K: np.ndarray, T_w2c: np.ndarray, width: int, height: int
) -> np.ndarray:
    """Structural edges of the scan seen from a camera.

    Args:
        caster: The scan's caster (world frame).
        K: (3, 3) intrinsics of the (resized) image, pixels.
        T_w2c: (4, 4) world -> camera.
        width: w, pixels.
        height: h, pixels.

    Returns:
        (h, w) bool: hit / miss boundaries, inverse-depth jumps and normal creases.
    """
    origin, dirs = pixel_rays(K, T_w2c, width, height)
    face, dist = caster.cast(origin, dirs)
    hit = (face >= 0).reshape(height, width)
    inv = np.where(face >= 0, 1.0 / np.maximum(dist * (dirs @ T_w2c[2, :3]), 1e-6), 0.0)
    inv = inv.reshape(height, width)
    n = caster.normals[np.maximum(face, 0)]
    n *= np.where(np.einsum("ij,ij->i", n, dirs) > 0, -1.0, 1.0)[:, None]  # towards the viewer
    n = n.reshape(height, width, 3)
    edges = np.zeros((height, width), dtype=bool)
    cos_crease = math.cos(math.radians(CREASE_DEG))
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        # hit / miss boundary; creases between hit neighbours: mark both pixels
        pair = hit[a] != hit[b]
        both = hit[a] & hit[b]
        pair |= both & (np.einsum("ijk,ijk->ij", n[a], n[b]) < cos_crease)
        edges[a] |= pair
        edges[b] |= pair
        # inverse depth second difference at the middle pixel of three hit pixels
        m = [slice(None)] * 2
        lo, mid, hi = list(m), list(m), list(m)
        lo[axis], mid[axis], hi[axis] = slice(None, -2), slice(1, -1), slice(2, None)
        lo, mid, hi = tuple(lo), tuple(mid), tuple(hi)
        three = hit[lo] & hit[mid] & hit[hi]
        d2 = np.abs(inv[lo] - 2.0 * inv[mid] + inv[hi])
        edges[mid] |= three & (d2 > INVERSE_DEPTH_JUMP * inv[mid])
    return edges


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    if np.iscomplexobj(a):
        return _blur(a.real, sigma) + 1j * _blur(a.imag, sigma)
    return ndimage.gaussian_filter(a, sigma, mode="nearest") if sigma > 0 else a


def orientation_field(
    grey: np.ndarray, sigma: float, pre_sigma: float = 0.0, ignore: np.ndarray | None = None
) -> np.ndarray:
    """Averaged doubled-angle gradient of an image (the complex part of a structure tensor).

    Args:
        grey: (h, w) float image (grey levels, or a 0 / 1 edge map).
        sigma: Gaussian sigma of the averaging, pixels.
        pre_sigma: Gaussian sigma applied before the gradient, pixels.
        ignore: (h, w) bool pixels whose values must not count (the person box): gradients
            within reach of them (1 px + 3 ``pre_sigma``) are dropped before the averaging.

    Returns:
        (h, w) complex: ``G_sigma * ((g_x + i g_y)^2 / |g|)``; its angle is twice the gradient
        direction (a boundary reads the same from either side), its size the gradient's.
    """
    a = _blur(np.asarray(grey, dtype=np.float64), pre_sigma)
    gx = ndimage.sobel(a, axis=1, mode="nearest") / 8.0
    gy = ndimage.sobel(a, axis=0, mode="nearest") / 8.0
    mag = np.hypot(gx, gy)
    z = (gx + 1j * gy) ** 2 / np.where(mag > 0, mag, 1.0)
    if ignore is not None and ignore.any():
        reach = 1 + math.ceil(3.0 * pre_sigma)
        z[ndimage.binary_dilation(ignore, iterations=reach)] = 0.0
    return _blur(z, sigma)


def alignment_score(
    scan: np.ndarray, image: np.ndarray, keep: np.ndarray, max_shift: int = 0
) -> float:
    """Normalised correlation of two orientation fields over the kept pixels, at the best of
    the image shifts up to ``max_shift`` pixels along each axis (a camera calibrated a little
    off still lines up).

    Args:
        scan: (h, w) complex orientation field of the scan's edges (`orientation_field`).
        image: (h, w) complex orientation field of the photo.
        keep: (h, w) bool pixels judged (outside the person box).
        max_shift: Largest shift tried, pixels.

    Returns:
        ``max over shifts of Re sum(scan conj(shifted image)) / sqrt(sum |scan|^2
        sum |image|^2)``, both fields zero outside ``keep``, in [-1, 1]; nan when either is
        zero.
    """
    s = np.where(keep, scan, 0.0)
    i = np.where(keep, image, 0.0)
    den = math.sqrt(float(np.sum(np.abs(s) ** 2)) * float(np.sum(np.abs(i) ** 2)))
    if den <= 0:
        return float("nan")
    h, w = s.shape
    best = -np.inf
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            a = s[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
            b = i[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
            best = max(best, float(np.sum(a * np.conj(b)).real))
    return best / den


def _turned(T: np.ndarray, up: np.ndarray, deg: float) -> np.ndarray:
    """The camera turned by ``deg`` about the world axis ``up`` through its centre."""
    a = math.radians(deg)
    k = np.array([[0.0, -up[2], up[1]], [up[2], 0.0, -up[0]], [-up[1], up[0], 0.0]])
    rot = np.eye(3) + math.sin(a) * k + (1.0 - math.cos(a)) * k @ k  # Rodrigues, world
    R, t = T[:3, :3], T[:3, 3]
    centre = -R.T @ t
    out = np.eye(4)
    out[:3, :3] = R @ rot.T  # camera-to-world rotation becomes rot @ R^T
    out[:3, 3] = -out[:3, :3] @ centre
    return out


def alternative_cameras(T_w2c: np.ndarray, up_axis: str = "z") -> dict[str, np.ndarray]:
    """The alternative cameras a mistaken camera may be: by short name, (4, 4) world -> camera
    (the inverse matrix; turned 90, 180, 270 degrees about the up axis through its centre)."""
    T = np.asarray(T_w2c, dtype=np.float64)
    up = up_vector(up_axis).astype(np.float64)
    return {
        short: invert_extrinsics(T) if deg == 0.0 else _turned(T, up, deg)
        for short, _, deg in ALTERNATIVES
    }


def image_alignment(
    caster: MeshRaycaster,
    image: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    bbox: np.ndarray | None,
    up_axis: str = "z",
    *,
    long_side: int = ALIGN_LONG_SIDE,
) -> Alignment:
    """Score how well the scan seen from a camera lines up with the photo, against the
    alternative cameras (see the module doc).

    Args:
        caster: The scan's caster (world frame, metres).
        image: (H, W, 3) uint8 RGB full image as taken by the camera.
        K: (3, 3) intrinsics of the full image, pixels.
        T_w2c: (4, 4) world -> camera (OpenCV).
        bbox: (4,) person box ``x0, y0, x1, y1``, pixels of the full image, or None.
        up_axis: The scan's gravity-up axis.
        long_side: Longer side of the renders, pixels.

    Returns:
        `Alignment`.
    """
    image = np.asarray(image)
    size = (image.shape[1], image.shape[0])
    K2, w, h = _resize_camera(K, size, long_side)
    ignore = _box_mask(bbox, size, w, h)
    keep = ~ignore
    sigma = ORIENTATION_SIGMA_FRACTION * math.hypot(w, h)
    grey = (
        np.asarray(
            Image.fromarray(image.astype(np.uint8))
            .convert("L")
            .resize((w, h), Image.Resampling.BOX),
            dtype=np.float64,
        )
        / 255.0
    )
    photo = orientation_field(grey, sigma, ignore=ignore)
    shift = round(MAX_SHIFT_FRACTION * math.hypot(w, h))
    min_edges = MIN_SCAN_EDGE_FRACTION * max(int(keep.sum()), 1)

    def score_of(T: np.ndarray) -> float:
        edges = scan_edges(caster, K2, T, w, h)
        if int((edges & keep).sum()) < min_edges:
            return float("nan")
        field = orientation_field(edges.astype(np.float64), sigma, EDGE_BLUR_PX, ignore)
        return alignment_score(field, photo, keep, shift)

    T = np.asarray(T_w2c, dtype=np.float64)
    score = score_of(T)
    alts = {name: score_of(Ta) for name, Ta in alternative_cameras(T, up_axis).items()}
    judged = {k: v for k, v in alts.items() if not math.isnan(v)}
    best = max(judged, key=judged.get) if judged else ""
    best_score = judged[best] if judged else float("nan")
    given = 0.0 if math.isnan(score) else score
    if best and best_score >= max(given + MARGIN, MIN_ALTERNATIVE_SCORE):
        verdict, reason = "misaligned", f"{best} lines up better"
    elif math.isnan(score):
        verdict, reason = "unjudged", "the camera sees too little of the scan's structure"
    else:
        verdict = "ok"
        reason = (
            f"the scan lines up with the image (edge alignment {score:.2f}; best "
            f"alternative {best or 'none'} {best_score:.2f})"
        )
    return Alignment(score, best_score, best, alts, verdict, reason)


def check_image_alignment(
    caster: MeshRaycaster,
    image: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    bbox: np.ndarray | None,
    up_axis: str = "z",
    source: str = "camera",
) -> Alignment:
    """Raise when an alternative camera lines up with the image clearly better.

    Args:
        caster: The scan's caster (world frame).
        image: (H, W, 3) uint8 RGB full image.
        K: (3, 3) intrinsics, pixels.
        T_w2c: (4, 4) world -> camera (OpenCV).
        bbox: (4,) person box, pixels, or None.
        up_axis: The scan's gravity-up axis.
        source: The camera, named first in the message (a file, a frame).

    Returns:
        The `Alignment` (verdict ``"ok"`` or ``"unjudged"``).

    Raises:
        ImageAlignmentError: One line naming the camera and the alternative that lines up.
    """
    result = image_alignment(caster, image, K, T_w2c, bbox, up_axis)
    if not result.ok:
        raise ImageAlignmentError(result.message(source))
    return result

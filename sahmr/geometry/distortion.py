"""OpenCV lens distortion (numpy): forward model, point undistortion, undistorted crops.

Coefficients in OpenCV order ``(k1, k2, p1, p2[, k3[, k4, k5, k6]])`` (4, 5 or 8 values;
fewer are zero-padded). For normalised coordinates ``(x, y)``, ``r2 = x^2 + y^2``:

    radial = (1 + k1 r2 + k2 r2^2 + k3 r2^3) / (1 + k4 r2 + k5 r2^2 + k6 r2^3)
    x_d = x radial + 2 p1 x y + p2 (r2 + 2 x^2)
    y_d = y radial + p1 (r2 + 2 y^2) + 2 p2 x y

An undistorted crop is sampled by mapping each crop pixel through the pinhole crop camera
(`sahmr.geometry.crops.crop_camera`) to a ray, distorting it and reading the stored (distorted)
image there, bilinearly; so the crop follows the pinhole ``K`` exactly (no OpenCV needed).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["distort_normalized", "distort_pixels", "undistort_pixels", "undistorted_crop"]


def _coeffs(dist: np.ndarray) -> np.ndarray:
    d = np.asarray(dist, np.float64).reshape(-1)
    if d.size > 8:
        raise ValueError(f"at most 8 distortion coefficients are supported; got {d.size}")
    return np.concatenate([d, np.zeros(8 - d.size)])


def distort_normalized(xy: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Applies the distortion to normalised image coordinates.

    Args:
        xy: (..., 2) normalised coordinates ``(X/Z, Y/Z)``.
        dist: (4,), (5,) or (8,) OpenCV coefficients.

    Returns:
        (..., 2) distorted normalised coordinates, float64.
    """
    k1, k2, p1, p2, k3, k4, k5, k6 = _coeffs(dist)
    x, y = np.asarray(xy, np.float64)[..., 0], np.asarray(xy, np.float64)[..., 1]
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def distort_pixels(uv: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Pinhole pixels (..., 2) -> where the lens puts them in the stored image (..., 2)."""
    K = np.asarray(K, np.float64)
    uv = np.asarray(uv, np.float64)
    xy = np.stack([(uv[..., 0] - K[0, 2]) / K[0, 0], (uv[..., 1] - K[1, 2]) / K[1, 1]], -1)
    xd = distort_normalized(xy, dist)
    return np.stack([xd[..., 0] * K[0, 0] + K[0, 2], xd[..., 1] * K[1, 1] + K[1, 2]], -1)


def undistort_pixels(
    uv: np.ndarray, K: np.ndarray, dist: np.ndarray, *, iterations: int = 30
) -> np.ndarray:
    """Inverts `distort_pixels` by fixed-point iteration (as ``cv2.undistortPoints``).

    Args:
        uv: (..., 2) pixels of the stored (distorted) image.
        K: (3, 3) intrinsics.
        dist: OpenCV coefficients.
        iterations: Fixed-point steps.

    Returns:
        (..., 2) pinhole pixels, float64.
    """
    K = np.asarray(K, np.float64)
    uv = np.asarray(uv, np.float64)
    target = np.stack([(uv[..., 0] - K[0, 2]) / K[0, 0], (uv[..., 1] - K[1, 2]) / K[1, 1]], -1)
    xy = target.copy()
    for _ in range(iterations):
        xy = xy + (target - distort_normalized(xy, dist))
    return np.stack([xy[..., 0] * K[0, 0] + K[0, 2], xy[..., 1] * K[1, 1] + K[1, 2]], -1)


def undistorted_crop(
    image: np.ndarray,
    K: np.ndarray,
    dist: np.ndarray,
    bbox_xyxy: np.ndarray,
    *,
    size: int | None = None,
    scale: float = 1.2,
) -> np.ndarray:
    """The square network crop around a box of the *undistorted* image.

    Same box convention and pixel grid as `sahmr.data.sample.crop_around_bbox` (square box,
    longer side x ``scale``), so `sahmr.geometry.crops.crop_camera` with ``K`` gives the
    crop's pinhole intrinsics; with zero distortion the result equals that function's.

    Args:
        image: (H, W, 3) uint8 stored (distorted) frame.
        K: (3, 3) intrinsics at the stored resolution.
        dist: OpenCV coefficients.
        bbox_xyxy: (4,) box in undistorted pixels.
        size: Crop side S (default `sahmr.geometry.crops.DEFAULT_CROP_SIZE`).
        scale: Enlargement of the box's longer side.

    Returns:
        (S, S, 3) uint8 crop; pixels outside the image are black.
    """
    from sahmr.geometry.crops import DEFAULT_CROP_SIZE, square_bbox

    size = size or DEFAULT_CROP_SIZE
    box = torch.as_tensor(np.asarray(bbox_xyxy, dtype=np.float32).reshape(4))
    cx, cy, side = (float(v) for v in square_bbox(box, scale=scale))
    side = max(side, 1.0)
    j = (np.arange(size, dtype=np.float64) + 0.5 - size / 2) * (side / size)
    u, v = np.meshgrid(j + cx, j + cy)  # undistorted pixels of the crop's pixel centres
    src = distort_pixels(np.stack([u, v], -1), K, dist)
    h, w = image.shape[:2]
    grid = np.stack([(2 * src[..., 0] + 1) / w - 1, (2 * src[..., 1] + 1) / h - 1], -1)
    img = torch.from_numpy(np.array(image, np.float32)).permute(2, 0, 1)[None]
    out = F.grid_sample(
        img,
        torch.from_numpy(grid[None]).float(),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    out = out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return np.ascontiguousarray(out)

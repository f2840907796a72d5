"""Lens distortion: forward model by hand, inversion, and undistorted crops vs the pinhole."""

from __future__ import annotations

import numpy as np
import pytest

from sahmr.data.sample import crop_around_bbox
from sahmr.geometry.distortion import (
    distort_normalized,
    distort_pixels,
    undistort_pixels,
    undistorted_crop,
)

K = np.array([[300.0, 0.0, 160.0], [0.0, 310.0, 120.0], [0.0, 0.0, 1.0]])
DIST = np.array([-0.12, 0.05, 0.002, -0.001, -0.01])


def test_forward_model_by_hand() -> None:
    x, y = 0.3, -0.2
    k1, k2, p1, p2, k3 = DIST
    r2 = x * x + y * y
    rad = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    want = [x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y]  # fmt: skip
    np.testing.assert_allclose(distort_normalized(np.array([x, y]), DIST), want, atol=1e-15)
    # rational model: (1 + k1 r2) / (1 + k4 r2) with the rest zero
    d8 = np.array([0.1, 0, 0, 0, 0, 0.2, 0, 0])
    np.testing.assert_allclose(
        distort_normalized(np.array([x, y]), d8), np.array([x, y]) * (1 + 0.1 * r2) / (1 + 0.2 * r2)
    )
    with pytest.raises(ValueError, match="at most 8"):
        distort_normalized(np.zeros(2), np.zeros(9))


def test_undistort_inverts_the_forward_model() -> None:
    rng = np.random.default_rng(0)
    uv = rng.uniform([0, 0], [320, 240], size=(200, 2))
    back = undistort_pixels(distort_pixels(uv, K, DIST), K, DIST)
    np.testing.assert_allclose(back, uv, atol=1e-6)


def test_zero_distortion_crop_equals_the_pinhole_crop() -> None:
    image = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    box = np.array([100.0, 50.0, 180.0, 200.0])
    a = undistorted_crop(image, K, np.zeros(5), box, size=64)
    b = crop_around_bbox(image, box, size=64)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_undistorted_crop_puts_a_point_where_the_pinhole_projects_it() -> None:
    """A bright dot drawn where the lens images a 3-D point appears in the crop at the
    point's pinhole projection through the crop camera."""
    import torch

    from sahmr.geometry.crops import square_bbox

    strong = np.array([-0.3, 0.1, 0.005, -0.002, 0.0])
    src = np.array([290.0, 30.0])  # where the lens puts it: a whole pixel of the frame
    point_uv = undistort_pixels(src, K, strong)
    assert np.linalg.norm(src - point_uv) > 5  # distortion moves it by several pixels
    image = np.zeros((240, 320, 3), np.uint8)
    image[29:32, 289:292] = 255
    box = np.array([240.0, 0.0, 320.0, 80.0])
    size = 100
    crop = undistorted_crop(image, K, strong, box, size=size)
    cx, cy, side = (float(v) for v in square_bbox(torch.tensor(box, dtype=torch.float32)))
    want = (point_uv - [cx, cy]) * size / side + size / 2 - 0.5  # crop pixel of the point
    mass = crop[..., 0].astype(float)
    ii, jj = np.nonzero(mass > 0)
    got = np.array([(jj * mass[ii, jj]).sum(), (ii * mass[ii, jj]).sum()]) / mass[ii, jj].sum()
    assert np.linalg.norm(got - want) < 0.3
    plain = crop_around_bbox(image, box, size=size)[..., 0].astype(float)  # ignoring the lens
    ii, jj = np.nonzero(plain > 0)
    off = np.array([(jj * plain[ii, jj]).sum(), (ii * plain[ii, jj]).sum()]) / plain[ii, jj].sum()
    assert np.linalg.norm(off - want) > 3

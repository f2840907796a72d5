"""Intrinsics helpers, world<->camera transforms and square-bbox crops."""

import math

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from sahmr.geometry.cameras import (
    camera_center_world,
    camera_to_world,
    crop_camera,
    crop_image,
    invert_rigid,
    make_K,
    make_K_from_fov,
    make_rigid,
    project,
    project_world,
    square_bbox,
    unproject,
    world_to_camera,
)


def test_make_K_and_fov():
    K = make_K(500.0, 400.0, 320.0, 240.0)
    expected = torch.tensor([[500.0, 0, 320], [0, 400, 240], [0, 0, 1]])
    torch.testing.assert_close(K, expected)
    Kb = make_K(torch.tensor([1.0, 2.0]), 3.0, 4.0, 5.0)
    assert Kb.shape == (2, 3, 3)
    # 90 degree horizontal FOV on a 640-wide image: f = 320 / tan(45 deg) = 320.
    Kf = make_K_from_fov(90.0, 640, 480)
    torch.testing.assert_close(Kf[0, 0], torch.tensor(320.0))
    torch.testing.assert_close(Kf[1, 1], torch.tensor(320.0))
    torch.testing.assert_close(Kf[:2, 2], torch.tensor([319.5, 239.5]))
    # A point on the FOV's edge projects to the image's outer edge u = -0.5.
    p = torch.tensor([[-1.0, 0.0, 1.0]])
    torch.testing.assert_close(project(Kf, p)[0, 0], torch.tensor(-0.5))


def test_world_camera_round_trip():
    g = torch.Generator().manual_seed(0)
    R = torch.from_numpy(Rotation.random(3, random_state=0).as_matrix())
    t = torch.randn(3, 3, dtype=torch.float64, generator=g)
    T_w2c = make_rigid(R, t)
    X = torch.randn(3, 10, 3, dtype=torch.float64, generator=g)
    Xc = world_to_camera(T_w2c, X)
    torch.testing.assert_close(camera_to_world(T_w2c, Xc), X)
    torch.testing.assert_close(world_to_camera(invert_rigid(T_w2c), Xc), X)
    # The camera centre maps to the camera-frame origin.
    c = camera_center_world(T_w2c)
    torch.testing.assert_close(
        world_to_camera(T_w2c, c[:, None]), torch.zeros(3, 1, 3, dtype=torch.float64)
    )
    K = make_K(500.0, 500.0, 100.0, 80.0, dtype=torch.float64)
    uv = project_world(K, T_w2c, X)
    torch.testing.assert_close(uv, project(K, Xc))


def test_square_bbox():
    cx, cy, side = square_bbox(torch.tensor([[10.0, 20.0, 50.0, 120.0]]), scale=1.2)
    torch.testing.assert_close(torch.stack([cx, cy, side], -1), torch.tensor([[30.0, 70.0, 120.0]]))


def test_crop_camera_maps_box_edges_to_crop_edges():
    K = make_K(600.0, 600.0, 320.0, 240.0)[None]
    bbox = torch.tensor([[300.0, 200.0, 100.0]])  # cx, cy, side
    Kc = crop_camera(K, bbox, out_size=200)
    # The box's left/top edge (continuous coordinate 250, 150) must be at crop -0.5.
    p_cam = unproject(K, torch.tensor([[[250.0, 150.0]]]), torch.tensor([[2.0]]))
    torch.testing.assert_close(project(Kc, p_cam), torch.tensor([[[-0.5, -0.5]]]))
    torch.testing.assert_close(Kc[0, 0, 0], torch.tensor(1200.0))  # f * 200 / 100



def test_crop_side_m_is_the_metric_width_the_crop_spans_at_a_depth():
    from sahmr.geometry.crops import crop_side_m

    K = make_K(600.0, 600.0, 320.0, 240.0)[None].double()
    bbox = torch.tensor([[300.0, 200.0, 150.0]], dtype=torch.float64)  # cx, cy, side
    Kc = crop_camera(K, bbox, out_size=224)
    depth = torch.tensor([4.0], dtype=torch.float64)
    side = crop_side_m(Kc, depth, 224)
    torch.testing.assert_close(side, torch.tensor([1.0], dtype=torch.float64))  # 150 / 600 * 4
    # slow reference: a segment of that length at that depth spans exactly the crop's 224 px
    ends = torch.tensor([[[0.0, 0.0, 4.0], [1.0, 0.0, 4.0]]], dtype=torch.float64)
    uv = project(Kc, ends)
    torch.testing.assert_close(uv[0, 1, 0] - uv[0, 0, 0], torch.tensor(224.0, dtype=torch.float64))

def _gaussian_image(H: int, W: int, u: float, v: float, sigma: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    return torch.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * sigma**2))


def _centroid(img: torch.Tensor) -> tuple[float, float]:
    H, W = img.shape
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=img.dtype), torch.arange(W, dtype=img.dtype), indexing="ij"
    )
    m = img.sum()
    return float((img * xs).sum() / m), float((img * ys).sum() / m)


def test_crop_image_consistent_with_crop_camera():
    H, W = 240, 320
    K = make_K(300.0, 300.0, 160.0, 120.0, dtype=torch.float64)[None].repeat(2, 1, 1)
    points = torch.tensor([[[0.2, -0.1, 2.0]], [[-0.3, 0.25, 3.0]]], dtype=torch.float64)
    uv = project(K, points)[:, 0]
    images = torch.stack([_gaussian_image(H, W, float(u), float(v), 6.0) for u, v in uv])[:, None]
    bbox_xyxy = torch.tensor(
        [[150.0, 60.0, 270.0, 150.0], [40.0, 100.0, 200.0, 240.0]], dtype=torch.float64
    )
    bbox = torch.stack(square_bbox(bbox_xyxy, 1.2), -1)
    crops = crop_image(images, bbox, out_size=112)
    Kc = crop_camera(K, bbox, out_size=112)
    uv_crop = project(Kc, points)[:, 0]
    for b in range(2):
        cu, cv = _centroid(crops[b, 0])
        assert math.hypot(cu - uv_crop[b, 0], cv - uv_crop[b, 1]) < 0.05


def test_crop_image_identity_and_padding_and_numpy():
    img = torch.arange(16.0).reshape(1, 1, 4, 4)
    # A box exactly covering the image (centre (1.5, 1.5), side 4) resampled at 4 px = identity.
    same = crop_image(img, torch.tensor([[1.5, 1.5, 4.0]]), out_size=4)
    torch.testing.assert_close(same, img)
    # A box twice the image: the outer ring of samples falls outside -> zeros.
    big = crop_image(img + 1, torch.tensor([[1.5, 1.5, 8.0]]), out_size=8)
    assert big[0, 0, 0, 0] == 0 and big[0, 0, -1, -1] == 0 and big[0, 0, 4, 4] > 0
    arr = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    out = crop_image(arr, (1.5, 1.5, 4.0), out_size=4)
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out, arr)


def test_crop_differentiable():
    K = make_K(300.0, 300.0, 160.0, 120.0, dtype=torch.float64)[None]
    bbox = torch.tensor([[150.0, 100.0, 80.0]], dtype=torch.float64, requires_grad=True)
    img = torch.rand(1, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    (crop_camera(K, bbox).sum() + crop_image(img, bbox, out_size=16).sum()).backward()
    assert torch.isfinite(bbox.grad).all() and torch.isfinite(img.grad).all()

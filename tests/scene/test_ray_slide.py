"""sahmr.scene.ray_slide: the slide along the camera ray against a slow reference and
known shifts, on an analytic floor (sdf = height above z = 0)."""

from __future__ import annotations

import pytest
import torch

from sahmr.records import BodyPrediction
from sahmr.scene.ray_slide import ray_slide, slide_offsets, slide_out_of_scene


def floor_sdf(points: torch.Tensor) -> torch.Tensor:
    return points[:, 2]


def body_on_floor(seed: int = 0) -> torch.Tensor:
    """A 1.7 m tall cloud of 500 points resting on the floor (lowest point at z = 0), 3 m in
    front of the camera's foot."""
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(500, 3, generator=g, dtype=torch.float64) * torch.tensor([0.4, 0.3, 1.7],
                                                                           dtype=torch.float64)
    v[:, 2] -= v[:, 2].min()
    return v + torch.tensor([-0.2, 3.0, 0.0], dtype=torch.float64)


CAMERA = torch.tensor([0.0, 0.0, 2.2], dtype=torch.float64)  # looking down at the body


def slow_reference(v, cam, sdf, max_slide, step, cost_per_mm):
    """Every slide tried in a plain loop; the smallest of the cheapest."""
    c = v.mean(0)
    d = (c - cam) / (c - cam).norm()
    best = None
    n = round(max_slide / step)
    for k in range(-n, n + 1):
        s = k * step
        pene = sum(max(0.0, -float(x)) for x in sdf(v + s * d)) * 1000.0
        cost = pene + cost_per_mm * abs(s) * 1000.0
        key = (round(cost, 9), abs(s))
        if best is None or key < best[0]:
            best = (key, s, pene)
    return best[1], best[2]


def test_offsets_are_ordered_by_size_both_ways():
    torch.testing.assert_close(slide_offsets(0.03, 0.01),
                               torch.tensor([0, .01, -.01, .02, -.02, .03, -.03],
                                            dtype=torch.float64))  # fmt: skip
    assert slide_offsets(0.0, 0.01).tolist() == [0.0]
    with pytest.raises(ValueError):
        slide_offsets(0.5, 0.0)


def test_a_body_touching_the_floor_stays():
    s = ray_slide(body_on_floor(), CAMERA, floor_sdf)
    assert s.slide_m == 0.0 and s.pene_mm == 0.0 and s.pene_slid_mm == 0.0


@pytest.mark.parametrize("sunk", [0.07, 0.23])
def test_a_body_pushed_down_its_ray_comes_back_by_the_known_shift(sunk):
    """The body slid ``sunk`` metres away from the camera (downwards: the camera looks
    down) penetrates the floor; the slide back by exactly ``sunk`` removes it, and at a tiny
    price per mm no longer slide is chosen."""
    v = body_on_floor()
    d = (v.mean(0) - CAMERA) / (v.mean(0) - CAMERA).norm()
    s = ray_slide(v + sunk * d, CAMERA, floor_sdf, slide_cost=1e-6)
    assert s.pene_mm > 0
    assert s.slide_m == pytest.approx(-sunk, abs=1e-9)
    assert s.pene_slid_mm == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(s.shift_world, -sunk * d)


@pytest.mark.parametrize("cost", [0.0, 1.0, 20.0])
def test_matches_the_slow_reference(cost):
    v = body_on_floor(1)
    v[:40, 2] -= 0.12  # a foot and a hand through the floor: partly a pose error
    slide, pene = slow_reference(v, CAMERA, floor_sdf, 0.3, 0.01, cost)
    s = ray_slide(v, CAMERA, floor_sdf, max_slide_m=0.3, step_m=0.01, slide_cost=cost)
    assert s.slide_m == pytest.approx(slide, abs=1e-12)
    assert s.pene_slid_mm == pytest.approx(pene, rel=1e-9, abs=1e-9)


def test_a_high_price_keeps_every_body_where_it_was():
    v = body_on_floor()
    v[:, 2] -= 0.02
    s = ray_slide(v, CAMERA, floor_sdf, slide_cost=1e6)
    assert s.slide_m == 0.0 and s.pene_slid_mm == s.pene_mm > 0
    with pytest.raises(ValueError):
        ray_slide(v, CAMERA, floor_sdf, slide_cost=float("nan"))


def test_a_prediction_slides_each_body_as_a_whole():
    """Two frames: the first sunk along its ray (slides back by the known shift, every part
    of the body with it, in the camera frame), the second without a scan (left alone)."""
    from sahmr.geometry.cameras import invert_rigid

    v = body_on_floor()
    d = (v.mean(0) - CAMERA) / (v.mean(0) - CAMERA).norm()
    # a camera at CAMERA looking along +y (OpenCV: x right, y down, z forward)
    R = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3] = R, -R @ CAMERA
    T = T[None].repeat(2, 1, 1)
    sunk = v + 0.15 * d
    verts_cam = torch.einsum("ij,bvj->bvi", R, torch.stack([sunk, sunk]) - CAMERA)
    joints_cam = verts_cam[:, :24].clone()
    pred = BodyPrediction(verts_cam=verts_cam, joints_cam=joints_cam,
                          root_cam=joints_cam[:, 0].clone(),
                          params={"transl": torch.zeros(2, 3, dtype=torch.float64)})  # fmt: skip
    torch.testing.assert_close(invert_rigid(T)[0, :3, 3], CAMERA)
    out, shift_world = slide_out_of_scene(pred, T, [floor_sdf, None], slide_cost=1e-6)
    torch.testing.assert_close(shift_world[0], -0.15 * d)
    assert shift_world[1].abs().sum() == 0
    torch.testing.assert_close(out.vertices_world(T)[0], v)
    torch.testing.assert_close(out.verts_cam[1], pred.verts_cam[1])
    shift_cam = R @ (-0.15 * d)
    torch.testing.assert_close(out.params["transl"][0], shift_cam)
    torch.testing.assert_close(out.root_cam[0] - pred.root_cam[0], shift_cam)
    # nothing to slide: the very same prediction back
    same, none = slide_out_of_scene(pred, T, [None, None])
    assert same is pred and none.abs().sum() == 0
    with pytest.raises(ValueError, match="1 SDFs for 2 bodies"):
        slide_out_of_scene(pred, T, [floor_sdf])

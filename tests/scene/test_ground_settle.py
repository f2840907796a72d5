"""Bodies placed under the solid ground are slid back onto it along the camera ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sahmr.geometry.cameras import invert_rigid
from sahmr.records import BodyPrediction
from sahmr.scene.ground import MAX_RAY_FRACTION, ground_shift, settle_on_ground
from sahmr.scene.sdf import SolidGround

GROUND = SolidGround(0.0, "z")


def look_at_w2c(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World -> camera (OpenCV: x right, y down, z forward) of a camera at ``eye`` (z up)."""
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ eye
    return T


def lying_body(centre, n: int = 50) -> torch.Tensor:
    """A flat 1.6 x 0.4 m sheet of points 20 cm thick (a lying body) centred at ``centre``."""
    g = torch.Generator().manual_seed(0)
    offsets = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor(
        [1.6, 0.4, 0.2], dtype=torch.float64)
    offsets -= offsets.mean(0)
    return torch.as_tensor(centre, dtype=torch.float64) + offsets


def test_body_under_the_ground_slides_along_the_camera_ray():
    cam = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    verts = lying_body([0.0, 12.0, -1.2])[None]
    shift = ground_shift(verts, cam[None], [GROUND])[0]
    moved = verts[0] + shift
    # lowest vertex on the ground, by hand: slide fraction b = -zmin / (2.0 - (-1.2))
    zmin = float(verts[0, :, 2].min())
    b = -zmin / 3.2
    np.testing.assert_allclose(shift.numpy(), (b * (cam - verts[0].mean(0))).numpy(), atol=1e-12)
    assert float(moved[:, 2].min()) == pytest.approx(0.0, abs=1e-12)
    # the centre stays on the same camera ray: direction from the camera unchanged
    before = verts[0].mean(0) - cam
    after = moved.mean(0) - cam
    np.testing.assert_allclose((after / after.norm()).numpy(), (before / before.norm()).numpy(),
                               atol=1e-12)  # fmt: skip
    assert float(after.norm()) < float(before.norm())


def test_bodies_above_the_ground_or_without_one_stay():
    cam = torch.tensor([[0.0, 0.0, 2.0]] * 3, dtype=torch.float64)
    standing_in_floor = lying_body([0.0, 3.0, 0.05])  # centre above, lowest vertex below
    under = lying_body([0.0, 5.0, -0.5])
    verts = torch.stack([standing_in_floor, under, under])
    shift = ground_shift(verts, cam, [GROUND, None, GROUND])
    assert shift[0].abs().sum() == 0 and shift[1].abs().sum() == 0  # pose error; no ground
    assert shift[2].abs().sum() > 0
    with pytest.raises(ValueError, match="grounds"):
        ground_shift(verts, cam, [GROUND])


def test_low_camera_slides_at_most_the_cap_then_lifts():
    cam = torch.tensor([[0.0, 0.0, 0.1]], dtype=torch.float64)  # the ray barely rises
    verts = lying_body([0.0, 4.0, -0.8])[None]
    shift = ground_shift(verts, cam, [GROUND])[0]
    moved = verts[0] + shift
    assert float(moved[:, 2].min()) == pytest.approx(0.0, abs=1e-12)
    along = MAX_RAY_FRACTION * (cam[0] - verts[0].mean(0))
    np.testing.assert_allclose(shift[:2].numpy(), along[:2].numpy(), atol=1e-12)
    # camera under the ground: straight up only
    shift = ground_shift(verts, torch.tensor([[0.0, 0.0, -2.0]], dtype=torch.float64), [GROUND])
    np.testing.assert_allclose(shift[0, :2].numpy(), [0.0, 0.0], atol=1e-12)
    assert float((verts[0] + shift[0])[:, 2].min()) == pytest.approx(0.0, abs=1e-12)


def test_other_up_axis():
    ground = SolidGround(0.5, "-y")  # y points down: solid where -y < 0.5, i.e. y > -0.5
    cam = torch.tensor([[0.0, -2.0, 0.0]], dtype=torch.float64)
    verts = lying_body([0.0, 0.5, 6.0])[:, [0, 2, 1]][None]  # thin along y, centre y = 0.5
    shift = ground_shift(verts, cam, [ground])[0]
    moved = verts[0] + shift
    assert float(ground.signed_distance(moved).min()) == pytest.approx(0.0, abs=1e-12)


def test_settle_moves_every_part_of_the_prediction_in_the_camera_frame():
    T = torch.as_tensor(look_at_w2c(np.array([0.0, -1.0, 2.0]), np.array([0.0, 6.0, 0.0])),
                        dtype=torch.float64)[None]  # fmt: skip
    verts_world = lying_body([0.5, 9.0, -1.0])[None]
    R, t = T[:, :3, :3], T[:, :3, 3]
    to_cam = lambda p: p @ R[0].T + t[0]  # noqa: E731
    pred = BodyPrediction(
        verts_cam=to_cam(verts_world[0])[None].float(),
        joints_cam=to_cam(verts_world[0, :3])[None].float(),
        root_cam=to_cam(verts_world[0].mean(0, keepdim=True)).float(),
        contact_points_cam=to_cam(verts_world[0, :2]).float(),
        contact_point_region=torch.tensor([1, 2]),
        contact_batch_idx=torch.tensor([0, 0]),
        params={"transl": torch.zeros(1, 3), "betas": torch.zeros(1, 10)},
    )
    out, shift_world = settle_on_ground(pred, T, [GROUND])
    moved_world = out.vertices_world(T).double()
    assert float(moved_world[0, :, 2].min()) == pytest.approx(0.0, abs=1e-4)
    np.testing.assert_allclose(moved_world[0].numpy(), (verts_world[0] + shift_world[0]).numpy(),
                               atol=1e-4)  # fmt: skip
    shift_cam = out.verts_cam - pred.verts_cam
    pairs = [(out.joints_cam, pred.joints_cam),
             (out.root_cam[:, None], pred.root_cam[:, None]),
             (out.params["transl"][:, None], pred.params["transl"][:, None])]  # fmt: skip
    for moved, orig in pairs:
        want = shift_cam[:, :1].expand_as(moved)
        np.testing.assert_allclose((moved - orig).numpy(), want.numpy(), atol=1e-5)
    assert torch.equal(out.params["betas"], pred.params["betas"])
    # the predicted scene contacts are points of the scan: they stay where they were
    assert torch.equal(out.contact_points_cam, pred.contact_points_cam)
    assert torch.equal(out.contact_batch_idx, pred.contact_batch_idx)
    # the world shift is along the ray from the camera centre through the body's centre
    cam = invert_rigid(T)[0, :3, 3]
    ray = verts_world[0].mean(0) - cam
    cross = torch.linalg.cross(shift_world[0], ray)
    assert float(cross.norm()) < 1e-6 * float(ray.norm())  # float32 prediction
    # nothing to do: the same object back
    same, zero = settle_on_ground(out, T, [GROUND])
    assert same is out and float(zero.abs().sum()) == 0.0

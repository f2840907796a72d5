"""sahmr.scene.depenetrate: the shipped body's arm bent out of an analytic wall, the rest of
the body kept, the parameters consistent with the vertices, and bodies left alone when they
should be."""

from __future__ import annotations

import pytest
import torch

from sahmr.body import BodyModel
from sahmr.body.model import license_free_model_path
from sahmr.evaluation.metrics import penetration
from sahmr.records import BodyPrediction
from sahmr.scene.depenetrate import DepenetrateConfig, Depenetrator, depenetrate


def penetration_mm(sdf_values: torch.Tensor) -> torch.Tensor:
    """The evaluator's PenE (mm) of one body's signed distances (V,)."""
    return penetration(sdf_values[None])["pene"][0]

WALL_X = 0.75
"""A wall at x = 0.75 m (world = camera frame here); the rest pose's hands reach about 0.9 m."""


def wall_sdf(points: torch.Tensor) -> torch.Tensor:
    return WALL_X - points[..., 0]


def far_wall_sdf(points: torch.Tensor) -> torch.Tensor:
    return 5.0 - points[..., 0]


@pytest.fixture(scope="module")
def body():
    return BodyModel(license_free_model_path())


def prediction(body: BodyModel, batch: int, offset: float = 0.0) -> BodyPrediction:
    """``batch`` rest-pose bodies with parameters; ``offset`` (m) added to every vertex along
    z stands for a method's per-vertex refinement on top of its parametric body."""
    params = {
        "betas": torch.zeros(batch, 10),
        "global_orient": torch.zeros(batch, 3),
        "body_pose": torch.zeros(batch, 69),
        "transl": torch.zeros(batch, 3),
    }
    out = body(**params)
    verts = out.vertices.clone()
    verts[..., 2] += offset
    joints = out.joints[:, :24].clone()
    return BodyPrediction(verts_cam=verts, joints_cam=joints, root_cam=joints[:, 0].clone(),
                          params=params)  # fmt: skip


def test_the_arm_bends_out_of_the_wall_and_nothing_else_moves(body):
    pred = prediction(body, 2, offset=0.003)
    T = torch.eye(4)[None].repeat(2, 1, 1)
    before = penetration_mm(wall_sdf(pred.verts_cam[0]))
    assert before > 1e4  # the right hand and forearm are through the wall
    out, changed = depenetrate(pred, T, [wall_sdf, None], body)
    assert changed.tolist() == [True, False]
    after = penetration_mm(wall_sdf(out.verts_cam[0]))
    assert after < 0.05 * before
    # the root's rotation, the translation and the shape are kept; only joints bend
    for key in ("betas", "global_orient", "transl"):
        torch.testing.assert_close(out.params[key], pred.params[key])
    assert not torch.equal(out.params["body_pose"][0], pred.params["body_pose"][0])
    torch.testing.assert_close(out.root_cam, pred.root_cam)
    # the vertices are the new parameters' body plus the method's own offset
    posed = body(**{k: v[:1] for k, v in out.params.items()})
    offset = torch.tensor([0.0, 0.0, 0.003]).expand_as(posed.vertices)
    torch.testing.assert_close(out.verts_cam[:1] - posed.vertices, offset, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints_cam[:1], posed.joints[:, :24], atol=1e-5, rtol=0)
    # the other side of the body stays where it was (it touched nothing)
    other_side = pred.verts_cam[0, :, 0] < -0.1
    moved = (out.verts_cam[0] - pred.verts_cam[0]).norm(dim=-1)
    assert float(moved[other_side].max()) < 0.015 and float(moved.max()) > 0.05
    # the frame without a scan is the very same body
    torch.testing.assert_close(out.verts_cam[1], pred.verts_cam[1], atol=0, rtol=0)
    torch.testing.assert_close(out.params["body_pose"][1], pred.params["body_pose"][1])


def test_bodies_are_left_alone_when_they_should_be(body):
    pred = prediction(body, 1)
    T = torch.eye(4)[None]
    same, changed = depenetrate(pred, T, [far_wall_sdf], body)  # nothing inside
    assert same is pred and not changed.any()
    shallow = lambda p: 0.895 - p[..., 0]  # noqa: E731 - the fingertips 3 mm deep
    assert -float(shallow(pred.verts_cam[0]).min()) < DepenetrateConfig().min_depth_m
    same, changed = depenetrate(pred, T, [shallow], body)
    assert same is pred and not changed.any()
    no_params = BodyPrediction(verts_cam=pred.verts_cam, joints_cam=pred.joints_cam,
                               root_cam=pred.root_cam)  # fmt: skip
    same, changed = Depenetrator(body)(no_params, T, [wall_sdf])
    assert same is no_params and not changed.any()
    with pytest.raises(ValueError, match="2 SDFs for 1 bodies"):
        depenetrate(pred, T, [wall_sdf, None], body)


def test_a_camera_away_from_the_world_origin(body):
    """The scan is in the world frame: the same wall, seen from a camera 2 m back and turned
    90 degrees about its y axis, gives the same bent body in the world."""
    pred = prediction(body, 1)
    T = torch.eye(4)[None]
    ref, _ = depenetrate(pred, T, [wall_sdf], body)
    c, s = 0.0, 1.0  # 90 degrees
    R = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    t = torch.tensor([0.3, -0.2, 2.0])
    T2 = torch.eye(4)[None]
    T2[0, :3, :3], T2[0, :3, 3] = R, t
    params = dict(pred.params)
    moved = BodyPrediction(
        verts_cam=pred.verts_cam @ R.T + t, joints_cam=pred.joints_cam @ R.T + t,
        root_cam=pred.root_cam @ R.T + t, params=params,
    )  # fmt: skip
    # parameters in that camera's frame: the same body turned and moved
    from sahmr.geometry.rotations import matrix_to_axis_angle

    pelvis = pred.joints_cam[0, 0]
    params["global_orient"] = matrix_to_axis_angle(R[None])
    params["transl"] = (R @ pelvis + t - pelvis)[None]
    torch.testing.assert_close(body(**params).vertices, moved.verts_cam, atol=1e-5, rtol=0)
    out, changed = depenetrate(moved, T2, [wall_sdf], body)
    assert changed.all()
    world = (out.verts_cam - t) @ R
    torch.testing.assert_close(world, ref.verts_cam, atol=2e-3, rtol=0)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="iterations"):
        DepenetrateConfig(iterations=0)
    with pytest.raises(ValueError, match="anchor"):
        DepenetrateConfig(anchor=-1.0)


def test_a_grid_is_uploaded_once_and_read_as_the_plain_lookup(monkeypatch):
    """`grid_sdf` on a grid (and on the evaluator's `ExactSceneSDF`, which hands its grid's
    API through) copies the grid to the points' device once for any number of lookups (an
    uncached GPU lookup copied the whole room every call: 4 of a lease's minutes), and reads
    exactly what the uncached, differentiable `SDFGrid.sample` reads, gradient included."""
    import numpy as np

    from sahmr.scene.depenetrate import grid_sdf
    from sahmr.scene.sdf import ExactSceneSDF, SDFGrid

    rng = np.random.default_rng(0)
    grid = SDFGrid(np.array([-1.0, -1.0, -1.0], np.float32), 0.1,
                   rng.normal(size=(21, 21, 21)).astype(np.float32))  # fmt: skip
    uploads = []
    real = SDFGrid.to_torch
    monkeypatch.setattr(SDFGrid, "to_torch", lambda self, device="cpu": uploads.append(device)
                        or real(self, device))  # fmt: skip
    sdf = grid_sdf(grid)
    pts = torch.tensor(rng.uniform(-1.2, 1.2, size=(50, 3)), dtype=torch.float64)
    for _ in range(5):
        a = pts.clone().requires_grad_(True)
        got = sdf(a)
        got.sum().backward()
    assert len(uploads) == 1
    b = pts.clone().float().requires_grad_(True)
    want = real(grid)[0]  # the plain lookup with its own upload
    ref = grid.sample(b, want)
    ref.sum().backward()
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    torch.testing.assert_close(a.grad.float(), b.grad, rtol=0, atol=0)
    assert grid_sdf(None) is None
    triangle = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    exact = ExactSceneSDF(grid, triangle, np.array([[0, 1, 2]]), backend="torch")
    torch.testing.assert_close(grid_sdf(exact)(pts), got.detach(), rtol=0, atol=0)
    assert len(uploads) == 1  # the grid's copy, shared

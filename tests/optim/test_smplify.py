"""Batched SMPLify: fast joints, fitting to 2-D keypoints, frame changes of parameters."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from _optim_cases import shipped_body

from sahmr.geometry.cameras import invert_rigid, project, transform_points
from sahmr.geometry.pnp import estimate_translation
from sahmr.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from sahmr.optim.priors import GaussianMixturePrior, sample_pose_library
from sahmr.optim.smplify import (
    BodyJoints,
    FitStage,
    SMPLify,
    SMPLParams,
    default_smplify_stages,
    gmof,
)

_body = shipped_body


@functools.lru_cache(maxsize=1)
def _prior():
    return GaussianMixturePrior.from_asset()


def _gt(B: int, seed: int = 0) -> SMPLParams:
    g = torch.Generator().manual_seed(seed)
    lib = sample_pose_library(B, seed=seed, actions=["stand", "walk", "touch_wall"])
    return SMPLParams(
        global_orient=torch.tensor([[math.pi, 0.0, 0.0]]) + 0.2 * torch.randn(B, 3, generator=g),
        body_pose=torch.tensor(lib.body_pose, dtype=torch.float32),
        betas=torch.tensor(lib.betas, dtype=torch.float32) * 0.5,
        transl=torch.tensor([[0.0, 0.2, 3.0]]) + 0.1 * torch.randn(B, 3, generator=g),
    )


def _K(B: int) -> torch.Tensor:
    return torch.tensor([[560.0, 0.0, 112.0], [0.0, 560.0, 112.0], [0.0, 0.0, 1.0]]).repeat(B, 1, 1)


def _mean_init(kp: torch.Tensor, K: torch.Tensor, joints: str = "joints") -> SMPLParams:
    """SPIN-like start: mean pose facing the camera, translation by PnP to the keypoints."""
    B = kp.shape[0]
    init = SMPLParams(
        global_orient=torch.tensor([[math.pi, 0.0, 0.0]]).repeat(B, 1),
        body_pose=_prior().mean_body_pose[None].repeat(B, 1),
        betas=torch.zeros(B, 10),
        transl=torch.zeros(B, 3),
    )
    with torch.no_grad():
        j = getattr(_body()(**init.as_dict()), joints)
    init.transl = estimate_translation(j, kp, K)
    return init


def test_fast_joints_match_the_body_model():
    p = _gt(3, seed=4)
    fast = BodyJoints(body_model=_body())(p.betas, p.global_orient, p.body_pose, p.transl)
    with torch.no_grad():
        slow = _body()(**p.as_dict()).joints
    torch.testing.assert_close(fast, slow, atol=2e-5, rtol=0)
    # rotation-matrix inputs give the same joints
    R_go = axis_angle_to_matrix(p.global_orient)
    R_bp = axis_angle_to_matrix(p.body_pose.reshape(3, -1, 3))
    again = BodyJoints(body_model=_body())(p.betas, R_go, R_bp, p.transl)
    torch.testing.assert_close(again, slow, atol=2e-5, rtol=0)


def test_gmof_saturates():
    r = torch.tensor([0.0, 1.0, 10.0, 1e4])
    torch.testing.assert_close(gmof(r, 10.0), 100.0 * r**2 / (100.0 + r**2))
    assert gmof(r, 10.0)[-1] < 100.0


def test_smplify_recovers_a_known_pose_from_its_2d_joints():
    B = 2
    gt = _gt(B)
    K = _K(B)
    with torch.no_grad():
        kp = project(K, _body()(**gt.as_dict()).joints)
    stages = default_smplify_stages(80, 0.03)
    fitter = SMPLify(body_model=_body(), pose_prior=_prior(), stages=stages)
    init = _mean_init(kp, K)
    init.transl = fitter.torso_translation(init, kp, K, None)  # depth from the torso
    before = fitter.reprojection_error(init, kp, K)
    res = fitter(init, kp, K)
    after = res.reprojection_error_px
    assert (after < 0.3 * before).all() and (after < 5.0).all(), (before, after)
    torch.testing.assert_close(after, fitter.reprojection_error(res.params, kp, K))
    assert res.iterations == [80, 80] and res.seconds > 0
    assert res.vertices.shape == (B, _body().num_vertices, 3)
    # the known parameters are (nearly) optimal: zero reprojection loss
    assert (fitter.fitting_loss(gt, kp, K) < 1e-3).all()
    assert (fitter.fitting_loss(res.params, kp, K) < fitter.fitting_loss(init, kp, K)).all()
    # the inputs were not modified
    torch.testing.assert_close(init.betas, torch.zeros(B, 10))


def test_smplify_fits_lsp_keypoints_and_weights():
    B = 1
    gt = _gt(B, seed=1)
    K = _K(B)
    with torch.no_grad():
        kp = project(K, _body()(**gt.as_dict()).joints14)
    init = _mean_init(kp, K, "joints14")
    w = torch.ones(B, 14)
    w[:, 0] = 0.0  # an ignored keypoint may be anywhere
    kp_bad = kp.clone()
    kp_bad[:, 0] += 200.0
    stages = [FitStage(15, 0.03, params=("global_orient", "transl"), torso_only=True),
              FitStage(15, 0.03)]  # fmt: skip
    fitter = SMPLify(body_model=_body(), pose_prior=_prior(), stages=stages)
    res = fitter(init, kp_bad, K, w)
    assert res.reprojection_error_px[0] < 0.5 * fitter.reprojection_error(init, kp, K, w)[0]


def test_parameters_to_world_move_the_mesh_rigidly():
    B = 2
    p = _gt(B, seed=5)
    T_w2c = torch.eye(4).repeat(B, 1, 1)
    T_w2c[:, :3, :3] = axis_angle_to_matrix(torch.tensor([[0.3, -0.2, 0.1], [0.0, 1.0, 0.5]]))
    T_w2c[:, :3, 3] = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])
    fitter = SMPLify(body_model=_body(), pose_prior=_prior())
    world = fitter.to_world(p, T_w2c)
    with torch.no_grad():
        v_cam = _body()(**p.as_dict()).vertices
        v_world = _body()(**world.as_dict()).vertices
    ref = transform_points(invert_rigid(T_w2c), v_cam)  # slow reference: move the vertices
    torch.testing.assert_close(v_world, ref, atol=2e-5, rtol=0)


def test_fit_stage_checks_names():
    with pytest.raises(ValueError, match="unknown parameter"):
        FitStage(10, params=("pose",))


def test_search_start_finds_a_body_facing_away():
    B = 2
    gt = _gt(B, seed=6)
    away = torch.tensor([[0.0, math.pi, 0.0]])  # half turn about the body's up axis
    R = axis_angle_to_matrix(torch.tensor([[math.pi, 0.0, 0.0]])) @ axis_angle_to_matrix(away)
    gt.global_orient = matrix_to_axis_angle(R).repeat(B, 1)
    K = _K(B)
    with torch.no_grad():
        kp = project(K, _body()(**gt.as_dict()).joints)
    init = _mean_init(kp, K)  # faces the camera: wrong way round
    stages = [FitStage(30, 0.03, params=("global_orient", "transl"), torso_only=True)]
    fitter = SMPLify(body_model=_body(), pose_prior=_prior(), stages=stages)
    best = fitter.search_start(init, kp, K)  # two starts: facing the camera and away
    forward = axis_angle_to_matrix(best.global_orient)[:, :, 2]  # body +z in the camera
    assert (forward[:, 2] > 0.5).all()  # faces away from the camera, like the ground truth


def test_mean_pose_start_places_the_mean_body_on_its_keypoints():
    """Keypoints of the mean body (upright, facing the camera, zero shape) at a known
    translation: the start is that body, its translation recovered by the torso PnP."""
    B = 2
    gt = SMPLParams(
        global_orient=torch.tensor([[math.pi, 0.0, 0.0]]).repeat(B, 1),
        body_pose=_prior().mean_body_pose[None].repeat(B, 1),
        betas=torch.zeros(B, 10),
        transl=torch.tensor([[0.1, 0.2, 3.0], [-0.3, 0.1, 4.5]]),
    )
    K = _K(B)
    with torch.no_grad():
        kp = project(K, _body()(**gt.as_dict()).joints)
    fitter = SMPLify(body_model=_body(), pose_prior=_prior())
    start = fitter.mean_pose_start(kp, K)
    for name in ("global_orient", "body_pose", "betas"):
        torch.testing.assert_close(getattr(start, name), getattr(gt, name))
    torch.testing.assert_close(start.transl, gt.transl, atol=1e-3, rtol=0)

"""VIBE and the discriminators: shapes, shared clip shape, motion prior, acceleration error."""

from __future__ import annotations

import pytest
import torch
from _baseline_cases import TinyBackbone, body_model, make_frames

from sahmr.evaluation.metrics import acceleration_error
from sahmr.losses.hmr import VIBELoss
from sahmr.models.discriminators import (
    FactorisedPoseDiscriminator,
    MotionDiscriminator,
    MotionLibrary,
    PoseLibrary,
)
from sahmr.models.hmr import IEFRegressor, MeanParams, Rot6D
from sahmr.models.vibe import (
    VIBE,
    ClipInputs,
    ClipTargets,
    TemporalEncoder,
    clip_acceleration_error,
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small tensor ops run faster (and far steadier on a shared 2-core machine) on 1 thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_discriminators_give_shapes():
    poses = PoseLibrary.from_generator(32, seed=1)
    assert len(poses) == 32
    rot, betas = poses.sample(5)
    assert rot.shape == (5, 23, 3, 3) and betas.shape == (5, 10)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), torch.eye(3).expand(5, 23, 3, 3),
                               atol=1e-5, rtol=0)  # fmt: skip
    d = FactorisedPoseDiscriminator(joint_channels=8, pose_hidden=16)
    assert d(rot, betas).shape == (5, d.num_outputs) == (5, 25)
    motions = MotionLibrary.from_generator(12, 20, seed=2, pool_size=4)
    clips = motions.sample(3, 8)
    assert clips.shape == (3, 8, 23, 3, 3)
    md = MotionDiscriminator(hidden_dim=16, num_layers=1, attention_dim=8, attention_layers=2)
    assert md(clips).shape == (3, 1)
    with pytest.raises(ValueError):
        motions.sample(1, 21)
    # library motions are smooth: consecutive frames differ by small rotations
    rel = clips[:, 1:] @ clips[:, :-1].transpose(-1, -2)
    angle = torch.arccos(((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))
    assert angle.max() < 0.6


def test_clip_acceleration_error_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    pred, gt = torch.randn(2, 5, 4, 3, generator=g), torch.randn(2, 5, 4, 3, generator=g)
    ref = torch.zeros(2, 3)
    for b in range(2):
        for t in range(1, 4):
            a_p = pred[b, t + 1] - 2 * pred[b, t] + pred[b, t - 1]
            a_g = gt[b, t + 1] - 2 * gt[b, t] + gt[b, t - 1]
            ref[b, t - 1] = (a_p - a_g).norm(dim=-1).mean() * 1000.0
    torch.testing.assert_close(clip_acceleration_error(pred, gt), ref)
    line = torch.arange(5.0)[None, :, None, None] * torch.ones(1, 5, 4, 3)  # constant speed
    assert clip_acceleration_error(line, torch.zeros_like(line)).abs().max() < 1e-4
    ref0 = acceleration_error(pred[0], gt[0])
    torch.testing.assert_close(clip_acceleration_error(pred, gt)[0], ref0)


def tiny_vibe(adversarial: bool = True) -> VIBE:
    torch.manual_seed(0)
    return VIBE(
        backbone=TinyBackbone(16),
        body_model=body_model(),
        encoder=TemporalEncoder(feature_dim=16, hidden_dim=16, num_layers=1),
        regressor=IEFRegressor(feature_dim=16, rotation=Rot6D(), hidden_dim=32, dropout=0.0),
        mean_params=MeanParams.from_pose_prior(),
        motion_discriminator=(
            MotionDiscriminator(hidden_dim=16, num_layers=1, attention_dim=8, attention_layers=2)
            if adversarial
            else None
        ),
        motion_library=MotionLibrary.from_generator(16, 12, pool_size=4) if adversarial else None,
    )


def _clips(B: int = 2, T: int = 4, seed: int = 0) -> tuple[ClipInputs, ClipTargets]:
    frames, targets = make_frames(B * T, seed=seed)
    return ClipInputs(frames, T), ClipTargets(targets, T)


def test_vibe_forward_shares_shape_and_predicts_every_frame():
    inputs, targets = _clips()
    model = tiny_vibe()
    model.train()
    out = model(inputs, targets)
    assert out.vertices.shape == (8, body_model().num_vertices, 3) and out.clip_length == 4
    betas = out.per_clip(out.betas)
    torch.testing.assert_close(betas, betas[:, :1].expand_as(betas))  # one shape per clip
    assert out.motion_scores.shape == (2, 1) and out.transl_cam.shape == (8, 3)
    pred = model.predict(inputs)
    assert pred.verts_cam.shape[0] == 8 and model.training
    single = model.predict(inputs.frames)  # plain frames: clips of one frame
    assert single.verts_cam.shape[0] == 8
    metrics = model.metrics(out, targets)
    assert set(metrics) == {"accel_error", "accel_error_cam"}
    total, count = metrics["accel_error"]
    assert count == 2 * 2 and total >= 0
    pred_rel = out.joints - out.joints[:, :1]
    gt_rel = targets.frames.joints_cam - targets.frames.root_cam[:, None]
    ref = clip_acceleration_error(out.per_clip(pred_rel), out.per_clip(gt_rel)).sum()
    torch.testing.assert_close(total, ref.detach())


def test_vibe_training_steps_and_motion_discriminator():
    inputs, targets = _clips(seed=1)
    model = tiny_vibe()
    model.train()
    loss = VIBELoss(motion_adversarial=0.1)
    opt = torch.optim.Adam(model.generator_parameters(), lr=2e-3)
    d_opt = torch.optim.Adam(model.discriminator_parameters(), lr=1e-3)
    values = []
    for _ in range(8):
        out = model(inputs, targets)
        res = loss(out, targets)
        assert "motion_adversarial" in res.terms
        opt.zero_grad()
        res.total.backward()
        assert all(p.grad is None for p in model.discriminator_parameters())
        opt.step()
        d = model.discriminator_step(out)
        d_opt.zero_grad()
        d.total.backward()
        d_opt.step()
        d_opt.zero_grad(set_to_none=True)
        values.append(float(res.total.detach()))
    assert values[-1] < 0.7 * values[0], values
    assert set(d.terms) == {"motion_disc_real", "motion_disc_fake"}


def test_frozen_backbone_gets_no_gradient():
    inputs, targets = _clips(B=1, T=3)
    model = tiny_vibe(adversarial=False)
    model.freeze_backbone = True
    model.backbone.requires_grad_(False)
    model.train()
    assert not model.backbone.training
    res = VIBELoss()(model(inputs, targets), targets)
    res.total.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert not model.has_discriminator and "motion_adversarial" not in res.terms

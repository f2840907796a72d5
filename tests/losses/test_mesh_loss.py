from dataclasses import dataclass

import pytest
import torch

from sahmr.losses.mesh import MetroLoss, SAHMRLoss
from sahmr.models.metro import MetroOutput, normalized_to_crop, weak_perspective
from sahmr.models.sahmr import SAHMROutput
from sahmr.records import FrameTargets, LossOutput

S = 224
LEVELS = (40, 10, 3)  # tiny fake mesh hierarchy, fine -> coarse


def _targets(B=2, contacts=(3, 1), seed=0) -> FrameTargets:
    g = torch.Generator().manual_seed(seed)
    verts = [torch.randn(B, n, 3, generator=g) + torch.tensor([0, 0, 3.0]) for n in LEVELS]
    joints = torch.randn(B, 24, 3, generator=g) + torch.tensor([0, 0, 3.0])
    j14 = torch.randn(B, 14, 3, generator=g) + torch.tensor([0, 0, 3.0])
    bidx = torch.cat([torch.full((n,), b) for b, n in enumerate(contacts)])
    P = bidx.numel()
    return FrameTargets(
        verts_cam=verts[0], verts_cam_levels=verts, joints_cam=joints, joints14_cam=j14,
        root_cam=joints[:, 0], joints2d_crop=torch.rand(B, 24, 2, generator=g) * S,
        joints14_2d_crop=torch.rand(B, 14, 2, generator=g) * S, vertex_contact=None,
        contact_points_cam=torch.randn(P, 3, generator=g),
        contact_point_region=torch.ones(P).long(),
        contact_batch_idx=bidx, betas=None, global_orient_cam=None, body_pose=None,
        T_w2c=torch.eye(4).repeat(B, 1, 1),
    )  # fmt: skip


def _perfect_metro(t: FrameTargets) -> MetroOutput:
    root = t.root_cam[:, None]
    rel = t.joints14_cam - root
    cam = torch.tensor([[0.8, 0.1, -0.1], [1.2, 0.0, 0.2]])
    t.joints14_2d_crop = normalized_to_crop(weak_perspective(rel, cam), S)
    return MetroOutput(
        joints14_rel=rel.clone(), verts_rel_levels=[v - root for v in t.verts_cam_levels[::-1]],
        joints14_from_verts_rel=rel.clone(), cam=cam, crop_size=S,
    )  # fmt: skip


def _perfect_sahmr(t: FrameTargets, noise: float = 0.0) -> SAHMROutput:
    root = t.root_cam
    used = root + noise
    idx = torch.arange(t.contact_batch_idx.numel())
    rel_levels = [v - used[:, None] for v in t.verts_cam_levels[::-1]]
    return SAHMROutput(
        joints14_rel=t.joints14_cam - root[:, None],
        verts_rel_levels=rel_levels,
        joints14_from_verts_rel=t.joints14_cam - root[:, None],
        scene_recon=t.contact_points_cam - root[t.contact_batch_idx],
        root_cam=used, verts_cam=rel_levels[-1] + used[:, None],
        contact_points_cam=t.contact_points_cam, contact_point_region=t.contact_point_region,
        contact_batch_idx=t.contact_batch_idx, contact_gt_index=idx,
    )  # fmt: skip


def _check_sum(out: LossOutput):
    torch.testing.assert_close(out.total, sum(out.terms.values()))


def test_metro_loss_zero_for_perfect_and_hand_computed_offsets():
    t = _targets()
    out = _perfect_metro(t)
    loss = MetroLoss()(out, t)
    assert loss.total.abs() < 1e-6
    _check_sum(loss)
    out.verts_rel_levels = [v + 0.1 for v in out.verts_rel_levels]
    out.joints14_rel = out.joints14_rel + torch.tensor([0.3, 0.0, 0.0])
    loss = MetroLoss(vertices=3.0, joints3d=2.0, joints3d_reg=1.0, joints2d=10.0)(out, t)
    for k in range(3):
        torch.testing.assert_close(loss.terms[f"verts_l{k}"], torch.tensor(0.1))  # 3 / 3 * 0.1
    torch.testing.assert_close(loss.terms["joints3d"], torch.tensor(2.0 * 0.3 / 3))
    assert loss.terms["joints3d_reg"].abs() < 1e-6
    # 2-D: joints shifted 0.3 m in x -> s * 0.3 on u of the token joints only (half the set)
    s = out.cam[:, 0]
    ref = 10.0 * (s * 0.3).mean() / 4  # mean over (2 sets x 2 coords)
    torch.testing.assert_close(loss.terms["joints2d"], ref)
    _check_sum(loss)


def test_sahmr_loss_terms():
    t = _targets()
    out = _perfect_sahmr(t)
    loss = SAHMRLoss()(out, t)
    assert loss.total.abs() < 1e-6 and set(loss.terms) >= {"verts_abs", "scene_recon"}
    # a root error moves the relative vertices but not the absolute ones
    out = _perfect_sahmr(t, noise=torch.tensor([0.0, 0.0, 0.2]))
    loss = SAHMRLoss(vertices=1.0, verts_abs=5.0)(out, t)
    assert loss.terms["verts_abs"].abs() < 1e-6
    torch.testing.assert_close(sum(loss.terms[f"verts_l{k}"] for k in range(3)),
                               torch.tensor(0.2 / 3))  # fmt: skip
    # scene reconstruction: each used point against its GT point minus the GT root (loop)
    out = _perfect_sahmr(t)
    out.contact_gt_index = torch.tensor([2, 3])
    out.scene_recon = torch.randn(2, 3)
    ref = torch.stack([
        (out.scene_recon[i] - (t.contact_points_cam[j] - t.root_cam[t.contact_batch_idx[j]]))
        .abs().mean() for i, j in enumerate(out.contact_gt_index.tolist())
    ]).mean()  # fmt: skip
    loss = SAHMRLoss(scene_recon=2.0)(out, t)
    torch.testing.assert_close(loss.terms["scene_recon"], 2.0 * ref)
    _check_sum(loss)


def test_sahmr_loss_without_contacts_or_gt_index_and_with_rcnet_loss():
    t = _targets(contacts=(0, 0))
    out = _perfect_sahmr(t)
    out.scene_recon = out.scene_recon.requires_grad_()
    loss = SAHMRLoss()(out, t)
    assert loss.terms["scene_recon"] == 0 and torch.isfinite(loss.total)
    out.contact_gt_index = None

    @dataclass
    class RC:
        err: torch.Tensor

    class FakeRCLoss(torch.nn.Module):
        def forward(self, rc, targets):
            return LossOutput(total=rc.err * 3, terms={"root": rc.err * 1, "contact": rc.err * 2})

    out.rc = RC(torch.tensor(0.5))
    loss = SAHMRLoss(rcnet_loss=FakeRCLoss())(out, t)
    assert loss.terms["rc/root"] == 0.5 and loss.terms["rc/contact"] == 1.0
    torch.testing.assert_close(loss.total, torch.tensor(1.5))


def test_level_count_mismatch_raises():
    t = _targets()
    out = _perfect_metro(t)
    out.verts_rel_levels = out.verts_rel_levels[1:]
    with pytest.raises(ValueError, match="levels"):
        MetroLoss()(out, t)

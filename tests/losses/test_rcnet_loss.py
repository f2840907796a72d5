"""Tests for sahmr.losses.rcnet: each term against a naive reference, on hand-made outputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sahmr.geometry.cameras import make_K, project
from sahmr.losses.rcnet import (
    RCNetLoss,
    focal_cross_entropy,
    gaussian_heatmap_targets,
    heatmap_kl,
    part_centres,
    voxel_contact_labels,
)
from sahmr.models.rcnet import NUM_PARTS, RCNetOutput, RCNetVoxels, heatmap_pixel_centres
from sahmr.records import FrameTargets

S = 64
H = 16
REGION = torch.tensor([0, 1, 1, 2, 2, 3, 0, 7])  # 8 fabricated vertices


def _targets(root: torch.Tensor, contacts, contact_region, contact_batch) -> FrameTargets:
    B = root.shape[0]
    g = torch.Generator().manual_seed(1)
    verts = root[:, None, :] + 0.3 * torch.randn(B, len(REGION), 3, generator=g)
    z = torch.zeros
    return FrameTargets(
        verts_cam=verts,
        verts_cam_levels=[verts],
        joints_cam=root[:, None, :].repeat(1, 24, 1),
        joints14_cam=z(B, 14, 3),
        root_cam=root,
        joints2d_crop=z(B, 24, 2),
        joints14_2d_crop=z(B, 14, 2),
        vertex_contact=None,
        contact_points_cam=contacts,
        contact_point_region=contact_region,
        contact_batch_idx=contact_batch,
        betas=None,
        global_orient_cam=None,
        body_pose=None,
        T_w2c=torch.eye(4).expand(B, 4, 4),
    )


def _voxels(centres, batch_idx, offset, confidence, logits) -> RCNetVoxels:
    K = centres.shape[0]
    return RCNetVoxels(
        centres_cam=centres,
        batch_idx=batch_idx,
        sample_idx=batch_idx * 3,
        coords=torch.zeros(K, 4, dtype=torch.int32),
        confidence=confidence,
        offset=offset,
        contact_logits=logits,
        sample_origin_cam=torch.zeros(6, 3),
        voxel_size=0.05,
        spatial_shape=[52, 52, 52],
        num_anchors=3,
    )


def _output(targets: FrameTargets, voxels: RCNetVoxels, K_crop, *, depth, root_cam, voted):
    B = targets.batch_size
    root_px = project(K_crop, targets.root_cam[:, None])
    log_t = gaussian_heatmap_targets(root_px, H, H, S, 8.0).clamp_min(1e-30).log()
    return RCNetOutput(
        root_heatmap=log_t,
        part_heatmaps=torch.zeros(B, NUM_PARTS, H, H),
        root_depth=depth,
        root_pixel_crop=root_px[:, 0],
        root_coarse_cam=targets.root_cam.clone(),
        roi_centre_cam=targets.root_cam.clone(),
        anchors_cam=targets.root_cam[:, None].repeat(1, 3, 1),
        voxels=voxels,
        root_cam=root_cam,
        root_voted=voted,
        contact_points_cam=torch.zeros(0, 3),
        contact_point_region=torch.zeros(0, dtype=torch.int64),
        contact_batch_idx=torch.zeros(0, dtype=torch.int64),
        contact_point_score=torch.zeros(0),
        contact_point_index=torch.zeros(0, dtype=torch.int64),
        K_crop=K_crop,
        crop_size=S,
    )


def test_gaussian_targets():
    centre = torch.tensor([[[20.3, 41.0], [-3.0, 70.0]]])
    t = gaussian_heatmap_targets(centre, H, H, S, 5.0)
    assert t.shape == (1, 2, H, H)
    torch.testing.assert_close(t.sum((-1, -2)), torch.ones(1, 2))
    u, v = heatmap_pixel_centres(H, H, S)
    ref = torch.exp(-((u[None, :] - 20.3) ** 2 + (v[:, None] - 41.0) ** 2) / 50.0)
    torch.testing.assert_close(t[0, 0], ref / ref.sum())
    i = int(t[0, 0].argmax())
    assert (i // H, i % H) == (int((v - 41.0).abs().argmin()), int((u - 20.3).abs().argmin()))


def test_heatmap_kl():
    g = torch.Generator().manual_seed(0)
    target = torch.softmax(torch.randn(2, 3, 16, generator=g), -1).view(2, 3, 4, 4)
    valid = torch.tensor([[True, True, False], [True, False, True]])
    zero = heatmap_kl(target.log(), target, valid)
    assert abs(float(zero)) < 1e-6
    logits = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    kl = heatmap_kl(logits, target, valid)
    ref = []
    for b in range(2):
        for j in range(3):
            if valid[b, j]:
                t = target[b, j].ravel()
                p = torch.softmax(logits[b, j].ravel(), 0)
                ref.append((t * (t.log() - p.log())).sum())
    torch.testing.assert_close(kl, torch.stack(ref).mean())
    none = heatmap_kl(logits, target, torch.zeros(2, 3, dtype=torch.bool))
    none.backward()
    assert float(none.detach()) == 0.0 and logits.grad is not None


def test_focal_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 8, generator=g)
    labels = torch.randint(0, 8, (20,), generator=g)
    w = torch.rand(8, generator=g) + 0.1
    torch.testing.assert_close(
        focal_cross_entropy(logits, labels, w, 0.0), F.cross_entropy(logits, labels, weight=w)
    )
    num = den = 0.0
    for k in range(20):
        p = torch.softmax(logits[k], 0)[labels[k]]
        num += w[labels[k]] * (1 - p) ** 2 * -torch.log(p)
        den += w[labels[k]]
    torch.testing.assert_close(focal_cross_entropy(logits, labels, w, 2.0), num / den)
    assert float(focal_cross_entropy(logits[:0], labels[:0], w, 2.0)) == 0.0


def test_part_centres_matches_loop():
    g = torch.Generator().manual_seed(0)
    verts = torch.randn(2, len(REGION), 3, generator=g)
    c = part_centres(verts, REGION)
    assert c.shape == (2, NUM_PARTS, 3)
    for r in range(1, NUM_PARTS + 1):
        idx = [i for i in range(len(REGION)) if REGION[i] == r]
        ref = verts[:, idx].mean(1) if idx else torch.zeros(2, 3)
        torch.testing.assert_close(c[:, r - 1], ref)


def test_voxel_contact_labels_matches_loop():
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(60, 3, generator=g)
    vb = torch.randint(0, 3, (60,), generator=g)
    pts = torch.rand(25, 3, generator=g)
    pb = torch.randint(0, 2, (25,), generator=g)  # frame 2 has no contact points
    pr = torch.randint(1, 8, (25,), generator=g)
    z = torch.zeros(60)
    vox = _voxels(centres, vb, torch.zeros(60, 3), z, torch.zeros(60, 8))
    tg = _targets(torch.tensor([[0, 0, 3.0]] * 3), pts, pr, pb)
    labels = voxel_contact_labels(vox, tg, 0.15)
    for k in range(60):
        cand = [i for i in range(25) if pb[i] == vb[k]]
        d = [float((centres[k] - pts[i]).norm()) for i in cand]
        ref = int(pr[cand[d.index(min(d))]]) if cand and min(d) <= 0.15 else 0
        assert int(labels[k]) == ref, k
    assert (labels[vb == 2] == 0).all() and (labels > 0).any()


@pytest.fixture()
def handmade():
    root = torch.tensor([[0.1, 0.0, 3.0], [-0.2, 0.1, 4.0]])
    K_crop = make_K(100.0, 100.0, 31.5, 31.5).expand(2, 3, 3).clone()
    contacts = torch.tensor([[0.1, 0.9, 3.0], [-0.2, 1.0, 4.0]])
    targets = _targets(root, contacts, torch.tensor([1, 2]), torch.tensor([0, 1]))
    centres = torch.tensor(
        [[0.1, 0.9, 3.0], [0.5, 0.8, 3.2], [-0.2, 1.0, 4.0], [0.3, 1.0, 4.4], [0.1, 0.2, 3.0]]
    )
    vb = torch.tensor([0, 0, 1, 1, 0])
    labels = torch.tensor([1, 0, 2, 0, 0])
    logits = torch.full((5, 8), -20.0)
    logits[torch.arange(5), labels] = 20.0
    offset = root[vb] - centres  # perfect votes
    vox = _voxels(centres, vb, offset, torch.zeros(5), logits)
    d_gt = root[:, 2] * S / K_crop[:, 0, 0]
    out = _output(targets, vox, K_crop, depth=d_gt.clone(), root_cam=root.clone(),
                  voted=torch.tensor([True, True]))
    return out, targets


def test_perfect_prediction_has_zero_terms(handmade):
    out, targets = handmade
    loss = RCNetLoss(vertex_region=REGION, part_heatmap_weight=0.0)(out, targets)
    assert set(loss.terms) == {"heatmap", "part_heatmap", "depth", "offset", "root", "contact"}
    for name in ("heatmap", "depth", "offset", "root", "contact"):
        assert abs(float(loss.terms[name])) < 1e-5, (name, float(loss.terms[name]))
    torch.testing.assert_close(loss.total, torch.stack(list(loss.terms.values())).sum())


def test_terms_hand_computed_and_weighted(handmade):
    out, targets = handmade
    out.root_depth = out.root_depth + torch.tensor([0.3, -0.1])  # L1 mean 0.2
    out.voxels.offset = out.voxels.offset + torch.tensor([0.1, -0.2, 0.0])  # L1 sum 0.3
    out.root_cam = out.root_cam + torch.tensor([[0.3, 0.4, 0.0], [0.0, 0.0, 0.0]])
    out.root_voted = torch.tensor([True, False])  # frame 1 did not vote: not scored
    base = RCNetLoss(vertex_region=REGION, offset_radius=1.0)(out, targets)
    assert float(base.terms["depth"]) == pytest.approx(0.2, abs=1e-5)
    # Voxels within 1 m of their frame's root: rows 0, 1, 2, 4 (row 3 is 1.1 m away).
    assert float(base.terms["offset"]) == pytest.approx(0.3, abs=1e-5)
    assert float(base.terms["root"]) == pytest.approx(0.5, abs=1e-5)
    doubled = RCNetLoss(vertex_region=REGION, depth_weight=2.0, root_weight=3.0)(out, targets)
    assert float(doubled.terms["depth"]) == pytest.approx(0.4, abs=1e-5)
    assert float(doubled.terms["root"]) == pytest.approx(1.5, abs=1e-5)
    # Part heatmaps: uniform logits against the projected region centres.
    centres = part_centres(targets.verts_cam, REGION)
    px = project(out.K_crop, centres)
    inside = ((px >= -0.5) & (px <= S - 0.5)).all(-1) & (centres[..., 2] > 0)
    inside &= torch.tensor([r in REGION.tolist() for r in range(1, NUM_PARTS + 1)])
    tgt = gaussian_heatmap_targets(px, H, H, S, 8.0)
    ref = [
        (tgt[b, r] * (tgt[b, r].clamp_min(1e-30).log() + math.log(H * H))).sum()
        for b in range(2)
        for r in range(NUM_PARTS)
        if inside[b, r]
    ]
    torch.testing.assert_close(
        base.terms["part_heatmap"], 0.1 * torch.stack(ref).mean(), rtol=1e-4, atol=1e-5
    )


def test_offset_only_near_root(handmade):
    out, targets = handmade
    out.voxels.offset = out.voxels.offset + torch.tensor([0.1, 0.0, 0.0])
    out.voxels.offset[3] += 5.0  # voxel 3 is 1.1 m from its root: excluded
    loss = RCNetLoss(vertex_region=REGION, offset_radius=0.95)(out, targets)
    assert float(loss.terms["offset"]) == pytest.approx(0.1, abs=1e-5)


def test_no_voxels_gives_connected_zeros(handmade):
    out, targets = handmade
    w = torch.zeros(4, 8, requires_grad=True)
    feats = torch.zeros(0, 4)
    out.voxels = _voxels(
        torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), feats @ w[:, :3],
        (feats @ w[:, :1]).squeeze(-1), feats @ w,
    )
    out.root_voted = torch.tensor([False, False])
    loss = RCNetLoss(vertex_region=REGION)(out, targets)
    for name in ("offset", "root", "contact"):
        assert float(loss.terms[name].detach()) == 0.0
    loss.terms["contact"].backward()
    assert w.grad is not None and float(w.grad.abs().sum()) == 0.0

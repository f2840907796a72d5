"""Tests for sahmr.models.rcnet (and its metrics) on a tiny fabricated scene.

The scene: a 3 m x 3 m floor (z = 0, world z up) and a 0.4 m box, sampled every 4 cm; the
license-free body stands on the floor in its rest pose, seen by a camera 3.5 m away; crops are
64 px so the backbone runs quickly on CPU.
"""

from __future__ import annotations

import dataclasses
import math
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from sahmr.body import BodyModel
from sahmr.geometry.cameras import make_K, project, transform_points, unproject
from sahmr.models.backbones import build_backbone
from sahmr.models.rcnet import (
    NUM_PARTS,
    RCNet,
    UpsampleNeck,
    frame_evidence,
    heatmap_pixel_centres,
    ray_anchors,
    sample_feature_map,
    soft_argmax_2d,
    top_k_per_frame,
    vote_root,
)
from sahmr.models.sparse_unet import SparseUNet
from sahmr.records import FrameInputs, FrameTargets
from sahmr.scene.contact import scene_contact_labels
from sahmr.scene.frontend import crop_intrinsics
from sahmr.scene.frustum import frustum_crop, roi_select

CROP = 64
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convs run fastest single-threaded (no OpenMP contention on shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _look_at(eye, target, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    eye, target, up = (torch.tensor(v, dtype=torch.float32) for v in (eye, target, up))
    z = F.normalize(target - eye, dim=0)
    x = F.normalize(torch.linalg.cross(z, up), dim=0)
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])
    T = torch.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ eye
    return T


def _scene_points_world(spacing: float = 0.04) -> torch.Tensor:
    g = torch.arange(-1.5, 1.5 + 1e-6, spacing)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    floor = torch.stack([xx.ravel(), yy.ravel(), torch.zeros(xx.numel())], 1)
    s = torch.arange(0.0, 0.4 + 1e-6, spacing)
    a, b = torch.meshgrid(s, s, indexing="ij")
    a, b = a.ravel(), b.ravel()
    top = torch.stack([a, b, torch.full_like(a, 0.4)], 1)
    side = torch.stack([a, torch.zeros_like(a), b], 1)
    box = torch.cat([top, side]) + torch.tensor([0.3, -1.2, 0.0])
    return torch.cat([floor, box])


@pytest.fixture(scope="module")
def scene():
    """(inputs, targets, vertex_region) for 2 frames of a body standing on the floor."""
    body = BodyModel()
    topo = body.topology
    shifts = (0.0, 0.3)
    B = len(shifts)
    orient = torch.tensor([[math.pi / 2, 0.0, 0.0]]).repeat(B, 1)  # model y-up -> world z-up
    with torch.no_grad():
        out = body(global_orient=orient)
    lift = -out.vertices[..., 2].amin(1)
    transl = torch.stack([torch.tensor(shifts), torch.zeros(B), lift], 1)
    verts_w = out.vertices + transl[:, None]
    joints_w = out.joints[:, :24] + transl[:, None]
    T = torch.stack([_look_at((0.2 * i, -3.5, 1.0), (0.0, 0.0, 0.9)) for i in range(B)])
    K = make_K(500.0, 500.0, 320.0, 240.0).expand(B, 3, 3).clone()
    verts_cam = transform_points(T, verts_w)
    joints_cam = transform_points(T, joints_w)
    uv = project(K, verts_cam)
    bbox = torch.cat([uv.amin(1), uv.amax(1)], 1)
    K_crop = crop_intrinsics(K, bbox, CROP)
    fr = frustum_crop(_scene_points_world(), K, T, bbox)
    region = torch.as_tensor(topo.contact_labels[0])
    labels = scene_contact_labels(fr.points_cam, fr.batch_idx, verts_cam, region)
    hit = labels > 0
    g = torch.Generator().manual_seed(0)
    inputs = FrameInputs(
        image=torch.randn(B, 3, CROP, CROP, generator=g),
        K_crop=K_crop,
        K=K,
        bbox=bbox,
        T_w2c=T,
        scene_points_cam=fr.points_cam,
        scene_batch_idx=fr.batch_idx,
    )
    levels = [verts_cam] + [topo.downsample(verts_cam, lv) for lv in range(1, topo.num_levels)]
    reg = torch.as_tensor(topo.j_regressor_j14, dtype=torch.float32)
    j14 = torch.einsum("jv,bvc->bjc", reg, verts_cam)
    targets = FrameTargets(
        verts_cam=verts_cam,
        verts_cam_levels=levels,
        joints_cam=joints_cam,
        joints14_cam=j14,
        root_cam=joints_cam[:, 0],
        joints2d_crop=project(K_crop, joints_cam),
        joints14_2d_crop=project(K_crop, j14),
        vertex_contact=None,
        contact_points_cam=fr.points_cam[hit],
        contact_point_region=labels[hit],
        contact_batch_idx=fr.batch_idx[hit],
        betas=None,
        global_orient_cam=None,
        body_pose=None,
        T_w2c=T,
    )
    assert set(labels[hit].tolist()) == {1, 2}  # both feet touch the floor
    return inputs, targets, region


def _model(**kwargs) -> RCNet:
    torch.manual_seed(0)
    return RCNet(
        backbone=build_backbone("resnet18", out_stride=8),
        neck=UpsampleNeck(in_channels=128, out_channels=16, num_upsamples=1),
        unet=SparseUNet(in_channels=19, channels=(8, 16, 16)),
        **kwargs,
    )


def _replace(inputs: FrameInputs, **fields) -> FrameInputs:
    d = dict(inputs.__dict__)
    d.update(fields)
    return FrameInputs(**d)


# ----------------------------------------------------------------------------- helpers


def test_pixel_centres_and_soft_argmax():
    u, v = heatmap_pixel_centres(4, 4, 16)
    torch.testing.assert_close(u, torch.tensor([1.5, 5.5, 9.5, 13.5]))
    torch.testing.assert_close(v, u)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, generator=g)
    out = soft_argmax_2d(logits, 20)
    uc, vc = heatmap_pixel_centres(5, 5, 20)
    for b in range(2):
        for j in range(3):
            p = torch.softmax(logits[b, j].ravel(), 0).view(5, 5)
            eu = (p * uc[None, :]).sum()  # E[u] over the cells
            ev = (p * vc[:, None]).sum()
            torch.testing.assert_close(out[b, j], torch.stack([eu, ev]))
    peak = torch.full((1, 1, 5, 5), -1e4)
    peak[0, 0, 1, 3] = 0.0
    torch.testing.assert_close(soft_argmax_2d(peak, 20)[0, 0], torch.stack([uc[3], vc[1]]))


def test_sample_feature_map_matches_grid_sample():
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    S = 24
    uv = torch.rand(50, 2, generator=g, dtype=torch.float64) * 34 - 5  # some outside the crop
    bidx = torch.randint(0, 2, (50,), generator=g)
    out = sample_feature_map(fmap, uv, bidx, S)
    for m in range(50):
        grid = ((uv[m] + 0.5) / S * 2 - 1).view(1, 1, 1, 2)
        ref = F.grid_sample(fmap[bidx[m] : bidx[m] + 1], grid, align_corners=False)
        torch.testing.assert_close(out[m], ref.view(3))


def test_upsample_neck_shapes():
    x = torch.randn(2, 12, 7, 7)
    for n, side in ((0, 7), (1, 14), (2, 28)):
        neck = UpsampleNeck(in_channels=12, out_channels=5, num_upsamples=n)
        assert neck(x).shape == (2, 5, side, side) and neck.out_channels == 5


def test_ray_anchors():
    c = torch.tensor([[0.5, -0.2, 3.0], [1.0, 1.0, 1.0]])
    a = ray_anchors(c, (0.0, -0.5, 0.5))
    assert a.shape == (2, 3, 3)
    torch.testing.assert_close(a[:, 0], c)
    torch.testing.assert_close((a[:, 2] - a[:, 0]).norm(dim=-1), torch.full((2,), 0.5))
    torch.testing.assert_close(a[:, 1] + a[:, 2], 2 * c)
    cross = torch.linalg.cross(a[:, 2], c)  # on the ray through the camera centre
    torch.testing.assert_close(cross, torch.zeros_like(cross), atol=1e-6, rtol=0)


def test_vote_root_matches_loop():
    g = torch.Generator().manual_seed(0)
    K, B = 40, 4
    conf = torch.randn(K, generator=g) * 3
    votes = torch.randn(K, 3, generator=g)
    bidx = torch.randint(0, 3, (K,), generator=g)  # frame 3 has no voxels
    fallback = torch.randn(B, 3, generator=g)
    root, voted = vote_root(conf, votes, bidx, fallback)
    for b in range(B):
        rows = [k for k in range(K) if bidx[k] == b]
        if not rows:
            assert not voted[b]
            torch.testing.assert_close(root[b], fallback[b])
            continue
        w = torch.exp(conf[rows]) / torch.exp(conf[rows]).sum()
        ref = sum(w[i] * votes[k] for i, k in enumerate(rows))
        assert voted[b]
        torch.testing.assert_close(root[b], ref)


def test_top_k_per_frame_matches_naive():
    g = torch.Generator().manual_seed(0)
    score = torch.rand(30, generator=g)
    bidx = torch.randint(0, 3, (30,), generator=g)
    keep = top_k_per_frame(score, bidx, 4)
    ref = []
    for b in range(3):
        rows = sorted((i for i in range(30) if bidx[i] == b), key=lambda i: -float(score[i]))
        ref += rows[:4]
    assert keep.tolist() == ref
    assert top_k_per_frame(score[:0], bidx[:0], 4).numel() == 0


# ----------------------------------------------------------------------------- the model


def test_forward_shapes_and_formulas(scene):
    inputs, _, _ = scene
    model = _model().eval()
    with torch.no_grad():
        out = model(inputs)
    B, h = 2, CROP // 4
    assert out.root_heatmap.shape == (B, 1, h, h)
    assert out.part_heatmaps.shape == (B, NUM_PARTS, h, h)
    assert out.root_depth.shape == (B,) and out.root_coarse_cam.shape == (B, 3)
    assert out.anchors_cam.shape == (B, 3, 3) and out.root_cam.shape == (B, 3)
    # Coarse root: soft-argmax pixel unprojected at z = d f / S.
    uv = soft_argmax_2d(out.root_heatmap, CROP)[:, 0]
    z = out.root_depth * inputs.K_crop[:, 0, 0] / CROP
    ref = unproject(inputs.K_crop, uv[:, None], z[:, None])[:, 0]
    torch.testing.assert_close(out.root_coarse_cam, ref)
    torch.testing.assert_close(out.anchors_cam, ray_anchors(out.root_coarse_cam, (0, -0.5, 0.5)))
    # Voxels: sample = frame * A + anchor; centres within the ROI ball (+ half a diagonal).
    vox = out.voxels
    assert vox.num_voxels > 0 and out.root_voted.all()
    assert torch.equal(vox.sample_idx // 3, vox.batch_idx)
    anchor = out.anchors_cam.reshape(-1, 3)[vox.sample_idx]
    reach = model.roi_radius + math.sqrt(3) * model.voxel_size / 2
    assert ((vox.centres_cam - anchor).norm(dim=-1) <= reach + 1e-5).all()
    assert vox.confidence.shape == (vox.num_voxels,) and vox.offset.shape == (vox.num_voxels, 3)
    assert vox.contact_logits.shape == (vox.num_voxels, 8)
    # Root vote of the model equals the naive per-frame loop.
    for b in range(B):
        m = vox.batch_idx == b
        w = torch.softmax(vox.confidence[m], 0)
        ref = (w[:, None] * (vox.centres_cam[m] + vox.offset[m])).sum(0)
        torch.testing.assert_close(out.root_cam[b], ref, rtol=1e-5, atol=1e-5)
    # Contacts are scene points of their own frame with a region 1..7.
    P = out.contact_points_cam.shape[0]
    assert out.contact_point_region.shape == (P,) and out.contact_batch_idx.shape == (P,)
    assert out.contact_point_region.dtype == torch.int64
    assert out.contact_batch_idx.dtype == torch.int64
    if P:
        assert out.contact_point_region.min() >= 1 and out.contact_point_region.max() <= 7
        rows = out.contact_point_index
        torch.testing.assert_close(out.contact_points_cam, inputs.scene_points_cam[rows])
        assert torch.equal(out.contact_batch_idx, inputs.scene_batch_idx[rows])


def test_teacher_forcing_centres_roi_on_gt(scene):
    inputs, targets, _ = scene
    model = _model(roi_noise_std=0.0).train()
    out = model(inputs, targets)
    torch.testing.assert_close(out.roi_centre_cam, targets.root_cam)
    torch.testing.assert_close(out.anchors_cam[:, 0], targets.root_cam)
    model.eval()
    with torch.no_grad():
        out = model(inputs, targets)
    torch.testing.assert_close(out.roi_centre_cam, out.root_coarse_cam)


def test_teacher_depth_noise_moves_the_roi_along_the_ray(scene):
    """``roi_depth_noise``: with no per-axis noise the forced centre stays on the true root's
    camera ray, at log-depth scales of the asked spread (within [0.5, 2]); the forward pass
    centres its ROI there."""
    inputs, targets, _ = scene
    model = _model(roi_noise_std=0.0, roi_depth_noise=0.15)
    torch.manual_seed(0)
    root = torch.tensor([[0.3, -0.2, 3.0]]).expand(20000, 3).double()
    centre = model.teacher_centre(root)
    scale = centre[:, 2] / root[:, 2]
    torch.testing.assert_close(centre, root * scale[:, None])  # on the ray
    assert 0.5 <= float(scale.min()) and float(scale.max()) <= 2.0
    assert abs(float(scale.log().std()) - 0.15) < 0.005
    assert abs(float(scale.log().mean())) < 0.005
    plain = _model(roi_noise_std=0.0)
    torch.testing.assert_close(plain.teacher_centre(root), root)
    model.train()
    torch.manual_seed(1)
    out = model(inputs, targets)
    ratio = out.roi_centre_cam / targets.root_cam
    torch.testing.assert_close(ratio, ratio[:, 2:].expand_as(ratio))
    assert not torch.allclose(ratio, torch.ones_like(ratio))
    with pytest.raises(ValueError, match="roi_depth_noise"):
        _model(roi_depth_noise=-0.1)


def test_roi_refinements_recentre_on_the_previous_vote(scene):
    """``roi_refinements=r``: pass k+1 centres its anchors on pass k's voted root and votes
    again from its own voxels (same weights); never under teacher forcing."""
    inputs, targets, _ = scene
    one, two = _model().eval(), _model(roi_refinements=1).eval()
    three = _model(roi_refinements=2).eval()
    with torch.no_grad():
        first, second, third = one(inputs), two(inputs), three(inputs)
    torch.testing.assert_close(second.roi_centre_cam, first.root_cam)
    torch.testing.assert_close(second.anchors_cam, ray_anchors(first.root_cam, (0, -0.5, 0.5)))
    torch.testing.assert_close(third.roi_centre_cam, second.root_cam)
    torch.testing.assert_close(second.root_coarse_cam, first.root_coarse_cam)
    vox = second.voxels
    for b in range(2):  # the final root is the vote of the final pass's voxels
        m = vox.batch_idx == b
        w = torch.softmax(vox.confidence[m], 0)
        ref = (w[:, None] * (vox.centres_cam[m] + vox.offset[m])).sum(0)
        torch.testing.assert_close(second.root_cam[b], ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(second.root_cam, first.root_cam)
    rows = second.contact_point_index  # contacts come from the last pass's voxels
    torch.testing.assert_close(second.contact_points_cam, inputs.scene_points_cam[rows])
    # teacher-forced training: one pass around the ground truth; without it, the refinement
    forced = _model(roi_refinements=1, roi_noise_std=0.0).train()
    torch.testing.assert_close(forced(inputs, targets).roi_centre_cam, targets.root_cam)
    free = _model(roi_refinements=1, teacher_forcing=False).train()
    out = free(inputs, targets)
    assert not torch.allclose(out.roi_centre_cam, out.root_coarse_cam)
    with pytest.raises(ValueError, match="roi_refinements"):
        _model(roi_refinements=-1)


def _all_passes_differentiated(model, inputs, fmap, centre, fallback, passes):
    """The slow reference of `RCNet._refined_vote`: every pass with autograd, each fallback the
    previous pass's root (as before only the last pass was differentiated)."""
    vote = model.vote_from(inputs, fmap, centre, fallback)
    for _ in range(passes):
        fallback = vote.root_cam
        centre = vote.root_cam.detach().to(centre.dtype)
        again = model.vote_from(inputs, fmap, centre, fallback)
        vote = dataclasses.replace(again, voted=vote.voted | again.voted)
    return vote, centre, fallback


def test_only_the_last_refinement_pass_is_differentiated(scene, monkeypatch):
    """Training without teacher forcing (the end-to-end recipe, two refinements): the passes
    before the last run without autograd, and the loss, the outputs and every gradient are
    those of differentiating all passes (their gradients were zeros)."""
    from sahmr.losses.rcnet import RCNetLoss

    inputs, targets, region = scene
    loss_fn = RCNetLoss(vertex_region=region)
    results = []
    for reference in (False, True):
        model = _model(roi_refinements=2, teacher_forcing=False).train()
        if reference:
            monkeypatch.setattr(model, "_refined_vote", types.MethodType(
                _all_passes_differentiated, model))  # fmt: skip
        torch.manual_seed(3)
        out = model(inputs, targets)
        loss = loss_fn(out, targets).total
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out, loss.detach(), grads, model.state_dict()))
    (fast, fast_loss, fast_grads, fast_state), (ref, ref_loss, ref_grads, ref_state) = results
    assert fast.root_voted.all()  # every frame voted in its last pass: gradients are equal
    torch.testing.assert_close(fast.root_cam, ref.root_cam, rtol=0, atol=0)
    torch.testing.assert_close(fast_loss, ref_loss, rtol=0, atol=0)
    assert fast_grads.keys() == ref_grads.keys()
    assert any(n.startswith("unet.") for n in fast_grads)
    for n, g in fast_grads.items():
        torch.testing.assert_close(g, ref_grads[n], rtol=1e-6, atol=1e-8, msg=n)
    for n, v in fast_state.items():  # BatchNorm statistics moved by every pass, as before
        torch.testing.assert_close(v, ref_state[n], rtol=0, atol=0, msg=n)

    # which passes record a graph: the last only with gradients on, none without
    model = _model(roi_refinements=2, teacher_forcing=False).train()
    modes: list[bool] = []
    vote_from = model.vote_from

    def recording(*args, **kwargs):
        modes.append(torch.is_grad_enabled())
        return vote_from(*args, **kwargs)

    monkeypatch.setattr(model, "vote_from", recording)
    model(inputs, targets)
    assert modes == [False, False, True]
    modes.clear()
    with torch.no_grad():
        model(inputs, targets)
    assert modes == [False, False, False]
    # a frame no pass could vote for keeps the coarse root and its gradient
    far = _replace(inputs, scene_points_cam=inputs.scene_points_cam + 100.0)
    out = model(far, targets)
    assert not out.root_voted.any()
    out.root_cam.sum().backward()
    assert sum(float(p.grad.abs().sum()) for p in model.depth_head.parameters()
               if p.grad is not None) > 0  # fmt: skip


def test_frame_evidence_against_a_loop():
    g = torch.Generator().manual_seed(1)
    conf = torch.randn(9, generator=g) * 5
    frame = torch.tensor([0, 2, 2, 0, 2, 2, 0, 2, 0])
    got = frame_evidence(conf, frame, 4)
    for b in (0, 2):
        torch.testing.assert_close(got[b], torch.logsumexp(conf[frame == b], 0))
    assert got[1] == -torch.inf and got[3] == -torch.inf  # frames without voxels
    # stable for large logits (the softmax denominator of vote_root, in log space)
    torch.testing.assert_close(frame_evidence(conf + 500, frame, 4)[0], got[0] + 500)


def _votes_from(model, inputs, start, passes):
    """A slow reference: one frame's vote from ``start`` and ``passes`` re-centred passes."""
    with torch.no_grad():
        fmap = model.image_stage(inputs)[0]
        vote = model.vote_from(inputs, fmap, start, start)
        for _ in range(passes):
            vote = model.vote_from(inputs, fmap, vote.root_cam, vote.root_cam)
    evidence = frame_evidence(vote.voxels.confidence, vote.voxels.batch_idx, start.shape[0])
    return vote.root_cam, evidence


def test_depth_hypotheses_pick_the_most_evident_roi(scene):
    """``depth_hypotheses``: every frame votes again from ROIs at other depths on its coarse
    root's ray and keeps the hypothesis with the most evidence if it beats its own by the
    margin (the choice checked against separate votes, frame by frame)."""
    inputs, targets, _ = scene
    scales = (0.5, 2.0)
    base = _model(roi_refinements=1).eval()
    with torch.no_grad():
        coarse = base(inputs).root_coarse_cam
    # frame 0 gets a dense block of scene points twice as far along its ray: more voxels, more
    # evidence there than around its own ROI
    g = torch.arange(-0.3, 0.3 + 1e-6, 0.04)
    block = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    inputs = _replace(
        inputs,
        scene_points_cam=torch.cat([inputs.scene_points_cam, block + 2.0 * coarse[0]]),
        scene_batch_idx=torch.cat([inputs.scene_batch_idx,
                                   torch.zeros(len(block), dtype=inputs.scene_batch_idx.dtype)]),
    )  # fmt: skip
    with torch.no_grad():
        plain = base(inputs)
    roots, evidence = zip(*[_votes_from(base, inputs, coarse * f, 1) for f in (1.0, *scales)],
                          strict=True)  # fmt: skip
    roots, evidence = torch.stack(roots), torch.stack(evidence)  # (H, B, 3), (H, B)
    torch.testing.assert_close(roots[0], plain.root_cam)
    assert evidence[2, 0] > evidence[0, 0] + 0.25 and evidence[0, 1] >= evidence[1:, 1].max()
    for margin in (-1e6, 0.0, 0.25, 1e6):
        model = _model(roi_refinements=1, depth_hypotheses=(1.0, *scales),
                       depth_hypothesis_margin=margin).eval()  # fmt: skip
        assert model.depth_hypotheses == scales  # 1.0 is the ROI it already has
        with torch.no_grad():
            out = model(inputs)
        for b in range(2):
            best = int(evidence[1:, b].argmax()) + 1
            gain = evidence[best, b] - evidence[0, b]
            beats = bool(gain >= margin and gain > 0)
            torch.testing.assert_close(out.root_cam[b], roots[best if beats else 0, b],
                                       rtol=1e-5, atol=1e-5)  # fmt: skip
        switched = margin < 1e6
        assert torch.allclose(out.root_cam[0], roots[2, 0], atol=1e-5) == switched
        # contacts come from the chosen pass's voxels, as without the search
        torch.testing.assert_close(out.contact_points_cam,
                                   inputs.scene_points_cam[out.contact_point_index])  # fmt: skip
        if not switched:  # the plain model's output, contacts included
            torch.testing.assert_close(out.root_cam, plain.root_cam)
            torch.testing.assert_close(out.contact_point_index, plain.contact_point_index)
        else:  # frame 1 keeps its own vote and contacts
            keep = plain.contact_batch_idx == 1
            torch.testing.assert_close(out.contact_point_index[out.contact_batch_idx == 1],
                                       plain.contact_point_index[keep])  # fmt: skip
    # never in training
    trained = _model(roi_refinements=1, teacher_forcing=False, depth_hypotheses=scales,
                     depth_hypothesis_margin=-1e6).train()  # fmt: skip
    twin = _model(roi_refinements=1, teacher_forcing=False).train()
    torch.testing.assert_close(trained(inputs, targets).root_cam, twin(inputs, targets).root_cam)
    for bad in ((0.0,), (-1.0,), (float("nan"),)):
        with pytest.raises(ValueError, match="depth_hypotheses"):
            _model(depth_hypotheses=bad)
    with pytest.raises(ValueError, match="margin"):
        _model(depth_hypothesis_margin=float("inf"))


def test_several_roi_sets_per_frame_vote_as_separate_passes(scene):
    """`RCNet.vote_from` with H x B centres (the depth search's one batched pass) gives each ROI
    set the vote, fallback and evidence that H separate passes give, an empty ROI included."""
    inputs, _, _ = scene
    model = _model().eval()
    with torch.no_grad():
        fmap, *_, coarse = model.image_stage(inputs)
        B = coarse.shape[0]
        far = coarse * 40.0  # an ROI far beyond every scene point: no voxel, the fallback
        sets = [coarse, coarse * 0.7, far]
        centres = torch.cat(sets)
        together = model.vote_from(inputs, fmap, centres, centres + 1.0)
        evidence = frame_evidence(together.voxels.confidence, together.voxels.batch_idx,
                                  len(sets) * B)  # fmt: skip
        for h, c in enumerate(sets):
            alone = model.vote_from(inputs, fmap, c, c + 1.0)
            rows = slice(h * B, (h + 1) * B)
            torch.testing.assert_close(together.root_cam[rows], alone.root_cam,
                                       rtol=1e-5, atol=1e-5)  # fmt: skip
            assert torch.equal(together.voted[rows], alone.voted)
            torch.testing.assert_close(
                evidence[rows],
                frame_evidence(alone.voxels.confidence, alone.voxels.batch_idx, B),
                rtol=1e-5, atol=1e-5,
            )  # fmt: skip
        assert together.voted[: 2 * B].all() and not together.voted[2 * B :].any()
        torch.testing.assert_close(together.root_cam[2 * B :], far + 1.0)
        with pytest.raises(ValueError, match="multiple"):
            model.vote_from(inputs, fmap, centres[: B + 1], centres[: B + 1])


def test_empty_roi_frames(scene):
    inputs, targets, region = scene
    from sahmr.losses.rcnet import RCNetLoss

    model = _model().train()
    loss_fn = RCNetLoss(vertex_region=region)
    keep = inputs.scene_batch_idx == 0  # frame 1 loses its scene points
    cases = {
        "frame1_empty": _replace(
            inputs,
            scene_points_cam=inputs.scene_points_cam[keep],
            scene_batch_idx=inputs.scene_batch_idx[keep],
        ),
        "far_away": _replace(inputs, scene_points_cam=inputs.scene_points_cam + 100.0),
        "no_scene": _replace(inputs, scene_points_cam=None, scene_batch_idx=None),
    }
    for name, inp in cases.items():
        out = model(inp, targets)
        empty = [1] if name == "frame1_empty" else [0, 1]
        for b in empty:
            assert not out.root_voted[b], name
            torch.testing.assert_close(out.root_cam[b], out.root_coarse_cam[b])
            assert not (out.contact_batch_idx == b).any(), name
            assert not (out.voxels.batch_idx == b).any(), name
        loss = loss_fn(out, targets)
        assert torch.isfinite(loss.total), name
        model.zero_grad()
        loss.total.backward()


def test_contact_cap(scene):
    inputs, _, _ = scene
    for cap in (500, 7):
        model = _model(max_contacts_per_frame=cap).eval()
        with torch.no_grad():
            model.contact_head.weight.zero_()
            model.contact_head.bias.copy_(torch.tensor([0.0, 0, 0, 5.0, 0, 0, 0, 0]))
            out = model(inputs)
        roi = roi_select(inputs.scene_points_cam, inputs.scene_batch_idx, out.anchors_cam, 1.25)
        for b in range(2):
            n_roi = int((roi & (inputs.scene_batch_idx == b)).sum())
            n = int((out.contact_batch_idx == b).sum())
            assert n == min(cap, n_roi) and n_roi > cap
            s = out.contact_point_score[out.contact_batch_idx == b]
            assert (s[1:] <= s[:-1]).all()
        assert (out.contact_point_region == 3).all()


def test_few_steps_reduce_loss(scene):
    inputs, targets, region = scene
    from sahmr.losses.rcnet import RCNetLoss

    model = _model(roi_noise_std=0.0).train()
    loss_fn = RCNetLoss(vertex_region=region)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(6):
        loss = loss_fn(model(inputs, targets), targets)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        totals.append(float(loss.total.detach()))
    assert totals[-1] < 0.8 * totals[0], totals


# ----------------------------------------------------------------------------- metrics


def test_metrics_hand_computed():
    from sahmr.evaluation.rcnet_metrics import f1_from_sums, rcnet_metrics

    out = SimpleNamespace(
        root_cam=torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]]),
        root_coarse_cam=torch.tensor([[0.0, 0.0, 1.1], [0.3, 0.4, 2.0]]),
        contact_points_cam=torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]]),
        contact_point_region=torch.tensor([1, 2, 1]),
        contact_batch_idx=torch.tensor([0, 0, 0]),
    )
    targets = SimpleNamespace(
        root_cam=torch.tensor([[0.0, 0.0, 1.1], [0.3, 0.4, 2.0]]),
        contact_points_cam=torch.tensor([[0.01, 0, 0], [1.02, 0, 0], [9.0, 0, 0], [0.0, 0, 0]]),
        contact_point_region=torch.tensor([1, 1, 3, 2]),
        contact_batch_idx=torch.tensor([0, 0, 0, 1]),
    )
    m = rcnet_metrics(out, targets, tolerance=0.05)
    s = m.sums

    def close(key, total, count):
        assert s[key][0] == pytest.approx(total, abs=1e-4), key
        assert s[key][1] == pytest.approx(count), key

    assert s["root_error_mm"][0] == pytest.approx(600.0, abs=1e-3)
    assert s["root_error_mm"][1] == 2
    close("root_coarse_error_mm", 0.0, 2)
    close("contact_precision", 2, 3)
    close("contact_recall", 2, 4)
    close("contact_f1", 2 / 3, 2)  # frame 0: P = R = 2/3; frame 1: nothing found -> 0
    close("contact_precision/left_foot", 1, 2)
    close("contact_recall/left_foot", 1, 2)
    close("contact_f1/left_foot", 0.5, 1)
    close("contact_precision/right_foot", 0, 1)
    close("contact_recall/right_foot", 0, 1)
    close("contact_f1/right_foot", 0, 2)
    close("contact_recall/left_hand", 0, 1)
    close("contact_f1/left_hand", 0, 1)
    close("contact_precision/back", 0, 0)
    torch.testing.assert_close(
        m.per_frame["root_error_mm"],
        torch.tensor([100.0, 500.0], dtype=torch.float64),
        atol=1e-3,
        rtol=0,
    )
    torch.testing.assert_close(
        m.per_frame["contact_f1"], torch.tensor([2 / 3, 0.0], dtype=torch.float64)
    )
    assert f1_from_sums(s)["contact_f1_global"] == pytest.approx(4 / 7)


def test_model_metrics_entry_point(scene):
    inputs, targets, _ = scene
    model = _model().eval()
    with torch.no_grad():
        out = model(inputs)
    sums = model.metrics(out, targets)
    assert sums["root_error_mm"][1] == 2.0
    assert sums["contact_recall"][1] == targets.contact_points_cam.shape[0]
    assert sums["contact_precision"][1] == out.contact_points_cam.shape[0]
    per_frame = model.per_frame_metrics(out, targets)
    assert per_frame["root_error_mm"].shape == (2,)
    # The per-frame errors average to the summed metric.
    mean = sums["root_error_mm"][0] / sums["root_error_mm"][1]
    assert abs(float(per_frame["root_error_mm"].mean()) - mean) < 1e-6 * max(1.0, mean)


# ----------------------------------------------------------------------------- configs


def test_configs_compose_and_build():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        small = compose(overrides=["+model=rcnet_small", "+body=license_free", "+loss=rcnet"])
        paper = compose(overrides=["+model=rcnet_paper"])
    model = instantiate(small.model)
    assert isinstance(model, RCNet)
    n = sum(p.numel() for p in model.parameters())
    assert 2.5e6 < n < 3.5e6, n
    assert model.unet.in_channels == 3 + model.neck.out_channels
    loss = instantiate(small.loss)
    assert loss.vertex_region.shape == (BodyModel().num_vertices,)
    # The paper variant only overrides widths; the input sizes are derived when built.
    assert paper.model.backbone.name == "hrnet_w32"
    assert "in_channels" not in paper.model.unet and "in_channels" not in paper.model.neck
    assert paper.model.roi_radius == small.model.roi_radius


def test_derived_sizes_build_the_same_network_as_typed_sizes():
    """The configs' neck / unet builders (sizes from the built parts) give the weights the
    hand-typed sizes of older configs (and checkpoints) gave, seed for seed."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(overrides=["+model=rcnet_small"]).model
    typed = OmegaConf.create(OmegaConf.to_container(cfg))
    for key, size in (("neck", 128), ("unet", 67)):  # the sizes the configs used to type
        del typed[key]["_partial_"]
        typed[key]["in_channels"] = size
    torch.manual_seed(0)
    derived_model = instantiate(cfg)
    torch.manual_seed(0)
    typed_model = instantiate(typed)
    a, b = derived_model.state_dict(), typed_model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.gpu
def test_cuda_matches_cpu(scene):
    from sahmr import sparse
    from sahmr.losses.rcnet import RCNetLoss

    inputs, targets, region = scene
    model = _model().eval()
    with torch.no_grad():
        ref = model(inputs)
    model = model.cuda()
    sparse.set_algo(model, sparse.default_algo("cuda"))
    inputs_g, targets_g = inputs.to("cuda"), targets.to("cuda")
    with torch.no_grad():
        out = model(inputs_g)
    torch.testing.assert_close(out.root_coarse_cam.cpu(), ref.root_coarse_cam, atol=1e-3, rtol=0)
    torch.testing.assert_close(out.root_cam.cpu(), ref.root_cam, atol=5e-3, rtol=0)
    assert out.voxels.num_voxels == ref.voxels.num_voxels
    n, n_ref = out.contact_points_cam.shape[0], ref.contact_points_cam.shape[0]
    assert abs(n - n_ref) <= max(5, n_ref // 50)
    model.train()
    loss = RCNetLoss(vertex_region=region).cuda()(model(inputs_g, targets_g), targets_g)
    loss.total.backward()
    assert torch.isfinite(loss.total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bf16_autocast_train_and_eval(scene):
    """The trainer runs RCNet under bf16 autocast on CUDA; CPU autocast exercises the same
    dtype mixing (heads emitting bf16 next to float32 geometry)."""
    inputs, targets, region = scene
    from sahmr.losses.rcnet import RCNetLoss

    model = _model(roi_noise_std=0.0).train()
    loss_fn = RCNetLoss(vertex_region=region)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(inputs, targets)
        loss = loss_fn(out, targets)
    loss.total.float().backward()
    assert torch.isfinite(loss.total)
    assert out.root_cam.dtype == torch.float32
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(inputs)
    assert torch.isfinite(out.root_cam).all()

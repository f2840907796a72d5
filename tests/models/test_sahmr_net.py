import os

import pytest
import torch
from _mesh_net_cases import (
    IMAGE,
    FakeRCNet,
    make_batch,
    snapshot,
    tiny_mesh_net,
    topology,
    unchanged,
)

from sahmr.losses.mesh import SAHMRLoss
from sahmr.models.sahmr import SAHMR
from sahmr.models.scene_mesh_net import SceneAwareMeshNet, cap_per_frame, frame_slots

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def _fake_rcnet(B=2, counts=(3, 4), seed=5):
    g = torch.Generator().manual_seed(seed)
    bidx = torch.cat([torch.full((n,), b) for b, n in enumerate(counts)])[
        torch.randperm(sum(counts), generator=g)
    ]
    P = bidx.numel()
    root = torch.tensor([[0.1, 0.2, 3.0], [-0.2, 0.0, 4.0]])[:B]
    return FakeRCNet(root, torch.randn(P, 3, generator=g) + root[bidx],
                     torch.randint(1, 8, (P,), generator=g), bidx)  # fmt: skip


def test_frame_slots_and_cap_match_loops():
    g = torch.Generator().manual_seed(0)
    bidx = torch.randint(0, 4, (50,), generator=g)
    slot, longest = frame_slots(bidx, 5)
    seen = [0] * 5
    for i, b in enumerate(bidx.tolist()):
        assert slot[i] == seen[b]
        seen[b] += 1
    assert longest == max(seen)
    keep = cap_per_frame(bidx, 3, shuffle=False)
    ref = [i for i, b in enumerate(bidx.tolist()) if slot[i] < 3]
    assert sorted(keep.tolist()) == ref
    assert torch.all(bidx[keep][1:] >= bidx[keep][:-1])  # grouped by frame
    torch.manual_seed(0)
    keep = cap_per_frame(bidx, 3, shuffle=True)
    counts = torch.bincount(bidx[keep], minlength=5)
    assert counts.tolist() == [min(3, n) for n in seen]
    assert frame_slots(torch.zeros(0, dtype=torch.int64), 2)[1] == 0
    assert cap_per_frame(torch.zeros(0, dtype=torch.int64), 3, shuffle=True).numel() == 0


@pytest.mark.parametrize("counts", [(5, 0), (0, 0)])
def test_mesh_net_shapes_and_empty_frames(counts):
    net = tiny_mesh_net().eval()
    inputs, targets = make_batch(contacts=counts)
    out = net(inputs.image, targets.root_cam, targets.contact_points_cam,
              targets.contact_point_region, targets.contact_batch_idx,
              return_attention=True)  # fmt: skip
    top = topology()
    assert out.joints14_rel.shape == (2, 14, 3)
    assert [v.shape for v in out.verts_rel_levels] == [(2, n, 3) for n in top.num_vertices[::-1]]
    assert out.scene_recon.shape == (sum(counts), 3)
    assert torch.isfinite(out.verts_rel_levels[-1]).all()
    T = 14 + top.num_vertices[-1] + (IMAGE // 32) ** 2
    S = 1 + max(counts)  # null token + the longest frame
    assert len(out.attention) == 3
    for att in out.attention:
        assert att.mesh.shape == (2, T, T) and att.scene.shape == (2, S, S)
        assert att.cross.shape == (2, T, S)
        torch.testing.assert_close(att.cross.sum(-1), torch.ones(2, T), atol=1e-5, rtol=0)
        # padding keys get no attention: frame 1 has no points, only the null token
        assert torch.all(att.cross[1, :, 1:] == 0)


def test_padded_batch_matches_frames_run_alone():
    """Packing/padding against the slow reference: each frame through the network alone."""
    net = tiny_mesh_net().eval()
    inputs, targets = make_batch(contacts=(3, 6))
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))  # interleave frames
    pts, reg = targets.contact_points_cam[perm], targets.contact_point_region[perm]
    bidx = targets.contact_batch_idx[perm]
    out = net(inputs.image, targets.root_cam, pts, reg, bidx)
    for b in range(2):
        sel = bidx == b
        alone = net(inputs.image[b : b + 1], targets.root_cam[b : b + 1], pts[sel], reg[sel],
                    torch.zeros(int(sel.sum()), dtype=torch.int64))  # fmt: skip
        torch.testing.assert_close(out.verts_rel_levels[-1][b], alone.verts_rel_levels[-1][0],
                                   atol=1e-5, rtol=1e-4)  # fmt: skip
        torch.testing.assert_close(out.scene_recon[sel], alone.scene_recon, atol=1e-5, rtol=1e-4)


def test_contacts_change_the_mesh_and_part_tokens():
    net = tiny_mesh_net().eval()
    inputs, targets = make_batch(contacts=(4, 0))
    args = (inputs.image, targets.root_cam, targets.contact_points_cam)
    a = net(*args, targets.contact_point_region, targets.contact_batch_idx)
    b = net(*args, (targets.contact_point_region % 7) + 1, targets.contact_batch_idx)
    assert not torch.allclose(a.verts_rel_levels[-1][0], b.verts_rel_levels[-1][0])
    torch.testing.assert_close(a.verts_rel_levels[-1][1], b.verts_rel_levels[-1][1])
    tokens = torch.randn(2, net.num_queries + net.num_grid, net.encoder.in_width)
    labels = torch.as_tensor(topology().contact_labels[-1])
    part = net.part_tokens(tokens)
    for r in range(1, 8):
        ref = tokens[:, net.num_joints :][:, : net.num_coarse][:, labels == r].mean(1)
        torch.testing.assert_close(part[:, r], ref, atol=1e-5, rtol=1e-5)


def test_too_many_contacts_raise():
    net = tiny_mesh_net(max_contacts=4)
    inputs, targets = make_batch(contacts=(5, 0))
    with pytest.raises(ValueError, match="contact points"):
        net(inputs.image, targets.root_cam, targets.contact_points_cam,
            targets.contact_point_region, targets.contact_batch_idx)  # fmt: skip


def test_teacher_forcing_versus_rcnet_path():
    inputs, targets = make_batch(contacts=(6, 2))
    rc = _fake_rcnet()
    model = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net(), contact_drop=0.0).train()
    torch.manual_seed(0)
    out = model(inputs, targets)
    assert out.rc is None and rc.calls == []  # frozen RCNet is skipped under teacher forcing
    assert 0 < (out.root_cam - targets.root_cam).abs().max() < 0.3
    assert out.contact_gt_index is not None and out.contact_gt_index.numel() == 8
    jitter = out.contact_points_cam - targets.contact_points_cam[out.contact_gt_index]
    assert 0 < jitter.abs().max() < 0.15
    assert torch.equal(out.contact_batch_idx, targets.contact_batch_idx[out.contact_gt_index])
    torch.testing.assert_close(out.verts_cam, out.verts_rel + out.root_cam[:, None])

    model.eval()  # evaluation: RCNet's root and contacts, unchanged
    out = model(inputs, targets)
    assert torch.equal(out.root_cam, rc.root) and out.contact_gt_index is None
    assert out.rc is not None and out.contact_points_cam.shape == rc.points.shape

    model = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net(), teacher_forcing=False).train()
    assert torch.equal(model(inputs, targets).root_cam, rc.root)

    rc2 = _fake_rcnet()  # trainable RCNet: runs (with targets) next to teacher forcing
    model = SAHMR(rcnet=rc2, mesh_net=tiny_mesh_net(), freeze_rcnet=False).train()
    out = model(inputs, targets)
    assert out.rc is not None and rc2.calls == [True] and out.contact_gt_index is not None
    assert rc2.offset.requires_grad and rc2.training


def test_without_rcnet_uses_ground_truth_and_cannot_predict():
    inputs, targets = make_batch(contacts=(3, 0))
    model = SAHMR(rcnet=None, mesh_net=tiny_mesh_net()).eval()
    out = model(inputs, targets)
    assert torch.equal(out.root_cam, targets.root_cam)  # no noise outside training
    assert torch.equal(out.contact_points_cam, targets.contact_points_cam)
    with pytest.raises(ValueError, match="RCNet"):
        model(inputs)
    with pytest.raises(ValueError, match="RCNet"):
        model.predict(inputs)


def test_frozen_rcnet_and_predict():
    inputs, _ = make_batch()
    rc = _fake_rcnet(counts=(3, 7))
    model = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net(max_contacts=5)).train()
    assert not rc.offset.requires_grad and not rc.training and model.mesh_net.training
    pred = model.predict(inputs)
    assert model.training and not rc.training
    counts = torch.bincount(pred.contact_batch_idx, minlength=2)
    assert counts.tolist() == [3, 5]  # RCNet's contacts capped at max_contacts per frame
    assert pred.contact_point_region.dtype == torch.int64
    assert torch.equal(pred.root_cam, rc.root)
    assert pred.verts_cam.shape == (2, topology().num_vertices[0], 3)
    assert pred.joints_cam.shape == (2, 14, 3)


def test_teacher_forcing_caps_and_drops_contacts():
    inputs, targets = make_batch(contacts=(12, 3))
    model = SAHMR(rcnet=None, mesh_net=tiny_mesh_net(max_contacts=5), contact_drop=0.0).train()
    out = model(inputs, targets)
    assert torch.bincount(out.contact_batch_idx, minlength=2).tolist() == [5, 3]
    model.contact_drop = 0.5
    torch.manual_seed(0)
    kept = [model(inputs, targets).contact_gt_index.numel() for _ in range(4)]
    assert min(kept) < 8 and all(k <= 8 for k in kept)


def test_few_steps_reduce_loss_and_inputs_untouched():
    inputs, targets = make_batch(contacts=(6, 0))
    snaps = snapshot(inputs), snapshot(targets)
    model = SAHMR(rcnet=None, mesh_net=tiny_mesh_net(seed=1)).train()
    loss_fn = SAHMRLoss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(10):
        loss = loss_fn(model(inputs, targets), targets)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        losses.append(loss.total.item())
    assert sum(losses[-3:]) / 3 < 0.6 * losses[0]
    assert loss.terms["scene_recon"] > 0
    assert unchanged(inputs, snaps[0]) and unchanged(targets, snaps[1])


def test_scene_less_ablation_gets_no_contacts():
    """``scene_contacts=False``: no contact reaches the mesh network, in training (teacher
    forcing) or from RCNet; the root is unchanged, the loss trains, the mesh differs from the
    scene-aware model's with the same weights."""
    inputs, targets = make_batch(contacts=(6, 2))
    rc = _fake_rcnet()
    net = tiny_mesh_net(seed=2)
    plain = SAHMR(rcnet=rc, mesh_net=net, contact_drop=0.0)
    blind = SAHMR(rcnet=rc, mesh_net=net, contact_drop=0.0, scene_contacts=False).train()
    torch.manual_seed(0)
    out = blind(inputs, targets)
    assert out.contact_points_cam.shape == (0, 3) and out.contact_gt_index.numel() == 0
    assert out.contact_batch_idx.numel() == 0 and out.contact_point_region.numel() == 0
    loss = SAHMRLoss()(out, targets)
    assert torch.isfinite(loss.total)
    loss.total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    pred_blind, pred_plain = blind.predict(inputs), plain.predict(inputs)
    assert pred_blind.contact_points_cam.shape[0] == 0
    assert torch.equal(pred_blind.root_cam, rc.root) and torch.equal(pred_plain.root_cam, rc.root)
    assert (pred_blind.verts_cam - pred_plain.verts_cam).abs().max() > 1e-4


def test_frame_contact_drop_removes_whole_frames_in_training_only():
    """``frame_contact_drop``: in training a frame keeps all of its contacts or none (ground
    truth or RCNet's); the ground-truth index follows; outside training nothing is dropped."""
    B, counts = 6, (4, 3, 5, 2, 6, 3)
    inputs, targets = make_batch(B=B, contacts=counts)
    net = tiny_mesh_net(seed=3)
    model = SAHMR(rcnet=None, mesh_net=net, contact_drop=0.0, contact_jitter_m=0.0,
                  frame_contact_drop=0.5).train()  # fmt: skip
    seen_kept, seen_dropped = set(), set()
    for seed in range(8):
        torch.manual_seed(seed)
        out = model(inputs, targets)
        per_frame = torch.bincount(out.contact_batch_idx, minlength=B).tolist()
        for b, n in enumerate(per_frame):
            assert n in (0, counts[b])
            (seen_kept if n else seen_dropped).add(b)
        gt = out.contact_gt_index
        assert torch.equal(targets.contact_batch_idx[gt], out.contact_batch_idx)
        assert torch.equal(targets.contact_points_cam[gt], out.contact_points_cam)
    assert seen_kept == seen_dropped == set(range(B))
    rc = _fake_rcnet()
    two_in, _ = make_batch(B=2, contacts=(3, 4))
    fed = SAHMR(rcnet=rc, mesh_net=net, teacher_forcing=False, frame_contact_drop=0.5).train()
    kept = set()
    for seed in range(8):
        torch.manual_seed(seed)
        n = torch.bincount(fed(two_in).contact_batch_idx, minlength=2).tolist()
        assert n[0] in (0, 3) and n[1] in (0, 4)
        kept.add(tuple(n))
    assert len(kept) > 1
    assert fed.predict(two_in).contact_points_cam.shape[0] == 7  # eval: nothing dropped
    with pytest.raises(ValueError, match="frame_contact_drop"):
        SAHMR(rcnet=None, mesh_net=net, frame_contact_drop=1.0)


def test_configs_build():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=os.path.abspath(CONFIGS), version_base=None):
        cfg = compose(overrides=["+model=sahmr_small", "+body=license_free", "+loss=sahmr"])
        paper = compose(overrides=["+model=sahmr_paper", "+body=license_free"])
        joint = compose(
            overrides=["+model=sahmr_small", "+model@model.rcnet=rcnet_small",
                       "model.freeze_rcnet=false", "+body=license_free", "+loss=sahmr",
                       "+loss@loss.rcnet_loss=rcnet"]
        )  # fmt: skip
        blind = compose(
            config_name="train", overrides=["exp=sahmr_small_noscene", "init.weights=x.pt"]
        )
    assert blind.model.scene_contacts is False and blind.model.freeze_rcnet is True
    assert blind.model.teacher_forcing is False
    assert joint.model.rcnet._target_ == "sahmr.models.rcnet.RCNet"
    assert joint.loss.rcnet_loss._target_ == "sahmr.losses.rcnet.RCNetLoss"
    model = instantiate(cfg.model)
    assert isinstance(model, SAHMR) and isinstance(model.mesh_net, SceneAwareMeshNet)
    assert model.rcnet is None
    assert sum(p.numel() for p in model.parameters()) < 13e6
    assert isinstance(instantiate(cfg.loss), SAHMRLoss)
    net = paper.model.mesh_net
    assert net._target_.endswith("SceneAwareMeshNet")
    assert net.encoder._target_.endswith("SceneAwareCascade")
    assert net.backbone.name == "hrnet_w64" and list(net.encoder.widths) == [1024, 256, 128]


@pytest.mark.gpu
def test_cuda_bf16_forward_backward():
    inputs, targets = make_batch(contacts=(6, 0))
    inputs, targets = inputs.to("cuda"), targets.to("cuda")
    rc = _fake_rcnet().cuda()
    model = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net()).cuda().train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(inputs, targets)
        loss = SAHMRLoss()(out, targets)
    loss.total.backward()
    assert torch.isfinite(loss.total) and out.contact_gt_index is not None
    pred = model.predict(inputs)
    assert pred.verts_cam.device.type == "cuda" and torch.isfinite(pred.verts_cam).all()

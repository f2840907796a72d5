import os

import pytest
import torch
from _mesh_net_cases import IMAGE, make_batch, snapshot, tiny_metro, topology, unchanged

from sahmr.geometry.cameras import project
from sahmr.geometry.pnp import estimate_translation
from sahmr.losses.mesh import MetroLoss
from sahmr.models.metro import (
    METRO,
    crop_to_normalized,
    normalized_to_crop,
    weak_perspective,
)

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def test_output_shapes_on_body_topology():
    top = topology()
    model = tiny_metro()
    inputs, _ = make_batch()
    out = model(inputs)
    assert out.joints14_rel.shape == (2, 14, 3)
    assert [v.shape for v in out.verts_rel_levels] == [(2, n, 3) for n in top.num_vertices[::-1]]
    assert out.joints14_from_verts_rel.shape == (2, 14, 3)
    assert out.cam.shape == (2, 3) and out.crop_size == IMAGE
    assert out.attention is None
    ref = torch.einsum("jv,bvc->bjc", torch.as_tensor(top.j_regressor_j14).float(), out.verts_rel)
    torch.testing.assert_close(out.joints14_from_verts_rel, ref, atol=1e-5, rtol=1e-5)


def test_attention_maps():
    model = tiny_metro().eval()
    inputs, _ = make_batch()
    out = model(inputs, return_attention=True)
    T = 14 + topology().num_vertices[-1] + (IMAGE // 32) ** 2
    assert len(out.attention) == 3
    for att in out.attention:
        assert att.shape == (2, T, T)
        torch.testing.assert_close(att.sum(-1), torch.ones(2, T), atol=1e-5, rtol=0)
    plain = model(inputs)  # the fused path gives the same mesh
    torch.testing.assert_close(plain.verts_rel, out.verts_rel, atol=1e-5, rtol=1e-5)


def test_masked_modelling_only_in_training():
    model = tiny_metro(mask_ratio=1.0)
    feats = torch.randn(2, model.backbone.out_channels)
    model.train()
    q = model.embed_queries(feats)
    torch.testing.assert_close(q[0], q[1])  # every query masked: image feature gone
    model.eval()
    q = model.embed_queries(feats)
    assert not torch.allclose(q[0], q[1])
    # a fraction mask_ratio of the queries is masked
    model = tiny_metro(mask_ratio=0.3).train()
    torch.manual_seed(0)
    feats = torch.randn(64, model.backbone.out_channels)
    q = model.embed_queries(feats)
    masked_row = model.query_embed(
        torch.cat([model.query_templates, model.mask_embedding.expand(model.num_queries, -1)], 1)
    )
    frac = torch.isclose(q, masked_row[None], atol=1e-6).all(-1).float().mean()
    assert 0.27 < frac < 0.33
    # and a whole forward pass is deterministic in eval mode only
    inputs, _ = make_batch()
    model.eval()
    torch.testing.assert_close(model(inputs).verts_rel, model(inputs).verts_rel)


def test_weak_perspective_helpers():
    uv = torch.rand(2, 5, 2) * IMAGE
    torch.testing.assert_close(normalized_to_crop(crop_to_normalized(uv, IMAGE), IMAGE), uv)
    assert torch.allclose(crop_to_normalized(torch.tensor([0.0, IMAGE]), IMAGE),
                          torch.tensor([-1.0, 1.0]))  # fmt: skip
    pts = torch.randn(2, 5, 3)
    cam = torch.tensor([[2.0, 0.1, -0.2], [0.5, 0.0, 0.3]])
    ref = torch.stack([cam[b, 0] * pts[b, :, :2] + cam[b, 1:] for b in range(2)])
    torch.testing.assert_close(weak_perspective(pts, cam), ref)


def test_predict_places_mesh_by_pnp():
    model = tiny_metro()
    inputs, _ = make_batch()
    model.train()
    pred = model.predict(inputs)
    assert model.training  # mode restored
    out = model.eval()(inputs)
    pts = torch.cat([out.joints14_rel, out.verts_rel_levels[0]], 1)
    uv = normalized_to_crop(weak_perspective(pts, out.cam), IMAGE)
    t = estimate_translation(pts, uv, inputs.K_crop)
    torch.testing.assert_close(pred.root_cam, t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred.verts_cam, out.verts_rel + t[:, None], atol=1e-5, rtol=1e-5)
    assert pred.joints_cam.shape == (2, 14, 3)
    assert pred.verts_cam.shape == (2, topology().num_vertices[0], 3)
    assert not pred.verts_cam.requires_grad


def test_weak_perspective_fit_leads_back_to_the_translation():
    """The weak-perspective camera fitted to a body's perspective projection, converted as in
    `METRO.predict`, gives back (nearly) the body's translation."""
    inputs, targets = make_batch()
    rel = targets.joints14_cam - targets.root_cam[:, None]
    uv = crop_to_normalized(project(inputs.K_crop, targets.joints14_cam), IMAGE)
    # least-squares weak-perspective fit of the GT 2-D joints
    A = torch.cat([rel[..., :2].reshape(2, -1, 1),
                   torch.eye(2).repeat(14, 1).expand(2, -1, -1)], 2)  # fmt: skip
    cam = torch.linalg.lstsq(A, uv.reshape(2, -1, 1)).solution[..., 0]
    t = estimate_translation(rel, normalized_to_crop(weak_perspective(rel, cam), IMAGE),
                             inputs.K_crop)  # fmt: skip
    err = (t - targets.root_cam).norm(dim=-1)
    assert err.max() < 0.1 * targets.root_cam.norm(dim=-1).min()


def test_few_steps_reduce_loss_and_inputs_untouched():
    model = tiny_metro(seed=1).train()
    loss_fn = MetroLoss()
    inputs, targets = make_batch()
    snaps = snapshot(inputs), snapshot(targets)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = loss_fn(model(inputs, targets), targets)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        losses.append(loss.total.item())
    assert sum(losses[-3:]) / 3 < 0.6 * losses[0]
    assert set(loss.terms) == {"verts_l0", "verts_l1", "verts_l2", "joints3d", "joints3d_reg",
                               "joints2d", "edge", "normal"}  # fmt: skip
    assert unchanged(inputs, snaps[0]) and unchanged(targets, snaps[1])


def test_image_size_mismatch_raises():
    model = tiny_metro()
    inputs, _ = make_batch()
    inputs.image = torch.zeros(2, 3, 2 * IMAGE, 2 * IMAGE)
    with pytest.raises(ValueError, match="feature grid"):
        model(inputs)


def test_small_config_builds_under_budget():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=os.path.abspath(CONFIGS), version_base=None):
        cfg = compose(overrides=["+model=metro_small", "+body=license_free", "+loss=metro"])
        paper = compose(overrides=["+model=metro_paper", "+body=license_free"])
    model = instantiate(cfg.model)
    assert isinstance(model, METRO)
    assert sum(p.numel() for p in model.parameters()) < 13e6
    assert isinstance(instantiate(cfg.loss), MetroLoss)
    assert paper.model.backbone.name == "hrnet_w64"
    assert list(paper.model.encoder.widths) == [1024, 256, 128]
    assert paper.model.encoder.num_layers == 4 and paper.model.encoder.num_heads == 4


@pytest.mark.gpu
def test_cuda_bf16_forward_backward():
    model = tiny_metro().cuda().train()
    inputs, targets = make_batch()
    inputs, targets = inputs.to("cuda"), targets.to("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(inputs)
        loss = MetroLoss()(out, targets)
    loss.total.backward()
    assert torch.isfinite(loss.total)
    pred = model.predict(inputs)
    assert pred.verts_cam.device.type == "cuda"

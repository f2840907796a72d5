"""Parametric body output of METRO and SA-HMR's mesh network (sahmr.models.param_head)."""

from __future__ import annotations

import functools
import os

import pytest
import torch
from _mesh_net_cases import (
    FakeRCNet,
    body,
    make_batch,
    tiny_head,
    tiny_mesh_net,
    tiny_metro,
    tiny_mlp_head,
)

from sahmr.geometry.rotations import axis_angle_to_matrix
from sahmr.losses.mesh import MetroLoss, ParamTerms, SAHMRLoss, edge_length_l1, normal_error
from sahmr.models.param_head import UPRIGHT_FACING_CAMERA, BodyParams
from sahmr.models.sahmr import SAHMR

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def _reposed(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Vertices of the shipped body posed by SMPL parameters (the check users run)."""
    return body()(**{k: v.float() for k, v in params.items()}).vertices


HEADS = {"decoder": tiny_head, "mlp": tiny_mlp_head}


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_untrained_head_gives_an_upright_body_facing_the_camera(kind):
    head = HEADS[kind](in_width=8, num_tokens=445)
    torch.manual_seed(0)
    out = head(torch.randn(2, 445, 8), torch.randn(2, 445, 3) * 0.3)
    upright = torch.tensor(UPRIGHT_FACING_CAMERA)
    assert torch.allclose(out.rotmats[:, 0], upright.expand(2, 3, 3), atol=0.05)
    assert torch.allclose(out.rotmats[:, 1:], torch.eye(3).expand(2, 23, 3, 3), atol=0.05)
    eye = out.rotmats @ out.rotmats.transpose(-1, -2)
    assert torch.allclose(eye, torch.eye(3).expand_as(eye), atol=1e-5)
    assert torch.allclose(out.joints_rel[:, 0], torch.zeros(2, 3), atol=1e-6)
    # camera y is down: the head is above (smaller y than) the pelvis
    assert (out.verts_rel[..., 1].min(dim=1).values < -0.4).all()


def test_body_model_arrays_are_not_saved():
    net = tiny_metro(param_head=tiny_head)
    keys = list(net.state_dict())
    assert any(k.startswith("param_head.queries") for k in keys)
    assert not any("body_model" in k for k in keys)
    assert not any(p.requires_grad for p in net.param_head.body_model.parameters())


@pytest.mark.parametrize("kind", sorted(HEADS))
@pytest.mark.parametrize("free_form", [False, True])
def test_metro_predict_returns_reloadable_parameters(free_form, kind):
    inputs, _ = make_batch()
    net = tiny_metro(param_head=HEADS[kind], free_form_output=free_form)
    pred = net.predict(inputs)
    if free_form:
        assert pred.params is None
        return
    verts = _reposed(pred.params)
    assert (verts - pred.verts_cam).norm(dim=-1).max() < 1e-4
    assert pred.verts_cam.shape == (2, body().num_vertices, 3)


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_sahmr_places_the_parametric_body_at_rcnets_root(kind):
    inputs, _ = make_batch()
    root = torch.tensor([[0.1, 0.2, 3.0], [-0.2, 0.0, 4.0]])
    bidx = torch.tensor([0, 0, 1])
    rc = FakeRCNet(root, root[bidx] + 0.1, torch.tensor([1, 2, 5]), bidx)
    model = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net(param_head=HEADS[kind]))
    pred = model.predict(inputs)
    assert pred.params is not None
    assert torch.allclose(pred.root_cam, root)
    verts = _reposed(pred.params)
    assert (verts - pred.verts_cam).norm(dim=-1).max() < 1e-4
    joints = body()(**pred.params).joints[:, 0]
    assert torch.allclose(joints, root, atol=1e-5)


def _offset_head(kind):
    """Factory of a small head of ``kind`` that also regresses a root offset."""
    return functools.partial(HEADS[kind], root_offset=True)


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_root_offset_starts_at_zero_then_moves_the_body_onto_the_true_root(kind):
    """RCNet's root 0.2 m off: the untrained offset keeps the body at RCNet's root (an older
    model predicts as before); training the head on the placed-body loss moves the root
    towards the truth, and the parameters still reproduce the placed body."""
    inputs, targets = make_batch(contacts=(6, 3))
    shift = torch.tensor([0.05, -0.1, 0.15])
    bidx = targets.contact_batch_idx
    rc = FakeRCNet(targets.root_cam + shift, targets.contact_points_cam,
                   targets.contact_point_region, bidx)  # fmt: skip
    model = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net(seed=2, param_head=_offset_head(kind)),
                  teacher_forcing=False)  # fmt: skip
    pred = model.predict(inputs)
    assert torch.equal(pred.root_cam, targets.root_cam + shift)
    out = model(inputs)
    assert torch.equal(out.root_given_cam, targets.root_cam + shift)
    assert torch.equal(out.body.root_offset, torch.zeros(2, 3))

    err0 = (pred.root_cam - targets.root_cam).norm(dim=-1).mean().item()
    head = model.mesh_net.param_head
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    loss_fn = SAHMRLoss()
    model.train()
    for _ in range(80):
        out = loss_fn(model(inputs, targets), targets)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    assert head.root_out.weight.grad is not None
    pred = model.predict(inputs)
    err = (pred.root_cam - targets.root_cam).norm(dim=-1).mean().item()
    assert err < 0.5 * err0, (err0, err)
    assert (_reposed(pred.params) - pred.verts_cam).norm(dim=-1).max() < 1e-4
    assert torch.allclose(body()(**pred.params).joints[:, 0], pred.root_cam, atol=1e-5)


def test_heads_without_root_offset_return_none_and_configs_enable_it_for_sahmr_only():
    from hydra import compose, initialize_config_dir

    head = tiny_mlp_head(in_width=8, num_tokens=445)
    assert head.root_out is None
    assert head(torch.randn(1, 445, 8), torch.randn(1, 445, 3)).root_offset is None
    with initialize_config_dir(config_dir=os.path.abspath(CONFIGS), version_base=None):
        sahmr = compose(overrides=["+model=sahmr_small", "+body=license_free"])
        metro = compose(overrides=["+model=metro_small", "+body=license_free"])
    assert sahmr.model.mesh_net.param_head.root_offset is True
    assert metro.model.param_head.get("root_offset", False) is False


def _perfect_body(targets) -> BodyParams:
    rot = axis_angle_to_matrix(
        torch.cat([targets.global_orient_cam[:, None], targets.body_pose.reshape(-1, 23, 3)], 1)
    )
    return tiny_head(in_width=8).pose_body(rot, targets.betas)


def test_mlp_head_refuses_another_token_count():
    head = tiny_mlp_head(in_width=8, num_tokens=445)
    with pytest.raises(ValueError, match="445"):
        head(torch.randn(1, 400, 8), torch.randn(1, 400, 3))


def test_param_terms_vanish_for_the_ground_truth_and_see_errors():
    _, targets = make_batch()
    body_gt = _perfect_body(targets)

    faces = torch.as_tensor(body().faces)

    class Out:
        pass

    Out.body = body_gt
    Out.faces = faces
    Out.verts_rel_levels = [targets.verts_cam.clone()]
    terms = ParamTerms()(Out, targets, root_used=targets.root_cam)
    for name in ("param_rot", "param_betas", "param_verts", "param_joints3d", "param_verts_abs",
                 "edge", "normal"):  # fmt: skip
        assert terms[name].item() < 1e-5, name
    # a 2 cm shift of the placement is read as a 2 cm mean vertex distance
    shifted = ParamTerms()(Out, targets, root_used=targets.root_cam + torch.tensor([0, 0.02, 0]))
    assert shifted["param_verts_abs"].item() == pytest.approx(0.02, rel=1e-4)
    # wrong shape coefficients: L1 mean of the difference, weighted
    wrong = BodyParams(**{**vars(body_gt), "betas": body_gt.betas + 0.5})
    Out.body = wrong
    assert ParamTerms(betas=1.0)(Out, targets)["param_betas"].item() == pytest.approx(0.5)


def test_edge_and_normal_terms_hand_checked():
    v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    f = torch.tensor([[0, 1, 2]])
    assert edge_length_l1(v, v, f).item() == 0.0
    # scaled by 1.1: edges 1, 1, sqrt2 grow by 0.1, 0.1, 0.1 sqrt2
    expected = (0.1 + 0.1 + 0.1 * 2**0.5) / 3
    assert edge_length_l1(v * 1.1, v, f).item() == pytest.approx(expected, rel=1e-5)
    assert normal_error(v * 1.1, v, f).item() == pytest.approx(0.0, abs=1e-6)
    flipped = v[:, [0, 2, 1]]  # same triangle, opposite winding: normals opposite
    assert normal_error(flipped, v, f).item() == pytest.approx(2.0, abs=1e-6)
    sliver = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.5, 1e-8, 0]]])
    both = torch.cat([v, sliver + 5.0], dim=1)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    pred = both.clone()
    pred[0, 5, 1] = -0.3  # wreck the sliver only: it is not scored
    assert normal_error(pred, both, faces).item() == pytest.approx(0.0, abs=1e-6)


def test_sliver_faces_give_bounded_gradients():
    """The first GPU run's relative edge term exploded on sub-millimetre edges; the terms now
    used keep gradients of a body mesh bounded."""
    _, targets = make_batch()
    free = (targets.verts_cam + 0.01 * torch.randn_like(targets.verts_cam)).requires_grad_()
    faces = torch.as_tensor(body().faces)
    loss = edge_length_l1(free, targets.verts_cam, faces) + normal_error(
        free, targets.verts_cam, faces
    )
    loss.backward()
    assert torch.isfinite(free.grad).all() and free.grad.norm() < 10.0


@pytest.mark.parametrize("kind", sorted(HEADS))
@pytest.mark.parametrize("which", ["metro", "sahmr"])
def test_parametric_training_steps_reduce_the_loss(which, kind):
    inputs, targets = make_batch(contacts=(6, 0))
    head = HEADS[kind]
    if which == "metro":
        model = tiny_metro(seed=1, param_head=head).train()
        loss_fn = MetroLoss()
    else:
        model = SAHMR(rcnet=None, mesh_net=tiny_mesh_net(seed=1, param_head=head)).train()
        loss_fn = SAHMRLoss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = last = None
    for _ in range(12):
        out = loss_fn(model(inputs, targets), targets)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        first = out.terms if first is None else first
        last = out.terms
    for name in ("param_rot", "param_verts", "edge"):
        assert name in last
    assert last["param_verts"] < first["param_verts"]
    head_grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert head_grads


def test_configs_build_parametric_models():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=os.path.abspath(CONFIGS), version_base=None):
        cfg = compose(overrides=["+model=metro_small", "+body=license_free", "+loss=metro"])
        free = compose(overrides=["+model=metro_small", "+body=license_free",
                                  "model.param_head=null"])  # fmt: skip
    model = instantiate(cfg.model)
    assert model.param_head is not None and model.parametric
    assert instantiate(free.model).param_head is None
    assert isinstance(instantiate(cfg.loss).param_terms, ParamTerms)


def _scale_head(kind):
    """Factory of a small head of ``kind`` that reads the crop's metric scale."""
    return functools.partial(HEADS[kind], crop_scale=True)


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_crop_scale_branch_starts_silent_and_requires_the_scale(kind):
    head = _scale_head(kind)(in_width=8, num_tokens=445)
    torch.manual_seed(0)
    tokens, xyz = torch.randn(2, 445, 8), torch.randn(2, 445, 3) * 0.3
    near = head(tokens, xyz, torch.tensor([1.0, 1.0]))
    far = head(tokens, xyz, torch.tensor([3.0, 0.5]))
    assert torch.equal(near.betas, far.betas) and torch.equal(near.rotmats, far.rotmats)
    with pytest.raises(ValueError, match="crop_side_m"):
        head(tokens, xyz)


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_crop_scale_lets_the_head_learn_a_size_the_crop_cannot_show(kind):
    """The tokens carry nothing; the first shape coefficient follows the crop's metric side
    (a taller person fills the same box at a larger side). Only the head that reads the side
    learns it; the other can only predict the mean."""

    def task(n: int, gen: torch.Generator):
        side_m = 2.0 * torch.exp(torch.empty(n).uniform_(-0.4, 0.4, generator=gen))
        target = 5.0 * torch.log(side_m / 2.0)  # in [-2, 2]
        tokens = torch.randn(n, 445, 8, generator=gen)
        return tokens, torch.randn(n, 445, 3, generator=gen) * 0.3, side_m, target

    errors = {}
    for crop_scale in (False, True):
        torch.manual_seed(1)
        head = HEADS[kind](in_width=8, num_tokens=445, crop_scale=crop_scale)
        opt = torch.optim.Adam(head.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(2)
        for _ in range(150):
            tokens, xyz, side_m, target = task(16, gen)
            _, betas = head.regress(tokens, xyz, side_m)
            loss = (betas[:, 0] - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        tokens, xyz, side_m, target = task(64, torch.Generator().manual_seed(3))
        with torch.no_grad():
            _, betas = head.regress(tokens, xyz, side_m)
        errors[crop_scale] = (betas[:, 0] - target).abs().mean().item()
    assert errors[False] > 0.7, errors  # |target| averages 1: nothing learned from the crop
    assert errors[True] < 0.25 * errors[False], errors


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_sahmr_gives_the_head_the_crop_side_at_the_placed_root(kind, monkeypatch):
    """SA-HMR passes ``S * z_root / fx_crop``: doubling the crop's focal length halves it."""
    inputs, _ = make_batch()
    root = torch.tensor([[0.1, 0.2, 3.0], [-0.2, 0.0, 4.0]])
    bidx = torch.tensor([0, 0, 1])
    rc = FakeRCNet(root, root[bidx] + 0.1, torch.tensor([1, 2, 5]), bidx)
    model = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net(param_head=_scale_head(kind)))
    head = model.mesh_net.param_head
    seen = []
    regress_all = head.regress_all

    def spy(tokens, xyz, side=None):
        seen.append(side)
        return regress_all(tokens, xyz, side)

    monkeypatch.setattr(head, "regress_all", spy)
    pred = model.predict(inputs)
    expected = inputs.crop_size * root[:, 2] / inputs.K_crop[:, 0, 0]
    torch.testing.assert_close(seen[-1], expected)
    assert (_reposed(pred.params) - pred.verts_cam).norm(dim=-1).max() < 1e-4

    # a trained branch: the body's shape now follows the crop's metric size
    branch = head.scale_embed if kind == "decoder" else head.scale_net
    torch.nn.init.normal_(branch[-1].weight, std=0.5)
    zoomed = inputs.to("cpu")
    zoomed.K_crop = inputs.K_crop.clone()
    zoomed.K_crop[:, :2, :2] *= 2.0
    a, b = model.predict(inputs), model.predict(zoomed)
    torch.testing.assert_close(seen[-1], expected / 2)
    assert not torch.allclose(a.params["betas"], b.params["betas"])


def test_crop_scale_head_continues_a_checkpoint_without_it_unchanged(tmp_path):
    """Weights of a head without the branch load into one with it (only the branch is
    missing) and predict exactly as before; the SA-HMR small config reads the scale."""
    from hydra import compose, initialize_config_dir

    from sahmr.engine.checkpoint import load_initial_weights, save_checkpoint

    inputs, _ = make_batch()
    root = torch.tensor([[0.1, 0.2, 3.0], [-0.2, 0.0, 4.0]])
    bidx = torch.tensor([0, 0, 1])
    rc = FakeRCNet(root, root[bidx] + 0.1, torch.tensor([1, 2, 5]), bidx)
    old = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net(seed=4, param_head=tiny_mlp_head))
    path = save_checkpoint(tmp_path / "old.pt", model=old, config={"model": {}})
    new = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net(seed=5, param_head=_scale_head("mlp")))
    report = load_initial_weights(new, path)
    assert report["missing"] and all("scale_net" in k for k in report["missing"])
    a, b = old.predict(inputs), new.predict(inputs)
    assert torch.equal(a.verts_cam, b.verts_cam)

    with initialize_config_dir(config_dir=os.path.abspath(CONFIGS), version_base=None):
        sahmr = compose(overrides=["+model=sahmr_small", "+body=license_free"])
        metro = compose(overrides=["+model=metro_small", "+body=license_free"])
    assert sahmr.model.mesh_net.param_head.crop_scale is True
    assert metro.model.param_head.get("crop_scale", False) is False


def test_scene_penetration_is_the_placed_bodys_mean_depth_in_its_room():
    """A room whose SDF is a floor plane (linear: trilinear lookups are exact up to the float16
    nodes): the term is the weight times the mean of ``relu(plane height - vertex height)``
    over frames and vertices, the body placed at the root used, in the world frame."""
    import numpy as np

    from sahmr.geometry.cameras import camera_to_world
    from sahmr.scene.sdf import SDFGrid
    from sahmr.scene.sdf_store import SceneSDFStore

    _, targets = make_batch()
    g = torch.Generator().manual_seed(1)
    yaw = torch.rand(targets.batch_size, generator=g) * 6.0
    T = torch.eye(4).repeat(targets.batch_size, 1, 1)  # cameras looking along world y
    T[:, :3, :3] = axis_angle_to_matrix(torch.stack([yaw * 0, yaw * 0, yaw], -1)) @ torch.tensor(
        [[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]
    )
    T[:, :3, 3] = torch.tensor([0.2, 1.5, -0.3])
    targets.T_w2c = T
    placed_world = camera_to_world(T.double(), targets.verts_cam.double())
    lo = placed_world.reshape(-1, 3).amin(0) - 0.5
    hi = placed_world.reshape(-1, 3).amax(0) + 0.5
    floor = float(placed_world[..., 2].median())  # about half the vertices below it
    voxel = 0.05
    n = ((hi - lo) / voxel).ceil().long() + 1
    z = lo[2].item() + voxel * np.arange(int(n[2]))
    values = np.broadcast_to((z - floor)[:, None, None], (int(n[2]), int(n[1]), int(n[0])))
    store = SceneSDFStore()
    store.add("room", SDFGrid(lo.numpy().astype(np.float32), voxel, values.astype(np.float32)))
    targets.scene_sdf = store.frames(torch.zeros(targets.batch_size, dtype=torch.long))

    class Out:
        pass

    Out.body = _perfect_body(targets)
    Out.faces = None
    terms = ParamTerms(penetration=30.0)(Out, targets, root_used=targets.root_cam)
    want = 30.0 * torch.relu(floor - placed_world[..., 2]).mean()
    assert want > 1.0
    assert terms["scene_penetration"].item() == pytest.approx(want.item(), abs=2e-3)
    # the term's gradient lifts the body out of the floor (the root moves up in the world)
    root = targets.root_cam.clone().requires_grad_(True)
    ParamTerms(penetration=30.0)(Out, targets, root_used=root)["scene_penetration"].backward()
    up_world = (root.grad[:, None] @ T[:, :3, :3].double().float()).squeeze(1)[:, 2]
    assert (up_world < 0).all()  # descending the loss raises the body
    assert "scene_penetration" not in ParamTerms()(Out, targets, root_used=targets.root_cam)
    targets.scene_sdf = None
    with pytest.raises(ValueError, match="scene_sdf"):
        ParamTerms(penetration=1.0)(Out, targets, root_used=targets.root_cam)
    with pytest.raises(ValueError, match=">= 0"):
        ParamTerms(penetration=-1.0)

"""Refitting SA-HMR's parametric head on cached encoder outputs (sahmr.engine.head_refit)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _mesh_net_cases import FakeRCNet, make_batch, tiny_mesh_net, tiny_mlp_head

from sahmr.engine.head_refit import (
    HeadCache,
    collect_head_inputs,
    copy_state,
    placed_vertex_error_mm,
    refit_head,
)
from sahmr.models.sahmr import SAHMR

REPO = Path(__file__).resolve().parents[2]


def _model_and_steps(shift=(0.05, -0.08, 0.12)):
    """A tiny SA-HMR whose RCNet root is off by ``shift`` and two prepared steps."""
    steps = []
    for seed in (0, 1):
        inputs, targets = make_batch(contacts=(4, 2), seed=seed)
        frames = SimpleNamespace(scene_id=["room", "room"])  # the frames' room (scene name)
        steps.append(SimpleNamespace(inputs=inputs, frame_targets=targets, frames=frames))
    t0 = steps[0].frame_targets
    rc = FakeRCNet(t0.root_cam + torch.tensor(shift), t0.contact_points_cam,
                   t0.contact_point_region, t0.contact_batch_idx)  # fmt: skip
    head = functools.partial(tiny_mlp_head, root_offset=True, crop_scale=True)
    model = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net(seed=3, param_head=head), teacher_forcing=False)
    return model, steps


def test_cache_holds_what_the_head_reads_and_the_true_body():
    model, steps = _model_and_steps()
    cache = collect_head_inputs(model, steps[:1])
    inputs, targets = steps[0].inputs, steps[0].frame_targets
    assert len(cache) == 2
    # the true body posed from the parameters is the stored one
    placed_gt = cache.verts_rel + cache.root_cam[:, None]
    assert (placed_gt - targets.verts_cam).norm(dim=-1).max() < 1e-4
    # the head's inputs: RCNet's root and the crop side at its depth
    given = model.rcnet.root
    torch.testing.assert_close(cache.root_given_cam, given)
    side_m = inputs.crop_size * given[:, 2] / inputs.K_crop[:, 0, 0]
    torch.testing.assert_close(cache.crop_side_m, side_m)
    # the cache reproduces the model's own prediction error (slow reference: predict)
    pred = model.predict(inputs)
    err = 1000 * (pred.verts_cam - targets.verts_cam).norm(dim=-1).mean().item()
    assert placed_vertex_error_mm(model.mesh_net.param_head, cache) == pytest.approx(err, rel=1e-3)


def test_refit_lowers_the_placed_error_and_keeps_the_best_weights():
    model, steps = _model_and_steps()
    cache = collect_head_inputs(model, steps)
    assert len(cache) == 4
    head = model.mesh_net.param_head
    frozen = {k: v.clone() for k, v in model.mesh_net.encoder.state_dict().items()}
    report = refit_head(head, cache, cache, steps=120, batch_size=4, lr=3e-3, val_every=40)
    assert report["best_val_mm"] < 0.7 * report["start_val_mm"], report
    assert placed_vertex_error_mm(head, cache) == pytest.approx(report["best_val_mm"], rel=1e-5)
    assert [r["step"] for r in report["history"]] == [40, 80, 120]
    for k, v in model.mesh_net.encoder.state_dict().items():  # only the head moved
        assert torch.equal(v, frozen[k])
    # a diverging run (huge LR) does not replace the weights it started from
    before = {k: v.clone() for k, v in head.state_dict().items()}
    start = placed_vertex_error_mm(head, cache)
    report = refit_head(head, cache, cache, steps=20, batch_size=4, lr=50.0, val_every=10)
    if report["best_step"] == 0:
        for k, v in head.state_dict().items():
            assert torch.equal(v, before[k])
    assert placed_vertex_error_mm(head, cache) <= start + 1e-6


def test_cache_rows_and_cat_keep_frames_in_order():
    model, steps = _model_and_steps()
    a, b = (collect_head_inputs(model, [s]) for s in steps)
    both = HeadCache.cat([a, b])
    torch.testing.assert_close(both.rows(torch.tensor([2, 3])).verts_rel, b.verts_rel)
    torch.testing.assert_close(both.rows(torch.tensor([0])).tokens, a.tokens[:1])


def test_collect_refuses_frames_without_parameters():
    model, steps = _model_and_steps()
    steps[0].frame_targets.betas = None
    with pytest.raises(ValueError, match="parameters"):
        collect_head_inputs(model, steps[:1])


@pytest.mark.parametrize("case", ["no_checkpoint", "no_dataset", "same_file", "both_scene_flags"])
def test_refit_tool_refuses_bad_inputs_in_one_line(case, tmp_path):
    ckpt = REPO / "sahmr" / "checkpoints" / "sahmr_small.pt"
    args = {
        "no_checkpoint": [str(tmp_path / "missing.pt"), str(tmp_path), str(tmp_path / "o.pt")],
        "no_dataset": [str(ckpt), str(tmp_path), str(tmp_path / "o.pt")],
        "same_file": [str(ckpt), str(tmp_path), str(ckpt)],
        "both_scene_flags": [
            str(ckpt),
            str(tmp_path),
            str(tmp_path / "o.pt"),
            "--no-scene",
            "--no-scene-frames",
            "10",
        ],
    }[case]
    if case in ("same_file", "both_scene_flags"):
        (tmp_path / "dataset.json").write_text("{}")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "refit_head.py"), *args],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()[-1]) > 0 and "error:" in proc.stderr
    assert not (tmp_path / "o.pt").exists()


def test_cache_saves_and_loads_without_unpickling(tmp_path):
    model, steps = _model_and_steps()
    cache = collect_head_inputs(model, steps[:1])
    cache.save(tmp_path / "c.pt")
    back = HeadCache.load(tmp_path / "c.pt")
    for name in ("tokens", "verts_rel", "crop_side_m", "rotmats"):
        assert torch.equal(getattr(back, name), getattr(cache, name))


def test_refit_tool_builds_the_scene_less_ablation():
    """``--no-scene``: the shipped model rebuilt with ``scene_contacts: false`` in the config
    it stores, so the refitted checkpoint evaluates without contacts too."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("refit_head", REPO / "tools" / "refit_head.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    ckpt = REPO / "sahmr" / "checkpoints" / "sahmr_small.pt"
    method, cfg, _ = tool.build(ckpt, True, torch.device("cpu"), scene=False)
    assert method.scene_contacts is False and cfg.model.scene_contacts is False
    method, cfg, _ = tool.build(ckpt, True, torch.device("cpu"))
    assert method.scene_contacts is True


def test_refit_tool_cache_plan_mixes_conditions():
    """``--no-scene-frames M``: M more train frames (and the val frames again) cached without
    contacts, under their own file names; nothing extra for a plain or scene-less refit."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("refit_head", REPO / "tools" / "refit_head.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.cache_plan(7000, 600, True) == [
        ("train", 7000, True, "train_7000.pt"),
        ("val", 600, True, "val_600.pt"),
    ]
    assert tool.cache_plan(7000, 600, True, 3000) == [
        ("train", 7000, True, "train_7000.pt"),
        ("val", 600, True, "val_600.pt"),
        ("train", 3000, False, "train_3000_noscene.pt"),
        ("val", 600, False, "val_600_noscene.pt"),
    ]
    assert tool.cache_plan(3000, 600, False, 0) == [
        ("train", 3000, False, "train_3000_noscene.pt"),
        ("val", 600, False, "val_600_noscene.pt"),
    ]


def test_encoder_digest_changes_with_the_encoder_not_the_head():
    """A head cache depends on everything before the head: a refit of a refit reuses it, any
    other change of weights rebuilds it."""
    from sahmr.engine.head_refit import encoder_digest

    model, _ = _model_and_steps()
    start = encoder_digest(model)
    with torch.no_grad():
        next(model.mesh_net.param_head.parameters()).add_(1.0)
    assert encoder_digest(model) == start
    with torch.no_grad():
        next(model.mesh_net.encoder.parameters()).add_(1e-3)
    assert encoder_digest(model) != start


def test_refit_reports_each_improvement_with_its_weights():
    """``on_best`` sees every val improvement while the head holds those weights: the last
    call's weights are the ones the refit keeps."""
    model, steps = _model_and_steps()
    cache = collect_head_inputs(model, steps)
    head = model.mesh_net.param_head
    seen = []
    report = refit_head(head, cache, cache, steps=60, batch_size=4, lr=3e-3, val_every=10,
                        on_best=lambda row: seen.append((row, copy_state(head))))  # fmt: skip
    assert seen, "a refit that lowers the error reports at least one improvement"
    errors = [row["val_mm"] for row, _ in seen]
    assert errors == sorted(errors, reverse=True) and len(set(errors)) == len(errors)
    assert seen[-1][0]["step"] == report["best_step"]
    assert errors[-1] == pytest.approx(report["best_val_mm"])
    for k, v in head.state_dict().items():
        assert torch.equal(v, seen[-1][1][k])
    improved = [r["step"] for r in report["history"] if r["val_mm"] in errors]
    assert improved == [row["step"] for row, _ in seen]


def test_edge_decomposition_rows_by_hand():
    """Each row poses the body from its mix of predicted and true parameters; scored against
    the cached true body, frame by frame here (slow reference). With the truth set to the
    head's own prediction, every row that uses the predicted shape scores 0."""
    from sahmr.engine.shape_probe import edge_decomposition, predict_cached
    from sahmr.evaluation.metrics import edge_length_error, mesh_edges

    model, steps = _model_and_steps()
    cache = collect_head_inputs(model, steps)
    head = model.mesh_net.param_head
    rows = edge_decomposition(head, cache, true_prefixes=(1, 2), batch_size=3)
    betas_p, rot_p = predict_cached(head, cache)
    edges = mesh_edges(torch.as_tensor(head.body_model.faces))

    def by_hand(rot, betas):
        errors = [edge_length_error(head.pose_body(rot[i:i + 1], betas[i:i + 1]).verts_rel
                                    .double(), cache.verts_rel[i:i + 1].double(), edges)
                  for i in range(len(cache))]  # fmt: skip
        return float(torch.cat(errors).mean())

    prefix = torch.zeros_like(betas_p)
    prefix[:, :2] = cache.betas[:, :2]
    # percent; float32 posing in batches vs one by one differs by ~1e-4 % (a near-zero row
    # such as the true pose with these frames' near-mean shape is all rounding)
    close = functools.partial(pytest.approx, rel=1e-5, abs=1e-3)
    assert rows["predicted"] == close(by_hand(rot_p, betas_p))
    assert rows["true pose, mean shape"] == close(by_hand(cache.rotmats, torch.zeros_like(betas_p)))
    assert rows["predicted pose, true betas[:2]"] == close(by_hand(rot_p, prefix))
    assert set(rows) == {
        "predicted",
        "predicted pose, true shape",
        "true pose, predicted shape",
        "predicted pose, mean shape",
        "true pose, mean shape",
        "predicted pose, true betas[:1]",
        "predicted pose, true betas[:2]",
    }
    assert rows["predicted"] > 0.1
    # the truth replaced by the prediction: the predicted shape scores 0 whatever the pose
    own = HeadCache(**{**cache.__dict__, "betas": betas_p, "rotmats": rot_p,
                       "verts_rel": head.pose_body(rot_p, betas_p).verts_rel})  # fmt: skip
    rows = edge_decomposition(head, own)
    for name in ("predicted", "predicted pose, true shape", "true pose, predicted shape"):
        assert rows[name] < 1e-4, name
    # ... and the two poses are one
    assert rows["predicted pose, mean shape"] == pytest.approx(rows["true pose, mean shape"])


def test_linear_shape_probe_finds_a_linear_code_and_not_noise():
    """Betas written linearly into the tokens' mean come back (R^2 ~ 1 on other frames);
    betas independent of the tokens do not (R^2 ~ 0 or below)."""
    from sahmr.engine.shape_probe import linear_shape_probe

    gen = torch.Generator().manual_seed(0)

    def cache(n: int, coded: bool) -> HeadCache:
        betas = torch.randn(n, 4, generator=gen)
        tokens = 0.3 * torch.randn(n, 5, 16, generator=gen)
        if coded:
            tokens[:, :, :4] += betas[:, None, :] @ torch.eye(4) * 2.0
        zeros = torch.zeros(n, 3)
        return HeadCache(
            tokens=tokens.half(), xyz_rel=torch.zeros(n, 5, 3), crop_side_m=torch.full((n,), 2.0),
            root_given_cam=zeros, betas=betas, rotmats=torch.eye(3).expand(n, 24, 3, 3),
            root_cam=zeros, verts_rel=torch.zeros(n, 2, 3), joints14_rel=torch.zeros(n, 14, 3),
        )  # fmt: skip

    coded = linear_shape_probe(cache(400, True), cache(200, True), ridge=1.0)
    assert min(coded["r2"]) > 0.95 and coded["l1"] < 0.3 * coded["l1_mean_shape"]
    noise = linear_shape_probe(cache(400, False), cache(200, False), ridge=1.0)
    assert max(noise["r2"]) < 0.1 and noise["betas"].shape == (200, 4)


def test_r2_per_coefficient_by_hand():
    from sahmr.engine.shape_probe import r2_per_coefficient

    true = torch.tensor([[1.0, 0.0], [2.0, 1.0], [4.0, 2.0]])
    pred = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    # column 0: SS_res 1, SS_tot 42/9; column 1: the true mean, R^2 0
    assert r2_per_coefficient(pred, true) == pytest.approx([1 - 9 / 42, 0.0])
    assert r2_per_coefficient(true, true) == pytest.approx([1.0, 1.0])


# ----------------------------------------------------------------- scene penetration term


def _plane_grid(normal, offset: float, lo, hi, voxel: float = 0.1):
    """`SDFGrid` of the half-space ``normal . p + offset >= 0`` (free) over the box
    ``lo..hi`` (world, metres): its SDF is linear, so trilinear reads are exact."""
    from sahmr.scene.sdf import SDFGrid

    lo, normal = np.asarray(lo, np.float64), np.asarray(normal, np.float64)
    n = np.round((np.asarray(hi) - lo) / voxel).astype(int) + 1
    z, y, x = np.meshgrid(*(lo[a] + voxel * np.arange(n[a]) for a in (2, 1, 0)), indexing="ij")
    values = normal[0] * x + normal[1] * y + normal[2] * z + offset  # (D, H, W)
    return SDFGrid(lo.astype(np.float32), voxel, values.astype(np.float32))


def _tilted_camera(seed: int = 0) -> torch.Tensor:
    """T_w2c (4, 4) float64 of a camera at (2.5, -2, 1.6) m with a random rotation."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))  # fmt: skip
    R = q * torch.sign(torch.diagonal(r))
    R = R if torch.det(R) > 0 else -R
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3] = R, -R @ torch.tensor([2.5, -2.0, 1.6], dtype=torch.float64)
    return T


FLOOR_Z = 0.1  # world z up; the synthetic room is the half-space above this floor


def _floor_scene(lo_z: float = -1.5):
    """A floor room in world axes (grid down to ``lo_z``), a tilted camera, a true root."""
    from sahmr.geometry.cameras import world_to_camera

    grid = _plane_grid((0, 0, 1), -FLOOR_Z, (-3, -3, lo_z), (3, 3, 3.5))
    T = _tilted_camera()
    root_world = torch.tensor([[0.3, -0.2, 0.9]], dtype=torch.float64)
    return grid, T, world_to_camera(T, root_world)


def test_sdf_crop_read_with_grid_sample_is_the_room_sdf_at_each_point():
    """Points around the root (camera frame, tilted camera): the crop read by `crop_sdf` equals
    the slow reference, the room's grid at each point's world position (and the plane's
    analytic value); points beyond the cube read OUTSIDE_CROP_SDF_M; the float16 crop the
    cache stores agrees to float16 rounding."""
    from sahmr.engine.head_refit import (
        OUTSIDE_CROP_SDF_M,
        SDF_CROP_NODES,
        SDF_CROP_SPACING_M,
        crop_sdf,
        sdf_crop_cam,
    )
    from sahmr.geometry.cameras import camera_to_world

    grid, T, root_cam = _floor_scene()
    crop = sdf_crop_cam(grid, root_cam, T[None])
    assert crop.shape == (1, *(SDF_CROP_NODES,) * 3) and crop.dtype == torch.float64
    half = SDF_CROP_SPACING_M * (SDF_CROP_NODES - 1) / 2
    gen = torch.Generator().manual_seed(1)
    points = root_cam[:, None] + (torch.rand(1, 500, 3, generator=gen, dtype=torch.float64)
                                  * 2 - 1) * 1.2 * half  # fmt: skip
    inside = (points - root_cam[:, None]).abs().amax(-1) <= half
    assert 100 < int(inside.sum()) < 500
    sdf = crop_sdf(points, root_cam, crop)
    world = camera_to_world(T[None], points)
    reference = grid.sample(world)  # slow reference: the room itself at each point
    # equal but for the room grid's float32 node values (a plane rounded to float32 is not
    # exactly linear): 1e-6 m
    torch.testing.assert_close(sdf[inside], reference[inside], rtol=0, atol=1e-6)
    torch.testing.assert_close(sdf[inside], world[..., 2][inside] - FLOOR_Z, rtol=0, atol=1e-6)
    assert (sdf[~inside] == OUTSIDE_CROP_SDF_M).all()
    assert (sdf[inside] < 0).any() and (sdf[inside] > 0).any()  # the floor crosses the cube
    # the node on the root, and the stored float16 crop read in float32 (training's dtypes)
    c = SDF_CROP_NODES // 2
    assert float(crop[0, c, c, c]) == pytest.approx(0.9 - FLOOR_Z, abs=1e-6)
    half_sdf = crop_sdf(points.float(), root_cam.float(), crop.half())
    torch.testing.assert_close(half_sdf[inside], reference[inside].float(), rtol=1e-3, atol=2e-4)


def test_sdf_crop_keeps_the_sign_beyond_the_room_grid():
    """Crop nodes below the room's grid take the border value (still inside the floor), not
    `SDFGrid.sample`'s positive distance-to-the-box continuation."""
    from sahmr.engine.head_refit import crop_offsets_cam, sdf_crop_cam
    from sahmr.geometry.cameras import camera_to_world

    grid, T, root_cam = _floor_scene(lo_z=-0.3)
    crop = sdf_crop_cam(grid, root_cam, T[None])[0]
    nodes_world = camera_to_world(T, root_cam + crop_offsets_cam().reshape(-1, 3))
    z = nodes_world[:, 2].reshape(crop.shape)
    assert float(z.min()) < -1.0  # the cube reaches well below the grid
    assert (crop[z < FLOOR_Z] < 0).all()
    torch.testing.assert_close(crop, (z.clamp_min(-0.3) - FLOOR_Z), rtol=0, atol=1e-6)
    assert float(grid.sample(nodes_world).max()) > 0.9 + 1.0  # what the plain lookup says


def test_penetration_term_by_hand_and_its_gradient_lifts_the_body():
    """Above the floor the term is 0; sunk by known depths it is their mean; its gradient on
    a rigid shift of the body points down the floor normal, so descent lifts the body."""
    from sahmr.engine.head_refit import scene_penetration, sdf_crop_cam
    from sahmr.geometry.cameras import world_to_camera

    grid, T, root_cam = _floor_scene()
    crop = sdf_crop_cam(grid, root_cam, T[None]).float()
    gen = torch.Generator().manual_seed(2)
    # a body-sized cloud around the root, 1 cm above the floor at its lowest
    cloud = torch.rand(1, 400, 3, generator=gen, dtype=torch.float64) * torch.tensor(
        [0.5, 0.4, 1.0], dtype=torch.float64)  # fmt: skip
    cloud = cloud - cloud.mean(1, keepdim=True) + torch.tensor([0.3, -0.2, 0.9])
    cloud[..., 2] += FLOOR_Z + 0.01 - cloud[..., 2].min()

    def term(points_world: torch.Tensor) -> torch.Tensor:
        return scene_penetration(world_to_camera(T, points_world).float(), root_cam.float(), crop)

    assert float(term(cloud)) == 0.0
    sink = 0.25
    sunk = cloud - torch.tensor([0.0, 0.0, sink], dtype=torch.float64)
    depth = (FLOOR_Z - sunk[..., 2]).clamp_min(0)  # by hand
    assert 0 < float((depth > 0).float().mean()) < 1
    assert float(term(sunk)) == pytest.approx(float(depth.mean()), abs=2e-6)

    # gradient on a camera-frame shift of the sunk body: - grad is the floor's normal
    shift = torch.zeros(3, requires_grad=True)
    sunk_cam = world_to_camera(T, sunk).float()
    scene_penetration(sunk_cam + shift, root_cam.float(), crop).sum().backward()
    up_cam = T[:3, :3].float() @ torch.tensor([0.0, 0.0, 1.0])
    fraction = float((depth > 0).float().mean())
    torch.testing.assert_close(-shift.grad, fraction * up_cam, rtol=0, atol=1e-5)
    with torch.no_grad():  # one descent step of 5 cm lifts it, and the term drops by that much
        lifted = sunk_cam - 0.05 * shift.grad / shift.grad.norm()
        after = scene_penetration(lifted, root_cam.float(), crop)
    lifted_depth = (FLOOR_Z - sunk[..., 2] - 0.05).clamp_min(0)
    assert float(after) == pytest.approx(float(lifted_depth.mean()), abs=2e-6)
    assert float(after) < float(term(sunk))


def _floor_crops(tmp_path, floor_y: float):
    """`RoomSDFCrops` of a folder holding one room ``room`` whose SDF is a floor at camera
    y = ``floor_y`` (the test frames' camera is the world: y down, free space above)."""
    from sahmr.engine.head_refit import RoomSDFCrops

    (tmp_path / "room.ply").write_bytes(b"")  # resolved by name; the loader builds the grid
    grid = _plane_grid((0, -1, 0), floor_y, (-3, -3, 0), (3, 3, 6))
    return RoomSDFCrops(tmp_path, loader=lambda path, **kw: grid), grid


def test_collect_keeps_a_room_crop_around_each_true_root(tmp_path):
    from sahmr.engine.head_refit import SDF_CROP_NODES, sdf_crop_cam

    model, steps = _model_and_steps()
    crops, grid = _floor_crops(tmp_path, 0.3)
    cache = collect_head_inputs(model, steps, crops)
    assert cache.sdf_crop.shape == (4, *(SDF_CROP_NODES,) * 3)
    assert cache.sdf_crop.dtype == torch.float16
    assert crops.loads == 1  # one room, loaded once for all frames
    expected = sdf_crop_cam(grid, cache.root_cam, torch.eye(4).expand(4, 4, 4))
    torch.testing.assert_close(cache.sdf_crop.double(), expected, rtol=1e-3, atol=1e-4)
    c = SDF_CROP_NODES // 2
    on_root = 0.3 - cache.root_cam[:, 1].double()  # the floor's distance below each root
    torch.testing.assert_close(cache.sdf_crop[:, c, c, c].double(), on_root, rtol=1e-3, atol=1e-4)
    assert collect_head_inputs(model, steps).sdf_crop is None
    with pytest.raises(ValueError, match="not found"):
        crops(["elsewhere"], torch.eye(4)[None], torch.zeros(1, 3))


def test_penetration_weight_zero_or_no_crops_leaves_the_loss_as_before(tmp_path):
    from dataclasses import replace

    from sahmr.engine.head_refit import (
        RefitWeights,
        head_losses,
        placed_bodies,
        placed_vertices,
        scene_penetration,
    )

    model, steps = _model_and_steps()
    crops, _ = _floor_crops(tmp_path, 0.0)  # a floor through the pelvis: the legs sink
    cache = collect_head_inputs(model, steps, crops)
    plain = replace(cache, sdf_crop=None)
    head = model.mesh_net.param_head.eval()
    before = head_losses(head, plain, RefitWeights())
    assert torch.equal(head_losses(head, cache, RefitWeights()), before)
    assert torch.equal(head_losses(head, plain, RefitWeights(penetration=3.0)), before)
    with torch.no_grad():
        body, _ = placed_bodies(head, cache)
        depth = scene_penetration(placed_vertices(body, cache), cache.root_cam, cache.sdf_crop)
    assert float(depth.min()) > 0.01  # every frame's predicted body is partly below
    weighted = head_losses(head, cache, RefitWeights(penetration=3.0)).detach()
    assert float(weighted - before.detach()) == pytest.approx(3.0 * float(depth.mean()), rel=1e-5)


def test_refit_with_a_penetration_weight_reports_the_crop_pene(tmp_path):
    """History rows and the report carry the crop PenE of val (sum over vertices, mm); a
    heavy weight ends with less of it than a refit without the term; the best step is still
    the one of the lowest vertex error."""
    from dataclasses import replace

    from sahmr.engine.head_refit import RefitWeights, validation_scores
    from sahmr.evaluation.metrics import MM_PER_M

    model, steps = _model_and_steps()
    crops, _ = _floor_crops(tmp_path, 0.0)
    cache = collect_head_inputs(model, steps, crops)
    head = model.mesh_net.param_head
    start_state = copy_state(head)
    scores = validation_scores(head, cache)
    assert scores["val_pene_mm"] > 0
    # the slow way: sum over the vertices of each frame's depth, mean over frames
    from sahmr.engine.head_refit import crop_sdf, placed_bodies, placed_vertices

    with torch.no_grad():
        head.eval()
        body, _ = placed_bodies(head, cache)
        sdf = crop_sdf(placed_vertices(body, cache), cache.root_cam, cache.sdf_crop)
        by_hand = float(torch.relu(-sdf).sum(dim=1).mean()) * MM_PER_M
    assert scores["val_pene_mm"] == pytest.approx(by_hand, rel=1e-5)

    ends = {}
    for weight in (0.0, 30.0):
        head.load_state_dict(start_state)
        report = refit_head(head, cache, cache, steps=60, batch_size=4, lr=3e-3, val_every=20,
                            weights=RefitWeights(penetration=weight))  # fmt: skip
        assert all("val_pene_mm" in row for row in report["history"])
        assert report["start_val_pene_mm"] == pytest.approx(scores["val_pene_mm"])
        best = min(report["history"], key=lambda r: r["val_mm"])
        if best["val_mm"] < report["start_val_mm"]:
            assert report["best_step"] == best["step"]
            assert report["best_val_pene_mm"] == pytest.approx(best["val_pene_mm"])
        ends[weight] = report["history"][-1]["val_pene_mm"]
    assert ends[30.0] < ends[0.0]
    with pytest.raises(ValueError, match="SDF crops"):
        refit_head(head, replace(cache, sdf_crop=None), steps=1,
                   weights=RefitWeights(penetration=1.0))  # fmt: skip
    with pytest.raises(ValueError, match=">= 0"):
        refit_head(head, cache, steps=1, weights=RefitWeights(penetration=-1.0))


def test_old_cache_without_crops_loads_and_crops_round_trip(tmp_path):
    """A file saved before ``sdf_crop`` existed (no such key) loads with None; a cache with
    crops saves and loads them; caches with and without crops do not mix."""
    from dataclasses import asdict

    model, steps = _model_and_steps()
    crops, _ = _floor_crops(tmp_path, 0.3)
    with_crops = collect_head_inputs(model, steps[:1], crops)
    old = {k: v for k, v in asdict(with_crops).items() if k != "sdf_crop"}
    torch.save(old, tmp_path / "old.pt")
    back = HeadCache.load(tmp_path / "old.pt")
    assert back.sdf_crop is None and torch.equal(back.verts_rel, with_crops.verts_rel)
    with_crops.save(tmp_path / "new.pt")
    back = HeadCache.load(tmp_path / "new.pt")
    assert torch.equal(back.sdf_crop, with_crops.sdf_crop)
    assert back.rows(torch.tensor([1])).sdf_crop.shape[0] == 1
    with pytest.raises(ValueError, match="sdf_crop"):
        HeadCache.cat([with_crops, HeadCache.load(tmp_path / "old.pt")])


def test_cache_action_reuses_builds_or_only_adds_crops():
    from sahmr.engine.head_refit import cache_action, cache_key

    plain = cache_key("enc", "/d", "val", 2, 4, True)
    cropped = cache_key("enc", "/d", "val", 2, 4, True, sdf_crop=True)
    old = {k: v for k, v in plain.items() if k != "sdf_crop"}  # written before crops existed
    assert cropped["sdf_crop"]["nodes"] == 33 and plain["sdf_crop"] is None
    assert cache_action(None, plain) == "build"
    assert cache_action(plain, plain) == cache_action(old, plain) == "reuse"
    assert cache_action(cropped, plain) == "reuse"  # crops not asked for are dropped
    assert cache_action(plain, cropped) == cache_action(old, cropped) == "add_crops"
    assert cache_action(cropped, cropped) == "reuse"
    assert cache_action({**cropped, "sdf_crop": {"nodes": 17}}, cropped) == "add_crops"
    assert cache_action({**plain, "encoder_sha256": "other"}, cropped) == "build"


def test_crops_added_later_are_the_collected_ones_and_frames_are_checked(tmp_path):
    from dataclasses import replace

    from sahmr.engine.head_refit import with_sdf_crops

    model, steps = _model_and_steps()
    crops, _ = _floor_crops(tmp_path, 0.3)
    cache = collect_head_inputs(model, steps, crops)
    names, cams = ["room"] * 4, torch.eye(4, dtype=torch.float64).expand(4, 4, 4)
    added = with_sdf_crops(replace(cache, sdf_crop=None), names, cams, cache.root_cam, crops,
                           batch_size=3)  # fmt: skip
    assert torch.equal(added.sdf_crop, cache.sdf_crop)
    with pytest.raises(ValueError, match="not the frames"):
        with_sdf_crops(cache, names, cams, cache.root_cam + 0.01, crops)

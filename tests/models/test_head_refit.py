"""Refitting SA-HMR's parametric head on cached encoder outputs (sahmr.engine.head_refit)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

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
        steps.append(SimpleNamespace(inputs=inputs, frame_targets=targets))
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

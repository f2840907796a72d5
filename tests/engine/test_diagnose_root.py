"""tools/diagnose_root.py and sahmr.engine.root_diagnosis: per-stage root errors."""

from __future__ import annotations

import json

import pytest
import torch
from engine_testkit import load_tool

from sahmr.engine.root_diagnosis import RootErrors, diagnose_roots, markdown_table, summarise


def test_summarise_hand_numbers():
    rows = [
        RootErrors("a", 2.0, 100.0, 90.0, 50.0, (80.0, 60.0), (70.0, 40.0)),
        RootErrors("a", 4.0, 300.0, 10.0, 70.0, (40.0, 20.0), (30.0, 20.0)),
        RootErrors("b", 6.0, 500.0, 50.0, 90.0, (10.0, 10.0), (10.0, 10.0)),
    ]
    table = summarise(rows, (0, 2))
    assert [r["scene"] for r in table] == ["a", "b", "all"]
    a, b, every = table
    assert a["frames"] == 2 and a["depth_m"] == 3.0 and a["coarse_mm"] == 200.0
    assert a["coarse_depth_mm"] == 50.0 and a["gt_roi_mm"] == 60.0
    assert a["voted_mm_r0"] == 60.0 and a["voted_mm_r2"] == 40.0
    assert a["final_mm_r0"] == 50.0 and a["final_mm_r2"] == 30.0
    assert b["final_mm_r2"] == 10.0
    assert every["frames"] == 3 and every["coarse_mm"] == 300.0 and every["final_mm_r0"] == 110 / 3
    text = markdown_table(table, (0, 2))
    assert text.count("\n") == 4 and "| all | 3 | 4.0 | 300.0 |" in text


def test_tool_matches_the_model_run_directly(tiny_dataset, tmp_path, capsys, shipped_checkpoint):
    """The tool's final root error at 0 and 1 refinements is the placed body's root error of
    ``predict`` with that option; its GT-centred vote is RCNet's vote from an ROI at the ground
    truth; the library leaves the model's own option as it was."""
    from hydra.utils import instantiate

    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.engine.checkpoint import load_method
    from sahmr.engine.data import LoaderSettings, StepPreparer, build_loader, build_scene_bank

    shipped = shipped_checkpoint
    out = tmp_path / "root.json"
    tool = load_tool("diagnose_root")
    assert tool.main([str(shipped), str(tiny_dataset), "--split", "val", "--every", "1",
                      "--refinements", "0", "1", "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| all | 4 |" in printed
    report = json.loads(out.read_text())
    every = report["rooms"][-1]
    assert report["refinements"] == [0, 1] and every["frames"] == 4

    model, cfg = load_method(shipped)
    own = model.rcnet.roi_refinements  # the shipped config's choice
    data = SyntheticDataset(tiny_dataset, "val")
    bank = build_scene_bank(data.scene_points, torch.device("cpu"),
                            max_points_per_scene=cfg.get("max_points_per_scene"),
                            seed=int(cfg.get("seed", 0)))  # fmt: skip
    prep = StepPreparer(instantiate(cfg.body).topology, torch.device("cpu"), bank)
    loader = build_loader(data, LoaderSettings(batch_size=16, num_workers=0), train=False,
                          device=torch.device("cpu"))  # fmt: skip
    steps = [prep.step(batch, targets=True) for batch in loader]
    final = {0: [], 1: []}
    at_gt = []
    for step in steps:
        gt = step.frame_targets.root_cam.double()
        for r in final:
            model.rcnet.roi_refinements = r
            pred = model.predict(step.inputs)
            final[r] += ((pred.root_cam.double() - gt).norm(dim=-1) * 1000).tolist()
        rc = model.rcnet
        # an ROI on the ground truth: neither of the teacher's draws (the shipped RCNet was
        # trained with ROIs along the ray, roi_depth_noise)
        rc.training, noise = True, (rc.roi_noise_std, rc.roi_depth_noise)
        rc.roi_noise_std = rc.roi_depth_noise = 0.0
        with torch.no_grad():
            vote = rc(step.inputs, step.frame_targets).root_cam.double()
        rc.training, (rc.roi_noise_std, rc.roi_depth_noise) = False, noise
        at_gt += ((vote - gt).norm(dim=-1) * 1000).tolist()
    for r in final:
        assert every[f"final_mm_r{r}"] == pytest.approx(sum(final[r]) / 4, rel=1e-6)
    assert every["gt_roi_mm"] == pytest.approx(sum(at_gt) / 4, rel=1e-6)
    model.rcnet.roi_refinements = own
    rows = diagnose_roots(model, steps, ["s"] * 4, refinements=(1, 0))
    assert [r.final_mm for r in rows] == [
        pytest.approx((a, b), rel=1e-6) for a, b in zip(final[1], final[0], strict=True)
    ]
    assert model.rcnet.roi_refinements == own
    assert (model.rcnet.roi_noise_std, model.rcnet.roi_depth_noise) == noise
    with pytest.raises(ValueError, match="scene ids"):
        diagnose_roots(model, steps, ["s"] * 3)

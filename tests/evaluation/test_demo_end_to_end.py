"""The real demo on one bundled frame, then tools/score_predictions.py on its output folder: every
number both report is the same (slow: the demo and a full-room SDF take ~30 s on CPU)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scenes" / "living_room" / "demo"


@pytest.mark.slow
def test_demo_output_scores_the_same_in_the_evaluator(tmp_path):
    from sahmr.cli.demo import main as demo_main

    cache, out = tmp_path / "cache", tmp_path / "demo"
    code = demo_main([
        "--image", str(DEMO / "sit_sofa.jpg"), "--scene", str(ROOT / "scenes/living_room/mesh.ply"),
        "--out", str(out), "--device", "cpu", "--views", "1", "--cache-dir", str(cache), "-q",
    ])  # fmt: skip
    assert code == 0
    spec = importlib.util.spec_from_file_location(
        "score_predictions_tool", ROOT / "tools" / "score_predictions.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    code = tool.main([
        "--pred", str(out), "--gt", str(DEMO), "--scene", str(ROOT / "scenes/living_room/mesh.ply"),
        "--out", str(tmp_path / "eval"), "--sdf-cache-dir", str(cache / "sdf"), "--no-progress",
    ])  # fmt: skip
    assert code == 1  # the bundled "stand" frame has no prediction here
    with open(tmp_path / "eval" / "per_frame.csv") as fh:
        row = next(r for r in csv.DictReader(fh) if r["name"] == "sit_sofa")
    summary = json.loads((out / "summary.json").read_text())  # one image: no sub-folder
    gt, pen = summary["gt_errors"], summary["penetration"]
    for key in ("mpjpe", "pa_mpjpe", "mpve", "pa_mpve", "g_mpjpe", "g_mpve", "root_error"):
        assert gt[f"{key}_mm"] == pytest.approx(float(row[key]), abs=1e-3), key
    assert gt["edge_error_percent"] == pytest.approx(float(row["edge_error"]), abs=1e-3)
    assert pen["pene_mm"] == pytest.approx(float(row["pene"]), rel=1e-5, abs=1e-3)
    assert pen["pen_count"] == int(row["pen_count"])

"""Per-frame errors binned by factor (`sahmr.evaluation.factors`, `tools/error_by_factor.py`):
camera geometry by hand, binning by hand, the whole split against a per-sample loop, and the
tool's report and refusals."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from engine_testkit import load_tool

from sahmr.evaluation.factors import FACTORS, bin_errors, camera_factors, dataset_factors


def _look_along_y(centre):
    """world -> camera for a camera at ``centre`` looking along world +y, z up (OpenCV: x
    right, y down, z forward)."""
    R = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ np.asarray(centre, dtype=np.float64)
    return T


def test_camera_distance_and_height_by_hand():
    T = np.stack([_look_along_y([0, 0, 1.5]), _look_along_y([1, -2, 0.3])])
    pelvis = np.array([[0, 3, 1.0], [1, 2, 0.9]])
    distance, above = camera_factors(T, pelvis, "z")
    np.testing.assert_allclose(distance, [math.hypot(3, 0.5), math.hypot(4, 0.6)])
    np.testing.assert_allclose(above, [0.5, -0.6])
    _, above_y = camera_factors(T, pelvis, "-y")  # another up axis: the y gap, negated
    np.testing.assert_allclose(above_y, [3.0, 4.0])


def test_binning_by_hand():
    values = np.array([0.5, 1.5, 1.7, 9.0, np.nan])
    errors = {"g": np.array([10.0, 20, 40, 5, 7]), "pene": np.array([1.0, np.nan, 3, 4, 5])}
    rows = bin_errors(values, errors, (0, 1, 2, math.inf))
    assert [r["bin"] for r in rows] == ["0 - 1", "1 - 2", ">= 2"]
    assert [r["frames"] for r in rows] == [1, 2, 1]  # NaN falls in no bin
    assert rows[1]["g"] == 30.0 and rows[1]["pene"] == 3.0  # NaN left out of the mean only
    assert rows[0]["pene"] == 1.0
    # an empty bin is dropped; a bin whose every value is missing gives None
    rows = bin_errors(np.array([0.5, 3.0]), {"g": np.array([np.nan, 1.0])}, (0, 1, 2, 4))
    assert [r["bin"] for r in rows] == ["0 - 1", "2 - 4"] and rows[0]["g"] is None
    cats = bin_errors(np.array(["sit", "lie", "sit"]), {"g": np.array([1.0, 2, 3])}, None)
    assert [(r["bin"], r["frames"], r["g"]) for r in cats] == [("lie", 1, 2.0), ("sit", 2, 2.0)]
    first = bin_errors(np.array([-5.0, 5.0]), {"g": np.array([1.0, 2])}, (-math.inf, 0, math.inf))
    assert [r["bin"] for r in first] == ["< 0", ">= 0"]


def test_dataset_factors_against_a_per_sample_loop(tiny_dataset):
    from sahmr.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(tiny_dataset, "train")
    f = dataset_factors(ds)
    assert set(f) == {factor.name for factor in FACTORS}
    for i in range(len(ds)):
        s = ds[i]
        T = np.asarray(s.T_w2c, np.float64)
        pelvis = np.asarray(s.joints_world[0], np.float64)
        centre = -T[:3, :3].T @ T[:3, 3]
        assert f["camera_distance"][i] == pytest.approx(np.linalg.norm(centre - pelvis))
        assert f["camera_above"][i] == pytest.approx(centre[2] - pelvis[2])
        w, h = s.image_size
        assert f["focal_35mm"][i] == pytest.approx(float(s.K[0, 0]) * 36.0 / max(w, h))
        assert f["person_px"][i] == pytest.approx(float(s.bbox[3] - s.bbox[1]))
        assert f["girth"][i] == pytest.approx(float(s.betas[1]))
        assert f["occlusion"][i] == pytest.approx(s.occlusion)
        assert f["action"][i] == s.action
        assert 1.0 < f["stature"][i] < 2.5  # metres
        assert 14.0 <= f["focal_35mm"][i] <= 85.0 + 1e-3  # the generator's range


def _per_frame_csv(path, names, g, root):
    path.mkdir(parents=True)
    with open(path / "per_frame.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "scene", "g_mpjpe", "root_error", "pa_mpjpe", "edge_error", "pene"])
        for n, v in zip(names, g):
            w.writerow([n, "room", v, v / 2, 50, 6, ""])


def test_tool_reports_every_factor_and_compares_methods(tiny_dataset, tmp_path):
    tool = load_tool("error_by_factor")
    names = [f"train-{i:06d}" for i in range(8)]
    _per_frame_csv(tmp_path / "a", names, np.arange(8) * 10.0, tiny_dataset)
    _per_frame_csv(tmp_path / "b", names[:6], np.full(6, 100.0), tiny_dataset)
    out = tmp_path / "report"
    b_csv = tmp_path / "b" / "per_frame.csv"  # the CSV itself, not its folder
    rc = tool.main(["--eval", f"A={tmp_path / 'a'}", "--eval", f"B={b_csv}",
                    "--gt-dataset", str(tiny_dataset), "--split", "train",
                    "--out", str(out)])  # fmt: skip
    assert rc == 0
    rep = json.loads((out / "factors.json").read_text())
    assert rep["frames"] == 6  # the frames both evaluations scored
    for factor in FACTORS:
        groups = rep["factors"][factor.name]["groups"]
        assert sum(g["frames"] for g in groups) == 6, factor.name
        total = sum(g["frames"] * g["methods"]["A"]["g_mpjpe"] for g in groups)
        assert total == pytest.approx(sum(range(6)) * 10.0)  # frame-weighted means add up
        assert all(g["methods"]["B"]["g_mpjpe"] == 100.0 for g in groups)
        assert all(g["methods"]["A"]["pene"] is None for g in groups)  # empty column
    md = (out / "factors.md").read_text()
    assert "## camera_distance (m)" in md and "g_mpjpe A" in md and "g_mpjpe B" in md
    assert (out / "factors.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "change, message",
    [
        (["--eval", "A"], "expected LABEL=PATH"),
        (["--eval", "A={missing}"], "no per_frame.csv"),
        (["--split", "nosuch"], "--split"),
        (["--up-axis", "w"], "--up-axis"),
        (["--metrics", "nosuch"], "no column nosuch"),
        (["--eval", "A={bad_names}"], "not in split train"),
        (["--eval", "A={a}", "--eval", "A={a}"], "each LABEL once"),
    ],
)
def test_tool_refuses_bad_input_with_one_line(tiny_dataset, tmp_path, capsys, change, message):
    tool = load_tool("error_by_factor")
    _per_frame_csv(tmp_path / "a", [f"train-{i:06d}" for i in range(8)], np.ones(8), tiny_dataset)
    _per_frame_csv(tmp_path / "bad_names", ["train-000099"], [1.0], tiny_dataset)
    fill = {"missing": tmp_path / "nope", "bad_names": tmp_path / "bad_names", "a": tmp_path / "a"}
    change = [c.format(**fill) for c in change]
    args = {"--eval": f"A={tmp_path / 'a'}", "--gt-dataset": str(tiny_dataset),
            "--split": "train", "--out": str(tmp_path / "report")}  # fmt: skip
    argv = []
    for k, v in args.items():
        if k not in change:
            argv += [k, v]
    with pytest.raises(SystemExit) as exc:
        tool.main(argv + change)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not (tmp_path / "report").exists()
    assert not list(tmp_path.glob(".report-*"))

"""The world error split along the camera ray (`sahmr.evaluation.depth_error`,
`tools/diagnose_depth.py`): known shifts by hand, a projection by hand, and the tool on a
generated split with predictions moved along their rays by known amounts."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from engine_testkit import load_tool

from sahmr.evaluation.depth_error import box_height_ratio, lowest_height, ray_errors

UP = np.array([0.0, 0.0, 1.0])


def _body(rng, centre, n=50):
    return centre + rng.normal(scale=0.2, size=(n, 3))


def test_a_shift_along_the_ray_is_all_depth():
    rng = np.random.default_rng(0)
    cam = np.array([[0.0, 0.0, 2.0], [1.0, -1.0, 0.5]])
    gt = np.stack([_body(rng, [0, 4, 1]), _body(rng, [3, 2, 1])])
    ray = gt.mean(1) - cam
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    shift = np.array([0.3, -0.5])  # prediction farther (+) / nearer (-) than the truth
    pred = gt + (shift[:, None] * ray)[:, None]
    e = ray_errors(pred, gt, cam, UP)
    np.testing.assert_allclose(e.along_m, -shift, atol=1e-12)  # truth minus prediction
    np.testing.assert_allclose(e.across_m, 0.0, atol=1e-12)
    np.testing.assert_allclose(e.vertical_m, -shift * ray[:, 2], atol=1e-12)
    np.testing.assert_allclose(e.g_mpve_mm, np.abs(shift) * 1000, atol=1e-9)
    np.testing.assert_allclose(e.depth_fixed_g_mpve_mm, 0.0, atol=1e-9)
    np.testing.assert_allclose(e.camera_distance_m, np.linalg.norm(pred.mean(1) - cam, axis=1))


def test_a_sideways_shift_is_not_depth():
    gt = np.zeros((1, 4, 3)) + np.array([0.0, 5.0, 0.0])
    gt[0, :, 0] += [-0.1, 0.1, 0.0, 0.0]
    pred = gt + np.array([0.4, 0.0, 0.0])  # across a ray along +y
    e = ray_errors(pred, gt, np.zeros((1, 3)), UP)
    # the ray goes through the predicted centre (0.4, 5, 0): the truth's along-ray part is tiny
    d = np.hypot(0.4, 5.0)
    np.testing.assert_allclose(e.along_m, [-0.4 * 0.4 / d], atol=1e-12)
    np.testing.assert_allclose(e.across_m, [0.4 * 5.0 / d], atol=1e-12)
    np.testing.assert_allclose(e.vertical_m, [0.0], atol=1e-12)
    assert e.depth_fixed_g_mpve_mm[0] < e.g_mpve_mm[0]


def test_box_height_ratio_by_hand():
    # camera at the origin looking along +z (identity pose); a 1.8 m body 6 m away, f = 500 px
    V = np.array([[[0.0, -0.9, 6.0], [0.1, 0.9, 6.0], [0.0, 0.0, 6.5]]])
    K = np.array([[[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]]])
    T = np.eye(4)[None]
    box = np.array([[300.0, 240 - 75, 340, 240 + 75]])  # 150 px: the body spans 1.8 / 6 * 500
    np.testing.assert_allclose(box_height_ratio(V, K, T, box), [1.0])
    np.testing.assert_allclose(box_height_ratio(V, K, T, box * [1, 0, 1, 0] + [0, 90, 0, 390]),
                               [0.5])  # a box twice as tall  # fmt: skip
    # a body with a vertex behind its camera has no projected height: NaN, the others kept
    behind = np.concatenate([V, V * [1, 1, -1]])
    ratio = box_height_ratio(behind, np.repeat(K, 2, 0), np.repeat(T, 2, 0), np.repeat(box, 2, 0))
    assert ratio[0] == pytest.approx(1.0) and np.isnan(ratio[1])


def test_lowest_height():
    V = np.array([[[0, 0, 0.30], [0, 0, 0.05], [0, 0, 1.0]], [[0, 0, -0.1], [0, 0, 2], [0, 0, 3]]])
    np.testing.assert_allclose(lowest_height(V, np.array([0, 1]), UP, np.array([0.0, 0.5])),
                               [0.05, -0.6])  # fmt: skip


def _write_predictions(folder, dataset, split, shifts):
    """Ground-truth bodies moved by ``shifts`` (m, + away from the camera) along their rays."""
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.records import frame_name

    ds = SyntheticDataset(dataset, split)
    T = ds.columns(["T_w2c"])["T_w2c"].astype(np.float64)
    folder.mkdir(parents=True)
    for i, s in enumerate(shifts):
        gt = np.asarray(ds[i].vertices_world, dtype=np.float64)
        cam = -T[i, :3, :3].T @ T[i, :3, 3]
        ray = gt.mean(0) - cam
        ray /= np.linalg.norm(ray)
        np.savez(folder / f"{frame_name(split, i)}.npz", vertices=gt + s * ray)


def test_tool_recovers_known_depth_errors(tiny_dataset, tmp_path, capsys):
    tool = load_tool("diagnose_depth")
    shifts = [0.1, -0.2, 0.0, 0.4, -0.05, 0.25, 0.0, -0.3]
    _write_predictions(tmp_path / "pred", tiny_dataset, "train", shifts)
    out = tmp_path / "out"
    assert tool.main(["--pred", str(tmp_path / "pred"), "--gt-dataset", str(tiny_dataset),
                      "--split", "train", "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads((out / "depth.json").read_text())
    assert summary["frames"] == 8
    np.testing.assert_allclose(summary["abs_along_mm"]["mean"], np.mean(np.abs(shifts)) * 1000,
                               atol=1e-2)  # fmt: skip
    assert summary["depth_fixed_g_mpve_mm"]["mean"] < 0.01
    with open(out / "per_frame.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    np.testing.assert_allclose([float(r["along_mm"]) for r in rows],
                               -np.asarray(shifts) * 1000, atol=1e-2)  # fmt: skip
    # the true body fills its own person box; a body moved along its ray, nearly
    ratio = [float(r["box_height_ratio"]) for r in rows]
    assert ratio[2] == pytest.approx(1.0, abs=1e-3) and ratio[6] == pytest.approx(1.0, abs=1e-3)
    # the generator stands its bodies on the floor
    assert abs(float(rows[2]["feet_above_ground_mm"])) < 30
    assert "with the depth along the camera ray fixed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, message",
    [
        ("no_pred", "not a folder"),
        ("empty_pred", "no .npz predictions"),
        ("foreign_name", "not a frame of split"),
        ("no_vertices", "no 'vertices' array"),
        ("no_dataset", "no dataset.json"),
        ("out_taken", "not an empty folder"),
    ],
)
def test_tool_refuses_bad_input_with_one_line(tiny_dataset, tmp_path, capsys, change, message):
    tool = load_tool("diagnose_depth")
    pred, data = tmp_path / "pred", tiny_dataset
    if change == "no_pred":
        pred = tmp_path / "missing"
    elif change == "empty_pred":
        pred.mkdir()
    else:
        _write_predictions(pred, tiny_dataset, "train", [0.0] * 2)
        if change == "foreign_name":
            np.savez(pred / "val-000099.npz", vertices=np.zeros((3, 3)))
        elif change == "no_vertices":
            np.savez(pred / "train-000000.npz", verts=np.zeros((3, 3)))
        elif change == "no_dataset":
            data = tmp_path
    out = tmp_path / "out"
    if change == "out_taken":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    assert tool.main(["--pred", str(pred), "--gt-dataset", str(data), "--split", "train",
                      "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists() or [p.name for p in out.iterdir()] == ["keep.txt"]

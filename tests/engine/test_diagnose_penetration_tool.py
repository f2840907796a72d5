"""tools/diagnose_penetration.py on a generated set: the ground truth and a known shift along
the camera ray, the report's bookkeeping, one line and exit 2 for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from engine_testkit import load_tool

SHIFT_M = 0.4


def camera_centre(sample) -> np.ndarray:
    T = np.asarray(sample.T_w2c, dtype=np.float64)
    return -T[:3, :3].T @ T[:3, 3]


def write_truth(root, split, out, shifted: int | None = None) -> dict[str, np.ndarray]:
    """The split's ground-truth bodies as predictions; frame ``shifted`` moved SHIFT_M away
    from its camera along the ray through its centre. Returns the shifts."""
    from sahmr.data.synthetic import SyntheticDataset

    out.mkdir(parents=True)
    ds = SyntheticDataset(root, split)
    shifts = {}
    for i in range(len(ds)):
        s = ds[i]
        v = np.asarray(s.vertices_world, dtype=np.float64)
        if i == shifted:
            ray = v.mean(0) - camera_centre(s)
            shifts[f"{split}-{i:06d}"] = SHIFT_M * ray / np.linalg.norm(ray)
            v = v + shifts[f"{split}-{i:06d}"]
        np.savez(out / f"{split}-{i:06d}.npz", vertices=v.astype(np.float32))
    return shifts


def steepest_frame(root, split) -> int:
    """The frame whose camera looks down at the body most steeply (a slide away from it
    sinks the body into the floor)."""
    from sahmr.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(root, split)
    drops = []
    for i in range(len(ds)):
        s = ds[i]
        ray = np.asarray(s.vertices_world).mean(0) - camera_centre(s)
        drops.append(-ray[2] / np.linalg.norm(ray))
    return int(np.argmax(drops))


def test_truth_and_a_known_shift(tiny_dataset, tmp_path, capsys):
    tool = load_tool("diagnose_penetration")
    i = steepest_frame(tiny_dataset, "train")
    pred, out = tmp_path / "pred", tmp_path / "report"
    shifts = write_truth(tiny_dataset, "train", pred, shifted=i)
    (name, shift), = shifts.items()
    assert -shift[2] > 0.1, "the fixture's steepest camera should look down"
    assert tool.main(["--pred", str(pred), "--gt-dataset", str(tiny_dataset), "--split", "train",
                      "--out", str(out), "--sdf-cache-dir", str(tmp_path / "sdf"),
                      "--no-progress"]) == 0  # fmt: skip
    report = json.loads((out / "ray_slide.json").read_text())
    rows = {r["name"]: r for r in report["frames"]}
    assert len(rows) == 8 and report["bands"]["all"]["frames"] == 8 and not report["failed"]
    assert sorted(p.stem for p in (out / "slid").glob("*.npz")) == sorted(rows)
    for key, r in rows.items():
        assert r["pene_slid_mm"] <= r["pene_mm"]  # the slide never adds penetration
        if key != name:  # the truth: no error before; a slide moves it by the slide
            assert r["g_mpve_mm"] == pytest.approx(0.0, abs=1e-3)
            assert r["g_mpve_slid_mm"] == pytest.approx(abs(r["slide_m"]) * 1000, abs=1e-2)
    sunk = rows[name]
    assert sunk["g_mpve_mm"] == pytest.approx(SHIFT_M * 1000, abs=1e-2)
    assert sunk["pene_mm"] > 1000 and sunk["slide_m"] < -0.25  # slid most of the way back
    assert sunk["g_mpve_slid_mm"] == pytest.approx((SHIFT_M + sunk["slide_m"]) * 1000, abs=0.05)
    slid = np.load(out / "slid" / f"{name}.npz")["vertices"]
    moved = torch.as_tensor(slid, dtype=torch.float64) - torch.as_tensor(
        np.load(pred / f"{name}.npz")["vertices"], dtype=torch.float64)
    direction = shift / np.linalg.norm(shift)
    np.testing.assert_allclose(moved.mean(0).numpy(), sunk["slide_m"] * direction, atol=1e-5)
    printed = capsys.readouterr().out
    assert "G-MPVE" in printed and f"reports in {out}" in printed


@pytest.mark.parametrize("change, message", [
    ({"--pred": "nowhere"}, "no predicted bodies"),
    ({"--gt-dataset": "nowhere"}, "--gt-dataset"),
    ({"--split": "nope"}, "--split nope"),
    ({"--step": "0"}, "--step must be > 0"),
    ({"--slide-cost": "nan"}, "--slide-cost >= 0"),
    ({"--out": "FULL"}, "exists and is not empty"),
    ({"--pred": "STRANGER"}, "not in split train"),
])  # fmt: skip
def test_bad_input_is_one_line_exit_2(change, message, tiny_dataset, tmp_path, capsys):
    pred, out, full, stranger = (tmp_path / n for n in ("pred", "out", "full", "stranger"))
    write_truth(tiny_dataset, "train", pred)
    full.mkdir()
    (full / "keep.txt").write_text("x")
    stranger.mkdir()
    np.savez(stranger / "train-000099.npz", vertices=np.zeros((6890, 3), np.float32))
    args = {"--pred": str(pred), "--gt-dataset": str(tiny_dataset), "--split": "train",
            "--out": str(out), "--step": "0.01", "--slide-cost": "1"}  # fmt: skip
    names = {"FULL": str(full), "STRANGER": str(stranger)}
    args.update({k: names.get(v, v) for k, v in change.items()})
    with pytest.raises(SystemExit) as exit_info:
        load_tool("diagnose_penetration").main([x for kv in args.items() for x in kv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().splitlines()[-1].count("error:") == 1
    assert not out.exists() and (full / "keep.txt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

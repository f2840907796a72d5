#!/usr/bin/env python3
"""How much of a method's world error is depth along the camera ray (sahmr.evaluation.depth_error).

    python3 tools/eval_checkpoint.py checkpoint=CKPT data.root=DATA split=test \\
        save_predictions=true out=EVAL
    python3 tools/diagnose_depth.py --pred EVAL/predictions --gt-dataset DATA --split test --out OUT

``--pred`` holds world-frame predictions named ``<split>-<index:06d>.npz`` (``vertices``
(V, 3); what ``save_predictions`` writes) for frames of split ``--split`` of the generated
dataset ``DATA``. Per frame: the centre's error along the camera ray, across it and vertically;
G-MPVE as predicted and after the oracle slide along the ray that removes the depth error; the
body's projected height over the person box; the feet's lowest point above the room's ground.

Writes ``OUT/depth.json`` (means, medians, quartiles) and ``OUT/per_frame.csv``, and prints a
summary. Exit codes: 0 done, 2 bad arguments or unreadable inputs (nothing written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sahmr.atomic_write import atomic_write_text

FEET = (1, 2)  # contact regions: left foot, right foot (sahmr.body.constants.CONTACT_REGION_NAMES)


class InputError(ValueError):
    """An input the report cannot use (its message is the one line printed)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pred", type=Path, required=True,
                   help="folder of <split>-<index:06d>.npz predictions (world-frame 'vertices')")
    p.add_argument("--gt-dataset", type=Path, required=True,
                   help="the generated dataset the predictions are of (tools/make_dataset.py)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, required=True,
                   help="report folder (made; an existing one must be empty)")
    return p  # fmt: skip


def load_inputs(pred_dir: Path, data: Path, split: str) -> dict[str, np.ndarray | list]:
    """Predictions, ground truth, cameras, boxes and grounds of the predicted frames."""
    import torch

    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.evaluation.evaluator import SceneSDFs
    from sahmr.geometry.cameras import invert_rigid
    from sahmr.records import frame_name

    if not pred_dir.is_dir():
        raise InputError(f"--pred {pred_dir}: not a folder")
    files = sorted(pred_dir.glob("*.npz"))
    if not files:
        raise InputError(f"--pred {pred_dir}: no .npz predictions")
    if not (data / "dataset.json").is_file():
        raise InputError(f"--gt-dataset {data}: no dataset.json (a tools/make_dataset.py folder)")
    try:
        dataset = SyntheticDataset(data, split)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise InputError(f"--gt-dataset {data} --split {split}: {exc}") from None
    index = {frame_name(split, i): i for i in range(len(dataset))}
    unknown = [f.stem for f in files if f.stem not in index]
    if unknown:
        raise InputError(f"{unknown[0]}: not a frame of split {split!r} of {data}")
    rows = [index[f.stem] for f in files]
    cols = dataset.columns(["K", "T_w2c", "bbox"])
    scenes = SceneSDFs(scene_dir=data / "rooms")
    pred, gt, ground, up_axes = [], [], [], set()
    for f, i in zip(files, rows, strict=True):
        with np.load(f, allow_pickle=False) as d:
            if "vertices" not in d.files:
                raise InputError(f"{f}: no 'vertices' array")
            pred.append(np.asarray(d["vertices"], dtype=np.float64))
        sample = dataset[i]
        gt.append(np.asarray(sample.vertices_world, dtype=np.float64))
        g = scenes.ground_of(sample.scene_id)
        ground.append(np.nan if g is None else g.height)
        up_axes.add("z" if g is None else g.up_axis)
    if len(up_axes) != 1:
        raise InputError(f"the rooms disagree on the up axis: {sorted(up_axes)}")
    if len({p.shape for p in pred} | {g.shape for g in gt}) != 1:
        raise InputError("predicted and ground-truth bodies differ in vertex count")
    T = np.asarray(cols["T_w2c"], dtype=np.float64)[rows]
    return dict(
        names=[f.stem for f in files],
        pred=np.stack(pred), gt=np.stack(gt), T=T,
        K=np.asarray(cols["K"], dtype=np.float64)[rows],
        bbox=np.asarray(cols["bbox"], dtype=np.float64)[rows],
        camera=invert_rigid(torch.from_numpy(T))[:, :3, 3].numpy(),
        ground=np.asarray(ground), up_axis=up_axes.pop(),
    )  # fmt: skip


def _spread(x: np.ndarray) -> dict[str, float]:
    x = x[np.isfinite(x)]
    if not len(x):
        return {"mean": float("nan"), "median": float("nan"), "p25": float("nan"),
                "p75": float("nan")}  # fmt: skip
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    return {"mean": float(x.mean()), "median": float(q50), "p25": float(q25), "p75": float(q75)}


def report(inputs: dict) -> tuple[dict, list[dict]]:
    """Summary and per-frame rows."""
    from sahmr.body import BodyModel
    from sahmr.evaluation.depth_error import box_height_ratio, lowest_height, ray_errors
    from sahmr.scene.orientation import up_vector

    up = up_vector(inputs["up_axis"])
    err = ray_errors(inputs["pred"], inputs["gt"], inputs["camera"], up)
    ratio = box_height_ratio(inputs["pred"], inputs["K"], inputs["T"], inputs["bbox"])
    labels = np.asarray(BodyModel().topology.contact_labels[0])
    feet = np.flatnonzero(np.isin(labels, FEET))
    if len(feet) == 0 or labels.shape[0] != inputs["pred"].shape[1]:
        feet_h = np.full(len(inputs["names"]), np.nan)
    else:
        feet_h = lowest_height(inputs["pred"], feet, up, inputs["ground"])
    columns = {
        "along_mm": err.along_m * 1000.0,
        "across_mm": err.across_m * 1000.0,
        "vertical_mm": err.vertical_m * 1000.0,
        "g_mpve_mm": err.g_mpve_mm,
        "depth_fixed_g_mpve_mm": err.depth_fixed_g_mpve_mm,
        "camera_distance_m": err.camera_distance_m,
        "box_height_ratio": ratio,
        "feet_above_ground_mm": feet_h * 1000.0,
    }
    summary = {
        "frames": len(inputs["names"]),
        "abs_along_mm": _spread(np.abs(columns["along_mm"])),
        "across_mm": _spread(columns["across_mm"]),
        "abs_vertical_mm": _spread(np.abs(columns["vertical_mm"])),
        **{k: _spread(columns[k]) for k in ("g_mpve_mm", "depth_fixed_g_mpve_mm",
                                            "box_height_ratio", "feet_above_ground_mm")},
    }  # fmt: skip
    rows = [{"name": n, **{k: float(v[i]) for k, v in columns.items()}}
            for i, n in enumerate(inputs["names"])]  # fmt: skip
    return summary, rows


def write(out: Path, summary: dict, rows: list[dict]) -> None:
    from sahmr.evaluation.reports import write_rows_csv

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "depth.json", json.dumps(summary, indent=2) + "\n")
    write_rows_csv(rows, out / "per_frame.csv")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
            raise InputError(f"--out {args.out}: exists and is not an empty folder")
        inputs = load_inputs(args.pred, args.gt_dataset, args.split)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary, rows = report(inputs)
    write(args.out, summary, rows)
    g, fixed = summary["g_mpve_mm"], summary["depth_fixed_g_mpve_mm"]
    print(f"{summary['frames']} frames: G-MPVE {g['mean']:.1f} mm (median {g['median']:.1f}); "
          f"with the depth along the camera ray fixed {fixed['mean']:.1f} "
          f"(median {fixed['median']:.1f}). Centre error along the ray "
          f"{summary['abs_along_mm']['mean']:.1f} mm, across {summary['across_mm']['mean']:.1f}, "
          f"vertical {summary['abs_vertical_mm']['mean']:.1f}; box height ratio median "
          f"{summary['box_height_ratio']['median']:.3f}; feet above ground median "
          f"{summary['feet_above_ground_mm']['median']:.1f} mm")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

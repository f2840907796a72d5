"""Would the scan's floor fix the shipped model's depth? (docs/results.md, section (u))

    python3 docs/results/floor_probe/floor_probe.py PRED DATA SPLIT

PRED: ``predictions/`` of ``tools/eval_checkpoint.py save_predictions=true scene_slide=false
settle_on_ground=false`` (world vertices per frame); DATA: the generated dataset they are of.

1. Each predicted body is slid along the ray from its camera through its centre until its
   lowest vertex lies on the room's declared ground; G-MPVE and the centre's error before and
   after, for frames whose true body rests on the ground, by the ray's elevation, and for
   frames a test-time rule could pick (the predicted body near the ground).
2. Is the depth error a scale error? The predicted / true camera distance of the centre
   against the predicted / true vertical extent of the body.

Writes ``floor_probe.json`` (one row per frame) beside PRED.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np

from sahmr.data.synthetic import SyntheticDataset
from sahmr.scene.orientation import up_vector
from sahmr.scene.sdf import declared_ground

ON_GROUND_M = 0.03  # the true body's lowest vertex within this of the ground: it rests on it


def centre_error_mm(vertices: np.ndarray, centre_true: np.ndarray) -> float:
    return float(np.linalg.norm(vertices.mean(0) - centre_true) * 1000)


def frame_row(index: int, pred_path: Path, ds: SyntheticDataset, root: Path) -> dict:
    s = ds[index]
    v_pred = np.load(pred_path, allow_pickle=False)["vertices"].astype(np.float64)
    v_true = s.vertices_world.astype(np.float64)
    ground = declared_ground(root / "rooms" / s.scene_id / "mesh.ply")
    up = up_vector(ground.up_axis)
    T = s.T_w2c.astype(np.float64)
    cam_world = -T[:3, :3].T @ T[:3, 3]
    h_pred = v_pred @ up - ground.height
    h_true = v_true @ up - ground.height
    centre_true = v_true.mean(0)
    ray = v_pred.mean(0) - cam_world
    rise = ray @ up
    fraction = -h_pred.min() / rise if abs(rise) > 1e-6 else 0.0  # lowest vertex to the ground
    v_slid = v_pred + fraction * ray
    err = v_pred.mean(0) - centre_true
    ray_true = (centre_true - cam_world) / np.linalg.norm(centre_true - cam_world)
    return {
        "index": index, "scene": s.scene_id, "action": s.action,
        "true_lowest_m": float(h_true.min()), "pred_lowest_m": float(h_pred.min()),
        "elevation": float(-rise / np.linalg.norm(ray)),
        "g_mpve": float(np.linalg.norm(v_pred - v_true, axis=1).mean() * 1000),
        "g_mpve_on_floor": float(np.linalg.norm(v_slid - v_true, axis=1).mean() * 1000),
        "centre": centre_error_mm(v_pred, centre_true),
        "centre_on_floor": centre_error_mm(v_slid, centre_true),
        "centre_along_ray": float(abs(err @ ray_true) * 1000),
        "centre_lateral": float(np.linalg.norm(err - (err @ ray_true) * ray_true) * 1000),
        "distance_ratio": float(np.linalg.norm(ray) / np.linalg.norm(centre_true - cam_world)),
        "extent_ratio": float(np.ptp(v_pred @ up) / np.ptp(v_true @ up)),
    }  # fmt: skip


def summary(rows: list[dict], label: str) -> None:
    if not rows:
        return
    a = np.array([[r["g_mpve"], r["g_mpve_on_floor"], r["centre"], r["centre_on_floor"]]
                  for r in rows])  # fmt: skip
    m = a.mean(0)
    print(f"{label}: n={len(rows)} G-MPVE {m[0]:.1f} -> {m[1]:.1f}; "
          f"centre {m[2]:.1f} -> {m[3]:.1f}")  # fmt: skip


def main() -> None:
    pred_dir, root, split = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    ds = SyntheticDataset(root, split)
    rows = [frame_row(int(p.stem.split("-")[1]), p, ds, root)
            for p in sorted(pred_dir.glob("*.npz"))]  # fmt: skip
    (pred_dir.parent / "floor_probe.json").write_text(json.dumps(rows, indent=0))
    on = [r for r in rows if r["true_lowest_m"] < ON_GROUND_M]
    print(f"{len(rows)} frames, {len(on)} with the true body on the ground")
    print(collections.Counter(r["action"] for r in on).most_common(12))
    summary(on, "true body on the ground")
    for lo, hi in [(0, 0.1), (0.1, 0.2), (0.2, 0.35), (0.35, 0.6), (0.6, 1.0)]:
        summary([r for r in on if lo <= r["elevation"] < hi], f"  ray elevation {lo}-{hi}")
    for tau in (0.05, 0.1, 0.2, 0.3):
        picked = [r for r in rows if abs(r["pred_lowest_m"]) < tau and r["elevation"] > 0.1]
        summary(picked, f"predicted lowest vertex within {tau} m, elevation > 0.1")
    along = np.mean([r["centre_along_ray"] for r in rows])
    lateral = np.mean([r["centre_lateral"] for r in rows])
    dist = np.array([r["distance_ratio"] for r in rows])
    extent = np.array([r["extent_ratio"] for r in rows])
    print(f"centre error along the ray {along:.1f} mm, across it {lateral:.1f} mm")
    print(f"distance ratio sd {dist.std():.3f}; its correlation with the extent ratio "
          f"{np.corrcoef(dist, extent)[0, 1]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Would the person box give the stature better than the head? (docs/results.md, section (ad))

    python3 docs/results/shape_probe/stature_from_box.py DATA SPLIT FRAMES OUT.json

For each frame the shipped model's body is re-posed with beta 0 (stature) on a grid, each
candidate placed rigidly where the predicted body is (Procrustes on the candidate at the
predicted beta 0), and the beta 0 kept whose projected height (``h``), or height and width
(``hw``), best fills the person box. Reports the edge-length error, the camera-frame vertex
error and R^2 of beta 0 for the predicted and the box-chosen statures. A probe, not in the
package.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from sahmr.body import BodyModel
from sahmr.data.collate import collate_samples
from sahmr.data.prepare import prepare_inputs
from sahmr.data.synthetic import SyntheticDataset
from sahmr.engine.checkpoint import load_method
from sahmr.engine.data import SceneBank
from sahmr.evaluation.metrics import edge_length_error, mesh_edges
from sahmr.geometry.cameras import project, world_to_camera
from sahmr.geometry.procrustes import similarity_procrustes
from sahmr.inference.method import bundled_checkpoint

GRID = torch.linspace(-5.0, 5.0, 101)
"""Beta 0 candidates."""


def main() -> int:
    root, split, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    method, _ = load_method(bundled_checkpoint("sahmr"))
    body = BodyModel()
    edges = mesh_edges(torch.as_tensor(np.asarray(body.faces, dtype=np.int64)))
    ds = SyntheticDataset(root, split)
    idx = np.unique(np.linspace(0, len(ds) - 1, n).round().astype(int)).tolist()
    rows = []
    for k in range(0, len(idx), 16):
        samples = [ds[i] for i in idx[k : k + 16]]
        batch = collate_samples(samples, keep_images=False)
        bank = SceneBank({s: ds.scene_points[s] for s in sorted(set(batch.scene_id))}, "cpu")
        with torch.no_grad():
            pred = method.predict(prepare_inputs(batch, bank, device="cpu"))
        T_w2c, K, bbox = batch.T_w2c.double(), batch.K.double(), batch.bbox.double()
        gt_cam = world_to_camera(T_w2c, batch.vertices_world.double())
        for b, sample in enumerate(samples):
            m = len(GRID)
            betas = pred.params["betas"][b : b + 1].repeat(m, 1).clone()
            b0_pred = float(betas[0, 0])
            betas[:, 0] = GRID
            with torch.no_grad():
                verts = body(betas=betas,
                             global_orient=pred.params["global_orient"][b : b + 1].repeat(m, 1),
                             body_pose=pred.params["body_pose"][b : b + 1].repeat(m, 1),
                             ).vertices.double()  # fmt: skip
            pred_cam = pred.verts_cam[b].double()
            i0 = int((GRID - b0_pred).abs().argmin())
            _, R, _ = similarity_procrustes(verts[i0][None], pred_cam[None])  # rotation only
            shift = pred_cam.mean(0) - verts[i0].mean(0) @ R[0].T
            cand_cam = verts @ R[0].T + shift
            uv = project(K[b], cand_cam)
            h = uv[..., 1].amax(1) - uv[..., 1].amin(1)
            w = uv[..., 0].amax(1) - uv[..., 0].amin(1)
            cost_h = torch.log(h / (bbox[b, 3] - bbox[b, 1])).abs()
            cost_hw = cost_h + torch.log(w / (bbox[b, 2] - bbox[b, 0])).abs()
            i_h, i_hw = int(cost_h.argmin()), int(cost_hw.argmin())
            gt = gt_cam[b : b + 1].float()

            def score(v: torch.Tensor, gt: torch.Tensor = gt) -> tuple[float, float]:
                v = v[None].float()
                edge = float(edge_length_error(v, gt, edges)[0])
                return edge, float((v - gt).norm(dim=-1).mean() * 1000)

            rows.append({
                "b0_true": float(sample.betas[0]), "b0_pred": b0_pred,
                "b0_h": float(GRID[i_h]), "b0_hw": float(GRID[i_hw]),
                "pred": score(pred_cam), "h": score(cand_cam[i_h]), "hw": score(cand_cam[i_hw]),
            })  # fmt: skip
    b0_true = np.array([r["b0_true"] for r in rows])
    report: dict = {"frames": len(rows)}
    for key, b0 in (("pred", "b0_pred"), ("h", "b0_h"), ("hw", "b0_hw")):
        chosen = np.array([r[b0] for r in rows])
        report[key] = {
            "edge_error_pct": float(np.mean([r[key][0] for r in rows])),
            "vertex_error_cam_mm": float(np.mean([r[key][1] for r in rows])),
            "r2_beta0": float(1 - ((chosen - b0_true) ** 2).sum()
                              / ((b0_true - b0_true.mean()) ** 2).sum()),
        }  # fmt: skip
    text = json.dumps(report, indent=1)
    Path(out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

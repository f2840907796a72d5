#!/usr/bin/env python3
"""Edge-length error of the shipped model's bodies with some predicted shape coefficients
replaced by the mean (0) or by the truth: does keeping unpredictable coefficients at the
mean help? (docs/results.md, section (s))

    python3 docs/results/shape_probe/shrink_check.py DATA SPLIT FRAMES OUT.json

RCNet's depth search is off (it moves the root, not the shape); the edge-length error does
not depend on where the body is placed.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from sahmr.body import BodyModel
from sahmr.data.collate import collate_samples
from sahmr.data.prepare import prepare_inputs
from sahmr.data.synthetic import SyntheticDataset
from sahmr.engine.checkpoint import load_method
from sahmr.engine.data import SceneBank
from sahmr.evaluation.metrics import edge_length_error, mesh_edges
from sahmr.inference.method import bundled_checkpoint


def variants(pred: torch.Tensor, true: torch.Tensor) -> dict[str, torch.Tensor]:
    """Shape coefficients (B, 10) to pose the predicted rotations with."""
    zeros = torch.zeros_like(pred)
    return {
        "predicted": pred,
        "betas 1-9 at the mean": torch.cat([pred[:, :1], zeros[:, 1:]], 1),
        "betas 2-9 at the mean": torch.cat([pred[:, :2], zeros[:, 2:]], 1),
        "mean shape": zeros,
        "true beta 0": torch.cat([true[:, :1], pred[:, 1:]], 1),
        "true beta 1": torch.cat([pred[:, :1], true[:, 1:2], pred[:, 2:]], 1),
        "true betas 0-1": torch.cat([true[:, :2], pred[:, 2:]], 1),
        "true shape": true,
    }


def main() -> int:
    root, split, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    no_search = ["model.rcnet.depth_hypotheses=[]"]
    method, _ = load_method(bundled_checkpoint("sahmr"), settings=no_search)
    body = BodyModel()
    edges = mesh_edges(torch.as_tensor(np.asarray(body.faces, dtype=np.int64)))
    ds = SyntheticDataset(root, split)
    idx = np.unique(np.linspace(0, len(ds) - 1, n).round().astype(int)).tolist()
    errors: dict[str, list[float]] = {}
    preds, trues = [], []
    for k in range(0, len(idx), 16):
        samples = [ds[i] for i in idx[k : k + 16]]
        batch = collate_samples(samples, keep_images=False)
        bank = SceneBank({s: ds.scene_points[s] for s in sorted(set(batch.scene_id))}, "cpu")
        params = method.predict(prepare_inputs(batch, bank, device="cpu")).params
        true = torch.stack([torch.as_tensor(np.asarray(s.betas, np.float32)) for s in samples])
        preds.append(params["betas"])
        trues.append(true)
        with torch.no_grad():
            for name, betas in variants(params["betas"], true).items():
                verts = body(betas=betas, global_orient=params["global_orient"],
                             body_pose=params["body_pose"]).vertices  # fmt: skip
                err = edge_length_error(verts, batch.vertices_world.float(), edges)
                errors.setdefault(name, []).extend(err.tolist())
    pred, true = torch.cat(preds), torch.cat(trues)
    r2 = 1 - ((pred - true) ** 2).sum(0) / ((true - true.mean(0)) ** 2).sum(0)
    report = {
        "frames": len(pred),
        "edge_error_pct": {name: float(np.mean(v)) for name, v in errors.items()},
        "predicted_std": pred.std(0).tolist(),
        "true_std": true.std(0).tolist(),
        "r2": r2.tolist(),
    }
    print(json.dumps(report, indent=1))
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does the training's penetration term measure what the evaluator scores?

The shipped model predicts 48 frames spread over a generated test split. For each predicted
body: the depth the training term reads (the room's placer grid in the float16 store,
`sahmr.scene.sdf_store`), summed over vertices in mm, against the evaluator's PenE (its own
2 cm grid of the room, `sahmr.evaluation.metrics.penetration`); the ground-truth bodies read
in the store as a floor.

    python3 docs/results/scene_penetration/check_term.py DATA OUT.json
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from sahmr.body.model import BodyModel
from sahmr.data.memory import MemoryDataConfig, ShardStream
from sahmr.engine.memory_data import MemoryStepPreparer
from sahmr.evaluation.metrics import MM_PER_M, penetration
from sahmr.inference.method import load_method_checkpoint
from sahmr.scene.sdf import load_or_build_sdf
from sahmr.scene.sdf_store import cam_to_world, sample_frames

FRAMES = 48


def main(root: str, out: str) -> None:
    config = MemoryDataConfig(decode_workers=0, scene_sdf=True)
    stream = ShardStream(root, "test", "cpu", config, max_points_per_scene=400000)
    stream.refresh()
    prep = MemoryStepPreparer(stream, BodyModel().topology, torch.device("cpu"), augment=None)
    model = load_method_checkpoint("sahmr/checkpoints/sahmr_small.pt").module
    rows = []
    for chunk in torch.linspace(0, len(stream.cache) - 1, FRAMES).long().split(16):
        step = prep.step(chunk)
        pred, t = model.predict(step.inputs), step.targets
        pred_world = cam_to_world(pred.verts_cam.double(), t.T_w2c.double())
        gt_world = cam_to_world(t.verts_cam.double(), t.T_w2c.double())
        store = torch.relu(-sample_frames(pred_world, t.scene_sdf)).sum(-1) * MM_PER_M
        store_gt = torch.relu(-sample_frames(gt_world, t.scene_sdf)).sum(-1) * MM_PER_M
        for i, k in enumerate(chunk.tolist()):
            sid = stream.scenes.scene_ids[int(stream.cache.scene[k])]
            grid = load_or_build_sdf(f"{root}/rooms/{sid}/mesh.ply")
            pene = penetration(grid.sample(pred_world[i].float())[None])["pene"][0]
            rows.append(dict(scene=sid, pene_eval=float(pene), pene_store=float(store[i]),
                             gt_store=float(store_gt[i])))  # fmt: skip
    ev, st = (np.array([r[k] for r in rows]) for k in ("pene_eval", "pene_store"))
    summary = dict(
        frames=len(rows),
        pene_evaluator_mean_mm=round(float(ev.mean()), 1),
        pene_store_mean_mm=round(float(st.mean()), 1),
        pene_evaluator_median_mm=round(float(np.median(ev)), 1),
        pene_store_median_mm=round(float(np.median(st)), 1),
        pearson=round(float(np.corrcoef(ev, st)[0, 1]), 4),
        gt_bodies_store_mean_mm=round(float(np.mean([r["gt_store"] for r in rows])), 1),
        # the term: weight x mean depth over vertices (metres)
        term_at_weight_30=round(float(st.mean() / MM_PER_M / 6890 * 30), 5),
    )
    print(summary)
    with open(out, "w") as f:
        json.dump({**summary, "per_frame": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

#!/usr/bin/env python3
"""Where the stature-dependent depth error of SA-HMR's root comes from (docs/results.md, (x)).

    python3 docs/results/away_stature/root_by_stature.py CKPT DATA SPLIT

Runs the checkpoint (CPU) on every frame of split SPLIT of the generated dataset DATA and, per
stature band of the true body, prints the mean signed error along the camera ray through the
true root (prediction minus truth, mm; negative: placed nearer) and the mean error size of
RCNet's image-only coarse root, of its vote from the scene, and of the placed body's root (the
vote plus the head's offset). Writes nothing.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from hydra.utils import instantiate

from sahmr.data.synthetic import SyntheticDataset
from sahmr.engine.checkpoint import load_method
from sahmr.engine.data import checkpoint_steps
from sahmr.models.modes import eval_mode

BANDS = ((0.0, 1.5), (1.5, 1.6), (1.6, 1.8), (1.8, 1.9), (1.9, 3.0))  # stature, metres


def main(argv: list[str]) -> None:
    ckpt, data, split = argv[0], argv[1], argv[2]
    cpu = torch.device("cpu")
    model, cfg = load_method(ckpt, cpu)
    dataset = SyntheticDataset(data, split)
    stature = np.asarray(dataset.columns(["height"])["height"], np.float64)
    body = instantiate(cfg.body)
    steps = checkpoint_steps(dataset, list(range(len(dataset))), cfg, body.topology, cpu,
                             batch_size=16, desc="roots")  # fmt: skip
    along, size = [], []
    with eval_mode(model), torch.no_grad():
        for step in steps:
            truth = step.frame_targets.root_cam.double()
            ray = truth / truth.norm(dim=-1, keepdim=True)
            out = model(step.inputs)
            stages = (out.rc.root_coarse_cam, out.rc.root_cam, out.root_cam)
            err = torch.stack([s.double() - truth for s in stages], dim=1)  # (B, 3 stages, 3)
            along.append(((err * ray[:, None]).sum(-1) * 1000).numpy())
            size.append((err.norm(dim=-1) * 1000).numpy())
    along, size = np.concatenate(along), np.concatenate(size)
    print("| stature (m) | frames | along the ray: coarse / vote / placed (mm) "
          "| error: coarse / vote / placed (mm) |")  # fmt: skip
    print("| --- | ---: | --- | --- |")
    for lo, hi in (*BANDS, (0.0, 9.0)):
        m = (stature >= lo) & (stature < hi)
        if m.any():
            label = "all" if hi == 9.0 else f"{lo}-{hi}"
            a, s = along[m].mean(0), size[m].mean(0)
            print(f"| {label} | {m.sum()} | {a[0]:+.0f} / {a[1]:+.0f} / {a[2]:+.0f} | "
                  f"{s[0]:.0f} / {s[1]:.0f} / {s[2]:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])

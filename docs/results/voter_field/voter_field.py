#!/usr/bin/env python3
"""How RCNet's vote depends on where its ROI is centred (docs/results.md, section (z)).

    python3 docs/results/voter_field/voter_field.py sahmr/checkpoints/sahmr_small.pt DATA val \
        --every 10 --frames 160

For every ``--every``-th frame: the shipped RCNet's deployed vote (coarse root, then its ROI
refinements), and votes from ROIs centred on the true root moved along its camera ray by
-0.4 ... +0.4 m. The mean error of those votes along the ray, divided by the shift, is how much
of a misplaced ROI the vote keeps (0: it finds the root wherever its ROI is; 1: it stays where
the ROI was put). Then two test-time corrections of the deployed vote: the mean of three votes
(its own ROI and +-0.2 m along the ray), and the fixed point of the displacement along the ray
extrapolated from those two votes (Aitken's step). Prints its figures; writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

SHIFTS_M = (-0.4, -0.2, -0.1, 0.0, 0.1, 0.2, 0.4)
PROBE_M = 0.2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("split")
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--frames", type=int, default=160)
    a = p.parse_args()
    from hydra.utils import instantiate

    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.engine.checkpoint import load_method
    from sahmr.engine.data import checkpoint_steps
    from sahmr.models.modes import eval_mode

    torch.set_grad_enabled(False)
    model, cfg = load_method(a.checkpoint, torch.device("cpu"))
    rc = model.rcnet
    ds = SyntheticDataset(a.data, a.split)
    index = list(range(0, len(ds), a.every))[: a.frames]
    body = instantiate(cfg.body)
    steps = checkpoint_steps(ds, index, cfg, body.topology, torch.device("cpu"), batch_size=16,
                             desc="voter field")  # fmt: skip
    got: dict[str, list[np.ndarray]] = {}

    def keep(name: str, x: torch.Tensor) -> None:
        got.setdefault(name, []).append(x.double().numpy())

    with eval_mode(model):
        for step in steps:
            inputs, root = step.inputs, step.frame_targets.root_cam.double()
            fmap, *_, coarse = rc.image_stage(inputs)
            vote, centre, _ = rc._refined_vote(inputs, fmap, coarse, coarse, rc.roi_refinements)
            keep("root", root)
            keep("coarse", coarse)
            keep("deployed", vote.root_cam)
            keep("centre", centre)
            ray = root / root.norm(dim=-1, keepdim=True)
            for shift in SHIFTS_M:
                c = (root + shift * ray).float()
                keep(f"at{shift}", rc.vote_from(inputs, fmap, c, c).root_cam)
            own_ray = centre.double() / centre.double().norm(dim=-1, keepdim=True)
            for shift in (-PROBE_M, PROBE_M):
                c = (centre.double() + shift * own_ray).float()
                keep(f"probe{shift}", rc.vote_from(inputs, fmap, c, c).root_cam)
    R = {k: np.concatenate(v) for k, v in got.items()}
    root = R["root"]
    ray = root / np.linalg.norm(root, axis=1, keepdims=True)

    def err(x: np.ndarray) -> float:
        return float(np.linalg.norm(x - root, axis=1).mean() * 1000)

    dev = R["deployed"] - root
    along = (dev * ray).sum(1)
    lateral = np.linalg.norm(dev - along[:, None] * ray, axis=1)
    print(f"{len(root)} frames of {a.data} {a.split} (every {a.every})")
    print(f"coarse root {err(R['coarse']):.1f} mm; deployed vote {err(R['deployed']):.1f} mm "
          f"(along the ray {np.abs(along).mean() * 1000:.1f}, across {lateral.mean() * 1000:.1f})")
    print("| ROI centre: true root moved along the ray (m) | vote error (mm) | mean error along "
          "the ray (mm) | share of the shift kept |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: |")
    for shift in SHIFTS_M:
        v = R[f"at{shift}"]
        mean_along = float(((v - root) * ray).sum(1).mean())
        kept = f"{mean_along / shift:.2f}" if shift else "-"
        print(f"| {shift:+.1f} | {err(v):.1f} | {mean_along * 1000:+.0f} | {kept} |")
    centre, deployed = R["centre"], R["deployed"]
    own = centre / np.linalg.norm(centre, axis=1, keepdims=True)
    lo, hi = R[f"probe{-PROBE_M}"], R[f"probe{PROBE_M}"]
    move = ((deployed - centre) * own).sum(1)
    move_lo = ((lo - (centre - PROBE_M * own)) * own).sum(1)
    move_hi = ((hi - (centre + PROBE_M * own)) * own).sum(1)
    slope = (move_hi - move_lo) / (2 * PROBE_M)  # d(vote - centre)/d(centre) along the ray
    print(f"slope of the vote's move along its ray: median {np.median(slope):.2f} "
          f"(quartiles {np.percentile(slope, 25):.2f}, {np.percentile(slope, 75):.2f})")
    print(f"mean of the three votes: {err((deployed + lo + hi) / 3):.1f} mm")
    for cap in (0.2, 0.4):
        fixed = np.clip(move / np.clip(-slope, 0.2, None), -cap, cap)  # Aitken's step
        print(f"fixed point along the ray (step capped at {cap} m): "
              f"{err(deployed + (fixed - move)[:, None] * own):.1f} mm")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Test-time changes to RCNet's root vote, scored on a split (the 2026-12-06 probes).

    python3 docs/results/session20261206/root_probes.py sahmr/checkpoints/sahmr_small.pt DATA \
        --split val --every 12 --temperatures 0.5 2 --radius 0.25

Per frame (the shipped checkpoint's RCNet, its own two refinements, no depth search), root
errors in mm against the ground truth:

* ``vote`` / ``placed``: RCNet's vote and the placed body's root (vote + the head's offset);
* ``vote_T=t``: the vote with its confidences divided by ``t`` (a sharper or flatter softmax);
* ``ensemble``: the mean of the votes from 7 ROIs, the vote itself and +-``radius`` along the
  camera's right, down and ray axes around it; ``placed_ensemble`` adds the head's offset;
* ``revote_at_placed``: a vote from an ROI centred on the placed root, plus the head's offset.

A one-off probe (docs/results.md, 2026-12-06): none of these entered the product.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from hydra.utils import instantiate

from sahmr.data.synthetic import SyntheticDataset
from sahmr.engine.checkpoint import load_method
from sahmr.engine.data import checkpoint_steps
from sahmr.models.modes import eval_mode
from sahmr.models.rcnet import vote_root


def _mm(pred: torch.Tensor, gt: torch.Tensor) -> list[float]:
    return ((pred.double() - gt.double()).norm(dim=-1) * 1000.0).tolist()


def _ensemble_centres(root_cam: torch.Tensor, radius: float) -> torch.Tensor:
    """(7, B, 3): the root and +-radius along the camera's right, down and ray axes there."""
    ray = root_cam / root_cam.norm(dim=-1, keepdim=True)
    down = torch.tensor([0.0, 1.0, 0.0]).expand_as(ray)
    right = torch.linalg.cross(down, ray)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(ray, right)
    steps = [torch.zeros_like(ray)] + [s * radius * a for a in (right, down, ray) for s in (-1, 1)]
    return torch.stack([root_cam + d for d in steps])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("data")
    p.add_argument("--split", default="val")
    p.add_argument("--every", type=int, default=12)
    p.add_argument("--temperatures", type=float, nargs="*", default=[0.5, 2.0])
    p.add_argument("--radius", type=float, default=0.25)
    a = p.parse_args()
    cpu = torch.device("cpu")
    model, cfg = load_method(a.checkpoint, cpu)
    rc = model.rcnet
    dataset = SyntheticDataset(a.data, a.split)
    index = list(range(0, len(dataset), a.every))
    topology = instantiate(cfg.body).topology
    errors: dict[str, list[float]] = {}

    def add(name: str, pred: torch.Tensor, gt: torch.Tensor) -> None:
        errors.setdefault(name, []).extend(_mm(pred, gt))

    with eval_mode(model), torch.no_grad():
        for step in checkpoint_steps(dataset, index, cfg, topology, cpu, batch_size=16,
                                     desc="root probes"):  # fmt: skip
            gt, inputs = step.frame_targets.root_cam, step.inputs
            out = model(inputs)
            vote, placed = out.rc.root_cam, out.root_cam
            offset = placed - vote
            add("vote", vote, gt)
            add("placed", placed, gt)
            fmap = rc.image_stage(inputs)[0]
            B = vote.shape[0]
            centres = _ensemble_centres(vote.float(), a.radius)
            votes = rc.vote_from(inputs, fmap, centres.reshape(-1, 3), centres.reshape(-1, 3))
            mean = votes.root_cam.reshape(len(centres), B, 3).mean(0)
            add("ensemble", mean, gt)
            add("placed_ensemble", mean + offset, gt)
            again = rc.vote_from(inputs, fmap, placed.float(), placed.float())
            add("revote_at_placed", again.root_cam + offset, gt)
            last = rc.vote_from(inputs, fmap, out.rc.roi_centre_cam, vote)
            for t in a.temperatures:
                root, _ = vote_root(last.voxels.confidence / t, last.voxels.votes_cam,
                                    last.voxels.batch_idx, vote)  # fmt: skip
                add(f"vote_T={t:g}", root, gt)
    print(f"{len(errors['vote'])} frames of {a.data} {a.split}; root error mm, mean (median)")
    for name, values in errors.items():
        print(f"{name:>18}: {np.mean(values):7.1f} ({np.median(values):.1f})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Where a placement failure starts: RCNet's root at each stage, for chosen frames
(docs/results.md, section (ab)).

    python3 docs/results/voter_field/failure_stages.py CHECKPOINT DATA SPLIT NAME [NAME ...]

For each named frame of ``DATA``'s ``SPLIT`` (``test-000757``: its index in the split): the
error (mm) and depth (m) of RCNet's image-only coarse root; of its vote from the ROI around that
root, re-centred ``roi_refinements`` times by RCNet's own pass (``own``); of the same from the
coarse root scaled by each depth hypothesis; of one vote from an ROI centred on the true root
(``at truth``: what the voter does when its ROI is right); and of the model's final root (after
the depth search). Beside each vote its scene evidence (`sahmr.models.rcnet.frame_evidence`, the
depth search's score). A failure whose ``at truth`` vote is also far off lies in the voter, not
in where its ROI was put. CPU is fine (a few seconds a frame).
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("data")
    p.add_argument("split")
    p.add_argument("names", nargs="+")
    a = p.parse_args()
    from hydra.utils import instantiate

    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.engine.checkpoint import load_method
    from sahmr.engine.data import checkpoint_steps
    from sahmr.models.rcnet import frame_evidence

    device = torch.device("cpu")
    model, cfg = load_method(a.checkpoint, device)
    model.eval()
    rcnet = model.rcnet
    dataset = SyntheticDataset(a.data, a.split)
    index = [int(n.rsplit("-", 1)[1]) for n in a.names]
    body = instantiate(cfg.body)
    (step,) = checkpoint_steps(dataset, index, cfg, body.topology, device,
                               batch_size=len(index), desc="frames")  # fmt: skip
    inputs, truth = step.inputs, step.frame_targets.root_cam
    B = truth.shape[0]
    passes = rcnet.roi_refinements
    with torch.no_grad():
        fmap, *_, coarse = rcnet.image_stage(inputs)
        # RCNet's own re-centred vote, as its forward makes it (and voter_field.py calls it)
        votes = {"own": rcnet._refined_vote(inputs, fmap, coarse, coarse, passes)[0]}
        for scale in rcnet.depth_hypotheses:
            start = coarse * scale
            votes[f"x{scale:g}"] = rcnet._refined_vote(inputs, fmap, start, start, passes)[0]
        votes["at truth"] = rcnet.vote_from(inputs, fmap, truth.to(coarse), coarse)
        final = model(inputs).rc.root_cam
    evidence = {k: frame_evidence(v.voxels.confidence, v.voxels.batch_idx, B)
                for k, v in votes.items()}  # fmt: skip

    def cell(root, b: int) -> str:
        err = float((root[b].double() - truth[b].double()).norm()) * 1000
        return f"{err:.0f} ({float(root[b, 2]):.2f})"

    cols = ["coarse", *votes, "final"]
    print(f"{a.checkpoint}, {a.data} {a.split}: root error mm (depth m); scene evidence")
    print("| frame | true depth m | " + " | ".join(cols) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in cols) + " |")
    for b, name in enumerate(a.names):
        cells = [cell(coarse, b)]
        cells += [f"{cell(v.root_cam, b)}; {float(evidence[k][b]):.1f}" for k, v in votes.items()]
        cells.append(cell(final, b))
        print(f"| {name} | {float(truth[b, 2]):.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

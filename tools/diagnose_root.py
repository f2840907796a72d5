#!/usr/bin/env python3
"""Where an SA-HMR checkpoint's root error comes from, per room (CPU-friendly).

    python3 tools/diagnose_root.py sahmr/checkpoints/sahmr_small.pt /data/synth \
        --split test --every 5 --refinements 0 1 2 --out root.json

For every ``--every``-th frame of the split: the error of RCNet's image-only coarse root (and
its depth part), of RCNet's vote, of the placed body's root (vote + the head's offset) for
each ROI refinement count, and of the vote RCNet makes from an ROI centred on the ground-truth
root (what the voter can do when the ROI is right). Prints a Markdown table per room and
overall; ``--out`` also writes it as JSON (`sahmr.engine.root_diagnosis`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="SA-HMR checkpoint with an RCNet")
    p.add_argument("data", type=Path, help="generated dataset (tools/make_dataset.py)")
    p.add_argument("--split", default="test")
    p.add_argument("--every", type=int, default=5, help="every N-th frame of the split")
    p.add_argument("--max-frames", type=int, default=0, help="0: all that --every selects")
    p.add_argument("--refinements", type=int, nargs="+", default=[0, 1, 2],
                   help="RCNet ROI refinement counts to score")  # fmt: skip
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", type=Path, default=None, help="JSON file for the table")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    from sahmr.cli.checks import checkpoint_data_problem

    problem = checkpoint_data_problem(a.checkpoint, a.data)
    if problem:
        p.error(problem)
    for name in ("every", "batch"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1")
    if a.max_frames < 0:
        p.error("--max-frames must be >= 0")
    if any(r < 0 for r in a.refinements):
        p.error("--refinements must be >= 0")
    if a.out is not None and a.out.is_dir():
        p.error(f"--out {a.out}: is a folder, expected a file")

    import torch
    from hydra.utils import instantiate

    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.engine.checkpoint import load_method
    from sahmr.engine.data import checkpoint_steps
    from sahmr.engine.root_diagnosis import diagnose_roots, markdown_table, summarise

    device = torch.device(a.device)
    try:
        model, cfg = load_method(a.checkpoint, device)
    except ValueError as err:
        p.error(str(err))
    if getattr(model, "rcnet", None) is None:
        p.error(f"{a.checkpoint}: not an SA-HMR checkpoint with an RCNet")
    dataset = SyntheticDataset(a.data, a.split)
    index = list(range(0, len(dataset), a.every))
    if a.max_frames:
        index = index[: a.max_frames]
    if not index:
        p.error(f"{a.data}: the {a.split} split has no frames")
    scene_ids = [dataset[i].scene_id for i in index]
    body = instantiate(cfg.body)
    steps = checkpoint_steps(dataset, index, cfg, body.topology, device, batch_size=a.batch,
                             desc="root diagnosis")  # fmt: skip
    rows = diagnose_roots(model, steps, scene_ids, refinements=a.refinements)
    summary = summarise(rows, a.refinements)
    print(f"{a.checkpoint}, {a.data} {a.split}: {len(rows)} frames (every {a.every}), root "
          "errors in mm")  # fmt: skip
    print(markdown_table(summary, a.refinements))
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.out.with_suffix(a.out.suffix + ".tmp")
        tmp.write_text(json.dumps({"checkpoint": str(a.checkpoint), "split": a.split,
                                   "every": a.every, "refinements": a.refinements,
                                   "rooms": summary}, indent=1))  # fmt: skip
        tmp.replace(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

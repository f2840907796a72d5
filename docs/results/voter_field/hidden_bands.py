#!/usr/bin/env python3
"""G-MPJPE by how much of the person is hidden (docs/results.md, sections (z) and (aa)).

    python3 docs/results/voter_field/hidden_bands.py DATA SPLIT EVAL/per_frame.csv [...]

For each `tools/eval_checkpoint.py` per-frame table of ``DATA``'s ``SPLIT``: its frames grouped by
the generator's occlusion ratio (the share of the person's pixels hidden) when no synthetic
occluder is in the view, so that what hides the person is the room's own furniture and walls,
and the frames with a synthetic occluder apart. Prints a Markdown table: frames, their mean
G-MPJPE and how many are placed more than ``FAILURE_MM`` off.
"""

from __future__ import annotations

import argparse
import csv

import numpy as np

FAILURE_MM = 500.0
BANDS = ((0.0, 0.05), (0.05, 0.2), (0.2, 0.4), (0.4, 1.0))
"""Occlusion bands ``[lo, hi)``; the generator keeps every view at most 60 % hidden."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("data")
    p.add_argument("split")
    p.add_argument("tables", nargs="+")
    a = p.parse_args()
    from sahmr.data.synthetic import SyntheticDataset

    cols = SyntheticDataset(a.data, a.split).columns(["occlusion", "occluder"])
    occlusion = np.asarray(cols["occlusion"], dtype=np.float64)
    boxed = np.asarray(cols["occluder"]) > 0
    print("| per-frame table | hidden | by | frames | G-MPJPE | over 500 mm |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for path in a.tables:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        index = np.array([int(r["name"].rsplit("-", 1)[1]) for r in rows])
        g = np.array([float(r["g_mpjpe"]) for r in rows])
        groups = [(f"{lo:.0%}-{hi:.0%}", "scan",
                   ~boxed[index] & (occlusion[index] >= lo) & (occlusion[index] < hi))
                  for lo, hi in BANDS]  # fmt: skip
        groups.append(("any", "a synthetic occluder", boxed[index]))
        for band, by, m in groups:
            mean = f"{g[m].mean():.1f}" if m.any() else "-"
            print(f"| {path} | {band} | {by} | {int(m.sum())} | {mean} | "
                  f"{int((g[m] > FAILURE_MM).sum())} |")  # fmt: skip


if __name__ == "__main__":
    main()

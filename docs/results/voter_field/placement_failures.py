#!/usr/bin/env python3
"""How much of a split's mean error its placement failures carry (docs/results.md, section (z)).

    python3 docs/results/voter_field/placement_failures.py EVAL/per_frame.csv [...]

For each `tools/eval_checkpoint.py` per-frame table: the frames whose G-MPJPE is over
``FAILURE_MM``, their share of the mean, and the means without them (a diagnosis of where the
error lies, not a score: every frame counts in the scores). Prints a Markdown table.
"""

from __future__ import annotations

import csv
import sys

import numpy as np

FAILURE_MM = 500.0


def main(paths: list[str]) -> None:
    print("| per-frame table | frames | G-MPJPE | root | over 500 mm | their share of the mean "
          "G-MPJPE | G-MPJPE without them | root without them |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        g = np.array([float(r["g_mpjpe"]) for r in rows])
        root = np.array([float(r["root_error"]) for r in rows])
        bad = g > FAILURE_MM
        print(f"| {path} | {len(g)} | {g.mean():.1f} | {root.mean():.1f} | {bad.sum()} "
              f"({bad.mean():.1%}) | {g[bad].sum() / len(g):.1f} | {g[~bad].mean():.1f} | "
              f"{root[~bad].mean():.1f} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])

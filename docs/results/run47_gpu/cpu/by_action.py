#!/usr/bin/env python3
"""Mean PA-MPJPE and G-MPJPE per action of evaluations of generated val splits
(docs/results.md, section (ae)):

    python3 docs/results/run47_gpu/cpu/by_action.py DATA_A EVAL_A [DATA_B EVAL_B ...]

DATA: a generated dataset (tools/make_dataset.py) with a val split; EVAL: the folder
``tools/eval_checkpoint.py ... split=val`` wrote for it (its ``per_frame.csv``).
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict

import numpy as np

from sahmr.data.synthetic import SyntheticDataset


def by_action(data: str, evaluation: str) -> dict[str, np.ndarray]:
    """Action -> (N, 2) per-frame (PA-MPJPE, G-MPJPE) of one evaluation."""
    actions = np.asarray(SyntheticDataset(data, "val").strings("action"))
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(f"{evaluation}/per_frame.csv", newline="") as f:
        for row in csv.DictReader(f):
            index = int(row["name"].split("-")[-1])
            groups[str(actions[index])].append((float(row["pa_mpjpe"]), float(row["g_mpjpe"])))
    return {a: np.asarray(v) for a, v in groups.items()}


def main(argv: list[str]) -> None:
    if len(argv) < 2 or len(argv) % 2:
        sys.exit("usage: by_action.py DATA EVAL [DATA EVAL ...]")
    for data, evaluation in zip(argv[0::2], argv[1::2]):
        print(evaluation)
        for action, v in sorted(by_action(data, evaluation).items()):
            print(f"  {action:16s} n={len(v):3d} PA {v[:, 0].mean():6.1f} G {v[:, 1].mean():6.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python
"""Contact sheet of a generated dataset: annotated crops drawn from one split.

    python tools/dataset_sheet.py DATASET_DIR --split train --num 24 --out sheet.png
"""

import argparse
import sys
from pathlib import Path

from PIL import Image

from sahmr.synth.contact_sheet import dataset_contact_sheet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="dataset folder written by tools/make_dataset.py")
    p.add_argument("--split", default="train")
    p.add_argument("--num", type=int, default=24)
    p.add_argument("--columns", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        sheet = dataset_contact_sheet(args.root, args.split, args.num, args.seed, args.columns)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Where an SA-HMR checkpoint's mesh-plausibility (edge-length) error comes from.

    python3 tools/refit_head.py CKPT DATA refit.pt --cache DIR ...   # writes the head caches
    python3 tools/diagnose_shape.py CKPT DIR/val_600.pt --train-cache DIR/train_6000.pt

Reads head caches (`sahmr.engine.head_refit.HeadCache`, written by tools/refit_head.py for
this checkpoint's encoder: the key beside each file must match) and prints
(`sahmr.engine.shape_probe`):

* the edge-length error (%) of the predicted body, and of bodies with the true shape, the true
  pose, the mean shape, or the true first k shape coefficients swapped in;
* how much of each shape coefficient the head predicts (R^2 on the val frames);
* with ``--train-cache``: how well a linear read-out of the frozen mesh tokens recovers each
  shape coefficient on the val frames (R^2): what a head refit could learn at best.

``--json OUT`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="SA-HMR checkpoint (exported or training)")
    p.add_argument("val_cache", type=Path, help="head cache of val frames (tools/refit_head.py)")
    p.add_argument("--train-cache", type=Path, default=None,
                   help="head cache of train frames: also fit the linear shape probe")  # fmt: skip
    p.add_argument("--ridge", type=float, default=100.0, help="the probe's ridge penalty")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args(argv)
    if not a.checkpoint.is_file():
        p.error(f"{a.checkpoint}: no such checkpoint file")
    for path in (a.val_cache, a.train_cache):
        if path is not None and not path.is_file():
            p.error(f"{path}: no such cache file")
    if a.ridge <= 0:
        p.error("--ridge must be > 0")

    from sahmr.engine.checkpoint import load_method
    from sahmr.engine.head_refit import HeadCache, encoder_digest, read_cache_key
    from sahmr.engine.shape_probe import edge_decomposition, head_shape_r2, linear_shape_probe

    try:
        method, _ = load_method(a.checkpoint)
    except ValueError as err:
        p.error(str(err))
    head = getattr(getattr(method, "mesh_net", None), "param_head", None)
    if head is None:
        p.error(f"{a.checkpoint}: not an SA-HMR checkpoint with a parametric head")
    encoder = encoder_digest(method)
    for path in (a.val_cache, a.train_cache):
        if path is None:
            continue
        key = read_cache_key(path)
        if key is None or key.get("encoder_sha256") != encoder:
            p.error(f"{path}: not a cache of this checkpoint's encoder (no key beside it, or "
                    "another encoder): write it with tools/refit_head.py --cache")  # fmt: skip

    val = HeadCache.load(a.val_cache)
    report: dict = {"checkpoint": str(a.checkpoint), "val_frames": len(val),
                    "edge_error_pct": edge_decomposition(head, val)}  # fmt: skip
    report["head_r2"] = head_shape_r2(head, val)
    print(f"edge-length error (%) on {len(val)} val frames:")
    for name, value in report["edge_error_pct"].items():
        print(f"  {name:<34} {value:6.2f}")
    print(
        "the head's shape, R^2 per coefficient: " + " ".join(f"{v:.2f}" for v in report["head_r2"])
    )
    if a.train_cache is not None:
        train = HeadCache.load(a.train_cache)
        probe = linear_shape_probe(train, val, ridge=a.ridge)
        probe.pop("betas")
        report.update(train_frames=len(train), linear_probe=probe)
        r2 = " ".join(f"{v:.2f}" for v in probe["r2"])
        print(f"linear probe of the frozen tokens ({len(train)} train frames): R^2 per shape "
              f"coefficient {r2}; mean |error| {probe['l1']:.3f} (mean shape: "
              f"{probe['l1_mean_shape']:.3f})")  # fmt: skip
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

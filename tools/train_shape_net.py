#!/usr/bin/env python3
"""Train the crop shape network (`sahmr.models.shape_net.CropShapeNet`) on generated sets.

    python3 tools/train_shape_net.py shape_net.pt --data DATA [--data DATA2 ...] \
        --train-frames 20000 --val-frames 600 --steps 3000
    python3 tools/export_checkpoint.py sahmr/checkpoints/sahmr_small.pt with_shape.pt \
        --shape-net shape_net.pt --int8 --fp16-under mesh_net --int8-under mesh_net.encoder

Decodes the crops of each ``--data`` set's train split (and the val split of the first, or of
``--val-data``) once, trains on them on the CPU or a GPU (`sahmr.engine.shape_training`) and
keeps the weights with the lowest rest-pose shape error on val. Writes a training-format
checkpoint whose config is the net's (``model._target_:
sahmr.models.shape_net.CropShapeNet``) and ``<out>.json`` with the history and the val
scores: the shape error in mm against the mean shape's, and R^2 per coefficient.
``--init`` continues from an earlier shape-net checkpoint. ``tools/export_checkpoint.py
--shape-net`` puts the net into an SA-HMR checkpoint, whose body then takes its shape.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def spread(n_total: int, n: int) -> list[int]:
    """``min(n, n_total)`` indices spread evenly over ``range(n_total)`` (a split is written
    room by room, so its first frames come from few rooms)."""
    n = min(n, n_total)
    if n <= 0:
        return []
    return sorted({int(i * n_total / n) for i in range(n)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", type=Path, help="shape-net checkpoint to write")
    p.add_argument("--data", type=Path, action="append", required=True,
                   help="generated set (tools/make_dataset.py); repeat for several")  # fmt: skip
    p.add_argument("--val-data", type=Path, default=None,
                   help="set whose val split validates (default: the first --data)")  # fmt: skip
    p.add_argument("--train-frames", type=int, default=20000, help="train frames, all sets")
    p.add_argument("--val-frames", type=int, default=600)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=None, help="crop side the net reads (px)")
    p.add_argument("--side-noise", type=float, default=0.05,
                   help="std of the log factor on the crop side in training (RCNet's depth "
                   "error at test time)")  # fmt: skip
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--init", type=Path, default=None, help="shape-net checkpoint to continue")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    for path in [*a.data, a.val_data, a.init]:
        if path is not None and not (path.is_file() if path == a.init else
                                     (path / "dataset.json").is_file()):  # fmt: skip
            p.error(f"{path}: not a checkpoint file" if path == a.init
                    else f"{path}: not a generated set (no dataset.json)")  # fmt: skip
    for name in ("train_frames", "val_frames", "steps", "batch_size", "val_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.lr <= 0 or a.side_noise < 0:
        p.error("--lr must be > 0 and --side-noise >= 0")
    if a.size is not None and (a.size < 32 or a.size % 32):
        p.error("--size must be a positive multiple of 32")
    if a.out.is_dir():
        p.error(f"{a.out}: is a folder, expected a file")

    import torch
    from omegaconf import OmegaConf

    from sahmr.body import BodyModel
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.engine.checkpoint import float_state_dict, load_checkpoint, save_checkpoint
    from sahmr.engine.shape_training import (
        ShapeAugment,
        ShapeFrames,
        collect_shape_frames,
        train_shape_net,
    )
    from sahmr.models.shape_net import SHAPE_NET_SIZE, CropShapeNet

    body = BodyModel()
    net_cfg = {"_target_": "sahmr.models.shape_net.CropShapeNet",
               "num_betas": int(body.num_betas), "size": a.size or SHAPE_NET_SIZE}  # fmt: skip
    state = None
    if a.init is not None:
        from sahmr.engine.checkpoint import checkpoint_config

        ckpt = load_checkpoint(a.init)
        init_cfg = OmegaConf.to_container(checkpoint_config(ckpt, a.init).model)
        if init_cfg.get("_target_") != net_cfg["_target_"]:
            p.error(f"--init {a.init}: not a shape-net checkpoint")
        if a.size is not None and init_cfg.get("size") != a.size:
            p.error(f"--init {a.init}: reads {init_cfg.get('size')} px crops, not {a.size}")
        net_cfg, state = init_cfg, float_state_dict(ckpt["model"])
    net = CropShapeNet(**{k: v for k, v in net_cfg.items() if k != "_target_"})
    if state is not None:
        net.load_state_dict(state)

    per_set = -(-a.train_frames // len(a.data))
    parts = []
    for root in a.data:
        ds = SyntheticDataset(root, "train")
        if len(ds) == 0:
            print(f"{root}: no train frames", file=sys.stderr)
            return 2
        parts.append(collect_shape_frames(ds, spread(len(ds), per_set), net.size))
    train = ShapeFrames(*(torch.cat([getattr(f, k) for f in parts])
                          for k in ("crops", "betas", "crop_side_m")))  # fmt: skip
    val_ds = SyntheticDataset(a.val_data or a.data[0], "val")
    if len(val_ds) == 0:
        print(f"{a.val_data or a.data[0]}: no val frames", file=sys.stderr)
        return 2
    val = collect_shape_frames(val_ds, spread(len(val_ds), a.val_frames), net.size)

    device = torch.device(a.device)
    net.to(device)
    net, history = train_shape_net(
        net, train, val, body.shapedirs.to(device), steps=a.steps, batch_size=a.batch_size,
        lr=a.lr, val_every=a.val_every, augment=ShapeAugment(side_noise=a.side_noise),
        seed=a.seed,
    )  # fmt: skip
    best = min(history, key=lambda h: h["shape_mm"])
    config = OmegaConf.create({"model": net_cfg})
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(a.out, model=net.cpu(), config=config, step=int(best["step"]),
                    metrics={"val_shape_mm": best["shape_mm"]})  # fmt: skip
    report = {"train_frames": len(train), "val_frames": len(val), "best": best,
              "history": history, "data": [str(d) for d in a.data]}  # fmt: skip
    a.out.with_suffix(".json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps(best, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Refit an SA-HMR checkpoint's RCNet voter for test-time ROIs (CPU-friendly).

    python3 tools/refit_voter.py sahmr/checkpoints/sahmr_small.pt /data/synth voter.pt \
        --steps 600 --val-frames 160
    python3 tools/refit_head.py voter.pt /data/synth refit.pt    # the head, for the new roots
    python3 tools/export_checkpoint.py refit.pt sahmr_small_new.pt --int8

Trains RCNet's sparse U-Net and voxel heads alone on ROIs centred where the coarse root puts
them at test time (`sahmr.engine.voter_refit`), streaming the train split in a shuffled order,
and keeps the weights whose root error (RCNet as it predicts, ROI refinements included) is
best on the first ``--val-frames`` val frames. Writes a training-format checkpoint and
``<out>.json`` with the history.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_RCNET_LOSS = Path(__file__).resolve().parents[1] / "configs" / "loss" / "rcnet.yaml"
"""The RCNet loss a checkpoint trained with RCNet frozen (no ``loss.rcnet_loss`` stored) refits
its voter with."""


def main(argv: list[str] | None = None) -> int:
    from sahmr.engine.voter_refit import CENTRINGS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="SA-HMR checkpoint with an RCNet")
    p.add_argument("data", type=Path, help="generated dataset (tools/make_dataset.py)")
    p.add_argument("out", type=Path, help="refitted checkpoint (training format)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--centring", choices=CENTRINGS, default="mixed",
                   help="mixed: coarse root or noisy truth; deployed: where the model's own "
                        "refinements put the last ROI")  # fmt: skip
    p.add_argument("--coarse-fraction", type=float, default=1.0 / 3.0,
                   help="share of training ROIs centred on the coarse root")  # fmt: skip
    p.add_argument("--depth-std-max", type=float, default=0.4,
                   help="other ROIs' noise along the viewing ray: std up to this, m")  # fmt: skip
    p.add_argument("--val-frames", type=int, default=160)
    p.add_argument("--val-every", type=int, default=100, help="validate every N steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from sahmr.cli.checks import checkpoint_data_problem

    problem = checkpoint_data_problem(a.checkpoint, a.data, a.out)
    if problem:
        p.error(problem)
    for name in ("steps", "batch", "val_frames", "val_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0.0 <= a.coarse_fraction <= 1.0:
        p.error("--coarse-fraction must be in [0, 1]")
    if a.depth_std_max < 0 or a.lr <= 0:
        p.error("--depth-std-max must be >= 0 and --lr > 0")

    import logging

    import torch
    from hydra.utils import instantiate

    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.engine.checkpoint import load_method, refit_saver, save_refit
    from sahmr.engine.data import checkpoint_steps, spread_indices
    from sahmr.engine.voter_refit import (
        VoterRefitSettings,
        endless,
        rcnet_loss_config,
        refit_voter,
    )

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # one line per validation
    torch.manual_seed(a.seed)
    device = torch.device(a.device)
    try:
        method, cfg = load_method(a.checkpoint, device)
    except ValueError as err:
        p.error(str(err))
    rcnet = getattr(method, "rcnet", None)
    if rcnet is None:
        p.error(f"{a.checkpoint}: not an SA-HMR checkpoint with an RCNet")
    body = instantiate(cfg.body)
    # a checkpoint trained with RCNet frozen stores no RCNet loss: the repository's default
    loss_fn = instantiate(rcnet_loss_config(cfg, DEFAULT_RCNET_LOSS)).to(device)
    train_set, val_set = SyntheticDataset(a.data, "train"), SyntheticDataset(a.data, "val")
    if len(train_set) == 0 or len(val_set) == 0:
        p.error(f"{a.data}: the train and val splits need frames")
    val_index = spread_indices(len(val_set), a.val_frames)  # every room, not the first few
    val_steps = list(checkpoint_steps(val_set, val_index, cfg, body.topology, device,
                                      batch_size=a.batch, desc="val frames"))  # fmt: skip

    def one_pass(epoch: int):
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(
            a.seed + epoch)).tolist()  # fmt: skip
        return checkpoint_steps(train_set, order, cfg, body.topology, device,
                                batch_size=a.batch, progress=False)  # fmt: skip

    settings = VoterRefitSettings(steps=a.steps, lr=a.lr, coarse_fraction=a.coarse_fraction,
                                  depth_std_max=a.depth_std_max, val_every=a.val_every,
                                  seed=a.seed, centring=a.centring)  # fmt: skip

    metric = "refit_val_root_mm"  # kept best, in each saved checkpoint
    report = refit_voter(rcnet, loss_fn, endless(one_pass), val_steps, settings, progress=True,
                         on_best=refit_saver(a.out, method, cfg, metric))  # fmt: skip
    report.update(val_frames=len(val_index), batch=a.batch, source=str(a.checkpoint),
                  roi_refinements=rcnet.roi_refinements, centring=a.centring)  # fmt: skip
    save_refit(a.out, method, cfg, report, metric)
    print(f"wrote {a.out}; refit the head for its roots: python3 tools/refit_head.py {a.out} "
          f"{a.data} OUT.pt")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

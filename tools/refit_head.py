#!/usr/bin/env python3
"""Refit an SA-HMR checkpoint's parametric head on frozen encoder outputs (CPU-friendly).

    python3 tools/refit_head.py sahmr/checkpoints/sahmr_small.pt /data/synth refit.pt \
        --train-frames 6000 --val-frames 600 --steps 3000
    python3 tools/export_checkpoint.py refit.pt sahmr_small_refit.pt --int8

Runs the whole model once per frame (RCNet's root and contacts, as at test time), caches
what the head reads, then trains the head alone (`sahmr.engine.head_refit`) and keeps the
weights best on the val split (``--val-data``: another generated set's val split). The
frames cached are spread evenly over each split (a split is written room by room: its first
frames come from a few rooms). The checkpoint is written at every val improvement, so a
stopped refit leaves its best weights. ``--crop-scale`` (default) also gives the head the crop's
metric scale (`sahmr.models.param_head`, ``crop_scale``) when the checkpoint was trained
without it. Writes a training-format checkpoint (export it to ship) and ``<out>.json`` with
the refit's history.

``--penetration W`` (> 0) adds the scene term (`sahmr.engine.head_refit`): every cached frame
also keeps a crop of its room's SDF around its true root (read from the grid the generator
stored in each room's folder, `sahmr.scene.sdf_store.stored_or_built_sdf`; ``--crop-sdf
exact``: the evaluator's 2 cm grid, built and cached in ``--sdf-cache``), and validation
reports the crop's PenE beside the vertex error. A cache written without crops is completed
(crops added from the frames' rooms and cameras; the network does not run again).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def build(ckpt_path: Path, crop_scale: bool, device: torch.device, scene: bool = True):
    """``(method, cfg, body)``: the checkpoint's SA-HMR, with the crop-scale input if asked
    (its branch starts at zero: the model predicts as the checkpoint does); ``scene=False``:
    the scene-less ablation (``model.scene_contacts: false``, stored with the result)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sahmr.engine.checkpoint import checkpoint_config, float_state_dict, load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    cfg = checkpoint_config(ckpt, ckpt_path)
    if OmegaConf.select(cfg, "model.mesh_net.param_head") is None:
        raise ValueError(f"{ckpt_path}: not an SA-HMR checkpoint with a parametric head")
    if crop_scale:
        OmegaConf.update(cfg, "model.mesh_net.param_head.crop_scale", True, force_add=True)
    if not scene:
        OmegaConf.update(cfg, "model.scene_contacts", False, force_add=True)
    method = instantiate(cfg.model)
    missing, unexpected = method.load_state_dict(float_state_dict(ckpt["model"]), strict=False)
    foreign = [k for k in missing if ".scale_" not in k] + list(unexpected)
    if foreign:
        raise ValueError(f"{ckpt_path}: weights do not match the model: {foreign[:5]}")
    body = instantiate(cfg.body)
    return method.to(device).eval(), cfg, body


def cache_plan(
    train_frames: int, val_frames: int, scene: bool, no_scene_frames: int = 0
) -> list[tuple[str, int, bool, str]]:
    """What to cache: ``(split, frames, scene contacts on, cache file name)`` rows. With
    ``no_scene_frames`` a scene-aware refit also sees that many train frames (and its val
    frames again) without any contact point, as when RCNet finds none: the head learns to stay
    sane there too, and the best step is chosen on both conditions."""

    def name(split: str, frames: int, on: bool) -> str:
        return f"{split}_{frames}{'' if on else '_noscene'}.pt"

    plan = [(split, n, scene, name(split, n, scene))
            for split, n in (("train", train_frames), ("val", val_frames))]  # fmt: skip
    if no_scene_frames and scene:
        plan += [(split, n, False, name(split, n, False))
                 for split, n in (("train", no_scene_frames), ("val", val_frames))]  # fmt: skip
    return plan


def extra_cache_name(root: Path, frames: int, scene: bool) -> str:
    """Cache file name of an ``--extra-train`` set's frames: the main set's train name with
    a digest of the set's resolved path, so sets of the same size do not share a file."""
    import hashlib

    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:10]
    return f"train_{frames}_{digest}{'' if scene else '_noscene'}.pt"


def steps_of(dataset, frames: int, cfg, body, device: torch.device, desc: str,
             batch_size: int = 16, workers: int = 1):  # fmt: skip
    """Prepared steps of ``frames`` frames spread over ``dataset`` (a progress bar)."""
    from sahmr.engine.data import checkpoint_steps, spread_indices

    index = spread_indices(len(dataset), frames)
    yield from checkpoint_steps(dataset, index, cfg, body.topology, device, desc=desc,
                                batch_size=batch_size, num_workers=workers)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="SA-HMR checkpoint (exported or training)")
    p.add_argument("data", type=Path, help="generated dataset (tools/make_dataset.py)")
    p.add_argument("out", type=Path, help="refitted checkpoint (training format)")
    p.add_argument(
        "--val-data",
        type=Path,
        default=None,
        help="take the val frames from this generated set's val split (default: data)",
    )
    p.add_argument("--train-frames", type=int, default=6000)
    p.add_argument("--val-frames", type=int, default=600)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--betas-weight", type=float, default=0.3)
    p.add_argument("--val-every", type=int, default=200, help="validate every N steps")
    p.add_argument("--no-crop-scale", action="store_true", help="keep the head's inputs")
    p.add_argument("--extra-train", nargs=2, action="append", default=[],
                   metavar=("DATA", "FRAMES"),
                   help="also train on FRAMES frames spread over DATA's train split "
                        "(repeatable), e.g. a set generated away from the defaults "
                        "(configs/make_dataset_away.yaml with a train split) to weigh the "
                        "range's edges more than the main set does")  # fmt: skip
    p.add_argument("--no-scene-frames", type=int, default=0,
                   help="also train on this many train frames seen without contacts (their val "
                        "frames join val): robustness when RCNet finds none")  # fmt: skip
    p.add_argument("--no-scene", action="store_true",
                   help="the scene-less ablation: no contact reaches the mesh network (cached "
                        "and refitted so, and stored in the result's config)")  # fmt: skip
    p.add_argument("--cache", type=Path, default=None,
                   help="folder for the cached head inputs: a file is reused when the key "
                        "beside it matches (same encoder weights, data, frames, contacts; "
                        "missing SDF crops are added), written otherwise")  # fmt: skip
    p.add_argument("--penetration", type=float, default=0.0,
                   help="weight of the scene penetration term (mean vertex depth in the "
                        "room, metres); > 0 caches each frame's room SDF crop")  # fmt: skip
    p.add_argument("--sdf-cache", type=Path, default=None,
                   help="SDF grid cache folder of the rooms (default: $SAHMR_CACHE_DIR/sdf or "
                        "~/.cache/sahmr/sdf, the evaluator's)")  # fmt: skip
    p.add_argument("--crop-sdf", choices=("stored", "exact"), default="stored",
                   help="room SDF the crops read: the generator's grid stored with each room "
                        "(falls back to the evaluator's when a room has none) or always the "
                        "evaluator's 2 cm grid (built on first use, ~15 s a room)")  # fmt: skip
    p.add_argument("--device", default="cpu",
                   help="where the network runs and the head trains (cuda: the whole cache is "
                        "held on the GPU)")  # fmt: skip
    p.add_argument("--cache-batch", type=int, default=16,
                   help="frames per forward pass while caching")
    p.add_argument("--loader-workers", type=int, default=1,
                   help="loader processes while caching (1 suits 2 cores; a GPU machine: 8+)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from sahmr.cli.checks import checkpoint_data_problem

    val_data = a.val_data or a.data
    problem = checkpoint_data_problem(a.checkpoint, a.data, a.out) or checkpoint_data_problem(
        a.checkpoint, val_data
    )
    extras = []
    for root, frames in a.extra_train:
        if not frames.isdigit() or int(frames) < 1:
            p.error(f"--extra-train {root} {frames}: FRAMES must be a whole number >= 1")
        problem = problem or checkpoint_data_problem(a.checkpoint, Path(root))
        extras.append((Path(root), int(frames)))
    if problem:
        p.error(problem)
    if a.no_scene_frames < 0:
        p.error("--no-scene-frames must be >= 0")
    if a.no_scene_frames and a.no_scene:
        p.error("--no-scene-frames is for a scene-aware refit; --no-scene already drops them all")
    if not a.penetration >= 0:  # also refuses nan
        p.error("--penetration must be >= 0")
    for name in ("train_frames", "val_frames", "steps", "batch", "val_every", "cache_batch",
                 "loader_workers"):  # fmt: skip
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")

    import logging

    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.engine.checkpoint import refit_saver, save_refit
    from sahmr.engine.data import spread_indices
    from sahmr.engine.head_refit import (
        HeadCache,
        RefitWeights,
        RoomSDFCrops,
        cache_action,
        cache_key,
        collect_head_inputs,
        encoder_digest,
        frame_cameras,
        read_cache_key,
        refit_head,
        with_sdf_crops,
        write_cache_key,
    )
    from sahmr.scene.sdf_store import stored_or_built_sdf

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # one line per validation
    torch.manual_seed(a.seed)
    device = torch.device(a.device)
    try:
        method, cfg, body = build(a.checkpoint, not a.no_crop_scale, device, not a.no_scene)
        datasets = {"train": (a.data, SyntheticDataset(a.data, "train")),
                    "val": (val_data, SyntheticDataset(val_data, "val"))}  # fmt: skip
        # (dataset, split, frames, contacts on, cache file name) for every cache
        plan = [(row[0], *row) for row in cache_plan(a.train_frames, a.val_frames,
                                                     not a.no_scene, a.no_scene_frames)]
        for i, (root, frames) in enumerate(extras):
            datasets[f"extra{i}"] = (root, SyntheticDataset(root, "train"))
            plan.append((f"extra{i}", "train", frames, not a.no_scene,
                         extra_cache_name(root, frames, not a.no_scene)))  # fmt: skip
        for source, (root, dataset) in datasets.items():
            if len(dataset) == 0:
                split = "val" if source == "val" else "train"
                raise ValueError(f"{root}: the {split} split has no frames")
        encoder = encoder_digest(method)
        loader = stored_or_built_sdf if a.crop_sdf == "stored" else None  # None: exact
        rooms = {root: RoomSDFCrops(root / "rooms", cache_dir=a.sdf_cache, loader=loader)
                 for root, _ in datasets.values()} if a.penetration > 0 else {}  # fmt: skip
        caches: dict[str, list] = {"train": [], "val": []}
        for source, split, frames, scene, name in plan:
            root, dataset = datasets[source]
            crops = rooms.get(root)
            key = cache_key(encoder, root, split, frames, len(dataset), scene,
                            sdf_crop=crops is not None, crop_source=a.crop_sdf)  # fmt: skip
            path = a.cache / name if a.cache is not None else None
            found = path is not None and path.is_file()
            action = cache_action(read_cache_key(path) if found else None, key)
            if action == "build":
                steps = steps_of(dataset, frames, cfg, body, device, f"{split} frames",
                                 a.cache_batch, a.loader_workers)  # fmt: skip
                method.scene_contacts = scene  # the condition these frames are seen in
                cache = collect_head_inputs(method, steps, crops)
                method.scene_contacts = not a.no_scene
            else:
                cache = HeadCache.load(path)
                if crops is None:
                    cache.sdf_crop = None  # not asked for: no memory spent on them
                elif action == "add_crops":
                    index = spread_indices(len(dataset), frames)
                    cache = with_sdf_crops(cache, *frame_cameras(dataset, index), crops)
            if path is not None and action != "reuse":
                path.parent.mkdir(parents=True, exist_ok=True)
                cache.save(path)
                write_cache_key(path, key)
            caches[split].append(cache)
        # the head trains where it runs: on a GPU every batch is an index into device memory
        train, val = (HeadCache.cat(caches[k]).to(device) for k in ("train", "val"))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    head = method.mesh_net.param_head

    metric = "refit_val_placed_mm"  # kept best, in each saved checkpoint
    report = refit_head(head, train, val, steps=a.steps, batch_size=a.batch, lr=a.lr,
                        weights=RefitWeights(betas=a.betas_weight, penetration=a.penetration),
                        seed=a.seed, val_every=a.val_every, progress=True,
                        on_best=refit_saver(a.out, method, cfg, metric))  # fmt: skip
    report.update(train_frames=len(train), val_frames=len(val), source=str(a.checkpoint),
                  no_scene_frames=a.no_scene_frames, penetration=a.penetration,
                  data=str(a.data), val_data=str(val_data),
                  extra_train=[{"data": str(root), "frames": n} for root, n in extras])  # fmt: skip
    save_refit(a.out, method, cfg, report, metric)
    print(f"wrote {a.out}; ship it with: python3 tools/export_checkpoint.py {a.out} OUT.pt --int8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed of the optimisation baseline: the PROX-style `sahmr.optim.scene_fit.SceneFitter`
(``configs/optim/prox.yaml``, multi-start as tools/fit.py runs it, mean-pose start,
ground-truth keypoints), seconds per frame at each ``--fit-batch-sizes`` entry.

`bench_optimisation` takes the parsed arguments of ``tools/benchmark.py`` (``fit_config``,
``fit_iterations``, ``fit_batch_sizes``, ``fit_repeats``, ``cache_dir``, ``sdf_voxel_size``,
``device_name``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from sahmr.benchmark.measure import release_memory

logger = logging.getLogger(__name__)


def bench_optimisation(
    frames: Any, args: argparse.Namespace, device: torch.device, *, repo_root: Path
) -> dict:
    """Seconds per frame of the PROX-style fit (as tools/fit.py runs it) per batch size; the
    fit config is reported relative to ``repo_root`` when inside it."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sahmr.benchmark.timing import TimingSummary, time_callable
    from sahmr.body import BodyModel
    from sahmr.evaluation.evaluator import SceneSDFs

    if frames.keypoints2d_crop is None:
        return {"skipped": "the frames carry no ground-truth joints to fit to"}
    cfg = OmegaConf.load(args.fit_config)
    if args.fit_iterations is not None:
        for stage in cfg.stages:
            stage.iterations = args.fit_iterations
    fitter = instantiate(cfg, body_model=BodyModel()).to(device)
    full = list(fitter.stages)
    rest = full[fitter.start_stages :]
    uses_scene = any(s.uses_scene for s in full)
    leading = sum(s.iterations for s in full[: fitter.start_stages])
    iterations = fitter.start_orientations * leading + sum(s.iterations for s in rest)
    sdf_cache = args.cache_dir / "sdf" if args.cache_dir is not None else None
    scenes = SceneSDFs(scene_dir=frames.scene_dir, voxel_size=args.sdf_voxel_size,
                       cache_dir=sdf_cache)  # fmt: skip
    config = Path(args.fit_config).resolve()
    out: dict[str, Any] = {
        "device_name": args.device_name,
        "config": (
            str(config.relative_to(repo_root)) if config.is_relative_to(repo_root) else str(config)
        ),
        "iterations_per_frame": iterations,
        "stage_iterations": [s.iterations for s in full],
        "start_orientations": fitter.start_orientations,
        "scene_terms": uses_scene,
        "sdf_voxel_size": args.sdf_voxel_size,
        "keypoints": "ground-truth SMPL joints projected into the crop",
        "batches": {},
    }
    for B in args.fit_batch_sizes:
        idx = frames.cycle(B)
        kp = frames.keypoints2d_crop[idx].float()
        K = frames.inputs.K_crop[idx].float()
        T = frames.inputs.T_w2c[idx].float()
        names = sorted({frames.scene_ids[i] for i in idx})
        grids = [scenes.get(n) for n in names] if uses_scene else []
        frame_scene = torch.tensor([names.index(frames.scene_ids[i]) for i in idx],
                                   device=device)  # fmt: skip

        def fit(kp=kp, K=K, T=T, grids=grids, frame_scene=frame_scene) -> None:
            init = fitter.search_start(fitter.mean_pose_start(kp, K), kp, K)
            stages = fitter.stages[fitter.start_stages :]
            if uses_scene:
                fitter.fit(init, kp, K, T, grids, frame_scene, stages=stages)
            else:
                fitter(init, kp, K, stages=stages)

        logger.info("  optimisation batch %d", B)
        fitter.stages = [dataclasses.replace(s, iterations=min(1, s.iterations)) for s in full]
        try:
            fit()  # warm-up: one step per stage (kernels, SDF upload)
        finally:
            fitter.stages = full
        secs = time_callable(fit, device=device, warmup=0, iters=args.fit_repeats)
        summary = TimingSummary.from_seconds(secs)
        out["batches"][str(B)] = {
            "fit": summary.to_dict(),
            "seconds_per_frame": summary.median_ms / 1000.0 / B,
        }
        release_memory(device)
    per_frame = {int(b): r["seconds_per_frame"] for b, r in out["batches"].items()}
    out["best_batch"] = min(per_frame, key=per_frame.get)
    out["best_seconds_per_frame"] = per_frame[out["best_batch"]]
    if 1 in per_frame:
        out["seconds_per_frame_b1"] = per_frame[1]
    return out

"""Throughput of the synthetic data generator (placement + render + encode + shard write).

    python tools/benchmark_generator.py --num-samples 400 --workers 2 --placer standing
    python tools/benchmark_generator.py --num-samples 64 --workers 2 --placer auto

Prints the end-to-end rate (worker start-up, body-model load, room SDF build included)
and the CPU time per sample of one shard generated in this process after a warm-up shard
(``projected_samples_per_second_on_free_cores`` = workers / CPU seconds per sample, what the
run would reach if each worker had a core to itself; the shared CPU machine rarely does).
``--profile`` adds a cProfile table of that shard.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

from sahmr.synth import generate as gen


def _config(args: argparse.Namespace, out: Path) -> gen.GenerationConfig:
    return gen.GenerationConfig.from_dict(
        dict(
            out_dir=str(out),
            num_samples=args.num_samples,
            samples_per_shard=args.samples_per_shard,
            seed=args.seed,
            workers=args.workers,
            placer=args.placer,
            views_per_body=args.views_per_body,
            crop_format=args.crop_format,
            full_frame_scale=args.full_frame_scale,
            splits={"train": dict(fraction=1.0, kinds=args.kinds, seeds=[100])},
        )
    )


def main() -> None:
    """Runs the benchmark and prints a JSON report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=400)
    p.add_argument("--samples-per-shard", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--placer", default="standing", choices=["standing", "auto"])
    p.add_argument("--views-per-body", type=int, default=4)
    p.add_argument("--crop-format", default="jpeg", choices=["jpeg", "png"])
    p.add_argument("--full-frame-scale", type=float, default=0.0)
    p.add_argument("--kinds", nargs="+", default=["living_room", "office", "bedroom"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="profile one shard in-process")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds"
        cfg = _config(args, out)
        gen.generate(cfg, progress=False)  # rooms written once, not timed below
        for shard in (out / "shards").glob("*.npz"):
            shard.unlink()
        t0 = time.perf_counter()
        summary = gen.generate(cfg, progress=True)
        wall = time.perf_counter() - t0
        report = {
            "args": vars(args),
            "samples": summary["this_run"]["samples"],
            "wall_seconds": round(wall, 2),
            "samples_per_second_end_to_end": round(summary["this_run"]["samples"] / wall, 2),
            "rejects": summary["rejects"],
            "samples_per_action": summary["samples_per_action"],
        }
        # steady state in this process: one shard after a warm-up shard (room, SDF cached)
        gen._init_worker(cfg, gen.scene_table(cfg))
        plans = gen.plan_shards(cfg)
        gen.generate_shard_rows(gen._STATE, plans[0])
        plan = plans[-1] if len(plans) > 1 else plans[0]
        prof = cProfile.Profile() if args.profile else None
        t1, c1 = time.perf_counter(), time.process_time()
        if prof is not None:
            prof.runcall(gen._run_shard, plan)
        else:
            gen._run_shard(plan)
        wall1, cpu1 = time.perf_counter() - t1, time.process_time() - c1
        report["steady_state_one_process"] = {
            "samples": plan.num_samples,
            "wall_seconds_per_sample": round(wall1 / plan.num_samples, 4),
            "cpu_seconds_per_sample": round(cpu1 / plan.num_samples, 4),
            "projected_samples_per_second_on_free_cores": round(
                args.workers * plan.num_samples / cpu1, 1
            ),
        }
        if prof is not None:
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

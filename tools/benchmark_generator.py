"""Throughput of the synthetic data generator (placement + render + encode + shard write).

    python tools/benchmark_generator.py --num-samples 400 --workers 2
    python tools/benchmark_generator.py --num-samples 200 --workers 2 --skip-end-to-end
    python tools/benchmark_generator.py --placer standing --num-samples 400 --workers 2

Prints a JSON report with

* ``end_to_end``: the rate of a full ``generate`` run with ``--workers`` processes (worker
  start-up and body-model load included; rooms and their SDFs are built by a first run and
  not timed, as ``generate`` caches them in the output folder);
* ``per_stage_ms_per_sample``: CPU milliseconds per sample of each stage, measured in this
  process on one shard per room kind after a warm-up shard (placement, body ray-caster
  build, rendering, encoding, shard write, motion sequences, the rest), exclusive of nested
  stages; ``projected_samples_per_second`` = workers * 1000 / total, the rate the run
  would reach with one free core per worker (the shared CPU machine rarely has them).

``--profile`` adds a cProfile table of the measured shards.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import pstats
import tempfile
import time
from collections import Counter
from pathlib import Path

from sahmr.synth import generate as gen
from sahmr.synth import placers, plan, room_store, worker


class StageTimer:
    """Exclusive CPU time per named stage: a stage's time excludes stages nested in it."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self._stack: list[list[float]] = []

    def wrap(self, name: str, fn):
        """``fn`` timed under ``name``."""

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._stack.append([time.process_time(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                start, nested = self._stack.pop()
                spent = time.process_time() - start
                self.seconds[name] += spent - nested
                if self._stack:
                    self._stack[-1][1] += spent

        return timed


def _config(args: argparse.Namespace, out: Path, kinds: list[str]) -> plan.GenerationConfig:
    return plan.GenerationConfig.from_dict(
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
            sequence_fraction=args.sequence_fraction,
            splits={"train": dict(fraction=1.0, kinds=kinds, seeds=[args.room_seed])},
        )
    )


def _instrument(timer: StageTimer) -> None:
    """Wraps the generator's stages (module attributes used by `worker.generate_shard_rows`)."""
    from sahmr.synth import placement

    for name in ("place_actions", "sample"):
        setattr(placement.Placer, name, timer.wrap("placement", getattr(placement.Placer, name)))
    placers.StandingPlacer.sample = timer.wrap("placement", placers.StandingPlacer.sample)
    worker.BodyRaycaster = timer.wrap("body_raycaster_build", worker.BodyRaycaster)
    worker.render_sample = timer.wrap("render", worker.render_sample)
    worker.encode_image = timer.wrap("encode", worker.encode_image)
    worker.write_shard_atomic = timer.wrap("write", worker.write_shard_atomic)
    worker.pack_rows = timer.wrap("write", worker.pack_rows)
    worker._sequence_rows = timer.wrap("sequences_other", worker._sequence_rows)


def main() -> None:
    """Runs the benchmark and prints a JSON report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=400)
    p.add_argument("--samples-per-shard", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--placer", default="auto", choices=["standing", "auto"])
    p.add_argument("--views-per-body", type=int, default=4)
    p.add_argument("--crop-format", default="jpeg", choices=["jpeg", "png"])
    p.add_argument("--full-frame-scale", type=float, default=0.0)
    p.add_argument("--sequence-fraction", type=float, default=0.0)
    p.add_argument(
        "--kinds",
        nargs="+",
        default=["living_room", "office", "bedroom", "lecture_hall", "gym", "outdoor_platform"],
    )
    p.add_argument("--room-seed", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-end-to-end", action="store_true")
    p.add_argument("--profile", action="store_true", help="profile the measured shards")
    args = p.parse_args()

    report: dict = {"args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_end_to_end:
            out = Path(tmp) / "ds"
            cfg = _config(args, out, args.kinds)
            gen.generate(cfg, progress=False)  # rooms + SDFs written once, not timed below
            for shard in (out / "shards").glob("*.npz"):
                shard.unlink()
            t0 = time.perf_counter()
            summary = gen.generate(cfg, progress=True)
            wall = time.perf_counter() - t0
            report["end_to_end"] = {
                "samples": summary["this_run"]["samples"],
                "wall_seconds": round(wall, 2),
                "samples_per_second": round(summary["this_run"]["samples"] / wall, 2),
                "rejects": summary["rejects"],
                "samples_per_action": summary["samples_per_action"],
            }
        # per stage, in this process: one warm-up + one measured shard per room kind
        timer = StageTimer()
        _instrument(timer)
        prof = cProfile.Profile() if args.profile else None
        samples, cpu = 0, 0.0
        for kind in args.kinds:
            out = Path(tmp) / f"stage_{kind}"
            cfg = _config(args, out, [kind])
            cfg.num_samples, cfg.workers = 2 * args.samples_per_shard, 0
            plans = plan.plan_shards(cfg)
            table = plan.scene_table(cfg)
            sid = plan.shard_scene_id(cfg, plans[0])
            room_store.write_room(out, sid, table[sid])
            if cfg.placer == "auto":
                device = room_store.resolve_sdf_device(cfg.sdf_device)
                room_store.write_placer_sdf(out, sid, table[sid], cfg.sdf_voxel_size, device)
            (out / "shards").mkdir(parents=True, exist_ok=True)
            worker.init_worker(cfg, table)
            worker.run_shard(plans[0])  # warm-up: room, ray caster, SDF load, first-use costs
            timer.seconds.clear()
            c0 = time.process_time()
            if prof is not None:
                prof.runcall(worker.run_shard, plans[-1])
            else:
                worker.run_shard(plans[-1])
            spent = time.process_time() - c0
            timer.seconds["other"] += spent - sum(timer.seconds.values())
            report.setdefault("per_kind_ms_per_sample", {})[kind] = round(
                1000 * spent / plans[-1].num_samples, 1
            )
            for k, v in timer.seconds.items():
                report.setdefault("_stage_seconds", Counter())[k] += v
            samples += plans[-1].num_samples
            cpu += spent
        stages = report.pop("_stage_seconds")
        report["per_stage_ms_per_sample"] = {
            k: round(1000 * v / samples, 2) for k, v in sorted(stages.items())
        }
        report["cpu_ms_per_sample"] = round(1000 * cpu / samples, 1)
        report["projected_samples_per_second"] = round(args.workers * samples / cpu, 1)
        if prof is not None:
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""The generation driver: writes dataset.json, hands shards to a worker pool, resumes, sums up.

A dataset is a folder::

    dataset.json          format version, config, config hash, shard plan, scene table
    rooms.json            scene_id -> how to rebuild the room (bundled name / kind + seed)
    rooms/<scene_id>/     the room (mesh.ply, meta.json, ...) + scene_points.npz (2 cm)
                          + placer_sdf_<pitch>.npz (the contact placer's SDF, a cache)
    shards/shard-XXXXXX.npz   samples (`sahmr.data.shards`)
    summary.json          counts per split / action / scene, rejects, samples/s

What the dataset draws (config, rooms per split, shards) is `sahmr.synth.plan`; one shard
is filled by `sahmr.synth.worker`; the room folders are written by `sahmr.synth.room_store`.
Shard ``i`` depends only on (seed, i, config): runs are deterministic, resumable shard by
shard and can be split across machines (``shard="i/N"`` takes every N-th shard index).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import queue
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NotRequired, TypedDict

from sahmr.atomic_write import atomic_write_json
from sahmr.data.shards import (
    DATASET_FORMAT,
    DATASET_VERSION,
    SHARD_VERSION,
    read_header,
    shard_name,
    validate_shard,
)
from sahmr.synth.plan import (
    GenerationConfig,
    ShardPlan,
    parse_shard_spec,
    plan_shards,
    scene_table,
    shard_scene_id,
)
from sahmr.synth.room_store import resolve_sdf_device, write_placer_sdf, write_room
from sahmr.synth.worker import ShardResult, init_worker, load_body, run_shard

logger = logging.getLogger(__name__)


class RunInfo(TypedDict):
    """What one run of `generate` did (``summary.json``'s ``this_run``)."""

    shard: str
    shards_written: int
    samples: int
    seconds: float
    samples_per_second: float
    workers: int


class GenerationSummary(TypedDict):
    """``summary.json``: counts over every shard of the dataset written so far (any run),
    then this run and the config hash."""

    shards_done: int
    shards_planned: int
    samples_per_split: dict[str, int]
    samples_per_action: dict[str, dict[str, int]]
    samples_per_scene: dict[str, dict[str, int]]
    rejects: dict[str, int]
    occlusion_mean: float
    camera_retries: dict[str, int]
    occluded_samples: int
    this_run: NotRequired[RunInfo]
    config_hash: NotRequired[str]


def _summarise(cfg: GenerationConfig, plans: Sequence[ShardPlan]) -> GenerationSummary:
    shard_dir = Path(cfg.out_dir) / "shards"
    per_split: Counter[str] = Counter()
    per_action: dict[str, Counter[str]] = {}
    per_scene: dict[str, Counter[str]] = {}
    rejects: Counter[str] = Counter()
    camera_retries: Counter[str] = Counter()
    done, occl_sum, occluded = 0, 0.0, 0
    for p in plans:
        path = shard_dir / shard_name(p.index)
        if not path.is_file():
            continue
        try:
            h = read_header(path)
        except (OSError, ValueError, KeyError):
            continue
        done += 1
        n = int(h["num_samples"])
        per_split[p.split] += n
        s = h["stats"]
        per_action.setdefault(p.split, Counter()).update(s["actions"])
        per_scene.setdefault(p.split, Counter())[s["scene_id"]] += n
        rejects.update(s["rejects"])
        camera_retries.update(s.get("camera_retries", {}))
        occluded += int(s.get("occluded_samples", 0))
        occl_sum += float(s.get("occlusion_mean", 0.0)) * n
    return {
        "shards_done": done,
        "shards_planned": len(plans),
        "samples_per_split": dict(per_split),
        "samples_per_action": {k: dict(v) for k, v in per_action.items()},
        "samples_per_scene": {k: dict(v) for k, v in per_scene.items()},
        "rejects": dict(rejects),
        "occlusion_mean": occl_sum / max(sum(per_split.values()), 1),
        "camera_retries": dict(camera_retries),
        "occluded_samples": occluded,
    }


def generate(cfg: GenerationConfig, *, progress: bool = True) -> GenerationSummary:
    """Generates (this machine's part of) a dataset.

    Args:
        cfg: The configuration.
        progress: Show a tqdm progress bar over shards.

    Returns:
        The summary written to ``summary.json``.
    """
    from tqdm import tqdm

    root = Path(cfg.out_dir)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    part, parts = parse_shard_spec(cfg.shard)
    table = scene_table(cfg)
    plans = plan_shards(cfg)
    meta = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "shard_version": SHARD_VERSION,
        "config": cfg.content_dict(),
        "config_hash": cfg.content_hash(),
        "shards": [
            {
                "index": p.index,
                "split": p.split,
                "num_samples": p.num_samples,
                "file": f"shards/{shard_name(p.index)}",
            }
            for p in plans
        ],
        "scenes": table,
    }
    old = root / "dataset.json"
    if old.is_file():
        prev = json.loads(old.read_text(encoding="utf-8"))
        if prev.get("config_hash") != meta["config_hash"] and cfg.resume:
            raise ValueError(
                f"{root} holds a dataset of another config (hash {prev.get('config_hash')} != "
                f"{meta['config_hash']}); use a new out_dir or resume=false"
            )
    atomic_write_json(old, meta, indent=1, sort_keys=True)
    atomic_write_json(root / "rooms.json", table, indent=1, sort_keys=True)
    mine = [p for p in plans if p.index % parts == part]
    expect = {"config_hash": cfg.content_hash()}
    todo = [
        p
        for p in mine
        if not (
            cfg.resume
            and validate_shard(
                root / "shards" / shard_name(p.index), {**expect, "shard_index": p.index}
            )
        )
    ]
    logger.info(
        "%d of %d shards to write (%d skipped as done)", len(todo), len(mine), len(mine) - len(todo)
    )
    # Evaluation splits first (small, and a trainer streaming this dataset validates on them
    # from its start), then training shards in index order.
    todo.sort(key=lambda p: (p.split == "train", p.index))
    sdf_device = resolve_sdf_device(cfg.sdf_device) if cfg.placer == "auto" else None

    def room_ready(plan: ShardPlan, built: set[str]) -> None:
        """Writes the plan's room and builds its SDF (main process; forked workers must not
        touch CUDA and each grid is built once, not once per worker) before the shard is
        handed out. Only rooms this machine's shards are set in are written."""
        sid = shard_scene_id(cfg, plan)
        if sid not in built:
            write_room(root, sid, table[sid])
            if sdf_device is not None:
                write_placer_sdf(root, sid, table[sid], cfg.sdf_voxel_size, sdf_device)
            built.add(sid)

    t0 = time.perf_counter()
    made = 0
    built: set[str] = set()
    bar = tqdm(total=sum(p.num_samples for p in todo), unit="sample", disable=not progress)
    if cfg.workers <= 0 or len(todo) <= 1:
        init_worker(cfg, table)
        for p in todo:
            room_ready(p, built)
            made += run_shard(p)["num_samples"]
            bar.update(p.num_samples)
    else:
        if cfg.start_method == "fork":
            load_body(cfg.body_model_path)  # once here, not once per worker
        ctx = mp.get_context(cfg.start_method)
        done: queue.SimpleQueue[ShardResult | BaseException] = queue.SimpleQueue()
        with ctx.Pool(
            min(cfg.workers, len(todo)), initializer=init_worker, initargs=(cfg, table)
        ) as pool:
            # Each shard is handed out as soon as its room's SDF exists: workers start on
            # the first rooms while the main process builds the rest.
            for p in todo:
                room_ready(p, built)
                pool.apply_async(run_shard, (p,), callback=done.put, error_callback=done.put)
            for _ in todo:
                res = done.get()
                if isinstance(res, BaseException):
                    raise res
                made += res["num_samples"]
                bar.update(res["num_samples"])
    bar.close()
    seconds = time.perf_counter() - t0
    summary = _summarise(cfg, plans)
    summary.update(
        {
            "this_run": {
                "shard": cfg.shard,
                "shards_written": len(todo),
                "samples": made,
                "seconds": round(seconds, 3),
                "samples_per_second": round(made / seconds, 2) if made else 0.0,
                "workers": cfg.workers,
            },
            "config_hash": cfg.content_hash(),
        }
    )
    atomic_write_json(root / "summary.json", summary, indent=1, sort_keys=True)
    return summary

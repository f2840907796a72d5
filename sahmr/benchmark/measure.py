"""Speed and memory of one method: end-to-end ``predict()`` timing, peak memory and per-stage
timing at every batch size, under each speed-up variant (`bench_model`).

The functions take the parsed arguments of ``tools/benchmark.py`` (``warmup``, ``iters``,
``max_seconds``, ``batch_sizes``, ``no_stages``, ``compile_backend``, ``compile_mode``,
``checkpoints``, ``method_overrides``, ``seed``, ``tiny``, ``device_name``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from sahmr.benchmark.methods import METHODS, Variant, autocast_factory, build_method

logger = logging.getLogger(__name__)


def release_memory(device: torch.device) -> None:
    """Collect garbage and, on CUDA, wait for the device and return cached blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _time(fn: Callable[[], Any], args: argparse.Namespace, device: torch.device) -> dict:
    from sahmr.benchmark.timing import TimingSummary, time_callable

    seconds = time_callable(fn, device=device, warmup=args.warmup, iters=args.iters,
                            max_seconds=args.max_seconds)  # fmt: skip
    return TimingSummary.from_seconds(seconds).to_dict()


def frustum_stage(frames: Any, inputs: Any, batch_size: int) -> Any:
    """Stage timing the bbox-frustum cut of the scene points (input preparation)."""
    from sahmr.benchmark.stages import Stage
    from sahmr.scene.frontend import FRUSTUM_FAR_M, FRUSTUM_NEAR_M
    from sahmr.scene.frustum import frustum_crop

    bank = frames.bank
    frame_scene = bank.frame_scene(frames.frame_scene(batch_size))

    def run() -> None:
        frustum_crop(bank.points_world, inputs.K, inputs.T_w2c, inputs.bbox, FRUSTUM_NEAR_M,
                     FRUSTUM_FAR_M, scene_idx=bank.point_scene,
                     frame_scene=frame_scene)  # fmt: skip

    return Stage("frustum", run, "input preparation: scene points in the bbox frustum "
                                 "(prepare_inputs, not part of predict)")  # fmt: skip


def bench_batch(
    model: torch.nn.Module,
    family: str,
    swaps: Any,
    frames: Any,
    batch_size: int,
    context: Callable[[], Any],
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """End-to-end timing, peak memory and stage timings at one batch size."""
    from sahmr.benchmark.stages import LAYOUTS
    from sahmr.benchmark.timing import (
        memory_allocated_mb,
        peak_memory_mb,
        reset_peak_memory,
        synchronize,
    )

    inputs = frames.batch(batch_size)

    def end_to_end() -> None:
        with context():
            model.predict(inputs)

    synchronize(device)
    resident = memory_allocated_mb(device)  # weights, scene bank, inputs
    end_to_end()  # first call: compilation, graph capture, cuDNN autotuning (not in the peak)
    synchronize(device)
    reset_peak_memory(device)
    e2e = _time(end_to_end, args, device)
    peak = peak_memory_mb(device)
    out: dict[str, Any] = {
        "end_to_end": e2e,
        "frames_per_s": batch_size / (e2e["median_ms"] / 1000.0),
        "resident_mb": resident,
        "peak_allocated_mb": peak,
        "peak_reserved_mb": peak_memory_mb(device, reserved=True),
        # What one predict call adds to the resident tensors (activations, workspaces and CUDA
        # graph pools, which stay allocated after the first call).
        "peak_over_resident_mb": None if peak is None else peak - resident,
    }
    if not args.no_stages:
        stages, info = LAYOUTS[family].build(model, inputs, swaps, context)
        if family == "sahmr" and inputs.scene_points_cam is not None:
            stages.insert(0, frustum_stage(frames, inputs, batch_size))
        out["stages"] = {s.name: _time(s.run, args, device) for s in stages}
        out["stage_notes"] = {s.name: s.note for s in stages}
        out["sizes"] = info
        del stages
    return out


def bench_variant(
    model: torch.nn.Module,
    family: str,
    frames: Any,
    variant: Variant,
    args: argparse.Namespace,
    device: torch.device,
    *,
    weights_mb: float = 0.0,
) -> dict[str, Any]:
    """Every batch size under one variant; the model is restored afterwards.

    ``peak_mb_b1`` is ``weights_mb`` plus what one batch-1 predict call allocates on top of
    the resident tensors: the method's own footprint, without the scene bank and inputs.
    """
    from sahmr.benchmark.stages import LAYOUTS, ModuleSwaps, compile_modules, graph_modules

    layout = LAYOUTS[family]
    swaps = ModuleSwaps(model)
    applied: dict[str, Any] = {}
    if variant.compile:
        from torch import _dynamo  # (``import torch._dynamo`` would make torch a local name)

        # A submodule that fails to compile runs eagerly (with a warning) instead of ending
        # the run; raise the recompile limit for the batch sizes and sequence lengths.
        _dynamo.config.suppress_errors = True
        _dynamo.config.cache_size_limit = max(_dynamo.config.cache_size_limit, 64)
        kw = {"backend": args.compile_backend, "mode": args.compile_mode}
        applied["compiled"] = compile_modules(swaps, layout.static, **kw)
        applied["compiled"] += compile_modules(swaps, layout.dynamic, dynamic=True, **kw)
    if variant.graphs:
        if device.type == "cuda":
            applied["graphed"] = graph_modules(swaps, layout.graphable)
            applied["not_graphed"] = {
                "dynamic": list(layout.dynamic),
                "note": "data-dependent shapes (sparse stage, scene tokens) stay eager",
            }
        else:
            applied["graphed"] = []
            applied["note"] = "CUDA graphs need a GPU: not applied"
    context = autocast_factory(variant, device)
    batches: dict[str, Any] = {}
    try:
        for B in args.batch_sizes:
            logger.info("  %s batch %d", variant.name, B)
            try:
                batches[str(B)] = bench_batch(model, family, swaps, frames, B, context, args,
                                              device)  # fmt: skip
            except torch.OutOfMemoryError as exc:
                batches[str(B)] = {"oom": str(exc).splitlines()[0]}
                logger.warning("  batch %d: out of memory, larger batches skipped", B)
                release_memory(device)
                break
            release_memory(device)
    finally:
        failures = []
        for _, new in swaps.swaps.values():
            failures += list(getattr(new, "failures", []))
        if failures:
            applied["graph_failures"] = failures
        swaps.restore()
        release_memory(device)
    done = {int(b): r for b, r in batches.items() if "oom" not in r}
    result: dict[str, Any] = {"variant": variant.name, "applied": applied, "batches": batches}
    if done:
        best = max(done, key=lambda b: done[b]["frames_per_s"])
        result["best_batch"] = best
        result["best_frames_per_s"] = done[best]["frames_per_s"]
    if 1 in done:
        result["latency_b1"] = done[1]["end_to_end"]
        over = done[1]["peak_over_resident_mb"]
        result["peak_mb_b1"] = None if over is None else weights_mb + over
    return result


def bench_model(
    name: str,
    frames: Any,
    variants: Sequence[Variant],
    args: argparse.Namespace,
    device: torch.device,
    *,
    config_dir: Path,
) -> dict[str, Any]:
    """All variants of one method (built from the configs in ``config_dir``)."""
    from sahmr.benchmark.stages import parameter_megabytes

    spec = METHODS[name]
    ckpt = args.checkpoints.get(name)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = build_method(name, tiny=args.tiny, extra=args.method_overrides.get(name, ()),
                         checkpoint=ckpt, device=device, config_dir=config_dir)  # fmt: skip
    logger.info("%s built in %.1f s", name, time.perf_counter() - t0)
    entry: dict[str, Any] = {
        "device_name": args.device_name,
        "family": spec.family,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "weights_mb": parameter_megabytes(model),
        "checkpoint": str(ckpt) if ckpt else None,
        "tiny": bool(args.tiny),
        "variants": {},
    }
    for variant in variants:
        logger.info("%s [%s]", name, variant.name)
        entry["variants"][variant.name] = bench_variant(
            model, spec.family, frames, variant, args, device, weights_mb=entry["weights_mb"]
        )
    del model
    release_memory(device)
    return entry

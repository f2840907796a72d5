#!/usr/bin/env python
"""Speed and memory of every method on the same frames: latency, throughput, stages, memory.

For each method: end-to-end ``predict()`` latency at batch 1 (median, p90), throughput
(frames/s) at every ``--batch-sizes`` entry and the best of them, peak GPU memory
(``torch.cuda.max_memory_allocated``, weights included) at batch 1, and the time of each
stage re-run on its own captured inputs (`sahmr.benchmark.stages`):

* SA-HMR: ``frustum`` (input preparation, not in predict), ``rcnet_2d`` (RCNet backbone +
  heads), ``sparse`` (ROI select + voxelise + sparse U-Net + vote + contacts; ``sparse_unet`` is
  the U-Net alone), ``mesh_backbone``, ``transformer``, ``upsampling``;
* METRO: ``mesh_backbone``, ``transformer``, ``upsampling``;
* HMR: ``backbone``, ``regressor`` (IEF), ``body_model`` (skinning);
* the optimisation baseline (PROX-style `sahmr.optim.scene_fit.SceneFitter`, configs/optim/
  prox.yaml, multi-start as tools/fit.py runs it, mean-pose start, ground-truth keypoints):
  seconds per frame at ``--fit-batch-sizes``, and the speed-up of SA-HMR small over it.

Speed-ups (``--variants`` runs several settings of one model and reports what each gave):
``bf16`` autocast (RCNet keeps its voxel geometry and sparse stage in float32), ``compile``
(``torch.compile`` of the image backbones, heads, up-sampling and transformers, dynamic shapes
for SA-HMR's transformer), ``graphs`` (CUDA graphs of the static-shape submodules; the sparse
stage and the SA-HMR transformer have data-dependent shapes and stay eager). The sparse stage
is already batched: one spconv tensor holds every ROI sample of the batch.

Frames: without ``--data``, the bundled demo frames (`sahmr.benchmark.frames.bundled_frames`);
with ``--data DIR --split test``, frames of a synthetic dataset split. Batches cycle through
them. Random weights unless ``--checkpoint METHOD=PATH`` (weights do not change speed; the ROI
voxel count and contact count of SA-HMR do depend on the predictions).

Examples:
    python tools/benchmark.py --out docs/benchmarks.md --json bench.json
    python tools/benchmark.py --methods sahmr_small --variants eager,bf16,compile,graphs,\\
        bf16+compile+graphs --batch-sizes 1,32,256
    python tools/benchmark.py --device cpu --tiny --methods sahmr_small,hmr --batch-sizes 1,2 \\
        --iters 3 --fit-iterations 2             # a smoke test, not figures
    python tools/benchmark.py --methods none --cpu-tools metrics,generator   # CPU tools only

Exit codes: 0 done, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("benchmark")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DOC_SECTION = "models"
OPTIMISATION = "optimisation"

GOAL_LATENCY_MS = 10.0
GOAL_FPS = 2000.0
GOAL_PEAK_MB = 600.0
GOAL_SPEEDUP = 300.0
REFERENCE = "official SA-HMR code: 170 ms and 1852 MB per frame on a V100 (paper)"


# ---------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class MethodSpec:
    """How to build a method from the shipped configs.

    Attributes:
        model: ``configs/model/<model>.yaml``.
        family: Stage layout (`sahmr.benchmark.stages.LAYOUTS`).
        rcnet: ``configs/model/<rcnet>.yaml`` placed at ``model.rcnet`` (SA-HMR), or None.
        overrides: Hydra overrides always applied.
        tiny: Extra overrides of ``--tiny`` (smoke tests: tiny widths, ResNet-18 backbones).
    """

    model: str
    family: str
    rcnet: str | None = None
    overrides: tuple[str, ...] = ()
    tiny: tuple[str, ...] = ()


_TINY_SAHMR = (
    "model.mesh_net.backbone.name=resnet18", "model.mesh_net.backbone.out_stride=8",
    "model.mesh_net.encoder.widths=[16,16,8]", "model.mesh_net.encoder.num_layers=1",
    "model.mesh_net.encoder.num_heads=2", "model.rcnet.backbone.name=resnet18",
    "model.rcnet.backbone.out_stride=4", "model.rcnet.neck.in_channels=64",
    "model.rcnet.neck.out_channels=8", "model.rcnet.neck.num_upsamples=0",
    "model.rcnet.unet.in_channels=11", "model.rcnet.unet.channels=[8,8]",
    "model.rcnet.unet.blocks_per_level=1", "model.rcnet.depth_hidden=16",
)  # fmt: skip
_TINY_METRO = (
    "model.backbone.name=resnet18", "model.backbone.out_stride=8",
    "model.encoder.widths=[16,16,8]", "model.encoder.num_layers=1", "model.encoder.num_heads=2",
)  # fmt: skip
_TINY_HMR = (
    "model.backbone.name=resnet18", "model.backbone.out_stride=4",
    "model.regressor.feature_dim=64", "model.regressor.hidden_dim=32",
)  # fmt: skip
# predict() needs neither HMR's discriminator nor its 20k-sample pose library.
_NO_ADVERSARY = ("model.discriminator=null", "model.pose_library=null")

METHODS: dict[str, MethodSpec] = {
    "sahmr_small": MethodSpec("sahmr_small", "sahmr", rcnet="rcnet_small", tiny=_TINY_SAHMR),
    "sahmr_paper": MethodSpec("sahmr_paper", "sahmr", rcnet="rcnet_paper", tiny=_TINY_SAHMR),
    "metro_small": MethodSpec("metro_small", "metro", tiny=_TINY_METRO),
    "metro_paper": MethodSpec("metro_paper", "metro", tiny=_TINY_METRO),
    "hmr": MethodSpec("hmr", "hmr", overrides=_NO_ADVERSARY, tiny=_TINY_HMR),
}
"""Benchmarkable methods; ``optimisation`` is the PROX-style fitting baseline."""
DEFAULT_METHODS = "sahmr_small,sahmr_paper,metro_small,hmr,optimisation"


def compose_method(spec: MethodSpec, *, tiny: bool, extra: Sequence[str] = ()) -> Any:
    """The composed config (``model`` + ``body``) of a method."""
    from hydra import compose, initialize_config_dir

    overrides = [f"+model={spec.model}", "+body=license_free"]
    if spec.rcnet is not None:
        overrides.append(f"+model@model.rcnet={spec.rcnet}")
    overrides += [*spec.overrides, *(spec.tiny if tiny else ()), *extra]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(overrides=overrides)


def build_method(
    name: str, *, tiny: bool, extra: Sequence[str], checkpoint: Path | None, device: torch.device
) -> torch.nn.Module:
    """The method in eval mode on ``device``, gradients off (random weights or a checkpoint)."""
    if checkpoint is not None:
        from sahmr.engine.checkpoint import load_method

        model, _ = load_method(checkpoint, device)
    else:
        from hydra.utils import instantiate

        model = instantiate(compose_method(METHODS[name], tiny=tiny, extra=extra).model)
    return model.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """One setting of the speed-ups.

    Attributes:
        bf16: bfloat16 autocast.
        compile: torch.compile of the layout's submodules.
        graphs: CUDA graphs of the layout's static submodules.
    """

    bf16: bool = False
    compile: bool = False
    graphs: bool = False

    @property
    def name(self) -> str:
        """``eager`` or the flags joined by ``+``."""
        on = [k for k in ("bf16", "compile", "graphs") if getattr(self, k)]
        return "+".join(on) if on else "eager"

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``eager`` or ``+``-joined flags among ``bf16``, ``compile``, ``graphs``."""
        flags = {f.strip() for f in text.split("+") if f.strip()} - {"eager"}
        unknown = flags - {"bf16", "compile", "graphs"}
        if unknown:
            raise ValueError(f"unknown variant flag(s) {sorted(unknown)} in {text!r}")
        return cls(**{f: True for f in flags})


def autocast_factory(variant: Variant, device: torch.device) -> Callable[[], Any]:
    """Context factory: bf16 autocast for the variant, else a no-op."""
    if not variant.bf16:
        return contextlib.nullcontext
    # No cast cache: cached weight casts would be freed under a captured CUDA graph.
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


# ---------------------------------------------------------------------------- measuring


def _sync_free(device: torch.device) -> None:
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
                _sync_free(device)
                break
            _sync_free(device)
    finally:
        failures = []
        for _, new in swaps.swaps.values():
            failures += list(getattr(new, "failures", []))
        if failures:
            applied["graph_failures"] = failures
        swaps.restore()
        _sync_free(device)
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
    name: str, frames: Any, variants: Sequence[Variant], args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """All variants of one method."""
    from sahmr.benchmark.stages import parameter_megabytes

    spec = METHODS[name]
    ckpt = args.checkpoints.get(name)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = build_method(name, tiny=args.tiny, extra=args.method_overrides.get(name, ()),
                         checkpoint=ckpt, device=device)  # fmt: skip
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
    _sync_free(device)
    return entry


# ---------------------------------------------------------------------------- optimisation


def mean_start(fitter: Any, keypoints: torch.Tensor, K: torch.Tensor) -> Any:
    """tools/fit.py's start: mean library pose, upright, facing the camera, torso by PnP."""
    import math

    from sahmr.optim.smplify import SMPLParams

    B, dev = keypoints.shape[0], keypoints.device
    init = SMPLParams(
        global_orient=torch.tensor([[math.pi, 0.0, 0.0]], device=dev).repeat(B, 1),
        body_pose=fitter.pose_prior.mean_body_pose[None].to(dev).repeat(B, 1),
        betas=torch.zeros(B, fitter.body_model.num_betas, device=dev),
        transl=torch.zeros(B, 3, device=dev),
    )
    init.transl = fitter.torso_translation(init, keypoints, K, None)
    return init


def bench_optimisation(frames: Any, args: argparse.Namespace, device: torch.device) -> dict:
    """Seconds per frame of the PROX-style fit (as tools/fit.py runs it) per batch size."""
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
        "config": str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config),
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
            init = fitter.search_start(mean_start(fitter, kp, K), kp, K)
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
        _sync_free(device)
    per_frame = {int(b): r["seconds_per_frame"] for b, r in out["batches"].items()}
    out["best_batch"] = min(per_frame, key=per_frame.get)
    out["best_seconds_per_frame"] = per_frame[out["best_batch"]]
    if 1 in per_frame:
        out["seconds_per_frame_b1"] = per_frame[1]
    return out


# ---------------------------------------------------------------------------- CPU tools


CPU_TOOLS = {
    "metrics": ("benchmark_metrics.py", "evaluator: PenE + ConFE + G-MPVE over many frames"),
    "generator": ("benchmark_generator.py", "dataset generator: placement + render + write"),
}


def summarise_cpu_tool(key: str, stdout: str) -> dict[str, Any]:
    """The headline figures of a CPU tool's output.

    Args:
        key: ``metrics`` (tools/benchmark_metrics.py) or ``generator``
            (tools/benchmark_generator.py).
        stdout: What the tool printed.

    Returns:
        ``{"headline": str, ...}`` (empty when nothing is recognised).
    """
    if key == "metrics":
        best = [ln for ln in stdout.splitlines() if ln.startswith("best:")]
        return {"headline": best[-1]} if best else {}
    if key == "generator":
        report = None
        lines = stdout.splitlines()
        starts = [i for i, ln in enumerate(lines) if ln.startswith("{")]
        for i in reversed(starts):  # the report is the last JSON object printed
            try:
                report = json.loads("\n".join(lines[i:]))
                break
            except json.JSONDecodeError:
                continue
        if not isinstance(report, dict):
            return {}
        # Two report layouts: end_to_end/projected_samples_per_second, or the older flat one.
        e2e = report.get("end_to_end") or {}
        steady = report.get("steady_state_one_process") or {}
        rate = e2e.get("samples_per_second", report.get("samples_per_second_end_to_end"))
        proj = report.get("projected_samples_per_second",
                          steady.get("projected_samples_per_second_on_free_cores"))  # fmt: skip
        return {
            "headline": f"{rate} samples/s end to end, {proj} samples/s projected on free cores"
            + (f", {report['cpu_ms_per_sample']} CPU ms per sample"
               if "cpu_ms_per_sample" in report else ""),
            "samples_per_second_end_to_end": rate,
            "projected_samples_per_second": proj,
        }
    return {}


def run_cpu_tools(args: argparse.Namespace) -> dict[str, Any]:
    """Run the existing CPU benchmarks (evaluator metrics, generator) as subprocesses."""
    out: dict[str, Any] = {}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    for key in args.cpu_tools:
        script, what = CPU_TOOLS[key]
        tool_args = shlex.split(args.metrics_args if key == "metrics" else args.generator_args)
        cmd = [sys.executable, str(REPO / "tools" / script), *tool_args]
        shown = " ".join(["python", f"tools/{script}", *map(shlex.quote, tool_args)])
        logger.info("running %s", shown)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                  timeout=args.cpu_tools_timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            out[key] = {"what": what, "command": shown, "error": "timed out"}
            continue
        entry = {"what": what, "command": shown, "returncode": proc.returncode,
                 "seconds": time.perf_counter() - t0,
                 "stdout_tail": proc.stdout.splitlines()[-25:]}  # fmt: skip
        if proc.returncode != 0:
            entry["stderr_tail"] = proc.stderr.splitlines()[-10:]
        entry.update(summarise_cpu_tool(key, proc.stdout))
        out[key] = entry
    return out


# ---------------------------------------------------------------------------- report


def merge_results(current: dict[str, Any], previous: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report from several runs (e.g. several device calls of under 10 minutes).

    Methods, variants and CPU tools of ``previous`` runs are added where ``current`` lacks
    them (``current`` wins). Environment and frames come from ``current`` when it measured
    anything, else from the first previous run; the commands of all runs are listed.

    Args:
        current: This run's results.
        previous: Results of earlier runs (their ``--json`` files).

    Returns:
        The merged results, with ``goals`` recomputed.
    """
    measured = bool(current["methods"]) or bool(current.get("cpu_tools"))
    runs = [*previous, current] if measured else list(previous)
    if not runs:
        return current
    out = copy.deepcopy(current if measured else previous[0])
    if not out["methods"] and previous:
        out["frames"] = copy.deepcopy(previous[0].get("frames", out.get("frames")))
    out.setdefault("cpu_tools", {})
    for r in runs:
        if r is out:
            continue
        for name, m in r.get("methods", {}).items():
            if name not in out["methods"]:
                out["methods"][name] = copy.deepcopy(m)
            elif "variants" in m and "variants" in out["methods"][name]:
                for vname, v in m["variants"].items():
                    out["methods"][name]["variants"].setdefault(vname, copy.deepcopy(v))
        for key, tool in (r.get("cpu_tools") or {}).items():
            out["cpu_tools"].setdefault(key, copy.deepcopy(tool))
    commands: list[str] = []
    for r in runs:
        for c in r["run"].get("commands") or [r["run"]["command"]]:
            if c not in commands:
                commands.append(c)
    out["run"]["commands"] = commands
    out["goals"] = goals(out)
    return out


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """SA-HMR small against the issue's targets, one row per variant."""
    rows = []
    small = results["methods"].get("sahmr_small")
    opt = results["methods"].get(OPTIMISATION, {})
    fit_b1 = opt.get("seconds_per_frame_b1")
    fit_best = opt.get("best_seconds_per_frame")
    for name, v in (small or {}).get("variants", {}).items():
        lat = v.get("latency_b1", {}).get("median_ms")
        fps = v.get("best_frames_per_s")
        peak = v.get("peak_mb_b1")
        row: dict[str, Any] = {"variant": name, "latency_b1_ms": lat, "best_frames_per_s": fps,
                               "peak_mb_b1": peak}  # fmt: skip
        row["speedup_b1"] = fit_b1 / (lat / 1000.0) if fit_b1 and lat else None
        row["speedup_batched"] = fit_best * fps if fit_best and fps else None
        row["met"] = {
            "latency": None if lat is None else lat < GOAL_LATENCY_MS,
            "throughput": None if fps is None else fps > GOAL_FPS,
            "memory": None if peak is None else peak < GOAL_PEAK_MB,
            "speedup": None if row["speedup_b1"] is None else row["speedup_b1"] >= GOAL_SPEEDUP,
        }
        rows.append(row)
    return rows


def _f(x: Any, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _counts(values: Sequence[int]) -> str:
    """A short list, or min / median / max of a long one."""
    if len(values) <= 6:
        return ", ".join(str(v) for v in values) or "none"
    s = sorted(values)
    return f"{s[0]} min, {s[len(s) // 2]} median, {s[-1]} max over {len(s)} frames"


def _rate(x: float | None) -> str:
    """Frames per second: whole numbers from 100 up, else 3 significant digits."""
    return "–" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.3g}")


def _yes(flag: bool | None) -> str:
    return "–" if flag is None else ("yes" if flag else "**no**")


def render_markdown(results: dict[str, Any]) -> str:
    """The markdown section of a benchmark run."""
    from sahmr.benchmark.timing import markdown_table

    env, run = results["environment"], results["run"]
    parts = [
        f"Measured {env['date']} with "
        + "; ".join(f"`{c}`" for c in run.get("commands") or [run["command"]]) + ".",
        "",
        f"Device: **{env['device_name']}** ({env['device']}"
        + (f", {env.get('device_memory_gib')} GiB; CPU {env['cpu']}"
           if env.get("device_memory_gib") else "")
        + f", {env['threads']} torch threads). Versions: Python {env['python']}, "
        f"torch {env['torch']}"
        + (f", CUDA {env['cuda']}, cuDNN {env['cudnn']}" if env.get("cuda") else "")
        + f", {env.get('spconv') or 'spconv ?'}.",
        f"Frames: {results['frames']['source']} (frustum points per frame: "
        f"{_counts(results['frames']['frustum_points'])}), cycled to each batch size. Weights: "
        + ("random init (`--tiny` smoke-test sizes, not the methods' sizes)" if run["tiny"]
           else "random init unless a checkpoint is named below")
        + f". Timed calls: {run['iters']} after {run['warmup']} warm-ups (fewer if "
        f"{run['max_seconds']} s ran out); latency = median (p90) of single calls, device "
        "synchronised around each"
        + ("; TF32 matmuls and cuDNN autotuning on." if run.get("tf32") else "."),
        "",
    ]  # fmt: skip
    ckpts = [f"{n}: `{m['checkpoint']}`" for n, m in results["methods"].items()
             if m.get("checkpoint")]  # fmt: skip
    if ckpts:
        parts += ["Checkpoints: " + "; ".join(ckpts) + ".", ""]
    devices = {m.get("device_name") for m in results["methods"].values()} - {None}
    if len(devices) > 1:
        parts += ["**Mixed devices**: " + "; ".join(
            f"{n} on {m.get('device_name')}" for n, m in results["methods"].items()) + ".", ""]
    rows = []
    for name, m in results["methods"].items():
        if name == OPTIMISATION:
            continue
        eager = m["variants"].get("eager", {})
        lat0 = (eager.get("latency_b1") or {}).get("median_ms")
        fps0 = eager.get("best_frames_per_s")
        for vname, v in m["variants"].items():
            lat = v.get("latency_b1")
            ooms = [b for b, r in v["batches"].items() if "oom" in r]
            gain = "–"
            if vname != "eager" and lat0 and fps0 and lat and v.get("best_frames_per_s"):
                gain = (f"{lat0 / lat['median_ms']:.2f}x / "
                        f"{v['best_frames_per_s'] / fps0:.2f}x")  # fmt: skip
            rows.append([
                name, vname, f"{m['params_m']:.1f}",
                f"{_f(lat and lat['median_ms'])} ({_f(lat and lat['p90_ms'])})",
                v.get("best_batch", "–"), _rate(v.get("best_frames_per_s")), gain,
                _f(v.get("peak_mb_b1"), "{:.0f}"),
                ("OOM at " + ", ".join(ooms)) if ooms else "",
            ])  # fmt: skip
    if rows:
        parts += [markdown_table(
            ["method", "variant", "params (M)", "batch-1 latency ms, median (p90)",
             "best batch", "frames/s at best batch", "speed-up vs eager (batch 1 / best)",
             "peak GPU MiB at batch 1 (weights + one call)", "notes"],
            rows, align=["l", "l", "r", "r", "r", "r", "r", "r", "l"]), ""]  # fmt: skip
    for family in ("sahmr", "metro", "hmr"):
        members = {n: m for n, m in results["methods"].items()
                   if n != OPTIMISATION and m.get("family") == family}  # fmt: skip
        names: list[str] = []
        srows = []
        for name, m in members.items():
            for vname, v in m["variants"].items():
                for b in sorted({1, v.get("best_batch", 1)}):
                    r = v["batches"].get(str(b), {})
                    if "stages" not in r:
                        continue
                    names += [s for s in r["stages"] if s not in names]
                    srows.append((name, vname, b, r))
        if not srows:
            continue
        table = [[n, vn, b, *[_f(r["stages"].get(s, {}).get("median_ms")) for s in names],
                  _f(r["end_to_end"]["median_ms"])] for n, vn, b, r in srows]  # fmt: skip
        parts += [f"Stages of the {family} family, ms per batch (median), each re-run alone "
                  "on its captured inputs:", "",
                  markdown_table(["method", "variant", "batch", *names, "end to end"], table,
                                 align=["l", "l", "r"] + ["r"] * (len(names) + 1)), ""]  # fmt: skip
        notes = srows[0][3].get("stage_notes") or {}
        if notes:
            parts += ["Stages: " + "; ".join(f"`{k}` = {v}" for k, v in notes.items()) + ".", ""]
        sizes = [(n, vn, b, r["sizes"]) for n, vn, b, r in srows if r.get("sizes")]
        if sizes:
            parts += ["Sizes seen: " + "; ".join(
                f"{n} batch {b}: " + ", ".join(f"{k} {v}" for k, v in s.items())
                for n, vn, b, s in sizes if vn == srows[0][1]) + ".", ""]  # fmt: skip
    opt = results["methods"].get(OPTIMISATION)
    if opt and "batches" in opt:
        orow = [[b, _f(r["fit"]["median_ms"] / 1000.0, "{:.3f}"),
                 _f(r["seconds_per_frame"], "{:.4f}")] for b, r in opt["batches"].items()]
        parts += [f"Optimisation baseline (PROX-style `SceneFitter`, {opt['config']}, "
                  f"{opt['iterations_per_frame']} Adam steps per frame incl. "
                  f"{opt['start_orientations']}-way start search, scene terms "
                  f"{'on' if opt['scene_terms'] else 'off'}, SDF {opt['sdf_voxel_size']} m):", "",
                  markdown_table(["batch", "s per fit (median)", "s per frame"], orow,
                                 align=["r", "r", "r"]), ""]  # fmt: skip
    elif opt:
        parts += [f"Optimisation baseline: skipped ({opt.get('skipped')}).", ""]
    grows = results.get("goals") or []
    if grows:
        def cell(value: str | None, met: bool | None) -> str:
            return "–" if value is None else f"{value} / {_yes(met)}"

        def num(x: float | None, fmt: str) -> str | None:
            return None if x is None else fmt.format(x)

        table = [[g["variant"],
                  cell(num(g["latency_b1_ms"], "{:.2f} ms"), g["met"]["latency"]),
                  cell(num(g["best_frames_per_s"], "{:.0f}"), g["met"]["throughput"]),
                  cell(num(g["peak_mb_b1"], "{:.0f} MiB"), g["met"]["memory"]),
                  cell(num(g["speedup_b1"], "{:.0f}x"), g["met"]["speedup"]),
                  num(g["speedup_batched"], "{:.0f}x") or "–"] for g in grows]  # fmt: skip
        parts += [f"Goals for SA-HMR small (reference: {REFERENCE}):", "",
                  markdown_table(
                      ["variant", f"batch-1 latency < {GOAL_LATENCY_MS:.0f} ms",
                       f"frames/s > {GOAL_FPS:.0f}", f"peak at batch 1 < {GOAL_PEAK_MB:.0f} MiB",
                       f"speed-up vs optimisation >= {GOAL_SPEEDUP:.0f}x (batch 1)",
                       "speed-up, both batched"], table,
                      align=["l", "r", "r", "r", "r", "r"]), ""]  # fmt: skip
    applied = []
    for name, m in results["methods"].items():
        for vname, v in m.get("variants", {}).items():
            a = v.get("applied") or {}
            bits = []
            if a.get("compiled"):
                bits.append("compiled: " + ", ".join(a["compiled"]))
            if "graphed" in a:
                bits.append("CUDA graphs: " + (", ".join(a["graphed"]) or "none")
                            + (f" ({a['note']})" if a.get("note") else ""))  # fmt: skip
            if a.get("graph_failures"):
                bits.append("graph capture failed (ran eagerly): " + "; ".join(
                    a["graph_failures"]))  # fmt: skip
            if bits:
                applied.append(f"- {name} [{vname}]: " + "; ".join(bits))
    if applied:
        parts += ["Speed-ups applied:", "", *applied, ""]
    cpu = results.get("cpu_tools") or {}
    if cpu:
        crow = [[k, c["what"], f"`{c['command']}`", c.get("headline") or c.get("error")
                 or f"exit {c.get('returncode')}"] for k, c in cpu.items()]  # fmt: skip
        parts += ["CPU figures (existing tools, run by this one):", "",
                  markdown_table(["tool", "what", "command", "result"], crow), ""]  # fmt: skip
    return "\n".join(parts).strip() + "\n"


# ---------------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma list of {', '.join(METHODS)}, {OPTIMISATION} (or 'none')")
    p.add_argument("--batch-sizes", type=_ints, default=[1, 8, 32, 128, 256])
    p.add_argument("--variants", default=None,
                   help="comma list of eager or +-joined bf16/compile/graphs, e.g. "
                        "eager,bf16,compile,graphs,bf16+compile+graphs (default: the flags)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile static submodules")
    p.add_argument("--cuda-graphs", action="store_true", help="CUDA graphs (static shapes)")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--compile-mode", default=None, help="e.g. max-autotune-no-cudagraphs")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--data", type=Path, default=None, help="synthetic dataset folder")
    p.add_argument("--split", default="test")
    p.add_argument("--max-frames", type=int, default=256, help="distinct dataset frames")
    p.add_argument("--frames", default=None,
                   help="bundled demo frames 'room/frame,...' (default: all)")
    p.add_argument("--scene-voxel", type=float, default=0.02, help="scene point spacing, m")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache root for scene points and SDFs (default: ~/.cache/sahmr)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="METHOD=PATH")
    p.add_argument("--override", action="append", default=[], metavar="METHOD:KEY=VALUE",
                   help="hydra override of one method's config, e.g. "
                        "sahmr_small:model.mesh_net.encoder.num_layers=1")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (not the methods')")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--max-seconds", type=float, default=5.0,
                   help="time budget per measurement (after >= 1 call)")
    p.add_argument("--no-stages", action="store_true", help="end to end only")
    p.add_argument("--fit-batch-sizes", type=_ints, default=[1, 32])
    p.add_argument("--fit-repeats", type=int, default=2)
    p.add_argument("--fit-iterations", type=int, default=None,
                   help="override every fitting stage's iterations (smoke tests)")
    p.add_argument("--fit-config", type=Path, default=CONFIGS / "optim" / "prox.yaml")
    p.add_argument("--sdf-voxel-size", type=float, default=0.02)
    p.add_argument("--cpu-tools", default="", help="comma list of: " + ", ".join(CPU_TOOLS))
    p.add_argument("--metrics-args", default="--threads 2 --repeat 3 --chunk 64 --sampler banded")
    p.add_argument("--generator-args", default="--num-samples 200 --workers 2 --placer standing")
    p.add_argument("--cpu-tools-timeout", type=float, default=1800.0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help=f"markdown document whose <!-- benchmark:{DOC_SECTION} --> section "
                        "is replaced (e.g. docs/benchmarks.md)")
    p.add_argument("--section", default=DOC_SECTION, help="marked section name in --out")
    p.add_argument("--json", type=Path, default=None, help="write all figures here")
    p.add_argument("--merge", type=Path, nargs="+", default=[], metavar="JSON",
                   help="add the methods of earlier runs' --json files to the report (with "
                        "--methods none: only render them, e.g. on another machine)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip() and m.strip() != "none"]
    unknown = [m for m in methods if m not in METHODS and m != OPTIMISATION]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {[*METHODS, OPTIMISATION]}")
    args.methods = methods
    try:
        args.variants = (
            [Variant.parse(v) for v in args.variants.split(",") if v.strip()]
            if args.variants else
            [Variant(bf16=args.bf16, compile=args.compile, graphs=args.cuda_graphs)]
        )  # fmt: skip
    except ValueError as exc:
        parser.error(f"--variants: {exc}")
    args.checkpoints = {}
    for item in args.checkpoint:
        name, sep, path = item.partition("=")
        if not sep or name not in METHODS or not Path(path).is_file():
            parser.error(f"--checkpoint {item!r}: expected METHOD=PATH to an existing file")
        try:  # readable, weights only, and a config that builds only the project's classes
            from sahmr.engine.checkpoint import checkpoint_config, load_checkpoint

            checkpoint_config(load_checkpoint(path), path)
        except ValueError as exc:
            parser.error(f"--checkpoint {exc}")
        args.checkpoints[name] = Path(path)
    args.method_overrides = {}
    for item in args.override:
        name, sep, ov = item.partition(":")
        if not sep or name not in METHODS or "=" not in ov:
            parser.error(f"--override {item!r}: expected METHOD:KEY=VALUE")
        args.method_overrides.setdefault(name, []).append(ov)
    args.cpu_tools = [t.strip() for t in args.cpu_tools.split(",") if t.strip()]
    bad = [t for t in args.cpu_tools if t not in CPU_TOOLS]
    if bad:
        parser.error(f"--cpu-tools: unknown {bad}; choose from {list(CPU_TOOLS)}")
    if args.data is not None and not (args.data / "dataset.json").is_file():
        parser.error(f"--data {args.data}: no dataset.json")
    if args.iters < 1 or args.warmup < 0 or args.fit_repeats < 1:
        parser.error("--iters and --fit-repeats must be >= 1, --warmup >= 0")
    missing = [str(f) for f in args.merge if not f.is_file()]
    if missing:
        parser.error(f"--merge: no such file(s) {missing}")
    if not args.fit_config.is_file():
        parser.error(f"--fit-config {args.fit_config}: no such file")
    from sahmr.cli.checks import BadArgument, check_device, check_writable_folder

    try:  # before minutes of measuring
        check_device(args.device, "--device")
        for flag, path in (("--out", args.out), ("--json", args.json)):
            if path is not None:
                if path.is_dir():
                    raise BadArgument(f"{flag} {path}: is a folder, expected a file")
                check_writable_folder(path.parent, f"{flag} folder")
    except BadArgument as exc:
        parser.error(str(exc))
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads {args.threads}: must be >= 1")
    if not args.max_seconds > 0 or not args.sdf_voxel_size > 0:
        parser.error("--max-seconds and --sdf-voxel-size must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    with _fast_cuda_math(device.type == "cuda"):
        return _run(args, argv, device)


@contextlib.contextmanager
def _fast_cuda_math(enabled: bool) -> Iterator[None]:
    """TF32 matmuls and cuDNN autotuning while timing; the caller's settings come back after
    (an in-process caller, e.g. a test, must not inherit TF32 geometry)."""
    flags = (torch.backends.cudnn, "benchmark"), (torch.backends.cuda.matmul, "allow_tf32"), (
        torch.backends.cudnn, "allow_tf32")  # fmt: skip
    saved = [getattr(obj, name) for obj, name in flags]
    try:
        if enabled:
            for obj, name in flags:
                setattr(obj, name, True)
        yield
    finally:
        for (obj, name), value in zip(flags, saved, strict=True):
            setattr(obj, name, value)


def _run(args: argparse.Namespace, argv: list[str] | None, device: torch.device) -> int:
    from sahmr.benchmark.frames import bundled_frames, dataset_frames
    from sahmr.benchmark.timing import environment_info, write_marked_section

    env = environment_info(device)
    args.device_name = env["device_name"]
    results: dict[str, Any] = {
        "format": "sahmr.benchmark",
        "environment": env,
        "run": {
            "command": "python tools/benchmark.py " + " ".join(map(shlex.quote, sys.argv[1:]
                                                                   if argv is None else argv)),
            "methods": args.methods,
            "variants": [v.name for v in args.variants],
            "batch_sizes": args.batch_sizes,
            "warmup": args.warmup,
            "iters": args.iters,
            "max_seconds": args.max_seconds,
            "tiny": args.tiny,
            "tf32": device.type == "cuda",
        },
        "methods": {},
    }  # fmt: skip
    if args.methods:
        t0 = time.perf_counter()
        if args.data is not None:
            frames = dataset_frames(args.data, args.split, device=device,
                                    max_frames=args.max_frames)  # fmt: skip
        else:
            names = [n.strip() for n in args.frames.split(",")] if args.frames else None
            frames = bundled_frames(device=device, scene_voxel_size=args.scene_voxel,
                                    cache_dir=args.cache_dir, names=names)  # fmt: skip
        results["frames"] = {
            "source": frames.source,
            "frustum_points": frames.frustum_points(),
            "scene_voxel_m": args.scene_voxel if args.data is None else None,
            "seconds_to_build": time.perf_counter() - t0,
        }
        for name in args.methods:
            if name == OPTIMISATION:
                logger.info("optimisation baseline")
                results["methods"][name] = bench_optimisation(frames, args, device)
            else:
                results["methods"][name] = bench_model(name, frames, args.variants, args, device)
        results["goals"] = goals(results)
    else:
        results["frames"] = {"source": "none", "frustum_points": []}
    if args.cpu_tools:
        results["cpu_tools"] = run_cpu_tools(args)
    if args.merge:
        previous = [json.loads(Path(f).read_text(encoding="utf-8")) for f in args.merge]
        results = merge_results(results, previous)
    text = render_markdown(results)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    if args.out is not None:
        write_marked_section(args.out, args.section, text)
    if not args.quiet:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

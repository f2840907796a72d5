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
import json
import logging
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sahmr.benchmark.cpu_tools import CPU_TOOLS, run_cpu_tools
from sahmr.benchmark.measure import bench_model
from sahmr.benchmark.methods import DEFAULT_METHODS, METHODS, OPTIMISATION, Variant
from sahmr.benchmark.optimisation import bench_optimisation
from sahmr.benchmark.report import goals, merge_results, render_markdown
from sahmr.scene.points import SCENE_VOXEL_SIZE_M
from sahmr.scene.sdf import SDF_VOXEL_SIZE_M

logger = logging.getLogger("benchmark")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DOC_SECTION = "models"


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
    p.add_argument("--scene-voxel", type=float, default=SCENE_VOXEL_SIZE_M,
                   help="scene point spacing, m")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache root for scene points and SDFs (default: ~/.cache/sahmr)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="METHOD=PATH")
    p.add_argument("--override", action="append", default=[], metavar="METHOD:KEY=VALUE",
                   help="hydra override of one method's config, e.g. "
                        "sahmr_small:model.mesh_net.encoder.num_layers=1; with --checkpoint a "
                        "KEY=VALUE change of its stored config (as export_checkpoint.py --set), "
                        "e.g. sahmr_small:model.rcnet.depth_hypotheses=[]")
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
    p.add_argument("--sdf-voxel-size", type=float, default=SDF_VOXEL_SIZE_M)
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
                results["methods"][name] = bench_optimisation(frames, args, device,
                                                                repo_root=REPO)
            else:
                results["methods"][name] = bench_model(name, frames, args.variants, args, device,
                                                         config_dir=CONFIGS)
        results["goals"] = goals(results)
    else:
        results["frames"] = {"source": "none", "frustum_points": []}
    if args.cpu_tools:
        results["cpu_tools"] = run_cpu_tools(args, repo_root=REPO)
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

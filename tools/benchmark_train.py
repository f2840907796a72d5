"""Training throughput per method: the DataLoader path against the in-memory path.

Every method trains through the trainer's own step (`sahmr.engine.trainer.Trainer.train_step`:
forward under bf16 autocast, loss, backward, gradient clipping, AdamW, schedule) on the same
training split, fed either by the DataLoader path (``old``: `SyntheticDataset` decoded by worker
processes, `StepPreparer`, frustum cut from every scene point) or by the in-memory path (``new``:
``loader=memory``, `sahmr.data.memory` with device augmentation). Reported per (method, path):
training samples/s over a timed window after warm-up steps, the GPU's busy percentage sampled
every 0.5 s during that window (`sahmr.benchmark.utilization`), the mean step time, and the
data path alone (batches prepared per second without the model).

    python tools/benchmark_train.py --data /data/synth --out bench_train \\
        --docs docs/benchmarks.md          # GPU: ~7 minutes for 4 methods x 2 paths
    python tools/benchmark_train.py --data /data/synth --out /tmp/b --smoke   # CPU, seconds

Methods (``--methods``): ``sahmr_small_rcnet`` (SA-HMR small with RCNet inside, trained
jointly: exp=sahmr_small +model@model.rcnet=rcnet_small, RCNet unfrozen, its loss added; its
ROI teacher-forced, one sparse pass), ``sahmr_small_e2e`` (the leases' end-to-end recipe,
exp=sahmr_small_e2e: no teacher forcing, the ROI refined twice as at test time, random
weights), ``sahmr_small_finetune`` (stage two from the shipped weights: the frozen RCNet
votes, refines and searches as at test time in every step) and ``sahmr_small_finetune_once``
(the same with ``loader.rcnet_once``: RCNet's outputs computed once per sample before the
timed window (at the training step's precision), at the rate reported as
``store_frames_per_s`` (after one warm-up batch), then served from
`sahmr.engine.rcnet_store`; in-memory path only), ``sahmr_small`` (the mesh network,
teacher-forced), ``rcnet_small``, ``metro_small``. With ``--compile`` (default on CUDA) the
static-shape submodules (2-D backbones, necks, image heads, upsamplers, METRO's encoder) are
compiled in place by the trainer (``trainer.compile_submodules``, torch.compile); the sparse
and scene parts (variable point counts) run eagerly. Writes ``train_benchmark.json`` and
``train_benchmark.md`` under ``--out``; ``--docs`` also replaces the ``train-throughput``
section of that markdown file.

With ``--profile``, each run then profiles ``--profile-steps`` more steps (torch.profiler, CPU +
CUDA activities on a GPU) and reports where they spend their time: device and CPU time per part
(the method's children and grandchildren, loss, backward, clipping, optimiser step; see
`sahmr.benchmark.step_profile`) and the top 25 ops, under ``profile`` in the JSON and as tables
in the markdown; ``--profile-trace`` also writes a chrome trace per run under ``--out``.

    python tools/benchmark_train.py --data /data/synth --out /tmp/p --paths new \\
        --methods sahmr_small_rcnet --seconds 5 --profile --profile-trace

A lease trains beside the dataset generator's workers (one per free core, nice 15). With
``--cpu-load N``, N memory-streaming processes at nice 15 (`sahmr.benchmark.cpu_load`) run
through every measurement, so the same tool tells how much of a method's pace survives that
company (a short step is paced by the host thread that launches it):

    python tools/benchmark_train.py --data /data/synth --out /tmp/c --paths new \\
        --methods metro_small --cpu-load 15
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("benchmark_train")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SECTION = "train-throughput"

METHODS: dict[str, list[str]] = {
    "sahmr_small_rcnet": [
        "exp=sahmr_small", "+model@model.rcnet=rcnet_small", "model.freeze_rcnet=false",
        "+loss@loss.rcnet_loss=rcnet",
    ],
    # the lease's end-to-end recipe: RCNet without teacher forcing, its ROI refined twice
    "sahmr_small_e2e": ["exp=sahmr_small_e2e"],
    # stage two from the shipped weights: the frozen RCNet votes (and searches) in every step,
    # or (_once) once per sample, its outputs stored (loader.rcnet_once, sahmr.engine.rcnet_store)
    "sahmr_small_finetune": ["exp=sahmr_small_finetune", "init.weights=SHIPPED"],
    "sahmr_small_finetune_once": [
        "exp=sahmr_small_finetune", "init.weights=SHIPPED", "loader=memory",
        "loader.rcnet_once=true",
    ],
    "sahmr_small": ["exp=sahmr_small"],
    "rcnet_small": ["exp=rcnet_small"],
    "metro_small": ["exp=metro_small"],
}  # fmt: skip
"""Benchmark method name -> overrides of configs/train.yaml."""

PATHS = ("old", "new")
"""``old``: DataLoader workers + `StepPreparer`; ``new``: the in-memory path."""

COMPILE_PATHS = (
    "backbone", "neck", "heatmap_head", "depth_head", "encoder", "upsampler", "cam_head",
    "rcnet.backbone", "rcnet.neck", "rcnet.heatmap_head", "rcnet.depth_head",
    "mesh_net.backbone", "mesh_net.upsampler",
)  # fmt: skip
"""Static-shape submodules compiled when present (METRO's encoder takes fixed tokens; SA-HMR's
scene-aware encoder takes a variable number of contact tokens and stays eager)."""


@dataclass
class RunResult:
    """One (method, data path) measurement."""

    method: str
    path: str
    batch_size: int
    samples_per_s: float | None = None
    step_ms: float | None = None
    gpu_busy_pct: float | None = None
    gpu_busy_readings: int = 0
    data_samples_per_s: float | None = None
    steps: int = 0
    seconds: float | None = None
    compiled: list[str] = field(default_factory=list)
    error: str | None = None
    profile: dict[str, Any] | None = None
    store_frames_per_s: float | None = None


# ---------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="synthetic dataset folder (dataset.json)")
    p.add_argument("--out", required=True, help="folder for train_benchmark.json / .md")
    p.add_argument("--split", default="train")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of " +
                   ", ".join(METHODS))  # fmt: skip
    p.add_argument("--paths", default=",".join(PATHS), help="old, new or both")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=15.0, help="timed window per run")
    p.add_argument("--warmup", type=int, default=8, help="untimed steps first (compilation)")
    p.add_argument("--min-steps", type=int, default=3, help="timed steps at least")
    p.add_argument("--data-seconds", type=float, default=2.0, help="data-only window per run")
    p.add_argument("--workers", type=int, default=15, help="DataLoader workers (old path)")
    p.add_argument("--decode-workers", type=int, default=15, help="cache decoders (new path)")
    p.add_argument("--max-points-per-scene", type=int, default=None)
    p.add_argument("--budget-minutes", type=float, default=7.5,
                   help="start no run that would end after this")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-augment", action="store_true", help="new path without augmentation")
    p.add_argument("--compile", dest="compile", action="store_true", default=None)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", default=True)
    p.add_argument("--no-fused", dest="fused", action="store_false", default=True)
    p.add_argument("--no-sync-free", dest="sync_free", action="store_false", default=True,
                   help="check each loss on the host (trainer.sync_free_steps=false)")  # fmt: skip
    p.add_argument("--docs", default=None, help="also replace this file's section " + SECTION)
    p.add_argument(
        "--profile",
        action="store_true",
        help="after each timed window, profile --profile-steps steps by part",
    )
    p.add_argument("--profile-steps", type=int, default=3, help="steps profiled (--profile)")
    p.add_argument(
        "--profile-trace",
        action="store_true",
        help="also write a chrome trace per run (gzipped when large; < 16 MiB)",
    )
    p.add_argument("--cpu-load", type=int, default=0,
                   help="memory-streaming processes at nice 15 beside every run (a lease's "
                   "generator workers)")  # fmt: skip
    p.add_argument("--smoke", action="store_true",
                   help="tiny CPU run: batch 2, 1 warm-up + 2 timed steps, no compile")  # fmt: skip
    return p.parse_args(argv)


def _fail(message: str) -> int:
    print(f"benchmark_train: {message}", file=sys.stderr)
    return 2


def check_args(args: argparse.Namespace) -> str | None:
    """One line naming the first bad input, or None."""
    data = Path(args.data)
    if not (data / "dataset.json").is_file():
        return f"--data {data}: no dataset.json (not a synthetic dataset folder)"
    try:
        plan = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
        shards = [s for s in plan["shards"] if s["split"] == args.split]
    except (ValueError, KeyError, TypeError) as err:
        return f"--data {data}: unreadable dataset.json ({err})"
    if not any((data / s["file"]).is_file() for s in shards):
        return f"--data {data}: no written shard of split {args.split!r}"
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad:
        return f"--methods {args.methods!r}: unknown {bad or 'none given'}; know {list(METHODS)}"
    paths = [q for q in args.paths.split(",") if q]
    if not paths or any(q not in PATHS for q in paths):
        return f"--paths {args.paths!r}: expected a comma-separated subset of {list(PATHS)}"
    for name in ("batch_size", "warmup", "min_steps", "workers", "decode_workers", "profile_steps",
                 "cpu_load"):
        low = 1 if name in ("batch_size", "min_steps", "profile_steps") else 0
        if getattr(args, name) < low:
            return f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= {low}"
    for name in ("seconds", "data_seconds", "budget_minutes"):
        if not getattr(args, name) > 0:
            return f"--{name.replace('_', '-')} {getattr(args, name)}: must be > 0"
    if args.device not in ("auto", "cpu") and not args.device.startswith("cuda"):
        return f"--device {args.device!r}: expected auto, cpu, cuda or cuda:N"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return f"--device {args.device!r}: CUDA is not available"
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return f"--out {out}: exists and is not a folder"
    if args.docs is not None and Path(args.docs).exists() and not Path(args.docs).is_file():
        return f"--docs {args.docs}: not a file"
    return None


def apply_smoke(args: argparse.Namespace) -> None:
    """The tiny CPU settings of ``--smoke``."""
    args.device = "cpu"
    args.batch_size = min(args.batch_size, 2)
    args.warmup, args.min_steps = 1, 2
    args.seconds, args.data_seconds = 0.01, 0.01
    args.workers, args.decode_workers = 0, 0
    args.compile = False
    if args.max_points_per_scene is None:
        args.max_points_per_scene = 20000


# ---------------------------------------------------------------------------- pieces


def compose(overrides: list[str]) -> Any:
    """configs/train.yaml composed with ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def endless(loader: Any) -> Any:
    """Batches of a training loader over successive epochs."""
    from sahmr.engine.data import start_epoch

    epoch = 0
    while True:
        start_epoch(loader, 0, epoch)
        yield from loader
        epoch += 1


@dataclass
class DataPath:
    """A loader and its step preparers (with and without scene points)."""

    loader: Any
    prepare_scene: Any
    prepare_plain: Any
    setup_s: float
    note: str = ""
    batches: Any = None

    def next(self) -> Any:
        if self.batches is None:
            self.batches = endless(self.loader)
        return next(self.batches)


def build_old_path(args: argparse.Namespace, topology: Any, device: torch.device) -> DataPath:
    """DataLoader workers + `StepPreparer` (scene bank of every scene point)."""
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.engine.data import LoaderSettings, StepPreparer, build_loader, build_scene_bank

    t0 = time.perf_counter()
    ds = SyntheticDataset(args.data, args.split)
    settings = LoaderSettings(
        batch_size=args.batch_size, num_workers=args.workers, pin_memory=True,
        persistent_workers=True, prefetch_factor=4,
    )  # fmt: skip
    loader = build_loader(ds, settings, train=True, seed=0, device=device)
    bank = build_scene_bank(ds.scene_points, device, max_points_per_scene=args.max_points_per_scene)
    return DataPath(
        loader=loader,
        prepare_scene=StepPreparer(topology, device, bank),
        prepare_plain=StepPreparer(topology, device, None),
        setup_s=time.perf_counter() - t0,
        note=f"{args.workers} workers",
    )


def build_new_path(args: argparse.Namespace, topology: Any, device: torch.device) -> DataPath:
    """The in-memory path: cache decoded by ``--decode-workers`` processes, on ``device``."""
    from sahmr.data.augment import AugmentConfig
    from sahmr.data.memory import MemoryDataConfig, ShardStream
    from sahmr.engine.memory_data import MemoryLoader, MemoryStepPreparer

    t0 = time.perf_counter()
    augment = None if args.no_augment else AugmentConfig()
    cfg = MemoryDataConfig(decode_workers=args.decode_workers, poll_seconds=0.5, augment=augment)
    stream = ShardStream(
        args.data, args.split, device, cfg,
        max_points_per_scene=args.max_points_per_scene, progress=not args.smoke,
    )  # fmt: skip
    loader = MemoryLoader(stream, batch_size=args.batch_size)
    stream.refresh()  # everything written so far
    gib = stream.cache.nbytes() / 2**30
    return DataPath(
        loader=loader,
        prepare_scene=MemoryStepPreparer(stream, topology, device, augment=augment),
        prepare_plain=MemoryStepPreparer(
            stream, topology, device, augment=augment, needs_scene=False
        ),
        setup_s=time.perf_counter() - t0,
        note=f"{len(stream.cache)} samples, {gib:.2f} GiB cache",
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_data(path: DataPath, prepare: Any, args: argparse.Namespace, device) -> float:
    """Samples/s of the data path alone (batches prepared, no model)."""
    n, t0 = 0, time.perf_counter()
    while True:
        step = prepare.step(path.next(), targets=True)
        n += step.num_frames
        if time.perf_counter() - t0 >= args.data_seconds and n >= args.batch_size:
            break
    sync(device)
    return n / (time.perf_counter() - t0)


def build_trainer(cfg: Any, args: argparse.Namespace, path: DataPath, device, out: Path) -> Any:
    """Method, loss and `Trainer` of a composed config (no validation, no logging)."""
    from hydra.utils import instantiate

    from sahmr.engine.distributed import DistInfo
    from sahmr.engine.trainer import Trainer
    from sahmr.engine.trainer_config import TrainerConfig

    settings = dict(cfg.trainer)
    settings.update(
        batch_size=args.batch_size, bf16=args.bf16, fused_optimizer=args.fused, progress=False,
        log_every=0, image_every=None, ckpt_every=None, val_every_epochs=0, warmup_steps=0,
        compile_submodules=COMPILE_PATHS if args.compile else (), sync_free_steps=args.sync_free,
    )  # fmt: skip
    tcfg = TrainerConfig.from_mapping({k: v for k, v in settings.items()})
    method = instantiate(cfg.model)
    init = cfg.get("init")
    if init is not None and init.get("weights"):
        from sahmr.engine.checkpoint import load_initial_weights
        from sahmr.inference.method import bundled_checkpoint

        weights = str(init.weights)
        load_initial_weights(method, bundled_checkpoint("sahmr") if weights == "SHIPPED"
                             else weights)  # fmt: skip
    method = method.to(device)
    loss = instantiate(cfg.loss).to(device)
    return Trainer(
        method=method, loss=loss, config=tcfg, train_loader=path.loader,
        prepare=path.prepare_scene, output_dir=out, dist=DistInfo(device=device),
    )  # fmt: skip


def rcnet_once(cfg: Any) -> bool:
    """Whether the method's config stores a frozen RCNet's outputs (``loader.rcnet_once``)."""
    return bool(cfg.get("loader") is not None and cfg.loader.get("rcnet_once", False))


def fill_store(trainer: Any, path: DataPath, prepare: Any, device: torch.device) -> float:
    """Attaches a `sahmr.engine.rcnet_store.RCNetStore` to ``prepare`` (RCNet at the training
    step's precision) and fills it with every cached sample, in batches of the training batch
    size; frames/s of the filling after its first batch (RCNet's warm-up: kernel choices and
    allocations), or of the whole filling when there is only one batch."""
    if not hasattr(prepare, "use_rcnet_store"):
        raise ValueError("loader.rcnet_once runs on the in-memory path only (--paths new)")
    store = prepare.use_rcnet_store(trainer.method, bf16=trainer.bf16)
    n, B = len(prepare.stream.cache), trainer.cfg.batch_size
    starts = list(range(0, n, B))
    if len(starts) > 1:  # warm-up, untimed
        store.given(torch.arange(0, B), prepare.plain_inputs)
        starts = starts[1:]
    sync(device)
    t0 = time.perf_counter()
    for lo in starts:
        store.given(torch.arange(lo, min(n, lo + B)), prepare.plain_inputs)
    sync(device)
    return (n - starts[0]) / (time.perf_counter() - t0)


def compiled_paths(method: torch.nn.Module) -> list[str]:
    """The `COMPILE_PATHS` the method has (what the trainer compiles in place)."""
    present = []
    for path in COMPILE_PATHS:
        try:
            method.get_submodule(path)
        except AttributeError:
            continue
        present.append(path)
    return present


def measure_training(
    trainer: Any, path: DataPath, prepare: Any, args: argparse.Namespace, device, result
) -> None:
    """Warm-up steps, then the timed window with the GPU busy sampler."""
    from sahmr.benchmark.utilization import BusySampler, read_gpu_busy

    trainer.model.train()
    for _ in range(args.warmup):
        trainer.train_step(prepare.step(path.next(), targets=True))
    sync(device)
    n = steps = 0
    with BusySampler(lambda: read_gpu_busy(device), interval_s=0.5) as busy:
        t0 = time.perf_counter()
        while steps < args.min_steps or time.perf_counter() - t0 < args.seconds:
            step = prepare.step(path.next(), targets=True)
            trainer.train_step(step)
            n += step.num_frames
            steps += 1
        sync(device)
        dt = time.perf_counter() - t0
    result.samples_per_s = n / dt
    result.step_ms = 1000.0 * dt / steps
    result.steps, result.seconds = steps, dt
    result.gpu_busy_pct = busy.mean
    result.gpu_busy_readings = len(busy.samples)


TRACE_LIMIT = 16 * 2**20
"""Largest chrome trace kept (bytes); a larger one is gzipped, and dropped if still larger."""


def measure_profile(
    trainer: Any, path: DataPath, prepare: Any, args: argparse.Namespace, device, out: Path,
    name: str,
) -> dict[str, Any]:  # fmt: skip
    """``--profile-steps`` steps under `torch.profiler.profile`, time attributed by part
    (`sahmr.benchmark.step_profile`); after the timed window, so the warm-up is done."""
    from torch.profiler import ProfilerActivity, profile

    from sahmr.benchmark.step_profile import StepRanges, summarize_profile

    on_device = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_device else [])
    trainer.model.train()
    sync(device)
    with StepRanges(trainer) as ranges, profile(activities=activities) as prof:
        for _ in range(args.profile_steps):
            try:
                with ranges.range("data"):
                    step = prepare.step(path.next(), targets=True)
                with ranges.range("train_step"):
                    trainer.train_step(step)
            finally:
                ranges.close_all()
        sync(device)
    report = summarize_profile(prof, args.profile_steps, on_device=on_device)
    report["wrapped_compiled"] = ranges.wrapped_compiled
    report["skipped_inside_compiled"] = ranges.skipped
    report["trace"] = None
    if args.profile_trace:
        report["trace"] = export_trace(prof, out / f"profile_{name}.json")
    return report


def export_trace(prof: Any, file: Path) -> str | None:
    """The chrome trace under ``file`` (gzipped when over `TRACE_LIMIT`); its name or None."""
    import gzip
    import shutil

    file.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(file))
    if file.stat().st_size <= TRACE_LIMIT:
        return file.name
    packed = file.with_suffix(".json.gz")
    with file.open("rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
    file.unlink()
    if packed.stat().st_size <= TRACE_LIMIT:
        return packed.name
    logger.warning("%s: trace over %d MiB even gzipped; not kept", packed, TRACE_LIMIT >> 20)
    packed.unlink()
    return None


# ---------------------------------------------------------------------------- report


def markdown(report: dict[str, Any]) -> str:
    """The section text: settings line and one table row per run."""
    from sahmr.benchmark.timing import markdown_table

    env, s = report["environment"], report["settings"]

    def f(v: float | None, digits: int | None = None) -> str | None:
        if v is None:
            return None
        return f"{v:,.{digits if digits is not None else (1 if v < 100 else 0)}f}"

    old = {r["method"]: r["samples_per_s"] for r in report["runs"] if r["path"] == "old"}
    rows = []
    for r in report["runs"]:
        base = old.get(r["method"])
        gain = (
            f"x{r['samples_per_s'] / base:.2f}"
            if r["path"] == "new" and base and r["samples_per_s"]
            else None
        )
        rows.append([
            r["method"], r["path"], r["batch_size"], f(r["samples_per_s"]), gain,
            f(r["gpu_busy_pct"]), f(r["step_ms"], 1), f(r["data_samples_per_s"]),
            f(r.get("store_frames_per_s")) or "-", ", ".join(r["compiled"]) or "-",
            r["error"] or "",
        ])  # fmt: skip
    table = markdown_table(
        ["method", "data path", "batch", "samples/s", "vs old", "GPU busy %", "step ms",
         "data only samples/s", "RCNet stored, frames/s", "compiled", "error"],
        rows, align=["l", "l", "r", "r", "r", "r", "r", "r", "r", "l", "l"],
    )  # fmt: skip
    head = (
        f"Measured {env['date']} on {env.get('device_name')} (torch {env['torch']}, CUDA "
        f"{env.get('cuda') or '-'}, cuDNN {env.get('cudnn') or '-'}, "
        f"{env.get('spconv') or 'no spconv'}, Python {env['python']}) by "
        f"`python tools/benchmark_train.py {s['argv']}`: "
        f"{report['dataset']['train_samples']} training samples; bf16 {s['bf16']}, fused AdamW "
        f"{s['fused']}, torch.compile {s['compile']}, sync-free steps {s['sync_free']}; "
        f"{s['warmup']} warm-up steps, then "
        f"{s['seconds']} s timed; GPU busy = mean of `utilization.gpu` read every 0.5 s. "
        f"old: DataLoader, {s['workers']} workers ({report['dataset']['old_setup_s']} s set-up); "
        f"new: `loader=memory`, augmentation {not s['no_augment']} "
        f"({report['dataset']['new_note']}, built in {report['dataset']['new_setup_s']} s)."
    )
    if s.get("cpu_load"):
        head += (
            f" Beside every run: {s['cpu_load']} memory-streaming processes at nice 15 "
            "(`--cpu-load`, a lease's generator workers)."
        )
    profiles = [profile_markdown(r) for r in report["runs"] if r.get("profile")]
    return "\n\n".join([head, table, *profiles]) + "\n"


def profile_markdown(run: dict[str, Any]) -> str:
    """A run's ``--profile`` tables: time per part (range) and the top ops."""
    from sahmr.benchmark.timing import markdown_table

    p = run["profile"]
    dev = "cuda" in p["activities"]

    def ms(v: float | None) -> str | None:
        return None if v is None else f"{v:,.2f}"

    rows = []
    for name, r in p["ranges"].items():
        share = None if r["share_pct"] is None else f"{r['share_pct']:.1f}"
        cells = [f"`{name}`", f"{r['calls']:g}"]
        if dev:
            cells += [ms(r["device_ms_per_step"]), ms(r["backward_device_ms_per_step"])]
        rows.append([*cells, ms(r["cpu_ms_per_step"]), share])
    cols = (
        ["part", "calls/step"]
        + (["device ms/step", "its backward device ms/step"] if dev else [])
        + ["CPU ms/step", "% of train_step"]
    )
    parts = markdown_table(cols, rows, align=["l"] + ["r"] * (len(cols) - 1))
    key = "self_device_ms" if dev else "self_cpu_ms"
    op_rows = [
        [f"`{o['name'][:80]}`", f"{o['calls'] / p['steps']:g}", ms(o[key] / p["steps"]),
         ms(o.get("device_ms", o["cpu_ms"]) / p["steps"])]
        for o in p["ops"]
    ]  # fmt: skip
    kind = "device" if dev else "CPU"
    ops = markdown_table(
        ["op", "calls/step", f"self {kind} ms/step", f"{kind} ms/step (with children)"],
        op_rows, align=["l", "r", "r", "r"],
    )  # fmt: skip
    total = (
        f"all kernels {ms(p['device_ms_per_step'])} ms/step, " if p["device_ms_per_step"] else ""
    )
    notes = (
        f"compiled, timed from outside: {', '.join(p['wrapped_compiled']) or '-'}; "
        f"inside compiled (no range): {len(p['skipped_inside_compiled'])}"
    )
    trace = f"; trace `{p['trace']}`" if p.get("trace") else ""
    return (
        f"### Profile: {run['method']} / {run['path']}\n\n"
        f"{p['steps']} steps profiled after the timed window ({', '.join(p['activities'])}): "
        f"{total}wall {ms(p['wall_ms_per_step'])} ms/step; {notes}{trace}. Device time counts "
        f"the kernels launched inside a part (backward kernels too, from autograd's thread); "
        f"nested parts are also counted in their parents.\n\n{parts}\n\n"
        f"Top {len(p['ops'])} ops by self {kind} time:\n\n{ops}"
    )


# ---------------------------------------------------------------------------- main


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from hydra.utils import instantiate

    from sahmr.benchmark.cpu_load import CpuLoad
    from sahmr.benchmark.timing import environment_info

    t_start = time.perf_counter()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if args.compile is None:
        args.compile = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    methods = [m for m in args.methods.split(",") if m]
    paths = [q for q in args.paths.split(",") if q]
    base = [f"data.root={args.data}", f"data.split={args.split}"]
    body = instantiate(compose(["exp=metro_small", *base]).body)
    data: dict[str, DataPath] = {}
    for name in paths:
        logger.info("building the %s data path", name)
        build = build_old_path if name == "old" else build_new_path
        data[name] = build(args, body.topology, device)
    n_train = len(data[paths[0]].loader.sampler.dataset)  # type: ignore[arg-type]
    runs: list[RunResult] = []
    budget_s = 60.0 * args.budget_minutes
    per_run_s = args.seconds + args.data_seconds + 10.0  # grows to the longest run seen
    first_run_s = per_run_s
    with tempfile.TemporaryDirectory() as tmp, CpuLoad(args.cpu_load):
        for method in methods:
            cfg = compose([*METHODS[method], *base])
            needs_scene = bool(cfg.get("needs_scene", True))
            trainer = None
            compiled: list[str] = []
            for name in paths:
                result = RunResult(method, name, args.batch_size, compiled=compiled)
                runs.append(result)
                # the first run of a method also builds and compiles it
                expect = per_run_s if trainer is not None else max(per_run_s, first_run_s)
                if time.perf_counter() - t_start + expect > budget_s:
                    result.error = "skipped: time budget"
                    continue
                t_run = time.perf_counter()
                path = data[name]
                prepare = path.prepare_scene if needs_scene else path.prepare_plain
                try:
                    if trainer is None:
                        trainer = build_trainer(cfg, args, path, device, Path(tmp))
                        if args.compile:
                            compiled.extend(compiled_paths(trainer.method))
                    result.data_samples_per_s = measure_data(path, prepare, args, device)
                    if rcnet_once(cfg):
                        result.store_frames_per_s = fill_store(trainer, path, prepare, device)
                    measure_training(trainer, path, prepare, args, device, result)
                    if args.profile:
                        result.profile = measure_profile(
                            trainer, path, prepare, args, device, Path(args.out),
                            f"{method}_{name}",
                        )  # fmt: skip
                    logger.info(
                        "%s / %s: %.0f samples/s, GPU busy %s %%",
                        method, name, result.samples_per_s, result.gpu_busy_pct,
                    )  # fmt: skip
                except Exception as err:  # one failed run (e.g. out of memory) is reported
                    logger.exception("%s / %s failed", method, name)
                    result.error = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                finally:
                    if hasattr(prepare, "rcnet_store"):
                        prepare.rcnet_store = None  # the next method's runs compute their own
                took = time.perf_counter() - t_run
                if name == paths[0]:
                    first_run_s = max(first_run_s, took)
                else:
                    per_run_s = max(per_run_s, took)
            del trainer
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    settings = {
        k: getattr(args, k)
        for k in ("batch_size", "seconds", "warmup", "min_steps", "workers", "decode_workers",
                  "bf16", "fused", "compile", "sync_free", "no_augment", "smoke",
                  "max_points_per_scene", "profile", "profile_steps", "cpu_load")
    }  # fmt: skip
    settings["argv"] = " ".join(argv)
    new = data.get("new")
    return {
        "environment": environment_info(device),
        "settings": settings,
        "dataset": {
            "root": str(args.data),
            "split": args.split,
            "train_samples": n_train,
            "old_setup_s": round(data["old"].setup_s, 1) if "old" in data else None,
            "new_setup_s": round(new.setup_s, 1) if new else None,
            "new_note": new.note if new else None,
        },
        "runs": [vars(r) for r in runs],
        "total_s": round(time.perf_counter() - t_start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.smoke:
        apply_smoke(args)
    problem = check_args(args)
    if problem:
        return _fail(problem)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run(args, argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_benchmark.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    text = markdown(report)
    (out / "train_benchmark.md").write_text(text, encoding="utf-8")
    if args.docs:
        from sahmr.benchmark.timing import write_marked_section

        write_marked_section(args.docs, SECTION, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the RCNet store's filling spends its time (section (q) of docs/results.md).

Run 30's and run 31's leases trained at 110-190 samples/s although `tools/benchmark_train.py`
measures 970 for the stored step: the store computed about 60 new samples a second, and
nearly every step waited for it. This probe times, per batch of ``--batch`` frames of
``--data``'s ``--split`` (one untimed warm-up batch first, then ``--batches`` timed ones, each
part synchronised):

- ``inputs``: `MemoryStepPreparer.plain_inputs` (gather, frustum cut of the scene points);
- ``rcnet_fp32`` / ``rcnet_bf16``: `SAHMR.rcnet_root_contacts` on those inputs, without and
  with the training step's bfloat16 autocast (TF32 as the trainer leaves it: torch's
  defaults, unless ``--tf32``);
- ``fill_fp32`` / ``fill_bf16``: a fresh `RCNetStore` filled with the same batches, the
  whole `RCNetStore.given` (inputs, RCNet, storing);

and, for the frames of the first timed batch, how far the bf16 roots are from the fp32 ones.

    python3 docs/results/run31_gpu/store_fill.py --data DATA --split val --out OUT.json

Shipped weights, ``exp=sahmr_small_finetune`` (RCNet frozen, its depth search on).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tools"))

import benchmark_train as bt  # noqa: E402


def timed(device: torch.device, fn, *args) -> tuple[float, object]:
    """Seconds of ``fn(*args)`` (device synchronised before and after) and its result."""
    bt.sync(device)
    t0 = time.perf_counter()
    out = fn(*args)
    bt.sync(device)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--out", required=True, help="JSON file of the timings")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=3, help="timed batches after the warm-up")
    p.add_argument("--decode-workers", type=int, default=4)
    p.add_argument("--max-points-per-scene", type=int, default=400000)
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (the trainer does not)")
    a = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    args = bt.parse_args([
        "--data", a.data, "--split", a.split, "--out", str(Path(a.out).parent),
        "--paths", "new", "--batch-size", str(a.batch), "--no-compile",
        "--decode-workers", str(a.decode_workers),
        "--max-points-per-scene", str(a.max_points_per_scene),
    ])  # fmt: skip
    cfg = bt.compose([*bt.METHODS["sahmr_small_finetune_once"], f"data.root={a.data}",
                      f"data.split={a.split}"])  # fmt: skip
    from hydra.utils import instantiate

    body = instantiate(cfg.body)
    path = bt.build_new_path(args, body.topology, device)
    prepare = path.prepare_scene
    n = len(prepare.stream.cache)
    need = (a.batches + 1) * a.batch
    if n < need:
        raise SystemExit(f"{n} samples in {a.data} {a.split}; the probe needs {need}")
    with tempfile.TemporaryDirectory() as tmp:
        model = bt.build_trainer(cfg, args, path, device, Path(tmp)).method
    model.eval()
    batches = [torch.arange(k * a.batch, (k + 1) * a.batch) for k in range(a.batches + 1)]

    def rcnet(inputs, bf16: bool):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return model.rcnet_root_contacts(inputs)

    parts = ("inputs", "rcnet_fp32", "rcnet_bf16", "fill_fp32", "fill_bf16")
    times: dict[str, list[float]] = {k: [] for k in parts}
    roots: dict[str, torch.Tensor] = {}
    for k, idx in enumerate(batches):
        t_in, inputs = timed(device, prepare.plain_inputs, idx)
        t32, out32 = timed(device, rcnet, inputs, False)
        t16, out16 = timed(device, rcnet, inputs, True)
        if k == 0:
            continue  # warm-up
        times["inputs"].append(t_in)
        times["rcnet_fp32"].append(t32)
        times["rcnet_bf16"].append(t16)
        if k == 1:
            roots = {"fp32": out32.root_cam.float(), "bf16": out16.root_cam.float()}
    for name, bf16 in (("fill_fp32", False), ("fill_bf16", True)):
        store = prepare.use_rcnet_store(model, bf16=bf16)
        for k, idx in enumerate(batches):
            t, _ = timed(device, store.given, idx, prepare.plain_inputs)
            if k:
                times[name].append(t)
    prepare.rcnet_store = None
    diff_mm = 1000.0 * (roots["bf16"] - roots["fp32"]).norm(dim=-1)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch": a.batch,
        "timed_batches": a.batches,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "depth_hypotheses": list(getattr(model.rcnet, "depth_hypotheses", ())),
        "frames_per_s": {k: a.batch * len(v) / sum(v) for k, v in times.items()},
        "seconds_per_batch": {k: sum(v) / len(v) for k, v in times.items()},
        "root_bf16_vs_fp32_mm": {"mean": float(diff_mm.mean()), "max": float(diff_mm.max())},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

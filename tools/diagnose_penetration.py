#!/usr/bin/env python3
"""Is a method's scene penetration a placement (depth) error or a pose error?

    python3 tools/diagnose_penetration.py --pred PRED --gt-dataset DATA --split test --out OUT

Every predicted body (a folder of ``<split>-<index:06d>`` meshes or ``.npz`` with world-frame
``vertices``, as `tools/eval_checkpoint.py save_predictions=true` writes; the format of
`tools/score_predictions.py`) is slid along the ray from its camera through its centre to
where it penetrates the room least, at a price per mm of slide (`sahmr.scene.ray_slide`,
``--slide-cost``). Penetration the slide removes is a placement error the scan could have
fixed; whether the slide was *right* shows in the world vertex error (G-MPVE) against the
ground truth before and after. Both are reported per band of the frames' PenE, where a
method's mean PenE comes from.

Writes ``OUT/ray_slide.json`` (settings, per band, per frame) and ``OUT/slid/`` (the slid
bodies, ``.npz`` with ``vertices``: score them with `tools/score_predictions.py --pred
OUT/slid ...`). PenE here reads the room's SDF grid (`sahmr.scene.sdf.load_or_build_sdf`,
solid ground as the scan declares), so it can differ by a few percent from the evaluator's
exact distances. Exit codes: 0 done, 2 bad arguments (nothing written).
"""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from sahmr.scene.ray_slide import MAX_SLIDE_M, SLIDE_COST, SLIDE_STEP_M, sampler_sdf

PENE_BANDS_MM = (0.0, 10.0, 100.0, 1000.0, 5000.0, math.inf)
"""Edges of the PenE bands the report groups frames by, mm summed over vertices."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pred", type=Path, required=True, help="folder of predicted bodies")
    p.add_argument("--gt-dataset", type=Path, required=True,
                   help="the generated dataset the predictions are of (tools/make_dataset.py)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, required=True,
                   help="report folder (made; an existing one must be empty)")
    p.add_argument("--max-slide", type=float, default=MAX_SLIDE_M, help="metres either way")
    p.add_argument("--step", type=float, default=SLIDE_STEP_M, help="metres between slides tried")
    p.add_argument("--slide-cost", type=float, default=SLIDE_COST,
                   help="mm of PenE a mm of slide must remove (0: least penetration wins; "
                        "default: the price inference uses)")
    p.add_argument("--sdf-cache-dir", type=Path, default=None,
                   help="SDF grid cache (default: the evaluator's)")
    p.add_argument("--no-progress", action="store_true")
    return p  # fmt: skip


def band_of(pene_mm: float) -> str:
    """The report's name of the PenE band holding ``pene_mm``."""
    for lo, hi in itertools.pairwise(PENE_BANDS_MM):
        if lo <= pene_mm < hi:
            return f"[{lo:g}, {hi:g})"
    raise ValueError(f"PenE {pene_mm} outside every band")


def world_error_mm(vertices_world: torch.Tensor, target_world: torch.Tensor) -> float:
    """G-MPVE of one body (`sahmr.evaluation.metrics.g_mpve`), (V, 3) x2 -> mm."""
    from sahmr.evaluation.metrics import g_mpve

    return float(g_mpve(vertices_world[None], target_world[None])[0])


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per PenE band (of the predicted bodies) and over all frames: frame count, mean PenE
    and G-MPVE before and after the slide, mean |slide|, share of frames moved."""

    def stats(group: list[dict]) -> dict:
        n = len(group)
        mean = lambda key: sum(r[key] for r in group) / n  # noqa: E731
        return {"frames": n, "pene_mm": mean("pene_mm"), "pene_slid_mm": mean("pene_slid_mm"),
                "g_mpve_mm": mean("g_mpve_mm"), "g_mpve_slid_mm": mean("g_mpve_slid_mm"),
                "mean_abs_slide_m": sum(abs(r["slide_m"]) for r in group) / n,
                "moved_fraction": sum(r["slide_m"] != 0 for r in group) / n}  # fmt: skip

    bands: dict[str, list[dict]] = {}
    for r in rows:
        bands.setdefault(band_of(r["pene_mm"]), []).append(r)
    order = [band_of(lo) for lo in PENE_BANDS_MM[:-1]]
    out = {b: stats(bands[b]) for b in order if b in bands}
    out["all"] = stats(rows)
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    from sahmr.cli.checks import BadArgument, check_dataset_split, check_writable_folder

    if not (a.step > 0 and a.max_slide >= 0 and a.slide_cost >= 0):
        p.error("--step must be > 0, --max-slide and --slide-cost >= 0")
    if a.out.exists() and any(a.out.iterdir()):
        p.error(f"--out {a.out}: exists and is not empty")
    try:
        check_dataset_split(a.gt_dataset, "--gt-dataset", a.split, "--split")
        check_writable_folder(a.out, "--out")
    except BadArgument as err:
        p.error(str(err))
    from sahmr.evaluation.readers import FolderReader, FrameError, SyntheticSplitReader

    if not a.pred.is_dir() or not FolderReader(a.pred).names():
        p.error(f"--pred {a.pred}: no predicted bodies (.ply/.obj/.npz files or frame folders)")
    gt = SyntheticSplitReader(a.gt_dataset, a.split)
    pred = FolderReader(a.pred)
    unknown = sorted(set(pred.names()) - set(gt.names()))
    if unknown:
        p.error(f"--pred {a.pred}: {len(unknown)} frame(s) not in split {a.split} of "
                f"{a.gt_dataset}, e.g. {unknown[0]}")  # fmt: skip

    from tqdm import tqdm

    from sahmr.atomic_write import atomic_save_npz, atomic_write_json
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.geometry.cameras import invert_rigid
    from sahmr.scene.ray_slide import ray_slide
    from sahmr.scene.sdf import load_or_build_sdf

    dataset = SyntheticDataset(a.gt_dataset, a.split)
    grids: dict[str, object] = {}
    rows, failed = [], []
    a.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{a.out.name}-", dir=a.out.parent))
    try:
        (work / "slid").mkdir()
        for name in tqdm(pred.names(), desc="frames", disable=a.no_progress):
            try:
                frame = pred.load(name)
            except FrameError as err:
                failed.append({"name": name, "reason": str(err)})
                continue
            if frame.vertices is None:
                failed.append({"name": name, "reason": "parameters only, no vertices"})
                continue
            sample = dataset[int(name.rsplit("-", 1)[1])]  # truth, camera and room: one read
            if sample.vertices_world is None:
                failed.append({"name": name, "reason": "the dataset row holds no vertices"})
                continue
            grid = grids.get(sample.scene_id)
            if grid is None:
                mesh = gt.scene_dir() / sample.scene_id / "mesh.ply"
                grid = grids[sample.scene_id] = load_or_build_sdf(mesh, cache_dir=a.sdf_cache_dir)
            T_w2c = torch.as_tensor(np.asarray(sample.T_w2c), dtype=torch.float64)
            camera_world = invert_rigid(T_w2c[None])[0, :3, 3]
            v = torch.as_tensor(frame.vertices, dtype=torch.float64)
            slide = ray_slide(v, camera_world, sampler_sdf(grid), max_slide_m=a.max_slide,
                              step_m=a.step, slide_cost=a.slide_cost)  # fmt: skip
            slid = v + slide.shift_world
            target = torch.as_tensor(np.asarray(sample.vertices_world), dtype=torch.float64)
            rows.append({"name": name, "scene": sample.scene_id, "slide_m": slide.slide_m,
                         "pene_mm": slide.pene_mm, "pene_slid_mm": slide.pene_slid_mm,
                         "g_mpve_mm": world_error_mm(v, target),
                         "g_mpve_slid_mm": world_error_mm(slid, target)})  # fmt: skip
            atomic_save_npz(work / "slid" / f"{name}.npz",
                            {"vertices": slid.numpy().astype(np.float32)})  # fmt: skip
        if not rows:
            raise ValueError(f"--pred {a.pred}: no frame could be read ({failed[0]['reason']})")
        report = {"pred": str(a.pred), "gt_dataset": str(a.gt_dataset), "split": a.split,
                  "max_slide_m": a.max_slide, "step_m": a.step, "slide_cost": a.slide_cost,
                  "pene_source": "SDF grid (sahmr.scene.sdf.load_or_build_sdf)",
                  "bands": summarise(rows), "failed": failed, "frames": rows}  # fmt: skip
        atomic_write_json(work / "ray_slide.json", report, indent=1)
        if a.out.exists():
            a.out.rmdir()  # empty (checked above)
        work.rename(a.out)
    except ValueError as err:
        shutil.rmtree(work, ignore_errors=True)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(f"{'PenE band (mm)':18s} {'frames':>6s} {'PenE':>14s} {'G-MPVE (mm)':>16s} "
          f"{'|slide| (m)':>11s}")  # fmt: skip
    for band, s in report["bands"].items():
        print(f"{band:18s} {s['frames']:6d} {s['pene_mm']:6.0f} -> {s['pene_slid_mm']:5.0f} "
              f"{s['g_mpve_mm']:7.1f} -> {s['g_mpve_slid_mm']:6.1f} {s['mean_abs_slide_m']:11.3f}")
    for f in failed:
        print(f"failed: {f['name']}: {f['reason']}")
    print(f"reports in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

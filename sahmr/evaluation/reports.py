"""Evaluation reports: ``metrics.json``, ``per_frame.csv``, PNG plots and a text table.

Every file is written to a temporary name in the output folder and renamed into place, so
an interrupted run never leaves a half-written report.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from sahmr.atomic_write import atomic_write_bytes
from sahmr.evaluation.evaluator import PEN_DEPTH_BINS_MM, EvaluationResult

logger = logging.getLogger(__name__)

HISTOGRAM_METRICS = ("mpjpe", "pa_mpjpe", "g_mpve", "pene", "confe")


def metrics_dict(result: EvaluationResult) -> dict[str, Any]:
    """The content of ``metrics.json``."""
    return {
        "protocol": result.protocol,
        "definitions": "docs/evaluation.md",
        "frames": result.num_frames,
        "missing": len(result.missing),
        "failed": len(result.failed),
        "missing_names": list(result.missing),
        "failed_names": {name: reason for name, reason in result.failed},
        "metrics": result.summary(),
        "pen_depth_histogram": {
            "bin_edges_mm": PEN_DEPTH_BINS_MM.tolist(),
            "counts": result.pen_depth_hist.tolist(),
            "note": "penetrating vertices per depth bin; the last bin holds deeper ones too",
        },
    }


def write_metrics_json(result: EvaluationResult, path: str | Path) -> Path:
    """Write ``metrics.json`` (NaN written as null)."""
    path = Path(path)
    text = json.dumps(_nan_to_none(metrics_dict(result)), indent=2, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())
    return path


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_per_frame_csv(result: EvaluationResult, path: str | Path) -> Path:
    """Write ``per_frame.csv``: one row per scored frame, columns in first-seen order."""
    return write_rows_csv(result.per_frame, path)


def write_rows_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write one CSV row per dict (columns in first-seen order, floats as ``%.6g``), atomically."""
    path = Path(path)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns or ["name"], restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def write_plots(result: EvaluationResult, out_dir: str | Path) -> list[Path]:
    """Write PNG plots: per-frame error histograms, penetration depths, per-region contact.

    Returns:
        The written paths.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(out_dir / name, buf.getvalue())
        written.append(out_dir / name)

    present = [m for m in HISTOGRAM_METRICS if any(m in r for r in result.per_frame)]
    if present:
        fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3.2), squeeze=False)
        for ax, name in zip(axes[0], present):
            vals = np.array([r[name] for r in result.per_frame if name in r], dtype=float)
            ax.hist(vals, bins=min(50, max(5, len(vals) // 2)), color="tab:blue")
            ax.set_title(f"{name} (mm), mean {np.nanmean(vals):.1f}")
            ax.set_xlabel("mm per frame")
            ax.set_ylabel("frames")
        save(fig, "error_histograms.png")

    if result.has_scene:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        edges = PEN_DEPTH_BINS_MM
        ax.bar(
            edges[:-1], result.pen_depth_hist, width=np.diff(edges), align="edge", color="tab:red"
        )
        ax.set_xlabel("penetration depth of a vertex (mm; last bin: deeper)")
        ax.set_ylabel("vertices")
        ax.set_title(f"penetrating vertices: {int(result.pen_depth_hist.sum())}")
        save(fig, "penetration_depth_histogram.png")

    summary = result.summary()
    regions = [r for r in result.region_names if f"contact_f1/{r}" in summary]
    if regions:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        x = np.arange(len(regions))
        for k, key in enumerate(("precision", "recall", "f1")):
            vals = [summary[f"contact_{key}/{r}"]["value"] for r in regions]
            ax.bar(x + (k - 1) * 0.27, vals, width=0.27, label=key)
        ax.set_xticks(x, regions, rotation=20)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("fraction")
        ax.set_title("vertex contact per body region")
        ax.legend()
        save(fig, "contact_per_region.png")
    return written


def summary_table(result: EvaluationResult) -> str:
    """A plain-text table of the headline metrics (for a tool to print)."""
    def shown(value: float | None) -> str:
        return "undefined" if value is None or not np.isfinite(value) else f"{value:12.3f}"

    lines = [f"{'metric':<24} {'mean':>12} {'median':>12}  unit", "-" * 72]
    for name, entry in result.summary().items():
        if "/" in name:
            continue
        median = shown(entry["median"]) if "median" in entry else "-"
        lines.append(f"{name:<24} {shown(entry['value']):>12} {median:>12}  {entry['unit']}")
    lines.append("-" * 72)
    lines.append(
        f"frames scored {result.num_frames}, missing {len(result.missing)}, "
        f"failed {len(result.failed)}"
    )
    return "\n".join(lines)


def write_reports(result: EvaluationResult, out_dir: str | Path) -> list[Path]:
    """``metrics.json``, ``per_frame.csv`` and the plots in ``out_dir`` (created if needed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        write_metrics_json(result, out_dir / "metrics.json"),
        write_per_frame_csv(result, out_dir / "per_frame.csv"),
    ]
    paths += write_plots(result, out_dir)
    logger.info("wrote %d report files to %s", len(paths), out_dir)
    return paths

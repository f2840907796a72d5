#!/usr/bin/env python3
"""Validation curves of training runs, side by side, as one PNG.

    python3 tools/plot_runs.py RUN_A/metrics.jsonl RUN_B/metrics.jsonl --out curves.png
    python3 tools/plot_runs.py docs/results/run25_gpu/train_metrics.jsonl=run25 \\
        docs/results/run26_e2e/train_metrics.jsonl=run26 --metrics g_mpjpe root_error --out c.png

Each argument is a run's ``metrics.jsonl`` (what `sahmr.engine.trainer` writes: one JSON
object per line, validation lines with ``"split": "val"``), optionally ``=LABEL`` (default:
the name of its folder). One panel per metric (``--metrics``, default ``g_mpjpe``), the
validation value against the training step, one line per run; the first point of a run that
validated its starting weights (``trainer.val_at_start``) is ringed. A run's samples seen are
its steps times its batch size, which this file does not hold: compare steps only between runs
of one batch size.

Exit codes: 0 written, 2 bad arguments or unreadable inputs (nothing written).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path

from sahmr.atomic_write import atomic_write_bytes

DEFAULT_METRICS = ("g_mpjpe",)
UNITS = {"edge_error": "%", "frames": "", "seconds_per_frame": "s"}  # every other metric: mm


class InputError(ValueError):
    """An input the plot cannot use (its message is the one line printed)."""


def parse_run(arg: str) -> tuple[Path, str]:
    """``PATH[=LABEL]`` -> ``(path, label)``; the label defaults to the file's folder name."""
    path, sep, label = arg.partition("=")
    if not path:
        raise InputError(f"{arg!r}: no metrics.jsonl path")
    p = Path(path)
    return p, (label if sep and label else p.parent.name or p.stem)


def read_val_curve(path: Path, metric: str) -> list[tuple[int, float]]:
    """``[(step, value)]`` of the validation lines of ``path`` that hold ``metric``, by step.

    Raises:
        InputError: unreadable file, a line that is not a JSON object, or no validation line
            with a finite ``metric``.
    """
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    points: dict[int, float] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}:{n}: not a JSON line") from None
        if not isinstance(rec, dict):
            raise InputError(f"{path}:{n}: not a JSON object")
        if rec.get("split") != "val" or metric not in rec or "step" not in rec:
            continue
        value = rec[metric]
        if isinstance(value, (int, float)) and math.isfinite(value):
            points[int(rec["step"])] = float(value)  # a repeated step: the later line wins
    if not points:
        raise InputError(f"{path}: no validation line with a finite {metric!r}")
    return sorted(points.items())


def plot(curves: dict[str, dict[str, list[tuple[int, float]]]], metrics: list[str]) -> bytes:
    """PNG bytes: one panel per metric, one line per run (``curves[metric][label]``)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, pts in curves[metric].items():
            steps, values = zip(*pts)
            (line,) = ax.plot(steps, values, marker="o", markersize=3, label=label)
            if steps[0] == 0:
                ax.plot([0], [values[0]], marker="o", markersize=9, fillstyle="none",
                        color=line.get_color())  # fmt: skip
        unit = UNITS.get(metric, "mm")
        ax.set_title(f"val {metric}" + (f" ({unit})" if unit else ""))
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", help="metrics.jsonl files, each optionally =LABEL")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                   help="validation metrics to plot, one panel each (default: g_mpjpe)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.out.suffix.lower() != ".png":
            raise InputError(f"--out {args.out}: must end in .png")
        if not args.out.parent.is_dir():
            raise InputError(f"--out {args.out}: folder {args.out.parent} does not exist")
        runs = [parse_run(a) for a in args.runs]
        labels = [label for _, label in runs]
        if len(set(labels)) != len(labels):
            raise InputError(f"two runs share a label ({labels}): give each one =LABEL")
        curves = {m: {label: read_val_curve(path, m) for path, label in runs} for m in args.metrics}
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_bytes(args.out, plot(curves, args.metrics))
    for label in labels:
        parts = []
        for m in args.metrics:
            pts = curves[m][label]
            parts.append(f"{m} {pts[0][1]:.1f} (step {pts[0][0]}) -> {pts[-1][1]:.1f} "
                         f"(step {pts[-1][0]}), lowest {min(v for _, v in pts):.1f}")  # fmt: skip
        print(f"{label}: " + "; ".join(parts))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

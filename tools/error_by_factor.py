#!/usr/bin/env python3
"""Which bodies and cameras does a method fail on? Per-frame errors binned by factor.

    python3 tools/error_by_factor.py --eval "run 23=EVAL_DIR" [--eval "run 22=EVAL_DIR2"] \\
        --gt-dataset DATA --split test --out OUT

``EVAL_DIR`` is an output folder of ``tools/eval_checkpoint.py`` or
``tools/score_predictions.py`` (its ``per_frame.csv``) or the CSV itself, scored on split
``--split`` of the generated dataset ``DATA``. Every frame is grouped by camera distance, camera
height above the pelvis, focal length, the person's size in the image, stature, girth,
occlusion, occluder, side (the action's mirror image or not) and action
(`sahmr.evaluation.factors`); for each group and method the mean of each ``--metrics`` column
is reported. Made for sets such as
``configs/make_dataset_away.yaml`` (bodies and cameras away from the generator's defaults),
to see which factor the error grows with.

Writes ``OUT/factors.json`` (every group), ``OUT/factors.md`` (a table per factor) and
``OUT/factors.png`` (one panel per factor: the first metric per group and method, frame counts
under the bars). Exit codes: 0 done, 2 bad arguments or unreadable inputs (nothing written).
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_METRICS = ("g_mpjpe", "root_error", "pa_mpjpe", "edge_error", "pene")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--eval", action="append", required=True, metavar="LABEL=PATH",
                   help="an evaluation's folder (per_frame.csv) or CSV; repeat to compare")
    p.add_argument("--gt-dataset", type=Path, required=True,
                   help="the generated dataset the evaluations scored (tools/make_dataset.py)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, required=True,
                   help="report folder (made; an existing one must be empty)")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                   help="per_frame.csv columns to average (the first one is plotted)")
    p.add_argument("--up-axis", default="z", help="the rooms' up axis (generated rooms: z)")
    return p  # fmt: skip


class InputError(ValueError):
    """An input the report cannot use (its message is the one line printed)."""


def read_per_frame(path: Path, metrics: list[str]) -> dict[str, dict[str, float]]:
    """``{frame name: {metric: value}}`` from an evaluation's per-frame CSV (NaN: empty)."""
    csv_path = path / "per_frame.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise InputError(f"{path}: no per_frame.csv (an output folder of eval_checkpoint.py)")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        lacking = [m for m in ["name", *metrics] if m not in columns]
        if lacking:
            raise InputError(f"{csv_path}: no column {', '.join(lacking)}")
        rows = {}
        for row in reader:
            try:
                rows[row["name"]] = {m: float(row[m]) if row[m] else math.nan for m in metrics}
            except ValueError as err:
                raise InputError(f"{csv_path}: frame {row['name']}: {err}") from None
    if not rows:
        raise InputError(f"{csv_path}: no frames")
    return rows


def split_label(spec: str) -> tuple[str, Path]:
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise InputError(f"--eval {spec!r}: expected LABEL=PATH")
    return label, Path(path)


def report(factors: dict[str, np.ndarray], evals: dict[str, dict[str, np.ndarray]],
           metrics: list[str]) -> dict:  # fmt: skip
    """Every factor's groups, each with its frame count and per method the metrics' means."""
    from sahmr.evaluation.factors import FACTORS, bin_errors

    out = {}
    for factor in FACTORS:
        per_method = {label: bin_errors(factors[factor.name], errs, factor.edges)
                      for label, errs in evals.items()}  # fmt: skip
        groups = []
        for i, row in enumerate(next(iter(per_method.values()))):
            group = {k: row[k] for k in ("bin", "frames", "lo", "hi", "value") if k in row}
            group["methods"] = {label: {m: rows[i][m] for m in metrics}
                                for label, rows in per_method.items()}  # fmt: skip
            groups.append(group)
        out[factor.name] = {"unit": factor.unit, "what": factor.what, "groups": groups}
    return out


def markdown(rep: dict, metrics: list[str], labels: list[str], header: str) -> str:
    lines = [f"# Error by factor\n\n{header}\n"]
    for name, f in rep.items():
        unit = f" ({f['unit']})" if f["unit"] else ""
        lines.append(f"\n## {name}{unit}: {f['what']}\n")
        cols = [f"{m} {lab}" if len(labels) > 1 else m for m in metrics for lab in labels]
        lines.append("| group | frames | " + " | ".join(cols) + " |")
        lines.append("| --- | ---: |" + " ---: |" * len(cols))
        for g in f["groups"]:
            cells = []
            for m in metrics:
                for lab in labels:
                    v = g["methods"][lab][m]
                    cells.append("-" if v is None else f"{v:.3g}" if abs(v) < 10 else f"{v:,.1f}")
            lines.append(f"| {g['bin']} | {g['frames']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rep: dict, metric: str, labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(rep)
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    width = 0.8 / len(labels)
    for ax, name in zip(axes.flat, names):
        groups = rep[name]["groups"]
        x = np.arange(len(groups))
        for k, lab in enumerate(labels):
            ys = [g["methods"][lab][metric] for g in groups]
            ax.bar(x + (k - (len(labels) - 1) / 2) * width,
                   [np.nan if y is None else y for y in ys], width, label=lab)  # fmt: skip
        crowded = len(groups) > 7  # many named groups (actions): slanted labels
        ax.set_xticks(x, [f"{g['bin']}\n({g['frames']})" for g in groups], fontsize=7,
                      rotation=40 if crowded else 0,
                      ha="right" if crowded else "center")  # fmt: skip
        unit = f" ({rep[name]['unit']})" if rep[name]["unit"] else ""
        ax.set_title(f"{name}{unit}", fontsize=9)
        ax.set_ylabel(metric, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if len(labels) > 1:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{metric} per group (frames in brackets)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    from sahmr.cli.checks import BadArgument, check_dataset_split, check_writable_folder
    from sahmr.scene.io import UP_AXES

    if a.up_axis not in UP_AXES:
        p.error(f"--up-axis {a.up_axis!r}: one of {', '.join(UP_AXES)}")
    if a.out.exists() and (not a.out.is_dir() or any(a.out.iterdir())):
        p.error(f"--out {a.out}: exists and is not an empty folder")
    try:
        check_dataset_split(a.gt_dataset, "--gt-dataset", a.split, "--split")
        check_writable_folder(a.out, "--out")
        specs = [split_label(s) for s in a.eval]
        labels = [label for label, _ in specs]
        if len(set(labels)) != len(labels):
            raise InputError("--eval: each LABEL once")
        per_frame = {label: read_per_frame(path, a.metrics) for label, path in specs}
    except (BadArgument, InputError) as err:
        p.error(str(err))

    from sahmr.atomic_write import atomic_write_json
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.evaluation.factors import dataset_factors
    from sahmr.records import frame_name

    dataset = SyntheticDataset(a.gt_dataset, a.split)
    names = [frame_name(a.split, i) for i in range(len(dataset))]  # the evaluator's names
    known = set(names)
    for label, rows in per_frame.items():
        unknown = sorted(set(rows) - known)
        if unknown:
            p.error(f"--eval {label}: {len(unknown)} frame(s) not in split {a.split} of "
                    f"{a.gt_dataset}, e.g. {unknown[0]}")  # fmt: skip
    # the frames every evaluation scored, so that the methods are compared on the same ones
    scored = [i for i, n in enumerate(names) if all(n in rows for rows in per_frame.values())]
    if not scored:
        p.error("--eval: no frame is scored by every evaluation")
    factors = {k: v[scored] for k, v in dataset_factors(dataset, a.up_axis).items()}
    evals = {label: {m: np.array([rows[names[i]][m] for i in scored]) for m in a.metrics}
             for label, rows in per_frame.items()}  # fmt: skip
    rep = report(factors, evals, a.metrics)
    header = (f"{len(scored)} frames of split `{a.split}` of `{a.gt_dataset}`; methods: "
              + ", ".join(f"{lab} (`{path}`)" for lab, path in specs))  # fmt: skip

    a.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{a.out.name}-", dir=a.out.parent))
    try:
        atomic_write_json(work / "factors.json", {
            "dataset": str(a.gt_dataset), "split": a.split, "frames": len(scored),
            "methods": {lab: str(path) for lab, path in specs}, "metrics": a.metrics,
            "factors": rep})  # fmt: skip
        (work / "factors.md").write_text(markdown(rep, a.metrics, labels, header), "utf-8")
        plot(rep, a.metrics[0], labels, work / "factors.png")
        if a.out.exists():
            a.out.rmdir()  # empty (checked above)
        work.rename(a.out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(f"{len(scored)} frames; report in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

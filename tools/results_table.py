#!/usr/bin/env python
"""One markdown table comparing methods, built from the ``metrics.json`` files of evaluations.

Example:
    python tools/results_table.py \\
        --method "METRO + PnP=docs/results/metro_small.metrics.json" \\
        --method "SA-HMR=docs/results/sahmr_small.metrics.json" \\
        --method "PROX=runs/prox_test" --seconds "SA-HMR=0.032" \\
        --metrics g_mpjpe,mpjpe,pa_mpjpe,pene,confe,contact_f1 --out table.md \\
        --plot methods.png

``PATH`` of ``--method LABEL=PATH`` is a ``metrics.json`` written by
``tools/eval_checkpoint.py`` or ``tools/score_predictions.py`` (sahmr.evaluation.reports), a
folder holding one, or an output folder of ``tools/fit.py`` (``eval/metrics.json``; seconds per
frame from its ``fit_log.json``).

Columns: method, frames scored, the chosen metrics (default: every headline evaluator metric
found in any input, in the evaluator's order; per-region ``contact_f1/left_foot`` and the
method's own entries, as ``method:root_error_mm``, only when named in ``--metrics``), seconds
per frame (``--seconds`` overrides, else the file's ``seconds_per_frame``, else the fit log's
``fit_seconds_per_frame``). The best value of each metric column is bold when at least two
methods have one; a missing value is an en dash. A note under the table names methods scored
on a different number of frames, or with missing / failed frames.

``--plot PNG`` also draws one figure: a row of bar-chart panels, one per metric (default: those
of ``g_mpjpe, mpjpe, pa_mpjpe, pene, confe, contact_f1`` found in any input; ``--plot-metrics``
chooses, with the names ``--metrics`` takes), one bar per method in input order, labelled with the
table's numbers; the best label is bold, a missing value is an en dash without a bar, and
methods scored on a different number of frames than most are hatched (footnote under the figure).

Exit codes: 0 done, 2 bad arguments or unreadable inputs (nothing written). Files are written to
a temporary name and renamed into place, only once every input parsed and the figure is drawn.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sahmr.atomic_write import atomic_write_bytes
from sahmr.evaluation.evaluator import METRIC_UNITS

METHOD_PREFIX = "method:"
"""``--metrics`` entries with this prefix are read from a file's ``method_metrics``."""

LEGACY_PROTOCOL = "legacy"
"""Protocol of a metrics.json that names none: written before 2026-12-03, under the old
definitions (contact precision/recall over all vertices, PenE from the SDF grid alone)."""

DASH = "\u2013"
"""Shown for a value a method does not have."""

PLOT_METRICS = ("g_mpjpe", "mpjpe", "pa_mpjpe", "pene", "confe", "contact_f1")
"""Default panels of ``--plot`` (those found in some input), in this order."""

PLOT_DPI = 100
"""Same resolution as the evaluator's plots (sahmr.evaluation.reports)."""

DISPLAY_NAMES: dict[str, str] = {
    "mpjpe": "MPJPE",
    "pa_mpjpe": "PA-MPJPE",
    "mpve": "MPVE",
    "pa_mpve": "PA-MPVE",
    "edge_error": "edge-length error",
    "g_mpjpe": "G-MPJPE",
    "g_mpve": "G-MPVE",
    "root_error": "root error",
    "pene": "PenE",
    "pen_depth_mean": "pen. depth",
    "pen_fraction": "pen. vertices",
    "confe": "ConFE",
    "contact_precision": "contact P",
    "contact_recall": "contact R",
    "contact_f1": "contact F1",
    "scene_contact_precision": "scene contact P",
    "scene_contact_recall": "scene contact R",
    "scene_contact_iou": "scene contact IoU",
}
"""Column titles of the evaluator's metrics (per-region entries add the region's name)."""

Better = Literal["lower", "higher"]

BETTER: dict[str, Better] = {
    "mpjpe": "lower",
    "pa_mpjpe": "lower",
    "mpve": "lower",
    "pa_mpve": "lower",
    "edge_error": "lower",
    "g_mpjpe": "lower",
    "g_mpve": "lower",
    "root_error": "lower",
    "pene": "lower",
    "pen_depth_mean": "lower",
    "pen_fraction": "lower",
    "confe": "lower",
    "contact_precision": "higher",
    "contact_recall": "higher",
    "contact_f1": "higher",
    "scene_contact_precision": "higher",
    "scene_contact_recall": "higher",
    "scene_contact_iou": "higher",
}
"""Which way each evaluator metric improves (keyed by the name before any ``/region``)."""

UnitKind = Literal["mm", "mm_sum", "percent", "fraction", "other"]

HEADER_UNITS: dict[UnitKind, str] = {
    "mm": " (mm)",
    "mm_sum": " (mm sum)",
    "percent": " (%)",
    "fraction": "",
    "other": "",
}


class TableError(Exception):
    """A bad argument or an unreadable input; the message names it."""


@dataclass
class MethodResult:
    """What one ``--method`` contributes to the table.

    Attributes:
        label: Row title.
        source: The ``metrics.json`` read.
        frames: Frames scored.
        missing: Ground-truth frames without a prediction.
        failed: Frames that could not be scored.
        metrics: Evaluator metric -> value (``None``: not finite / not computed).
        units: Evaluator metric -> unit string as written by the evaluator.
        method_metrics: The method's own scalar entries (``None`` as above).
        seconds_per_frame: Seconds per frame, when recorded.
        protocol: The evaluator protocol (``default`` / ``sahmr``); :data:`LEGACY_PROTOCOL`
            for files written before metrics.json named it (the old definitions); None for
            files without evaluator metrics (a method's own entries only).
    """

    label: str
    source: Path
    frames: int
    missing: int = 0
    failed: int = 0
    metrics: dict[str, float | None] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    method_metrics: dict[str, float | None] = field(default_factory=dict)
    seconds_per_frame: float | None = None
    protocol: str | None = "default"

    def value(self, key: str) -> float | None:
        """The value of a column key (``mpjpe`` or ``method:root_error_mm``), if any."""
        if key.startswith(METHOD_PREFIX):
            return self.method_metrics.get(key[len(METHOD_PREFIX) :])
        return self.metrics.get(key)


@dataclass(frozen=True)
class Column:
    """One metric column: key, title, unit kind (formatting) and direction (bold)."""

    key: str
    title: str
    unit: UnitKind
    better: Better | None


# ---------------------------------------------------------------------------- reading


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TableError(f"{path}: cannot read ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TableError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise TableError(f"{path}: expected a JSON object at the top level")
    return data


def _number(value: Any) -> float | None:
    """A finite float, or ``None`` for null / NaN / inf."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    value = float(value)
    return value if math.isfinite(value) else None


def resolve_inputs(path: Path) -> tuple[Path, Path | None]:
    """The ``metrics.json`` of a ``--method`` path and the fit log next to it, if any.

    Args:
        path: A ``metrics.json`` file, a folder holding one, or a ``tools/fit.py`` output
            folder (``eval/metrics.json`` + ``fit_log.json``).

    Returns:
        ``(metrics_json, fit_log_json or None)``.
    """
    if path.is_file():
        fit_log = path.parent.parent / "fit_log.json"
        if path.parent.name == "eval" and fit_log.is_file():
            return path, fit_log
        return path, None
    if path.is_dir():
        if (path / "metrics.json").is_file():
            fit_log = path / "fit_log.json"
            return path / "metrics.json", fit_log if fit_log.is_file() else None
        if (path / "eval" / "metrics.json").is_file():
            fit_log = path / "fit_log.json"
            return path / "eval" / "metrics.json", fit_log if fit_log.is_file() else None
        raise TableError(f"{path}: folder has neither metrics.json nor eval/metrics.json")
    raise TableError(f"{path}: no such file or folder")


def load_method(label: str, path: Path) -> MethodResult:
    """Read one method's results (see :func:`resolve_inputs` for ``path``)."""
    metrics_path, fit_log_path = resolve_inputs(path)
    data = _read_json(metrics_path)
    frames = data.get("frames")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0:
        raise TableError(f"{metrics_path}: no 'frames' count (not an evaluator metrics.json?)")
    result = MethodResult(label=label, source=metrics_path, frames=frames)
    protocol = data.get("protocol")
    if isinstance(protocol, str):
        result.protocol = protocol
    else:  # evaluator metrics without a protocol: the old definitions; none: not applicable
        result.protocol = LEGACY_PROTOCOL if data.get("metrics") else None
    for key in ("missing", "failed"):
        count = data.get(key, 0)
        if isinstance(count, bool) or not isinstance(count, int):
            raise TableError(f"{metrics_path}: '{key}' is not a count: {count!r}")
        setattr(result, key, count)

    metrics = data.get("metrics", {})
    if not isinstance(metrics, dict):
        raise TableError(f"{metrics_path}: 'metrics' is not an object")
    for name, entry in metrics.items():
        if not isinstance(entry, dict) or "value" not in entry:
            raise TableError(f"{metrics_path}: metric {name!r} has no 'value'")
        try:
            result.metrics[name] = _number(entry["value"])
        except TypeError as err:
            raise TableError(f"{metrics_path}: metric {name!r}: {err}") from None
        unit = entry.get("unit")
        result.units[name] = unit if isinstance(unit, str) else METRIC_UNITS.get(name, "")

    method_metrics = data.get("method_metrics", {})
    if not isinstance(method_metrics, dict):
        raise TableError(f"{metrics_path}: 'method_metrics' is not an object")
    for name, value in method_metrics.items():
        try:
            result.method_metrics[name] = _number(value)
        except TypeError:
            continue  # per-region vectors and other non-scalar entries are not tabulated

    seconds = data.get("seconds_per_frame")
    if seconds is None and fit_log_path is not None:
        seconds = _read_json(fit_log_path).get("fit_seconds_per_frame")
        where = fit_log_path
    else:
        where = metrics_path
    try:
        result.seconds_per_frame = _number(seconds)
    except TypeError:
        raise TableError(f"{where}: seconds per frame is not a number: {seconds!r}") from None
    return result


# ---------------------------------------------------------------------------- columns


def _base(name: str) -> str:
    return name.split("/", 1)[0]


def unit_kind(unit: str) -> UnitKind:
    """Formatting class of an evaluator unit string (``"mm (sum over vertices per frame)"``
    -> ``"mm_sum"``)."""
    if unit.startswith("mm"):
        return "mm_sum" if "sum" in unit else "mm"
    if unit.startswith("%"):
        return "percent"
    if unit.startswith("fraction"):
        return "fraction"
    return "other"


def better_direction(name: str) -> Better | None:
    """``"lower"`` / ``"higher"`` if the metric has a known good direction, else ``None``.

    Evaluator metrics come from :data:`BETTER`; a method's own entries (no table) count as
    errors when their name says ``error`` and as scores when it ends in a precision / recall /
    F1 / IoU.
    """
    base = _base(name)
    if base in BETTER:
        return BETTER[base]
    if "error" in base:
        return "lower"
    if base.endswith(("_precision", "_recall", "_f1", "_iou")):
        return "higher"
    return None


def metric_title(name: str) -> str:
    """``contact_f1/left_foot`` -> ``contact F1 left foot``; unknown names stay as they are."""
    base, _, region = name.partition("/")
    title = DISPLAY_NAMES.get(base, base)
    return f"{title} {region.replace('_', ' ')}" if region else title


def _method_unit(name: str) -> UnitKind:
    if "_mm" in name:
        return "mm"
    if _base(name).endswith(("_precision", "_recall", "_f1", "_iou")):
        return "fraction"
    return "other"


def default_metrics(results: list[MethodResult]) -> list[str]:
    """Headline evaluator metrics present in any input: the evaluator's order, then others in
    first-seen order."""
    seen: list[str] = []
    for res in results:
        seen += [n for n in res.metrics if "/" not in n and n not in seen]
    canonical = [n for n in METRIC_UNITS if n in seen]
    return canonical + [n for n in seen if n not in canonical]


def build_columns(
    keys: list[str], results: list[MethodResult], flag: str = "--metrics"
) -> list[Column]:
    """Columns for the chosen keys; every key must occur in some input and units must agree.

    Args:
        keys: Evaluator metric names or ``method:NAME`` entries, in order.
        results: The methods read.
        flag: The option the keys came from, named in error messages.
    """
    columns = []
    for key in keys:
        if key.startswith(METHOD_PREFIX):
            name = key[len(METHOD_PREFIX) :]
            if not any(name in r.method_metrics for r in results):
                raise TableError(f"{flag} {key}: no input has the method entry {name!r}")
            columns.append(Column(key, key, _method_unit(name), better_direction(name)))
            continue
        units = {(r.units[key], r.source) for r in results if key in r.units}
        if not units:
            known = sorted({n for r in results for n in r.metrics})
            raise TableError(f"{flag} {key}: in no input (available: {', '.join(known) or 'none'})")
        distinct = sorted({u for u, _ in units})
        if len(distinct) > 1:
            where = "; ".join(f"{u!r} in {p}" for u, p in sorted(units))
            raise TableError(f"metric {key!r}: inputs disagree on its unit ({where})")
        kind = unit_kind(distinct[0])
        title = metric_title(key)
        suffix = f" ({distinct[0]})" if kind == "other" and distinct[0] else HEADER_UNITS[kind]
        columns.append(Column(key, title + suffix, kind, better_direction(key)))
    return columns


# ---------------------------------------------------------------------------- formatting


def format_value(value: float | None, unit: UnitKind) -> str:
    """A table cell: mm to 0.1, sums to integers with thousands separators, % to 0.01,
    fractions to 0.001; ``None`` -> en dash."""
    if value is None:
        return DASH
    if unit == "mm":
        return f"{value:,.1f}"
    if unit == "mm_sum":
        return f"{value:,.0f}"
    if unit == "percent":
        return f"{value:.2f}"
    return f"{value:,.3f}"


def format_seconds(value: float | None) -> str:
    """Seconds per frame to two significant digits, without exponent (0.00036, 2.5, 12)."""
    if value is None:
        return DASH
    if value >= 100:
        return f"{value:,.0f}"
    if value <= 0:
        return "0"
    decimals = max(0, 1 - math.floor(math.log10(value)))
    return f"{value:.{decimals}f}"


def _shown(cell: str) -> float:
    return float(cell.replace(",", ""))


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def majority_frames(results: list[MethodResult]) -> int | None:
    """The frame count most methods were scored on: the only count, or one shared by at least
    two methods and by more methods than any other count; ``None`` when there is no such count.
    """
    (top, n_top), *rest = Counter(r.frames for r in results).most_common()
    if not rest or (n_top > 1 and rest[0][1] < n_top):
        return top
    return None


def frames_note(results: list[MethodResult], escape: bool = True) -> list[str]:
    """Lines under the table: unequal frame counts, and missing / failed frames.

    Args:
        results: The methods, in row order.
        escape: Escape ``|`` in labels (markdown table text); ``False`` for the figure.
    """
    name = _escape if escape else str
    lines = []
    if len({r.frames for r in results}) > 1:
        top = majority_frames(results)
        if top is not None:
            odd = ", ".join(f"{name(r.label)} {r.frames:,}" for r in results if r.frames != top)
            lines.append(f"Note: frames scored differ from the other methods ({top:,}): {odd}.")
        else:
            every = ", ".join(f"{name(r.label)} {r.frames:,}" for r in results)
            lines.append(f"Note: frames scored differ between methods: {every}.")
    legacy = [name(r.label) for r in results if r.protocol == LEGACY_PROTOCOL]
    if legacy:
        lines.append(
            f"Note: scored under the old definitions (contact over all vertices, grid PenE; "
            f"see docs/evaluation.md): {', '.join(legacy)}."
        )
    incomplete = [
        f"{name(r.label)} {r.missing:,} missing, {r.failed:,} failed"
        for r in results
        if r.missing or r.failed
    ]
    if incomplete:
        lines.append(f"Note: frames not scored (no prediction / failed): {'; '.join(incomplete)}.")
    return lines


def best_rows(results: list[MethodResult], column: Column) -> set[int]:
    """Rows holding the best value of a column as displayed (ties all count); empty when the
    column has no direction or fewer than two methods have a value. When the methods were
    scored on different frame counts, only those on the majority's count compete (a value on
    another frame set is not a like-for-like win)."""
    top = majority_frames(results)
    shown = {
        i: _shown(format_value(v, column.unit))
        for i, r in enumerate(results)
        if (v := r.value(column.key)) is not None and (top is None or r.frames == top)
    }
    if column.better is None or len(shown) < 2:
        return set()
    best = (min if column.better == "lower" else max)(shown.values())
    return {i for i, v in shown.items() if v == best}


def render_table(
    results: list[MethodResult],
    columns: list[Column],
    seconds: dict[str, float],
    title: str | None = None,
) -> str:
    """The markdown text: optional ``### title``, the table, then any notes.

    Args:
        results: One per row, in order.
        columns: Metric columns, in order.
        seconds: Label -> seconds per frame overriding the files' values.
        title: Heading above the table.
    """
    cells = [[format_value(r.value(c.key), c.unit) for c in columns] for r in results]
    for j, col in enumerate(columns):
        for i in best_rows(results, col):
            cells[i][j] = f"**{cells[i][j]}**"
    header = ["method", "frames", *(_escape(c.title) for c in columns), "s / frame"]
    lines = [f"### {title}", ""] if title else []
    lines += [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    for res, row in zip(results, cells):
        secs = seconds.get(res.label, res.seconds_per_frame)
        lines.append(_row([_escape(res.label), f"{res.frames:,}", *row, format_seconds(secs)]))
    notes = frames_note(results)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- figure


def plot_notes(results: list[MethodResult]) -> list[str]:
    """Footnote lines of the figure: the table's notes, with the one on methods scored on an
    unusual number of frames worded for their hatched bars."""
    notes = frames_note(results, escape=False)
    top = majority_frames(results)
    odd = [r for r in results if top is not None and r.frames != top]
    if odd:  # then the first note is the table's "differ from the other methods" line
        scored = ", ".join(f"{r.label} scored on {r.frames:,} frames" for r in odd)
        notes[0] = f"hatched: {scored}; the others on {top:,}."
    return notes


def render_plot(
    results: list[MethodResult], columns: list[Column], title: str | None = None
) -> bytes:
    """The comparison figure as PNG bytes: one bar panel per column, one bar per method.

    Bars are labelled with the table's numbers (:func:`format_value`), the best label is bold
    (:func:`best_rows`), a missing value is an en dash without a bar, and methods scored on a
    different number of frames than most (:func:`majority_frames`) are hatched and named in a
    footnote (:func:`plot_notes`). Drawn with matplotlib's Agg canvas at :data:`PLOT_DPI`.

    Args:
        results: One bar per method, in this order (also the colour order).
        columns: One panel per column, left to right; the panel title is the table header.
        title: Figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import StrMethodFormatter

    n = len(results)
    vertical = n > 4  # upright value labels once horizontal ones would run into each other
    panel_width = max(3.2, 1.0 + 0.42 * n)
    fig = Figure(figsize=(panel_width * len(columns), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    top = majority_frames(results)
    hatched = {i for i, r in enumerate(results) if top is not None and r.frames != top}
    for ax, col in zip(axes, columns):
        best = best_rows(results, col)
        for i, res in enumerate(results):
            value = res.value(col.key)
            if value is None:
                ax.annotate(DASH, (i, 0), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", fontsize="x-large", color="0.3")  # fmt: skip
                continue
            ax.bar(i, value, width=0.7, color=f"C{i % 10}", edgecolor="0.2", linewidth=0.6,
                   hatch="///" if i in hatched else None)  # fmt: skip
            ax.annotate(
                format_value(value, col.unit),
                (i, value),
                xytext=(0, 2 if value >= 0 else -2),
                textcoords="offset points",
                ha="center",
                va="bottom" if value >= 0 else "top",
                rotation=90 if vertical else 0,
                fontsize="small",
                fontweight="bold" if i in best else "normal",
            )
        ax.set_xticks(range(n), [r.label for r in results], rotation=30, ha="right",
                      rotation_mode="anchor")  # fmt: skip
        ax.set_xlim(-0.6, n - 0.4)
        ax.margins(y=0.3 if vertical else 0.12)  # room for the value labels above the bars
        if col.unit in ("mm", "mm_sum"):
            ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,g}"))  # 2.5, 17,500
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_title(col.title, pad=14)
        if col.better is not None:
            ax.annotate(f"{col.better} is better", (0.5, 1.0), xycoords="axes fraction",
                        xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                        fontsize="small", color="0.45")  # fmt: skip
    if title:
        fig.suptitle(title)
    notes = plot_notes(results)
    if notes:  # below the figure; bbox_inches="tight" grows the picture to hold it
        fig.text(0.01, 0.0, "\n".join(notes), ha="left", va="top", fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    return buf.getvalue()


# ---------------------------------------------------------------------------- command line


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        label, sep, value = item.partition("=")
        label, value = label.strip(), value.strip()
        if not sep or not label or not value:
            raise TableError(f"{flag} {item!r}: expected LABEL=VALUE")
        out.append((label, value))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", action="append", required=True, metavar="LABEL=PATH",
                   help="a row: metrics.json, a folder holding one, or a tools/fit.py output "
                        "folder (repeat, in row order)")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="markdown file (default: stdout)")
    p.add_argument("--title", default=None, help="heading above the table")
    p.add_argument("--metrics", default=None,
                   help="comma list of columns, in order: evaluator names (mpjpe, "
                        "contact_f1/left_foot, ...) or method:NAME for a method's own entry "
                        "(default: every headline evaluator metric found)")  # fmt: skip
    p.add_argument("--seconds", action="append", default=[], metavar="LABEL=S",
                   help="seconds per frame measured elsewhere (tools/benchmark.py)")  # fmt: skip
    p.add_argument("--plot", type=Path, default=None, metavar="PNG",
                   help="also write a figure comparing the methods (bar panels)")  # fmt: skip
    p.add_argument("--plot-metrics", default=None, metavar="A,B,...",
                   help="comma list of --plot panels, named as in --metrics (default: those "
                        f"of {','.join(PLOT_METRICS)} found in any input)")  # fmt: skip
    return p


@dataclass
class Comparison:
    """Everything read and checked for one run of the tool, before anything is written.

    Attributes:
        results: One per method, in row order.
        columns: Table metric columns.
        seconds: Label -> seconds per frame from ``--seconds``.
        plot_columns: Panels of ``--plot`` (``None`` without ``--plot``).
        title: Heading of the table and title of the figure.
    """

    results: list[MethodResult]
    columns: list[Column]
    seconds: dict[str, float]
    plot_columns: list[Column] | None = None
    title: str | None = None


def _metric_list(text: str, flag: str) -> list[str]:
    keys = [k.strip() for k in text.split(",")]
    if not all(keys):
        raise TableError(f"{flag} {text!r}: empty name in the list")
    if len(set(keys)) < len(keys):
        raise TableError(f"{flag} {text!r}: a name is repeated")
    return keys


def prepare(args: argparse.Namespace) -> Comparison:
    """Read and check every input and option (raises :class:`TableError`)."""
    methods = _pairs(args.method, "--method")
    labels = [label for label, _ in methods]
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise TableError(f"--method: label used twice: {', '.join(dupes)}")
    seconds: dict[str, float] = {}
    for label, text in _pairs(args.seconds, "--seconds"):
        if label not in labels:
            raise TableError(f"--seconds {label}={text}: no --method with label {label!r}")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise TableError(f"--seconds {label}={text}: not a non-negative number")
        seconds[label] = value
    results = [load_method(label, Path(path)) for label, path in methods]
    protocols = {r.protocol for r in results} - {LEGACY_PROTOCOL, None}
    if len(protocols) > 1:
        where = ", ".join(f"{r.label} {r.protocol}" for r in results)
        raise TableError(f"--method: inputs were scored under different protocols ({where})")
    if args.metrics is None:
        keys = default_metrics(results)
    else:
        keys = _metric_list(args.metrics, "--metrics")
    comparison = Comparison(results, build_columns(keys, results), seconds, title=args.title)
    plot_metrics = getattr(args, "plot_metrics", None)
    if plot_metrics is not None:
        plot_keys = _metric_list(plot_metrics, "--plot-metrics")
        comparison.plot_columns = build_columns(plot_keys, results, "--plot-metrics")
    elif getattr(args, "plot", None) is not None:
        found = {name for r in results for name in r.metrics}
        plot_keys = [name for name in PLOT_METRICS if name in found]
        if not plot_keys:
            raise TableError(
                f"--plot: none of {', '.join(PLOT_METRICS)} in any input; "
                "choose panels with --plot-metrics"
            )
        comparison.plot_columns = build_columns(plot_keys, results, "--plot")
    return comparison


def make_table(args: argparse.Namespace) -> str:
    """The markdown text for parsed arguments (raises :class:`TableError`)."""
    comp = prepare(args)
    return render_table(comp.results, comp.columns, comp.seconds, title=comp.title)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is not None and args.out.is_dir():
        parser.error(f"--out {args.out}: is a folder")
    if args.plot is not None and args.plot.is_dir():
        parser.error(f"--plot {args.plot}: is a folder")
    if args.plot_metrics is not None and args.plot is None:
        parser.error("--plot-metrics: needs --plot")
    if args.out is not None and args.plot is not None and args.out.resolve() == args.plot.resolve():
        parser.error("--out and --plot name the same file")
    try:
        comp = prepare(args)
    except TableError as err:
        parser.error(str(err))
    text = render_table(comp.results, comp.columns, comp.seconds, title=comp.title)
    png = None  # drawn before anything is written, so a failing figure leaves no table behind
    if comp.plot_columns is not None:
        png = render_plot(comp.results, comp.plot_columns, title=comp.title)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out, text.encode("utf-8"))
        print(f"wrote {args.out}")
    if png is not None:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.plot, png)
        print(f"wrote {args.plot}", file=sys.stderr if args.out is None else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

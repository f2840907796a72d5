#!/usr/bin/env python
"""One markdown table comparing methods, built from the ``metrics.json`` files of evaluations.

Example:
    python tools/results_table.py \\
        --method "METRO + PnP=docs/results/metro_small.metrics.json" \\
        --method "SA-HMR=docs/results/sahmr_small.metrics.json" \\
        --method "PROX=runs/prox_test" --seconds "SA-HMR=0.032" \\
        --metrics g_mpjpe,mpjpe,pa_mpjpe,pene,confe,contact_f1 --out table.md

``PATH`` of ``--method LABEL=PATH`` is a ``metrics.json`` written by ``tools/eval.py`` or
``tools/evaluate.py`` (sahmr.evaluation.reports), a folder holding one, or an output folder of
``tools/fit.py`` (``eval/metrics.json``; seconds per frame from its ``fit_log.json``).

Columns: method, frames scored, the chosen metrics (default: every headline evaluator metric
found in any input, in the evaluator's order; per-region ``contact_f1/left_foot`` and the
method's own entries, as ``method:root_error_mm``, only when named in ``--metrics``), seconds
per frame (``--seconds`` overrides, else the file's ``seconds_per_frame``, else the fit log's
``fit_seconds_per_frame``). The best value of each metric column is bold when at least two
methods have one; a missing value is an en dash. A note under the table names methods scored
on a different number of frames, or with missing / failed frames.

Exit codes: 0 done, 2 bad arguments or unreadable inputs (nothing written).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sahmr.evaluation.evaluator import METRIC_UNITS

METHOD_PREFIX = "method:"
"""``--metrics`` entries with this prefix are read from a file's ``method_metrics``."""

DASH = "\u2013"
"""Shown for a value a method does not have."""

DISPLAY_NAMES: dict[str, str] = {
    "mpjpe": "MPJPE",
    "pa_mpjpe": "PA-MPJPE",
    "mpve": "MPVE",
    "pa_mpve": "PA-MPVE",
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


def build_columns(keys: list[str], results: list[MethodResult]) -> list[Column]:
    """Columns for the chosen keys; every key must occur in some input and units must agree."""
    columns = []
    for key in keys:
        if key.startswith(METHOD_PREFIX):
            name = key[len(METHOD_PREFIX) :]
            if not any(name in r.method_metrics for r in results):
                raise TableError(f"--metrics {key}: no input has the method entry {name!r}")
            columns.append(Column(key, key, _method_unit(name), better_direction(name)))
            continue
        units = {(r.units[key], r.source) for r in results if key in r.units}
        if not units:
            known = sorted({n for r in results for n in r.metrics})
            raise TableError(
                f"--metrics {key}: in no input (available: {', '.join(known) or 'none'})"
            )
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


def frames_note(results: list[MethodResult]) -> list[str]:
    """Lines under the table: unequal frame counts, and missing / failed frames."""
    lines = []
    counts = Counter(r.frames for r in results)
    if len(counts) > 1:
        (top, n_top), *rest = counts.most_common()
        if n_top > 1 and rest[0][1] < n_top:
            odd = ", ".join(f"{_escape(r.label)} {r.frames:,}" for r in results if r.frames != top)
            lines.append(f"Note: frames scored differ from the other methods ({top:,}): {odd}.")
        else:
            every = ", ".join(f"{_escape(r.label)} {r.frames:,}" for r in results)
            lines.append(f"Note: frames scored differ between methods: {every}.")
    incomplete = [
        f"{_escape(r.label)} {r.missing:,} missing, {r.failed:,} failed"
        for r in results
        if r.missing or r.failed
    ]
    if incomplete:
        lines.append(f"Note: frames not scored (no prediction / failed): {'; '.join(incomplete)}.")
    return lines


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
        rows = [i for i, r in enumerate(results) if r.value(col.key) is not None]
        if col.better is None or len(rows) < 2:
            continue
        pick = min if col.better == "lower" else max
        best = pick(_shown(cells[i][j]) for i in rows)  # ties as displayed are all bold
        for i in rows:
            if _shown(cells[i][j]) == best:
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
    return p


def make_table(args: argparse.Namespace) -> str:
    """The markdown text for parsed arguments (raises :class:`TableError`)."""
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
    if args.metrics is None:
        keys = default_metrics(results)
    else:
        keys = [k.strip() for k in args.metrics.split(",")]
        if not all(keys):
            raise TableError(f"--metrics {args.metrics!r}: empty name in the list")
        if len(set(keys)) < len(keys):
            raise TableError(f"--metrics {args.metrics!r}: a name is repeated")
    columns = build_columns(keys, results)
    return render_table(results, columns, seconds, title=args.title)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is not None and args.out.is_dir():
        parser.error(f"--out {args.out}: is a folder")
    try:
        text = make_table(args)
    except TableError as err:
        parser.error(str(err))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

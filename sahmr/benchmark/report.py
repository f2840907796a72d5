"""The speed benchmark's report: runs merged (`merge_results`), SA-HMR small against the speed
goals (`goals`) and the markdown section (`render_markdown`)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from sahmr.benchmark.methods import OPTIMISATION
from sahmr.benchmark.timing import markdown_table

GOAL_LATENCY_MS = 10.0
GOAL_FPS = 2000.0
GOAL_PEAK_MB = 600.0
GOAL_SPEEDUP = 300.0
REFERENCE = "official SA-HMR code: 170 ms and 1852 MB per frame on a V100 (paper)"


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
    parts = [
        *_run_notes(results),
        *_method_table(results),
        *_stage_tables(results),
        *_optimisation_table(results),
        *_goal_table(results),
        *_applied_notes(results),
        *_cpu_table(results),
    ]
    return "\n".join(parts).strip() + "\n"


def _run_notes(results: dict[str, Any]) -> list[str]:
    """Run, device, versions, frames and timing protocol; checkpoints; mixed devices."""
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
        parts += [
            "**Mixed devices**: "
            + "; ".join(f"{n} on {m.get('device_name')}" for n, m in results["methods"].items())
            + ".",
            "",
        ]
    return parts


def _method_table(results: dict[str, Any]) -> list[str]:
    """One row per method and variant: latency, best throughput, speed-up, peak memory."""
    parts: list[str] = []
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
    return parts


def _stage_tables(results: dict[str, Any]) -> list[str]:
    """Per family: stage timings at batch 1 and the best batch, stage notes, sizes seen."""
    parts: list[str] = []
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
    return parts


def _optimisation_table(results: dict[str, Any]) -> list[str]:
    """The optimisation baseline's seconds per fit and per frame."""
    parts: list[str] = []
    opt = results["methods"].get(OPTIMISATION)
    if opt and "batches" in opt:
        orow = [
            [b, _f(r["fit"]["median_ms"] / 1000.0, "{:.3f}"), _f(r["seconds_per_frame"], "{:.4f}")]
            for b, r in opt["batches"].items()
        ]
        parts += [f"Optimisation baseline (PROX-style `SceneFitter`, {opt['config']}, "
                  f"{opt['iterations_per_frame']} Adam steps per frame incl. "
                  f"{opt['start_orientations']}-way start search, scene terms "
                  f"{'on' if opt['scene_terms'] else 'off'}, SDF {opt['sdf_voxel_size']} m):", "",
                  markdown_table(["batch", "s per fit (median)", "s per frame"], orow,
                                 align=["r", "r", "r"]), ""]  # fmt: skip
    elif opt:
        parts += [f"Optimisation baseline: skipped ({opt.get('skipped')}).", ""]
    return parts


def _goal_table(results: dict[str, Any]) -> list[str]:
    """SA-HMR small against the speed goals, one row per variant."""
    parts: list[str] = []
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
    return parts


def _applied_notes(results: dict[str, Any]) -> list[str]:
    """The compile / CUDA-graph swaps each variant applied."""
    parts: list[str] = []
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
    return parts


def _cpu_table(results: dict[str, Any]) -> list[str]:
    """The CPU tools' headline figures."""
    parts: list[str] = []
    cpu = results.get("cpu_tools") or {}
    if cpu:
        crow = [[k, c["what"], f"`{c['command']}`", c.get("headline") or c.get("error")
                 or f"exit {c.get('returncode')}"] for k, c in cpu.items()]  # fmt: skip
        parts += ["CPU figures (existing tools, run by this one):", "",
                  markdown_table(["tool", "what", "command", "result"], crow), ""]  # fmt: skip
    return parts

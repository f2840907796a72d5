"""The CPU benchmarks the speed benchmark runs beside the models: the evaluator's metrics
(``tools/benchmark_metrics.py``) and the dataset generator (``tools/benchmark_generator.py``),
as subprocesses, with their headline figures."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


CPU_TOOLS = {
    "metrics": ("benchmark_metrics.py", "evaluator: PenE + ConFE + G-MPVE over many frames"),
    "generator": ("benchmark_generator.py", "dataset generator: placement + render + write"),
}


def summarise_cpu_tool(key: str, stdout: str) -> dict[str, Any]:
    """The headline figures of a CPU tool's output.

    Args:
        key: ``metrics`` (tools/benchmark_metrics.py) or ``generator``
            (tools/benchmark_generator.py).
        stdout: What the tool printed.

    Returns:
        ``{"headline": str, ...}`` (empty when nothing is recognised).
    """
    if key == "metrics":
        best = [ln for ln in stdout.splitlines() if ln.startswith("best:")]
        return {"headline": best[-1]} if best else {}
    if key == "generator":
        report = None
        lines = stdout.splitlines()
        starts = [i for i, ln in enumerate(lines) if ln.startswith("{")]
        for i in reversed(starts):  # the report is the last JSON object printed
            try:
                report = json.loads("\n".join(lines[i:]))
                break
            except json.JSONDecodeError:
                continue
        if not isinstance(report, dict):
            return {}
        # Two report layouts: end_to_end/projected_samples_per_second, or the older flat one.
        e2e = report.get("end_to_end") or {}
        steady = report.get("steady_state_one_process") or {}
        rate = e2e.get("samples_per_second", report.get("samples_per_second_end_to_end"))
        proj = report.get("projected_samples_per_second",
                          steady.get("projected_samples_per_second_on_free_cores"))  # fmt: skip
        return {
            "headline": f"{rate} samples/s end to end, {proj} samples/s projected on free cores"
            + (
                f", {report['cpu_ms_per_sample']} CPU ms per sample"
                if "cpu_ms_per_sample" in report
                else ""
            ),
            "samples_per_second_end_to_end": rate,
            "projected_samples_per_second": proj,
        }
    return {}


def run_cpu_tools(args: argparse.Namespace, *, repo_root: Path) -> dict[str, Any]:
    """Run the existing CPU benchmarks (evaluator metrics, generator) as subprocesses: the
    scripts of ``repo_root/tools`` with ``args.cpu_tools``, ``args.metrics_args``,
    ``args.generator_args`` and ``args.cpu_tools_timeout``."""
    out: dict[str, Any] = {}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root), env.get("PYTHONPATH")) if p)
    for key in args.cpu_tools:
        script, what = CPU_TOOLS[key]
        tool_args = shlex.split(args.metrics_args if key == "metrics" else args.generator_args)
        cmd = [sys.executable, str(repo_root / "tools" / script), *tool_args]
        shown = " ".join(["python", f"tools/{script}", *map(shlex.quote, tool_args)])
        logger.info("running %s", shown)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                  timeout=args.cpu_tools_timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            out[key] = {"what": what, "command": shown, "error": "timed out"}
            continue
        entry = {"what": what, "command": shown, "returncode": proc.returncode,
                 "seconds": time.perf_counter() - t0,
                 "stdout_tail": proc.stdout.splitlines()[-25:]}  # fmt: skip
        if proc.returncode != 0:
            entry["stderr_tail"] = proc.stderr.splitlines()[-10:]
        entry.update(summarise_cpu_tool(key, proc.stdout))
        out[key] = entry
    return out

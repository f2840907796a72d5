"""Timing primitives for the benchmarks: timers, peak memory, summaries, markdown output.

Latency is measured per call: the device is synchronised before each call and the call's own
duration is taken with CUDA events on a GPU (device time between two events recorded on the
current stream, which also counts the idle gaps of host-bound code) and ``time.perf_counter``
on the CPU. A few warm-up calls (allocator growth, cuDNN autotuning, torch.compile and CUDA
graph capture) run first and are not counted.

Results go to a markdown document by section: `replace_marked_section` swaps the text between
``<!-- benchmark:NAME -->`` and ``<!-- /benchmark:NAME -->`` and leaves everything else as it was.
"""

from __future__ import annotations

import datetime
import math
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sahmr.atomic_write import atomic_write_text

__all__ = [
    "TimingSummary",
    "environment_info",
    "markdown_table",
    "memory_allocated_mb",
    "peak_memory_mb",
    "percentile",
    "replace_marked_section",
    "reset_peak_memory",
    "synchronize",
    "time_callable",
    "write_marked_section",
]

_MIB = float(1 << 20)


def synchronize(device: torch.device | str) -> None:
    """Wait for all queued work on ``device`` (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_callable(
    fn: Callable[[], Any],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 3,
    iters: int = 20,
    max_seconds: float | None = None,
    min_iters: int = 1,
) -> list[float]:
    """Seconds per call of ``fn``, each call timed on its own (latency semantics).

    Args:
        fn: The work; its result is discarded.
        device: Where ``fn`` runs: CUDA events on a GPU, ``perf_counter`` on the CPU.
        warmup: Untimed calls first.
        iters: Timed calls (at most).
        max_seconds: Stop timing once this much wall time was spent in timed calls, after at
            least ``min_iters`` calls (None: always ``iters`` calls); warm-up also stops
            once it has used that much (after one call).
        min_iters: Fewest timed calls when ``max_seconds`` cuts the run short.

    Returns:
        One duration per timed call, seconds.
    """
    device = torch.device(device)
    use_events = device.type == "cuda"
    start = time.perf_counter()
    for _ in range(max(warmup, 0)):
        fn()
        if max_seconds is not None and time.perf_counter() - start >= max_seconds:
            break  # slow calls: one warm-up is enough, keep the budget for timed calls
    synchronize(device)
    out: list[float] = []
    spent = 0.0
    for i in range(max(iters, 1)):
        if use_events:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            wall = time.perf_counter()
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1000.0)
            spent += time.perf_counter() - wall
        else:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            out.append(dt)
            spent += dt
        if max_seconds is not None and i + 1 >= min_iters and spent >= max_seconds:
            break
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation between order statistics.

    Same definition as ``numpy.percentile``'s default (``method="linear"``).

    Raises:
        ValueError: For no values or ``q`` outside [0, 100].
    """
    if len(values) == 0:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in [0, 100], got {q}")
    s = sorted(float(v) for v in values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class TimingSummary:
    """Statistics of repeated timings, milliseconds.

    Attributes:
        n: Number of timed calls.
        median_ms: Median.
        p90_ms: 90th percentile.
        mean_ms: Mean.
        min_ms: Fastest call.
        max_ms: Slowest call.
    """

    n: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> TimingSummary:
        """Summary of durations given in seconds.

        Raises:
            ValueError: For no durations.
        """
        if len(seconds) == 0:
            raise ValueError("no timings to summarise")
        ms = [1000.0 * float(s) for s in seconds]
        return cls(
            n=len(ms),
            median_ms=percentile(ms, 50.0),
            p90_ms=percentile(ms, 90.0),
            mean_ms=sum(ms) / len(ms),
            min_ms=min(ms),
            max_ms=max(ms),
        )

    def throughput(self, batch_size: int) -> float:
        """Frames per second at the median time of a batch of ``batch_size`` frames."""
        return batch_size / (self.median_ms / 1000.0) if self.median_ms > 0 else math.inf

    def to_dict(self) -> dict[str, float]:
        """Plain-dict form (for JSON)."""
        return asdict(self)


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory window on a CUDA device (the peak restarts at current use)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def memory_allocated_mb(device: torch.device | str) -> float | None:
    """Memory held by tensors on a CUDA device now, MiB; None on the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.memory_allocated(device) / _MIB


def peak_memory_mb(device: torch.device | str, *, reserved: bool = False) -> float | None:
    """Peak memory since the last `reset_peak_memory`, MiB; None on the CPU.

    Args:
        device: The device.
        reserved: Report the caching allocator's reserved peak instead of allocated tensors
            (``torch.cuda.max_memory_allocated``).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if reserved:
        return torch.cuda.max_memory_reserved(device) / _MIB
    return torch.cuda.max_memory_allocated(device) / _MIB


# ---------------------------------------------------------------------------- markdown


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], align: Sequence[str] | None = None
) -> str:
    """A GitHub-flavoured markdown table.

    Args:
        header: Column titles.
        rows: Cells per row (``None`` -> empty; ``|`` is escaped).
        align: Per column ``"l"`` or ``"r"`` (default: left).

    Returns:
        The table, lines joined by newlines, no trailing newline.

    Raises:
        ValueError: If a row or ``align`` does not have one entry per column.
    """
    n = len(header)
    align = list(align) if align is not None else ["l"] * n
    if len(align) != n:
        raise ValueError(f"align has {len(align)} entries for {n} columns")
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    for row in rows:
        row = list(row)
        if len(row) != n:
            raise ValueError(f"row has {len(row)} cells for {n} columns: {row}")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
        raise ValueError(f"bad section name {name!r}")
    return f"<!-- benchmark:{name} -->", f"<!-- /benchmark:{name} -->"


def replace_marked_section(text: str, name: str, content: str) -> str:
    """Text with the section ``name`` replaced by ``content`` (markers kept).

    The section is everything between ``<!-- benchmark:NAME -->`` and
    ``<!-- /benchmark:NAME -->``; without those markers the section is appended at the end.

    Args:
        text: The document.
        name: Section name (letters, digits, ``_.:-``).
        content: New section body (surrounding blank lines are normalised).

    Returns:
        The new document.

    Raises:
        ValueError: If the markers are unbalanced, repeated or out of order.
    """
    begin, end = _markers(name)
    nb, ne = text.count(begin), text.count(end)
    block = f"{begin}\n{content.strip()}\n{end}"
    if nb == 0 and ne == 0:
        if not text or text.endswith("\n\n"):
            sep = ""
        else:
            sep = "\n" if text.endswith("\n") else "\n\n"
        return f"{text}{sep}{block}\n"
    if nb != 1 or ne != 1:
        raise ValueError(f"section {name!r}: expected one begin and one end marker, "
                         f"found {nb} and {ne}")
    i, j = text.index(begin), text.index(end)
    if j < i:
        raise ValueError(f"section {name!r}: end marker before begin marker")
    return text[:i] + block + text[j + len(end):]


def write_marked_section(path: str | Path, name: str, content: str) -> Path:
    """Replace (or append) a marked section of a markdown file; creates the file if absent.

    Returns:
        The path written.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, replace_marked_section(text, name, content))


# ---------------------------------------------------------------------------- environment


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for dist in (module, module.replace("_", "-")):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def environment_info(device: torch.device | str) -> dict[str, Any]:
    """Where and with what the figures were taken: device, versions, threads, date.

    Returns:
        A JSON-serialisable dict (``device_name``, ``python``, ``torch``, ``cuda``, ``cudnn``,
        ``spconv``, ``driver`` where known, ``cpu``, ``threads``, ``date``).
    """
    device = torch.device(device)
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    spconv = None
    for dist in ("spconv-cu121", "spconv-cu120", "spconv-cu118", "spconv-cu126", "spconv"):
        spconv = _version(dist)
        if spconv:
            spconv = f"{dist} {spconv}"
            break
    if spconv is None:  # e.g. carried on PYTHONPATH without its dist-info
        module = sys.modules.get("spconv")
        version = getattr(module, "__version__", None) if module is not None else None
        spconv = f"spconv {version}" if version else None
    info["spconv"] = spconv
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device_name"] = props.name
        info["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    else:
        info["device_name"] = info["cpu"]
    return info

"""Where a training step spends its time: named profiler ranges around a trainer's parts.

`StepRanges` installs `torch.profiler.record_function` ranges on a `sahmr.engine.trainer.Trainer`
from outside (nothing in the trainer changes, and everything is removed on exit):

- ``forward``: the method's own call; ``<child>`` and ``<child>.<grandchild>``: its submodules
  down to ``depth`` (forward pre/post hooks).
- Submodules compiled in place (``module.compile()``, what ``trainer.compile_submodules`` does)
  get no hooks, which dynamo would trace into (and recompile for); their compiled call is
  wrapped from outside instead (``module._compiled_call_impl``). Submodules inside a compiled
  one get no range at all (listed in ``skipped``).
- ``loss``: the loss module's call; ``backward``: from the loss's return to the gradient
  clipping (``total.float()`` and ``total.backward()``, plus the host finiteness check when
  steps are not sync-free); ``clip``: ``trainer._clip``; ``optimizer``: the optimiser's step
  (its step pre/post hooks).
- ``train_step`` and ``data``: put around ``trainer.train_step`` and the step preparation by
  the caller (`StepRanges.range`).

`summarize_profile` attributes device time to the ranges by *launch*: a kernel counts for a range
when the host op that launched it started inside the range's host interval, on any thread. This
matters on CUDA, where backward kernels are launched by autograd's device thread while the main
thread waits inside ``backward`` (the profiler's own tree attribution is per thread and would
give the ``backward`` range no device time). Each module range also gets the device time of its
backward (``backward_device_ms``): autograd's ``evaluate_function`` events carry the sequence
number of the forward op that created their node, and that op started inside the range.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import record_function

logger = logging.getLogger(__name__)

__all__ = ["PREFIX", "StepRanges", "attribute", "merge_intervals", "summarize_profile"]

PREFIX = "bench:"
"""Name prefix of the ranges (tells them apart from the profiler's own op names)."""

PHASES = ("train_step", "data", "forward", "loss", "backward", "clip", "optimizer")
"""Ranges that are not submodules (no backward of their own is attributed to them)."""

BACKWARD_EVENT = "autograd::engine::evaluate_function: "


def _is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


@dataclass
class StepRanges:
    """Profiler ranges on a trainer's parts; a context manager (hooks removed on exit).

    Args:
        trainer: The `Trainer` (its ``method``, ``loss``, ``optimizer`` and ``_clip``).
        depth: Submodule levels below the method that get a range (2: children and
            grandchildren).
    """

    trainer: Any
    depth: int = 2
    parts: list[str] = field(default_factory=list)
    wrapped_compiled: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    _open: dict[str, list[Any]] = field(default_factory=dict)
    _undo: list[Callable[[], None]] = field(default_factory=list)

    # ---------------------------------------------------------------- ranges

    def _enter(self, name: str) -> None:
        rf = record_function(PREFIX + name)
        rf.__enter__()
        self._open.setdefault(name, []).append(rf)

    def _exit(self, name: str) -> None:
        stack = self._open.get(name)
        if stack:
            stack.pop().__exit__(None, None, None)

    def close_all(self) -> None:
        """Close ranges left open (a step that raised, or skipped its clipping)."""
        for name in list(self._open):
            while self._open[name]:
                self._exit(name)

    @contextlib.contextmanager
    def range(self, name: str) -> Iterator[None]:
        """A range around the caller's code (``train_step``, ``data``)."""
        with record_function(PREFIX + name):
            yield

    # ---------------------------------------------------------------- install

    def _hook_module(self, module: nn.Module, name: str) -> None:
        def pre(_m: nn.Module, _args: Any) -> None:
            self._enter(name)

        def post(_m: nn.Module, _args: Any, _out: Any) -> None:
            self._exit(name)

        handles = [
            module.register_forward_pre_hook(pre),
            module.register_forward_hook(post, always_call=True),
        ]
        self._undo.extend(h.remove for h in handles)

    def _wrap_compiled(self, module: nn.Module, name: str) -> None:
        compiled = module._compiled_call_impl

        def call(*args: Any, **kwargs: Any) -> Any:
            with record_function(PREFIX + name):
                return compiled(*args, **kwargs)

        module._compiled_call_impl = call

        def undo() -> None:
            module._compiled_call_impl = compiled

        self._undo.append(undo)
        self.wrapped_compiled.append(name)

    def __enter__(self) -> StepRanges:
        method: nn.Module = self.trainer.method
        self._hook_module(method, "forward")
        compiled_roots: list[str] = []
        for name, module in method.named_modules():
            if not name or name.count(".") >= self.depth:
                continue
            if any(name.startswith(root + ".") for root in compiled_roots):
                self.skipped.append(name)
                continue
            if _is_compiled(module):
                compiled_roots.append(name)
                self._wrap_compiled(module, name)
            else:
                self._hook_module(module, name)
            self.parts.append(name)

        loss: nn.Module = self.trainer.loss

        def loss_pre(_m: nn.Module, _args: Any) -> None:
            self._enter("loss")

        def loss_post(_m: nn.Module, _args: Any, _out: Any) -> None:
            self._exit("loss")
            self._enter("backward")  # closed when clipping starts

        handles = [
            loss.register_forward_pre_hook(loss_pre),
            loss.register_forward_hook(loss_post, always_call=True),
        ]
        clip = self.trainer._clip

        def clip_in_range(params: list[nn.Parameter]) -> torch.Tensor:
            self._exit("backward")
            with record_function(PREFIX + "clip"):
                return clip(params)

        self.trainer._clip = clip_in_range
        self._undo.append(lambda: delattr(self.trainer, "_clip"))
        opt = self.trainer.optimizer
        handles += [
            opt.register_step_pre_hook(lambda *_: self._enter("optimizer")),
            opt.register_step_post_hook(lambda *_: self._exit("optimizer")),
        ]
        self._undo.extend(h.remove for h in handles)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close_all()
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


# -------------------------------------------------------------------- attribution


def merge_intervals(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of ``[start, end)`` intervals, sorted and disjoint."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def attribute(
    intervals: list[tuple[float, float]], times: list[float], cumulative: list[float]
) -> float:
    """Sum of the values whose time lies in the union of ``intervals``.

    Args:
        intervals: Disjoint sorted ``[start, end)`` (`merge_intervals`).
        times: Sorted event times.
        cumulative: ``cumulative[i]`` = sum of the values of ``times[:i]`` (length len+1).
    """
    total = 0.0
    for start, end in intervals:
        lo = bisect.bisect_left(times, start)
        hi = bisect.bisect_left(times, end)
        total += cumulative[hi] - cumulative[lo]
    return total


def _prefix_sums(pairs: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    pairs = sorted(pairs)
    times = [t for t, _ in pairs]
    cumulative = [0.0]
    for _, v in pairs:
        cumulative.append(cumulative[-1] + v)
    return times, cumulative


def _avg_attr(avg: Any, name: str) -> float:
    """A `FunctionEventAvg` time in us (``device`` names were ``cuda`` before torch 2.4)."""
    value = getattr(avg, name, None)
    if value is None:
        value = getattr(avg, name.replace("device", "cuda"), 0.0)
    return float(value or 0.0)


def summarize_profile(prof: Any, steps: int, *, on_device: bool, top_ops: int = 25) -> dict:
    """Per-range and per-op times of a finished `torch.profiler.profile` over ``steps`` steps.

    Args:
        prof: The profiler, after its context exited.
        steps: Training steps it covered.
        on_device: Whether CUDA activities were recorded (device times; else CPU only).
        top_ops: Ops listed, by self device time (self CPU time without a device).

    Returns:
        ``ranges``: per range name (prefix stripped), sorted by device (else CPU) time:
        ``calls``, ``device_ms``/``cpu_ms`` totals and ``*_per_step``, ``backward_device_ms``
        (module ranges on a device), ``share_pct`` of the ``train_step`` range;
        ``ops``: the top host ops (their self device time is their own kernels'); ``kernels``:
        the top device kernels by name; ``device_ms_per_step`` (all kernels) and
        ``wall_ms_per_step``.
    """
    events = [e for e in prof.events() if not getattr(e, "is_async", False)]
    cpu_events = [e for e in events if e.device_type == DeviceType.CPU]
    intervals: dict[str, list[tuple[float, float]]] = {}
    calls: dict[str, int] = {}
    for e in cpu_events:
        if e.name.startswith(PREFIX):
            name = e.name[len(PREFIX) :]
            intervals.setdefault(name, []).append((e.time_range.start, e.time_range.end))
            calls[name] = calls.get(name, 0) + 1
    # kernels by the start of the host op that launched them
    # (the ranges' own device-side copies, ``gpu_user_annotation``, are no kernels)
    launches = [
        (e.time_range.start, float(k.duration))
        for e in cpu_events
        for k in e.kernels
        if not k.name.startswith(PREFIX)
    ]
    k_times, k_cum = _prefix_sums(launches)
    device_events = [
        e for e in events if e.device_type != DeviceType.CPU and not e.name.startswith(PREFIX)
    ]
    all_device_us = sum(e.time_range.elapsed_us() for e in device_events)
    forward_threads = {e.thread for e in cpu_events if e.name == PREFIX + "forward"}
    # backward device time per forward sequence number (last forward op recording it)
    backward_pairs: list[tuple[float, float]] = []
    if on_device:
        fwd_start: dict[int, float] = {}
        bwd_device: dict[int, float] = {}
        for e in cpu_events:
            seq = getattr(e, "sequence_nr", -1)
            if seq is None or seq < 0:
                continue
            if e.name.startswith(BACKWARD_EVENT):
                span = merge_intervals([(e.time_range.start, e.time_range.end)])
                bwd_device[seq] = bwd_device.get(seq, 0.0) + attribute(span, k_times, k_cum)
            elif e.thread in forward_threads and not e.name.startswith(PREFIX):
                fwd_start[seq] = max(fwd_start.get(seq, float("-inf")), e.time_range.start)
        backward_pairs = [(fwd_start[s], v) for s, v in bwd_device.items() if s in fwd_start]
    b_times, b_cum = _prefix_sums(backward_pairs)

    ranges: dict[str, dict[str, Any]] = {}
    for name, spans in intervals.items():
        merged = merge_intervals(spans)
        cpu_ms = sum(end - start for start, end in merged) / 1000.0
        row: dict[str, Any] = {"calls": calls[name] / steps, "cpu_ms": cpu_ms}
        row["cpu_ms_per_step"] = cpu_ms / steps
        if on_device:
            device_ms = attribute(merged, k_times, k_cum) / 1000.0
            row["device_ms"] = device_ms
            row["device_ms_per_step"] = device_ms / steps
            row["backward_device_ms_per_step"] = (
                None if name in PHASES else attribute(merged, b_times, b_cum) / 1000.0 / steps
            )
        ranges[name] = row
    key = "device_ms" if on_device else "cpu_ms"
    step_total = ranges.get("train_step", {}).get(key) or None
    for row in ranges.values():
        row["share_pct"] = 100.0 * row[key] / step_total if step_total else None
    ordered = dict(sorted(ranges.items(), key=lambda kv: -kv[1][key]))

    sort_key = "self_device_time_total" if on_device else "self_cpu_time_total"
    averages = [a for a in prof.key_averages() if not a.key.startswith(PREFIX)]
    averages.sort(key=lambda a: -_avg_attr(a, sort_key))
    kernels = [
        {"name": a.key, "calls": a.count, "device_ms": _avg_attr(a, "device_time_total") / 1e3}
        for a in averages
        if a.device_type != DeviceType.CPU
    ][:top_ops]
    ops = []
    for a in [a for a in averages if a.device_type == DeviceType.CPU][:top_ops]:
        op = {
            "name": a.key,
            "calls": a.count,
            "self_cpu_ms": _avg_attr(a, "self_cpu_time_total") / 1000.0,
            "cpu_ms": _avg_attr(a, "cpu_time_total") / 1000.0,
        }
        if on_device:
            op["self_device_ms"] = _avg_attr(a, "self_device_time_total") / 1000.0
            op["device_ms"] = _avg_attr(a, "device_time_total") / 1000.0
        ops.append(op)
    wall = ranges.get("train_step", {}).get("cpu_ms")
    return {
        "steps": steps,
        "activities": ["cpu", "cuda"] if on_device else ["cpu"],
        "device_ms_per_step": all_device_us / 1000.0 / steps if on_device else None,
        "wall_ms_per_step": wall / steps if wall is not None else None,
        "ranges": ordered,
        "ops": ops,
        "kernels": kernels,
    }

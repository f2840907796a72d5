"""Speed and memory benchmarks of the methods (driven by ``tools/benchmark.py``).

* `sahmr.benchmark.timing`: timers (CUDA events / ``perf_counter``), peak memory, percentile
  summaries, markdown tables and marked-section replacement in a document.
* `sahmr.benchmark.frames`: realistic inputs (bundled demo frames or a dataset split), cycled
  to any batch size.
* `sahmr.benchmark.stages`: per-stage timing from captured submodule calls, torch.compile and
  CUDA-graph swaps of submodules.
* `sahmr.benchmark.methods`: what is measured: the methods built from the shipped configs and
  the speed-up variants (bf16, compile, CUDA graphs).
* `sahmr.benchmark.measure`: end-to-end, stage and memory figures of one method per variant
  and batch size.
* `sahmr.benchmark.optimisation`: seconds per frame of the PROX-style fitting baseline.
* `sahmr.benchmark.cpu_tools`: the CPU benchmarks (evaluator metrics, generator) run as
  subprocesses.
* `sahmr.benchmark.report`: runs merged, the speed goals, the markdown section.

Importing this package pulls in neither open3d nor the models; the submodules import what
they need.
"""

from sahmr.benchmark.timing import (
    TimingSummary,
    environment_info,
    markdown_table,
    memory_allocated_mb,
    peak_memory_mb,
    percentile,
    replace_marked_section,
    reset_peak_memory,
    synchronize,
    time_callable,
    write_marked_section,
)

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

"""A background CPU load for throughput benchmarks: the lease's generator, without its files.

A lease trains while the dataset generator's worker processes (one per free core, at nice 15)
render and write shards beside it. Those workers share the host's cores, caches and memory
bandwidth with the training process, whose host thread launches every kernel; when a step is
short, that thread sets the pace. `CpuLoad` reproduces the pressure without the generator:
``n`` processes, each at the given niceness, stream over arrays larger than a core's share of
the last-level cache (memory-bound work, as rendering and placement are), until stopped.

    with CpuLoad(15):
        ...  # timed training window

Nothing touches CUDA in the load processes (they are spawned, not forked, and import only
numpy).
"""

from __future__ import annotations

import multiprocessing as mp
import os

LOAD_ARRAY_FLOATS = 4 * 1024 * 1024
"""Floats per array of one load process (32 MiB of float64: past a core's cache share)."""


def _stream(nice: int, floats: int) -> None:  # pragma: no cover - runs in a child process
    import numpy as np

    if nice:
        os.nice(nice)
    a = np.ones(floats)
    b = np.empty_like(a)
    while True:
        np.multiply(a, 1.0000001, out=b)
        a, b = b, a


class CpuLoad:
    """``n`` memory-streaming processes at ``nice`` for the length of a ``with`` block.

    Args:
        n: Processes (0: no load).
        nice: Niceness added in each process (the leases run the generator at 15).
        floats: Array length per process (tests make it small).
    """

    def __init__(self, n: int, nice: int = 15, floats: int = LOAD_ARRAY_FLOATS) -> None:
        if n < 0:
            raise ValueError(f"CpuLoad: n must be >= 0, got {n}")
        self.n, self.nice, self.floats = int(n), int(nice), int(floats)
        self.processes: list[mp.process.BaseProcess] = []

    def __enter__(self) -> CpuLoad:
        ctx = mp.get_context("spawn")
        for _ in range(self.n):
            proc = ctx.Process(target=_stream, args=(self.nice, self.floats), daemon=True)
            proc.start()
            self.processes.append(proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def alive(self) -> int:
        """Load processes still running."""
        return sum(p.is_alive() for p in self.processes)

    def stop(self) -> None:
        """Terminates every load process and waits for it."""
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            proc.join(timeout=10)
            if proc.is_alive():  # pragma: no cover - a process that ignored SIGTERM
                proc.kill()
                proc.join()
        self.processes.clear()

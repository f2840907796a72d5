"""sahmr.benchmark.cpu_load: the background load is niced, busy, and gone afterwards."""

from __future__ import annotations

import os
import time

import pytest

from sahmr.benchmark.cpu_load import CpuLoad


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_load_processes_run_niced_and_busy_and_stop_on_exit():
    own = os.getpriority(os.PRIO_PROCESS, 0)
    with CpuLoad(2, nice=7, floats=4096) as load:
        pids = [p.pid for p in load.processes]
        assert load.alive == 2 and len(set(pids)) == 2
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:  # spawned children import numpy first
            if all(os.getpriority(os.PRIO_PROCESS, pid) == min(own + 7, 19) for pid in pids):
                break
            time.sleep(0.1)
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [min(own + 7, 19)] * 2
        before = [_cpu_seconds(pid) for pid in pids]
        time.sleep(0.6)
        after = [_cpu_seconds(pid) for pid in pids]
        assert all(b > a for a, b in zip(before, after))  # each one works
    assert load.alive == 0 and load.processes == []
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read()


def test_no_load_and_a_negative_count():
    with CpuLoad(0) as load:
        assert load.processes == [] and load.alive == 0
    with pytest.raises(ValueError, match="n must be >= 0"):
        CpuLoad(-1)

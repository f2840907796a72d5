"""sahmr.benchmark.host_reads: every kind of host read counted, where it happens, and the
tensor methods restored afterwards."""

from __future__ import annotations

import torch

from sahmr.benchmark.host_reads import READS, count_host_reads


def test_each_read_is_counted_at_its_line_and_the_methods_come_back():
    before = {name: getattr(torch.Tensor, name) for name in READS}
    t = torch.tensor([2.0])
    with count_host_reads() as reads:
        t.item(), t.tolist(), bool(t), int(t), float(t), [0, 1, 2][torch.tensor(1)]
        t + 1  # arithmetic stays on the device: not a read
    assert {name for name, _ in reads} == set(READS)
    assert sum(reads.values()) == len(READS)
    assert all(where.startswith("tests/benchmark/test_host_reads.py:") for _, where in reads)
    assert {name: getattr(torch.Tensor, name) for name in READS} == before

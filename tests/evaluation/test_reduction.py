"""Count-weighted reduction: uneven batches and processes reduce like one batch."""

import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sahmr.evaluation.metrics import penetration
from sahmr.evaluation.reduction import Accumulator


def _feed(acc: Accumulator, sdf: torch.Tensor) -> None:
    pen = penetration(sdf)
    acc.update("pene", pen["pene"])
    acc.update("pen_depth", pen["pene"], counts=pen["pen_count"])
    acc.update("region", torch.ones(sdf.shape[0], 3) * sdf.shape[0])


def test_uneven_batches_equal_concatenated():
    g = torch.Generator().manual_seed(0)
    sdf = torch.randn(13, 50, dtype=torch.float64, generator=g) * 0.05
    whole = Accumulator()
    _feed(whole, sdf)
    split = Accumulator()
    _feed(split, sdf[:2])
    _feed(split, sdf[2:])
    for name in ("pene", "pen_depth"):
        assert split.mean(name) == pytest.approx(whole.mean(name), rel=1e-12)
    # A mean of the two batch means would differ (that is what we must not compute).
    b1, b2 = Accumulator(), Accumulator()
    _feed(b1, sdf[:2])
    _feed(b2, sdf[2:])
    assert (b1.mean("pene") + b2.mean("pene")) / 2 != pytest.approx(whole.mean("pene"))
    # Hand check: values 10 and 20 in one batch, 60 in another -> 30, not (15 + 60) / 2.
    acc = Accumulator()
    acc.update("x", torch.tensor([10.0, 20.0]))
    acc.update("x", torch.tensor([60.0]))
    assert acc.mean("x") == pytest.approx(30.0)
    assert acc.count("x").item() == 3


def test_valid_mask_and_merge():
    acc = Accumulator()
    acc.update("x", torch.tensor([1.0, 100.0, 3.0]), valid=torch.tensor([True, False, True]))
    assert acc.mean("x") == pytest.approx(2.0)
    other = Accumulator()
    other.add("x", 8.0, 1.0)
    acc.merge(other)
    assert acc.mean("x") == pytest.approx(4.0)
    empty = Accumulator()
    empty.add("z", 0.0, 0.0)
    assert empty.mean("z") != empty.mean("z")  # NaN when nothing was counted


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=__import__("datetime").timedelta(seconds=20)
    )
    try:
        g = torch.Generator().manual_seed(0)
        sdf = torch.randn(13, 50, dtype=torch.float64, generator=g) * 0.05
        acc = Accumulator()
        _feed(acc, sdf[:3] if rank == 0 else sdf[3:])  # uneven shards: 3 vs 10 frames
        if rank == 1:
            acc.update("only_rank1", torch.tensor([4.0, 6.0]))
        acc.all_reduce()
        torch.save(
            {n: (acc.total(n), acc.count(n)) for n in acc.names()},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_distributed_all_reduce_gloo():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, _free_port(), tmp), nprocs=2, join=True)
        g = torch.Generator().manual_seed(0)
        sdf = torch.randn(13, 50, dtype=torch.float64, generator=g) * 0.05
        whole = Accumulator()
        _feed(whole, sdf)
        for rank in range(2):
            state = torch.load(os.path.join(tmp, f"rank{rank}.pt"), weights_only=True)
            for name in ("pene", "pen_depth"):
                total, count = state[name]
                torch.testing.assert_close(total, whole.total(name))
                torch.testing.assert_close(count, whole.count(name))
            total, count = state["only_rank1"]
            assert total.item() == 10.0 and count.item() == 2.0

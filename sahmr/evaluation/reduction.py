"""Count-weighted metric accumulation across batches and processes.

Means are always ``sum(values) / sum(counts)`` over everything seen, never means of
per-batch or per-process means, so uneven batches and uneven shards give the same result
as one pass over the concatenated data. Under ``torch.distributed`` the sums and counts are
all-reduced (summed) before dividing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)


class Accumulator:
    """Named running sums and counts in float64.

    Each entry holds ``total`` (a Tensor of any fixed per-item shape, e.g. () or (7,)) and
    ``count`` (same shape). :meth:`update` adds a batch of per-item values; :meth:`add` adds
    pre-summed totals (e.g. true-positive counts, where only totals matter).

    Example:
        >>> acc = Accumulator()
        >>> acc.update("mpjpe", torch.tensor([10.0, 20.0]))
        >>> acc.update("mpjpe", torch.tensor([60.0]))
        >>> acc.mean("mpjpe")  # (10 + 20 + 60) / 3
        30.0
    """

    def __init__(self) -> None:
        self._totals: dict[str, Tensor] = {}
        self._counts: dict[str, Tensor] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._totals

    def names(self) -> list[str]:
        """Entry names in insertion order."""
        return list(self._totals)

    def add(self, name: str, total: Tensor | float, count: Tensor | float = 1.0) -> None:
        """Add a pre-summed total and its count to an entry.

        Args:
            name: Entry name.
            total: Tensor of the entry's per-item shape (or a float): summed values.
            count: Tensor of the same shape (or a float): how many items the total covers.
        """
        total_t = torch.as_tensor(total, dtype=torch.float64).detach().cpu()
        count_t = torch.as_tensor(count, dtype=torch.float64).detach().cpu()
        count_t = count_t.expand_as(total_t).clone() if count_t.ndim == 0 else count_t
        if name in self._totals:
            if self._totals[name].shape != total_t.shape:
                raise ValueError(
                    f"entry {name!r} has shape {tuple(self._totals[name].shape)}; "
                    f"got {tuple(total_t.shape)}"
                )
            self._totals[name] = self._totals[name] + total_t
            self._counts[name] = self._counts[name] + count_t
        else:
            self._totals[name] = total_t.clone()
            self._counts[name] = count_t.clone()

    def update(
        self, name: str, values: Tensor, counts: Tensor | None = None, valid: Tensor | None = None
    ) -> None:
        """Add a batch of per-item values.

        Args:
            name: Entry name.
            values: Tensor of shape (B, ...) with per-item values (e.g. mm per frame). For a
                count-weighted quantity (e.g. total penetration depth of a frame), the item's
                summed value.
            counts: Optional Tensor of shape (B, ...) giving each item's weight (e.g. number
                of penetrating vertices); default 1 per item.
            valid: Optional bool Tensor of shape (B,); invalid items are skipped.
        """
        values = values.detach().to(torch.float64)
        counts_t = torch.ones_like(values) if counts is None else counts.detach().to(torch.float64)
        counts_t = counts_t.expand_as(values)
        if valid is not None:
            mask = valid.reshape(valid.shape + (1,) * (values.ndim - 1)).to(values.device)
            values = torch.where(mask, values, torch.zeros_like(values))
            counts_t = torch.where(mask, counts_t, torch.zeros_like(counts_t))
        self.add(name, values.sum(0), counts_t.sum(0))

    def total(self, name: str) -> Tensor:
        """The summed values of an entry (float64 Tensor of its per-item shape)."""
        return self._totals[name].clone()

    def count(self, name: str) -> Tensor:
        """The summed counts of an entry."""
        return self._counts[name].clone()

    def mean(self, name: str) -> float | Tensor:
        """``total / count``; NaN where the count is 0. A float for scalar entries."""
        total, count = self._totals[name], self._counts[name]
        out = torch.where(count > 0, total / count.clamp_min(1e-300), torch.nan)
        return float(out) if out.ndim == 0 else out

    def merge(self, other: Accumulator) -> None:
        """Add another accumulator's sums and counts into this one."""
        for name in other.names():
            self.add(name, other._totals[name], other._counts[name])

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        """Totals and counts, e.g. to save partial results of a shard."""
        return {"totals": dict(self._totals), "counts": dict(self._counts)}

    def all_reduce(self, group: dist.ProcessGroup | None = None) -> None:
        """Sum totals and counts over all processes (in place); no-op without a process group.

        Entry names are unioned across ranks first (a rank that saw no item of some entry
        contributes zeros), so ranks may have seen different entries.

        Args:
            group: Process group (default: the world).
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        world = dist.get_world_size(group)
        local = [(name, tuple(self._totals[name].shape)) for name in self.names()]
        gathered: list[list[tuple[str, tuple[int, ...]]] | None] = [None] * world
        dist.all_gather_object(gathered, local, group=group)
        shapes: dict[str, tuple[int, ...]] = {}
        for entries in gathered:
            for name, shape in entries or []:
                if shapes.setdefault(name, shape) != shape:
                    raise ValueError(f"entry {name!r} has different shapes across ranks")
        names = sorted(shapes)
        flat = []
        for name in names:
            shape = shapes[name]
            total = self._totals.get(name, torch.zeros(shape, dtype=torch.float64))
            count = self._counts.get(name, torch.zeros(shape, dtype=torch.float64))
            flat += [total.reshape(-1), count.reshape(-1)]
        if not flat:
            return
        buffer = torch.cat(flat)
        device = _collective_device(group)
        buffer = buffer.to(device)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
        buffer = buffer.cpu()
        offset = 0
        for name in names:
            shape = shapes[name]
            n = int(torch.Size(shape).numel())
            self._totals[name] = buffer[offset : offset + n].reshape(shape).clone()
            offset += n
            self._counts[name] = buffer[offset : offset + n].reshape(shape).clone()
            offset += n
        logger.debug("all-reduced %d metric entries over %d ranks", len(names), world)


def _collective_device(group: dist.ProcessGroup | None) -> torch.device:
    """CUDA for NCCL (which cannot reduce CPU tensors), CPU otherwise."""
    backend = dist.get_backend(group)
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def concat_accumulators(accumulators: Iterable[Accumulator]) -> Accumulator:
    """One accumulator holding the sums and counts of several."""
    out = Accumulator()
    for acc in accumulators:
        out.merge(acc)
    return out

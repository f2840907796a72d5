"""A frozen RCNet's root and contacts, computed once per training sample and reused.

Stage two of SA-HMR (``exp=sahmr_small_finetune``) trains the mesh network on what a frozen
RCNet gives it at test time: its voted root and its contact points. RCNet votes three times a
frame and searches four more depths (`sahmr.models.rcnet.RCNet`), so running it in every step
costs more than the mesh network's own step, and a sample seen in ten epochs paid for the same
vote ten times. `RCNetStore` runs it once per sample of the in-memory cache
(`sahmr.engine.memory_data`), the first time a batch holds the sample, on the sample's crop
*without* augmentation (exactly the test-time input, so the stored root is the one RCNet would
give the frame at test time), and serves the stored output in later steps through
``FrameInputs.rcnet_given``. The mesh network still sees the augmented crop.

Chosen by ``loader.rcnet_once=true`` (`sahmr.data.memory.MemoryDataConfig`), for a model whose
RCNet is frozen; validation runs RCNet as ``predict`` does. RCNet fills the store under the
training step's autocast (``bf16``): the precision it would run at inside the step, and the one
the GPU evaluation runs it at. (On an H100 the fill ran at about 69 new frames/s in float32
(run 31) and about 92 in bf16 (run 32), against about 290 for the same passes inside a bf16
step: precision explains little of that gap, docs/benchmarks.md.)

When filling the store sets the lease's pace (it did in runs 30-48: about 45 new frames in
each step of 128, at 58-92 new frames/s, against 0.13 s for the step itself),
``loader.rcnet_new_per_step`` caps the new frames a step may hold: `RCNetStore.limit_new`
swaps a batch's other new samples for stored ones drawn at random, so the run takes more steps
over fewer distinct frames in the same minutes. The swapped samples stay in the sampler's later
epochs. The cap holds once the store has as many samples as `UNCAPPED_BATCHES` full batches:
before that, each step's frames are all new and drawing from a handful of stored ones would
repeat them.

Storage on the training device: roots (N, 3) float32 and the contact points packed in the
order they were computed (float32 points, int8 regions); which rows belong to which sample
lives on the CPU, where the batch indices are, so serving a batch is one host-to-device copy
of row indices and three gathers on the device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sahmr.data.memory import packed_rows
from sahmr.records import FrameInputs, RootContacts

logger = logging.getLogger(__name__)

__all__ = ["UNCAPPED_BATCHES", "RCNetStore"]

_LOG_EVERY = 10_000
"""Log the store's counts each time this many more samples were computed."""

UNCAPPED_BATCHES = 32
"""`RCNetStore.limit_new` caps a batch's new samples once the store holds this many batches'
worth of samples (4,096 at batch 128)."""


def _grown(t: Tensor, rows: int) -> Tensor:
    """``t`` with at least ``rows`` rows (doubling, zero-filled), same device and dtype."""
    if t.shape[0] >= rows:
        return t
    out = t.new_zeros((max(rows, 2 * t.shape[0], 64), *t.shape[1:]))
    out[: t.shape[0]] = t
    return out


class RCNetStore:
    """Per-sample outputs of a frozen RCNet: computed on first use, then served.

    Args:
        model: The SA-HMR model (its ``rcnet_root_contacts``; RCNet frozen).
        device: Where the outputs live (the training device).
        bf16: Run RCNet under bfloat16 autocast on ``device`` (as the training step does;
            `sahmr.engine.trainer_config.TrainerConfig.autocast_bf16`).
        new_per_step: At most this many samples without a stored output in a batch
            (`limit_new`; 0: no cap).
        seed: Seed of the stored samples `limit_new` draws.

    Attributes:
        computed: Samples whose output was computed.
        served: Sample rows served from the store (computed ones included).
        swapped: New samples `limit_new` replaced by stored ones.
    """

    def __init__(
        self,
        model: Any,
        device: torch.device | str,
        *,
        bf16: bool = False,
        new_per_step: int = 0,
        seed: int = 0,
    ) -> None:
        if getattr(model, "rcnet", None) is None or not getattr(model, "freeze_rcnet", False):
            raise ValueError("loader.rcnet_once needs SA-HMR with a frozen RCNet "
                             "(exp=sahmr_small_finetune, model.freeze_rcnet=true)")  # fmt: skip
        if new_per_step < 0:
            raise ValueError(f"loader.rcnet_new_per_step must be >= 0, got {new_per_step}")
        self.model = model
        self.device = torch.device(device)
        self.bf16 = bool(bf16)
        self.new_per_step = int(new_per_step)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.swapped = 0
        self.done = torch.zeros(0, dtype=torch.bool)  # (N,) CPU
        self.start = torch.zeros(0, dtype=torch.int64)  # (N,) CPU first packed row
        self.count = torch.zeros(0, dtype=torch.int64)  # (N,) CPU contact points
        self.root_cam = torch.zeros(0, 3, device=self.device)  # (N, 3)
        self.points_cam = torch.zeros(0, 3, device=self.device)  # (P_cap, 3) packed
        self.region = torch.zeros(0, dtype=torch.int8, device=self.device)  # (P_cap,)
        self.used = 0  # packed rows filled
        self.computed = 0
        self.served = 0

    def __len__(self) -> int:
        """Samples stored."""
        return self.computed

    def limit_new(self, indices: Tensor) -> Tensor:
        """``indices`` with at most ``new_per_step`` samples whose output is not stored.

        The first ``new_per_step`` new samples in batch order stay; each later one is replaced
        by a stored sample drawn uniformly at random (repeats possible). Unchanged without a
        cap, or while the store holds fewer than `UNCAPPED_BATCHES` batches' worth of samples.

        Args:
            indices: Tensor (B,) int64 sample indices (CPU or device).

        Returns:
            Tensor (B,) int64 on ``indices``' device.
        """
        cap = self.new_per_step
        B = indices.numel()
        if cap <= 0 or self.computed < UNCAPPED_BATCHES * B:
            return indices
        host = indices.detach().to("cpu", torch.int64)
        self._ensure_rows(int(host.max()) + 1)
        new = ~self.done[host]
        over = new & (torch.cumsum(new.long(), 0) > cap)
        n = int(over.sum())
        if not n:
            return indices
        stored = torch.nonzero(self.done).squeeze(1)
        out = host.clone()
        out[over] = stored[torch.randint(stored.numel(), (n,), generator=self.generator)]
        self.swapped += n
        return out.to(indices.device)

    def given(self, indices: Tensor, plain_inputs: Callable[[Tensor], FrameInputs]) -> RootContacts:
        """The stored outputs of samples ``indices`` (computing the missing ones first).

        Args:
            indices: Tensor (B,) int64 sample indices (CPU or device).
            plain_inputs: Sample indices (M,) CPU -> their `FrameInputs` without augmentation.

        Returns:
            `RootContacts` of the B samples on the store's device, contacts packed in batch
            order.
        """
        host = indices.detach().to("cpu", torch.int64)
        self._ensure_rows(int(host.max()) + 1 if host.numel() else 0)
        missing = torch.unique(host[~self.done[host]])
        if missing.numel():
            inputs = plain_inputs(missing)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model.rcnet_root_contacts(inputs)
            self.add(missing, out)
        rows, bidx = packed_rows(self.start[host], self.count[host])
        B, P = host.numel(), rows.numel()
        packed = torch.cat([host, rows, bidx]).to(self.device, non_blocking=True)
        idx, rows_d, bidx_d = packed[:B], packed[B : B + P], packed[B + P :]
        self.served += B
        return RootContacts(
            root_cam=self.root_cam.index_select(0, idx),
            contact_points_cam=self.points_cam.index_select(0, rows_d),
            contact_point_region=self.region.index_select(0, rows_d).long(),
            contact_batch_idx=bidx_d,
        )

    def add(self, indices: Tensor, out: RootContacts) -> None:
        """Store ``out``, the outputs of samples ``indices`` (M,) CPU (frame m of ``out``'s
        batch index is sample ``indices[m]``; its points may be in any order)."""
        host = indices.detach().to("cpu", torch.int64)
        M = host.numel()
        if out.root_cam.shape[0] != M:
            raise ValueError(f"{out.root_cam.shape[0]} roots for {M} samples")
        self._ensure_rows(int(host.max()) + 1)
        bidx = out.contact_batch_idx.long()
        order = torch.argsort(bidx, stable=True)  # the packed rows of a sample are contiguous
        counts = torch.bincount(bidx, minlength=M).cpu()
        P = int(counts.sum())
        if P:
            self.points_cam = _grown(self.points_cam, self.used + P)
            self.region = _grown(self.region, self.used + P)
            dst = slice(self.used, self.used + P)
            self.points_cam[dst] = out.contact_points_cam[order].to(self.device, torch.float32)
            self.region[dst] = out.contact_point_region[order].to(self.device, torch.int8)
        self.start[host] = self.used + torch.cumsum(counts, 0) - counts
        self.count[host] = counts
        self.root_cam[host.to(self.device)] = out.root_cam.to(self.device, torch.float32)
        self.done[host] = True
        self.used += P
        before, self.computed = self.computed, self.computed + M
        if self.computed // _LOG_EVERY > before // _LOG_EVERY:
            logger.info("RCNet store: %d samples computed, %d served, %d new ones swapped "
                        "for stored ones, %d contact points", self.computed, self.served,
                        self.swapped, self.used)  # fmt: skip

    def _ensure_rows(self, n: int) -> None:
        """Room for sample indices below ``n``."""
        if self.done.shape[0] >= n:
            return
        self.done = _grown(self.done, n)
        self.start = _grown(self.start, n)
        self.count = _grown(self.count, n)
        self.root_cam = _grown(self.root_cam, n)

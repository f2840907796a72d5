"""The trainer's in-memory data path: index batches over a `SampleCache`, steps on the device.

Chosen by the run config's ``loader`` group (``loader=memory``; absent: the DataLoader path of
`sahmr.engine.data`). `MemoryLoader` stands where the trainer expects its DataLoader: a
`ResumableSampler` (order a function of ``(seed, epoch)``, resumable mid-epoch) over the cached
samples, yielding Tensors (B,) of sample indices; `MemoryStepPreparer` turns them into the same
`Step` (`FrameInputs`, `FrameTargets`, frame `Batch`) the DataLoader path gives, with crops,
geometry and scene points already on the device, optional augmentation
(`sahmr.data.augment`) and the frustum crop of `sahmr.data.memory.SceneStore`. With
``loader.rcnet_once`` a frozen RCNet's outputs come from `sahmr.engine.rcnet_store` (computed
once per sample).

While the generator is still writing the dataset, every epoch starts by taking the shards
decoded since the last one (`ShardStream.refresh`): epochs grow, so set ``trainer.max_steps``
(the LR schedule's length) rather than relying on ``max_epochs`` in that case; the order of a
run that resumes while the data grew differs from an uninterrupted one. Frame mode only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from sahmr.data.augment import AugmentConfig, augment_crops
from sahmr.data.collate import Batch
from sahmr.data.memory import (
    MemoryDataConfig,
    PinnedStager,
    ShardStream,
    build_frame_inputs,
    gather_batch,
)
from sahmr.engine.data import ResumableSampler, Step, TargetPreparer
from sahmr.engine.distributed import all_gather_objects, is_dist
from sahmr.engine.rcnet_store import RCNetStore
from sahmr.records import FrameInputs, FrameTargets

logger = logging.getLogger(__name__)


class _Count:
    """A sized stand-in for the dataset a sampler draws indices of."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __len__(self) -> int:
        return self.n


class MemoryLoader:
    """Batches of cached sample indices, shuffled per epoch; the trainer's ``train_loader``.

    Args:
        stream: The filled (or filling) shard stream.
        batch_size: Frames per batch and rank.
        seed: Base seed of the order.
        rank: This rank.
        world_size: Number of ranks.
        min_samples: Samples the cache must hold before the first batch (at least one batch
            per rank).

    Attributes:
        sampler: The `ResumableSampler` (rebuilt, keeping its epoch and skip, when the cache
            grows).
        generator: None (no worker processes to seed).
    """

    def __init__(
        self,
        stream: ShardStream,
        *,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        min_samples: int = 0,
    ) -> None:
        self.stream = stream
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.generator = None
        self._refresh(max(int(min_samples), self.batch_size * self.world_size))
        self.sampler = self._sampler(len(stream.cache))

    def _sampler(self, n: int) -> ResumableSampler:
        return ResumableSampler(
            _Count(n),
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=True,
            seed=self.seed,
            drop_last=True,
        )

    def _refresh(self, min_samples: int = 0) -> int:
        """`ShardStream.refresh`; under a process group every rank appends the same shards
        (those decoded on all ranks, in plan order), so the ranks index the same samples."""
        if not is_dist():
            return self.stream.refresh(min_samples)
        stream = self.stream
        target = min(int(min_samples), stream.planned_samples)
        while True:  # `wait` raises on this rank when its own shards do not come
            stream.wait(min_samples)
            common = set.intersection(*(set(a) for a in all_gather_objects(stream.available())))
            if sum(stream.plan[k].num_samples for k in common) >= target:  # same on every rank
                return stream.refresh(only=common)
            time.sleep(stream.config.poll_seconds)

    def refresh(self) -> int:
        """Take newly decoded shards; the sampler keeps its epoch and skip. Samples added."""
        added = self._refresh() if not self.stream.complete else 0
        if added:
            old = self.sampler
            self.sampler = self._sampler(len(self.stream.cache))
            self.sampler.set_epoch(old.epoch, skip=old._skip)
        return added

    def __iter__(self) -> Iterator[Tensor]:
        self.refresh()
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.int64)
        for k in range(order.numel() // self.batch_size):
            yield order[k * self.batch_size : (k + 1) * self.batch_size]

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size


class MemoryStepPreparer(TargetPreparer):
    """Sample indices -> `Step` on the device, from the stream's cache and scenes.

    Args:
        stream: Cache and scene points.
        topology: Body topology (mesh levels) of the targets.
        device: Training device.
        augment: Augmentation strengths, or None (inputs exactly as the DataLoader path's).
        needs_scene: Cut frustum scene points.
    """

    def __init__(
        self,
        stream: ShardStream,
        topology: Any,
        device: torch.device,
        *,
        augment: AugmentConfig | None = None,
        needs_scene: bool = True,
    ) -> None:
        super().__init__(topology, device)
        self.stream = stream
        self.augment = augment
        self.needs_scene = needs_scene
        self.rcnet_store: RCNetStore | None = None
        self._stage = PinnedStager()

    def use_rcnet_store(
        self, model: Any, *, bf16: bool = False, new_per_step: int = 0, seed: int = 0
    ) -> RCNetStore:
        """Serve ``model``'s frozen RCNet outputs from a per-sample store from now on
        (`sahmr.engine.rcnet_store`; ``bf16``: RCNet fills it under the training step's
        autocast; ``new_per_step``, ``seed``: the cap on a step's new samples,
        `RCNetStore.limit_new`); the store."""
        if not self.needs_scene:
            raise ValueError("loader.rcnet_once needs scene points (RCNet votes from them)")
        self.rcnet_store = RCNetStore(
            model, self.device, bf16=bf16, new_per_step=new_per_step, seed=seed
        )
        return self.rcnet_store

    def plain_inputs(self, indices: Tensor) -> FrameInputs:
        """`FrameInputs` of samples ``indices`` without augmentation (the test-time input)."""
        return self.frame_inputs(*self.frames(indices, augment=False))

    def frames(self, indices: Tensor, *, augment: bool = True) -> tuple[Batch, Tensor]:
        """The frame `Batch` of ``indices`` (augmented when ``augment`` and the preparer
        augments) and each frame's scene index (CPU)."""
        frames = gather_batch(self.stream.cache, indices, self.device, stager=self._stage)
        if augment and self.augment is not None:
            frames.crop, frames.bbox = augment_crops(frames.crop, frames.bbox, self.augment)
        frame_scene = self.stream.cache.scene[indices.detach().cpu()]  # (B,) on the CPU
        return frames, frame_scene

    def frame_inputs(
        self, frames: Batch, frame_scene: Tensor, *, scene: bool = True
    ) -> FrameInputs:
        """`FrameInputs` of a gathered batch (without scene points unless ``scene`` and
        ``needs_scene``)."""
        scenes = self.stream.scenes if self.needs_scene and scene else None
        return build_frame_inputs(frames, scenes, frame_scene)

    def step(self, indices: Tensor, *, targets: bool | None = True) -> Step:
        """The `Step` of a batch of sample indices (targets unless ``targets`` is False; with
        a capped RCNet store, some new samples swapped for stored ones first)."""
        if self.rcnet_store is not None:
            indices = self.rcnet_store.limit_new(indices)
        frames, frame_scene = self.frames(indices)
        # with RCNet's outputs stored, nothing in the step reads scene points: no frustum cut
        inputs = self.frame_inputs(frames, frame_scene, scene=self.rcnet_store is None)
        if self.rcnet_store is not None:
            inputs.rcnet_given = self.rcnet_store.given(indices, self.plain_inputs)
        f_targets = self.frame_targets(frames) if targets is not False else None
        if f_targets is not None and self.stream.sdfs is not None:
            f_targets.scene_sdf = self.stream.sdfs.frames(frame_scene)
        return Step(
            inputs=inputs,
            targets=f_targets,
            frames=frames,
            frame_inputs=inputs,
            frame_targets=f_targets,
        )

    def __call__(self, indices: Tensor) -> tuple[FrameInputs, FrameTargets]:
        """``(inputs, targets)`` of the batch."""
        step = self.step(indices, targets=True)
        return step.inputs, step.targets


def build_memory_data(
    config: MemoryDataConfig,
    *,
    root: str,
    split: str,
    topology: Any,
    device: torch.device,
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    needs_scene: bool = True,
    max_points_per_scene: int | None = None,
    clip_length: int | None = None,
    progress: bool = True,
) -> tuple[MemoryLoader, MemoryStepPreparer]:
    """The training loader and step preparer of the in-memory path.

    Raises:
        ValueError: Clip mode (temporal methods read the DataLoader path).
    """
    if clip_length is not None:
        raise ValueError("the in-memory loader serves frames only: drop loader=memory for clips")
    stream = ShardStream(
        root,
        split,
        device,
        config,
        needs_scene=needs_scene,
        max_points_per_scene=max_points_per_scene,
        seed=seed,
        progress=progress,
    )
    loader = MemoryLoader(
        stream,
        batch_size=batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        min_samples=config.min_samples,
    )
    prepare = MemoryStepPreparer(
        stream, topology, device, augment=config.augment, needs_scene=needs_scene
    )
    return loader, prepare

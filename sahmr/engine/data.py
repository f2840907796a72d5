"""Datasets, loaders and per-step inputs/targets for training and evaluation.

Order is a pure function of ``(seed, epoch)``: the training sampler is a `DistributedSampler`
(with ``num_replicas=1`` in a single process) re-seeded by ``set_epoch``, and the loader's
generator (which seeds the workers) is re-seeded with ``(seed, epoch)`` before every epoch.
A resumed run therefore sees exactly the batches an uninterrupted run would, after
`ResumableSampler.set_epoch(epoch, skip)` drops the ones already consumed. Worker processes
seed python/numpy from torch's per-worker seed; datasets that augment should draw from those
(with persistent workers the worker seeds are drawn once, when the workers start, so such
datasets resume bit-identically only with ``persistent_workers=false``).

Scenes do not travel through the collate function: a `SceneBank` holds every scene's points
once on the training device and `prepare_inputs` cuts each frame's frustum from it.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
from collections.abc import Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from sahmr.data.collate import Batch, collate_samples
from sahmr.models.inputs import (
    FrameInputs,
    FrameTargets,
    SceneBank,
    prepare_inputs,
    prepare_targets,
)

logger = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` whose epoch order depends only on ``(seed, epoch)``, and that can
    skip the first samples of an epoch (the batches a resumed run already trained on).

    Args:
        dataset: Sized dataset.
        num_replicas: World size (1 without DDP).
        rank: This rank.
        shuffle: Shuffle with ``seed + epoch``.
        seed: Base seed.
        drop_last: Drop the tail that does not divide evenly over ranks.
    """

    def __init__(
        self,
        dataset: Sized,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self._skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's order and drop its first ``skip`` samples (this rank's)."""
        super().set_epoch(epoch)
        self._skip = int(skip)

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self._skip, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self._skip)


class StridedSampler(Sampler[int]):
    """Every ``num_replicas``-th index from ``rank``, in order, without padding (evaluation:
    each frame is scored exactly once over all ranks)."""

    def __init__(self, length: int, *, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: python and numpy seeded from torch's worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 (datasets may draw from the global RNG)
    random.seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The loader generator's seed for an epoch (a plain function of both)."""
    return int(seed) * 1_000_003 + int(epoch)


def build_dataset(data_cfg: Any, **overrides: Any) -> Dataset:
    """Instantiate a dataset from a hydra ``data`` config, e.g. ``split="val"``."""
    from hydra.utils import instantiate

    return instantiate(data_cfg, **overrides)


@dataclass(frozen=True)
class LoaderSettings:
    """DataLoader settings shared by training and evaluation.

    Attributes:
        batch_size: Frames per batch and rank.
        num_workers: Worker processes (0 = load in the main process).
        pin_memory: Pin host memory (only used when the device is CUDA).
        persistent_workers: Keep workers alive across epochs (needs ``num_workers > 0``).
        prefetch_factor: Batches prefetched per worker.
    """

    batch_size: int = 8
    num_workers: int = 0
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 2


def build_loader(
    dataset: Dataset,
    settings: LoaderSettings,
    *,
    train: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
) -> DataLoader:
    """A DataLoader collating `Batch`es (no scene points; see `SceneBank`).

    Training loaders shuffle with a `ResumableSampler` and drop the last incomplete batch;
    evaluation loaders keep the order with a `StridedSampler`.

    Args:
        dataset: Map-style dataset of `Sample`s.
        settings: Batch size, workers, pinning.
        train: Training (shuffled, resumable) or evaluation (ordered) loader.
        seed: Base seed of the order and of the workers.
        rank: This rank.
        world_size: Number of ranks.
        device: Training device (pinning only for CUDA).
    """
    n = len(dataset)  # type: ignore[arg-type]
    sampler: Sampler[int]
    if train:
        sampler = ResumableSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
    else:
        sampler = StridedSampler(n, num_replicas=world_size, rank=rank)
    workers = int(settings.num_workers)
    generator = torch.Generator()
    generator.manual_seed(epoch_seed(seed, 0))
    return DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=functools.partial(collate_samples, keep_images=False),
        pin_memory=bool(settings.pin_memory and device is not None and device.type == "cuda"),
        drop_last=train,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=bool(settings.persistent_workers and workers > 0),
        prefetch_factor=settings.prefetch_factor if workers > 0 else None,
    )


def start_epoch(loader: DataLoader, seed: int, epoch: int, skip_batches: int = 0) -> None:
    """Prepare a training loader for ``epoch``: sampler order, skipped batches, worker seeds."""
    sampler = loader.sampler
    if isinstance(sampler, ResumableSampler):
        sampler.set_epoch(epoch, skip=skip_batches * int(loader.batch_size or 1))
    elif skip_batches:
        raise ValueError("only a ResumableSampler can skip batches")
    if loader.generator is not None:
        loader.generator.manual_seed(epoch_seed(seed, epoch))


def build_scene_bank(
    scenes: Mapping[str, Any] | None,
    device: torch.device,
    *,
    max_points_per_scene: int | None = None,
    seed: int = 0,
) -> SceneBank | None:
    """A `SceneBank` of a dataset's ``scene_points`` on ``device`` (None when no scenes)."""
    if scenes is None:
        return None
    bank = SceneBank(scenes, device, max_points_per_scene=max_points_per_scene, seed=seed)
    logger.info(
        "scene bank: %d scenes, %d points on %s",
        len(bank.scene_ids),
        bank.points_world.shape[0],
        device,
    )
    return bank


class StepPreparer:
    """Turns a collated `Batch` into model inputs and camera-frame targets on the device.

    Args:
        topology: Body topology (mesh levels) of the body model the targets use.
        device: Training device.
        scenes: Scene bank, or None for methods that need no scene points.
    """

    def __init__(self, topology: Any, device: torch.device, scenes: SceneBank | None) -> None:
        self.topology = topology
        self.device = device
        self.scenes = scenes
        self.j14_regressor: Tensor = torch.as_tensor(
            np.asarray(topology.j_regressor_j14), dtype=torch.float32, device=device
        )

    def inputs(self, batch: Batch) -> FrameInputs:
        """`FrameInputs` of the batch on the device."""
        return prepare_inputs(batch, self.scenes, device=self.device)

    def targets(self, batch: Batch) -> FrameTargets:
        """`FrameTargets` of the batch on the device."""
        return prepare_targets(
            batch,
            self.topology,
            self.j14_regressor,
            device=self.device,
            crop_size=int(batch.crop.shape[1]),
        )

    def __call__(self, batch: Batch) -> tuple[FrameInputs, FrameTargets]:
        """``(inputs, targets)`` of the batch."""
        batch = batch.to(self.device, non_blocking=True)
        return self.inputs(batch), self.targets(batch)

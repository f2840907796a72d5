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

Two data modes, chosen by the run config's ``clip_length`` (never by the method's class):

* frames (``clip_length: null``): one dataset item is one frame, batches are `Batch`es and
  methods get `FrameInputs` / `FrameTargets`;
* clips (``clip_length: T``, temporal methods such as VIBE): the frame dataset is cut into
  windows of T consecutive frames of one motion sequence (`sahmr.data.sequences.ClipDataset`,
  `clip_dataset`), one item is one clip, batches are `sahmr.data.sequences.ClipBatch`es of
  B * T frames (clip-major) and methods get `sahmr.models.vibe.ClipInputs` / ``ClipTargets``.

`StepPreparer.step` turns either batch into a `Step`: what the method's ``forward`` takes,
plus frame-level views (image summaries, evaluation) and per-frame sample keys.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
from collections.abc import Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from sahmr.data.collate import Batch, collate_samples
from sahmr.data.prepare import prepare_inputs, prepare_targets
from sahmr.data.sequences import ClipBatch, ClipDataset, collate_clips
from sahmr.records import FrameInputs, FrameTargets
from sahmr.scene.frontend import SceneBank

if TYPE_CHECKING:
    from sahmr.models.vibe import ClipInputs, ClipTargets

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


def spread_indices(length: int, count: int | None) -> list[int]:
    """``count`` indices of ``range(length)`` spread evenly over it (all when ``count`` is None
    or >= ``length``), ascending: item ``i`` is ``floor((i + 1/2) * length / count)``. A split
    is written room by room, so its first frames come from a few rooms; spread ones from all."""
    if count is None or count >= length:
        return list(range(length))
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return [(2 * i + 1) * length // (2 * count) for i in range(count)]


class StridedSampler(Sampler[int]):
    """Every ``num_replicas``-th index from ``rank``, in order, without padding (evaluation:
    each frame is scored exactly once over all ranks); of ``spread_indices(length, items)``
    when ``items`` is given."""

    def __init__(
        self, length: int, *, num_replicas: int = 1, rank: int = 0, items: int | None = None
    ) -> None:
        self.indices = spread_indices(length, items)[rank::num_replicas]

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


def clip_dataset(
    dataset: Dataset,
    clip_length: int | None,
    *,
    stride: int | None = None,
    motion_prefix: str | None = "seq_",
) -> Dataset:
    """The dataset of the configured data mode: ``dataset`` itself (frames, ``clip_length``
    None) or its `ClipDataset` of windows of ``clip_length`` consecutive motion frames.

    Args:
        dataset: Frame dataset.
        clip_length: T, or None for frame mode.
        stride: Start-to-start distance of the windows (None: T, every frame at most once;
            evaluation always uses that).
        motion_prefix: Only sequences whose actions start with this (the generator's motions:
            ``seq_``); None: every sequence (e.g. real videos).
    """
    if clip_length is None:
        return dataset
    clips = ClipDataset(
        dataset, clip_length=int(clip_length), stride=stride, motion_prefix=motion_prefix
    )
    if len(clips) == 0 and len(dataset) > 0:  # type: ignore[arg-type]
        logger.warning(
            "no clips of %d consecutive frames (sequences with actions %r...) in %d frames: "
            "generate motions (sequence_fraction > 0) or set clip_motion_prefix=null",
            clip_length,
            motion_prefix,
            len(dataset),  # type: ignore[arg-type]
        )
    return clips


def frame_indices(dataset: Dataset, indices: Sequence[int]) -> list[int]:
    """Frame-dataset indices of items ``indices`` of ``dataset``, in batch-row order (a
    `ClipDataset`'s clips flattened clip-major, like `collate_clips`)."""
    if isinstance(dataset, ClipDataset):
        return [f for i in indices for f in dataset.clips[int(i)]]
    return [int(i) for i in indices]


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
    clip_length: int | None = None,
    items: int | None = None,
) -> DataLoader:
    """A DataLoader collating `Batch`es, or `ClipBatch`es in clip mode (no scene points; see
    `SceneBank`).

    Training loaders shuffle with a `ResumableSampler` and drop the last incomplete batch;
    evaluation loaders keep the order with a `StridedSampler`. In clip mode the items (and
    ``settings.batch_size``) are clips.

    Args:
        dataset: Map-style dataset of `Sample`s, or a `ClipDataset` in clip mode.
        settings: Batch size, workers, pinning.
        train: Training (shuffled, resumable) or evaluation (ordered) loader.
        seed: Base seed of the order and of the workers.
        rank: This rank.
        world_size: Number of ranks.
        device: Training device (pinning only for CUDA).
        clip_length: T in clip mode (``dataset`` must be a `ClipDataset` of that length),
            None in frame mode.
        items: Evaluation only: that many items spread evenly over the dataset
            (`spread_indices`), over all ranks; None: all.

    Raises:
        ValueError: The dataset does not match the data mode.
    """
    if train and items is not None:
        raise ValueError("items selects evaluation frames; a training loader takes them all")
    collate = _collate_fn(dataset, clip_length)
    n = len(dataset)  # type: ignore[arg-type]
    sampler: Sampler[int]
    if train:
        sampler = ResumableSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
    else:
        sampler = StridedSampler(n, num_replicas=world_size, rank=rank, items=items)
    workers = int(settings.num_workers)
    generator = torch.Generator()
    generator.manual_seed(epoch_seed(seed, 0))
    return DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=bool(settings.pin_memory and device is not None and device.type == "cuda"),
        drop_last=train,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=bool(settings.persistent_workers and workers > 0),
        prefetch_factor=settings.prefetch_factor if workers > 0 else None,
    )


def _collate_fn(dataset: Dataset, clip_length: int | None) -> Any:
    """The collate function of the data mode, checked against the dataset."""
    is_clips = isinstance(dataset, ClipDataset)
    if clip_length is None:
        if is_clips:
            raise ValueError("a ClipDataset needs clip_length (clip mode)")
        return functools.partial(collate_samples, keep_images=False)
    if not is_clips or dataset.clip_length != int(clip_length):
        raise ValueError(f"clip mode (clip_length={clip_length}) needs a ClipDataset of that T")
    return functools.partial(collate_clips, keep_images=False)


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


@dataclass
class Step:
    """One batch made ready for a method.

    Attributes:
        inputs: What the method's ``forward`` takes: `FrameInputs`, or
            `sahmr.models.vibe.ClipInputs` in clip mode.
        targets: The matching `FrameTargets` / ``ClipTargets``, or None (no ground truth).
        frames: The frame-level `Batch` on the device (clip frames clip-major).
        frame_inputs: `FrameInputs` of every frame (``inputs`` itself in frame mode).
        frame_targets: `FrameTargets` of every frame, or None.
    """

    inputs: Any
    targets: Any | None
    frames: Batch
    frame_inputs: FrameInputs
    frame_targets: FrameTargets | None

    @property
    def num_frames(self) -> int:
        """Frames in the batch (B, or B * T in clip mode)."""
        return len(self.frames)

    @functools.cached_property
    def sample_keys(self) -> list[str]:
        """One key per frame row, ``"<source>/<sequence_id>/<frame_index>"`` (unique in the
        synthetic datasets; `sahmr.models.spin.sample_keys_from_batch`)."""
        from sahmr.models.spin import sample_keys_from_batch

        return sample_keys_from_batch(self.frames)


class TargetPreparer:
    """Camera-frame targets of frame `Batch`es on the device (shared by every step preparer).

    Args:
        topology: Body topology (mesh levels) of the body model the targets use.
        device: Training device.
    """

    def __init__(self, topology: Any, device: torch.device) -> None:
        self.topology = topology
        self.device = torch.device(device)
        self.j14_regressor: Tensor = torch.as_tensor(
            np.asarray(topology.j_regressor_j14), dtype=torch.float32, device=self.device
        )

    def frame_targets(self, frames: Batch) -> FrameTargets:
        """`FrameTargets` of a frame `Batch` on the device (`prepare_targets`)."""
        return prepare_targets(
            frames,
            self.topology,
            self.j14_regressor,
            device=self.device,
            crop_size=int(frames.crop.shape[1]),
        )


class StepPreparer(TargetPreparer):
    """Turns a collated batch into model inputs and camera-frame targets on the device.

    Args:
        topology: Body topology (mesh levels) of the body model the targets use.
        device: Training device.
        scenes: Scene bank, or None for methods that need no scene points.
        clip_length: T in clip mode (batches are `ClipBatch`es of that length), None in
            frame mode (`Batch`es).
    """

    def __init__(
        self,
        topology: Any,
        device: torch.device,
        scenes: SceneBank | None,
        *,
        clip_length: int | None = None,
    ) -> None:
        super().__init__(topology, device)
        self.scenes = scenes
        self.clip_length = None if clip_length is None else int(clip_length)

    def frames(self, batch: Batch | ClipBatch) -> Batch:
        """The frame-level `Batch` of a batch of the configured mode.

        Raises:
            TypeError: A batch of the other mode, or clips of another length.
        """
        if self.clip_length is None:
            if isinstance(batch, ClipBatch):
                raise TypeError("a ClipBatch in frame mode: set clip_length")
            return batch
        if not isinstance(batch, ClipBatch) or batch.clip_length != self.clip_length:
            raise TypeError(f"clip mode expects ClipBatches of {self.clip_length} frames")
        return batch.frames

    def frame_inputs(self, frames: Batch) -> FrameInputs:
        """`FrameInputs` of a frame `Batch` on the device."""
        return prepare_inputs(frames, self.scenes, device=self.device)

    def method_inputs(self, frame_inputs: FrameInputs) -> FrameInputs | ClipInputs:
        """What the method takes: the frame inputs, or their `ClipInputs` in clip mode."""
        if self.clip_length is None:
            return frame_inputs
        from sahmr.models.vibe import ClipInputs

        return ClipInputs(frame_inputs, self.clip_length)

    def method_targets(self, frame_targets: FrameTargets) -> FrameTargets | ClipTargets:
        """What the loss takes: the frame targets, or their ``ClipTargets`` in clip mode."""
        if self.clip_length is None:
            return frame_targets
        from sahmr.models.vibe import ClipTargets

        return ClipTargets(frame_targets, self.clip_length)

    def inputs(self, batch: Batch | ClipBatch) -> FrameInputs | ClipInputs:
        """The method's inputs of the batch on the device."""
        return self.method_inputs(self.frame_inputs(self.frames(batch)))

    def targets(self, batch: Batch | ClipBatch) -> FrameTargets | ClipTargets:
        """The method's targets of the batch on the device."""
        return self.method_targets(self.frame_targets(self.frames(batch)))

    def step(self, batch: Batch | ClipBatch, *, targets: bool | None = None) -> Step:
        """The `Step` of a batch (moved to the device).

        Args:
            batch: A `Batch` (frame mode) or `ClipBatch` (clip mode).
            targets: Build targets (True: required; None: when the batch has ground truth).

        Raises:
            ValueError: ``targets=True`` for a batch without ground truth.
        """
        frames = self.frames(batch).to(self.device, non_blocking=True)
        has_gt = frames.vertices_world is not None and frames.joints_world is not None
        if targets and not has_gt:
            raise ValueError("the batch carries no ground-truth vertices/joints")
        f_inputs = self.frame_inputs(frames)
        f_targets = self.frame_targets(frames) if (has_gt and targets is not False) else None
        return Step(
            inputs=self.method_inputs(f_inputs),
            targets=None if f_targets is None else self.method_targets(f_targets),
            frames=frames,
            frame_inputs=f_inputs,
            frame_targets=f_targets,
        )

    def __call__(self, batch: Batch | ClipBatch) -> tuple[Any, Any]:
        """``(inputs, targets)`` of the batch."""
        step = self.step(batch, targets=True)
        return step.inputs, step.targets


def checkpoint_steps(
    dataset: Dataset,
    indices: Sequence[int],
    cfg: Any,
    topology: Any,
    device: torch.device,
    *,
    batch_size: int = 16,
    num_workers: int = 1,
    desc: str = "frames",
    progress: bool = True,
) -> Iterator[Step]:
    """Prepared steps, targets included, of ``dataset``'s frames ``indices`` in order, with the
    scene bank a checkpoint's config trains and predicts with (``max_points_per_scene``,
    ``seed``); ``num_workers`` loader workers (one suits a 2-core CPU; a GPU machine's cores
    keep its device fed), a progress bar unless ``progress`` is off. For tools that run a
    checkpoint over part of a generated split (``tools/refit_head.py``,
    ``tools/diagnose_root.py``, ``tools/refit_voter.py``)."""
    from torch.utils.data import Subset
    from tqdm import tqdm

    bank = build_scene_bank(dataset.scene_points, device,
                            max_points_per_scene=cfg.get("max_points_per_scene"),
                            seed=int(cfg.get("seed", 0)))  # fmt: skip
    prep = StepPreparer(topology, device, bank)
    loader = build_loader(Subset(dataset, list(indices)),
                          LoaderSettings(batch_size=batch_size, num_workers=num_workers),
                          train=False, device=device)  # fmt: skip
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress):
        yield prep.step(batch, targets=True)

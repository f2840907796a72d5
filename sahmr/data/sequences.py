"""Clips of T consecutive frames of one sequence (for temporal methods such as VIBE).

The generator writes short motions (`sahmr.synth.sequences`) as consecutive frames
``0..T-1`` of one ``sequence_id`` seen from one camera, labelled with actions ``seq_<kind>``;
its multi-view samples also share a ``sequence_id`` (``frame_index`` = view), but those are
not motions. `ClipDataset` indexes windows of ``clip_length`` consecutive frame indices of
one sequence, by default only of motion sequences (action prefix ``seq_``), and returns them
as lists of `Sample`; `collate_clips` stacks B clips into one `Batch` of B * T frames
(clip-major: frame t of clip b is row ``b * T + t``) inside a `ClipBatch`, so the frame-level
input/target preparation applies unchanged and a model reshapes to (B, T, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from sahmr.data.collate import Batch, PointSet, collate_samples
from sahmr.data.sample import Sample

logger = logging.getLogger(__name__)

__all__ = ["ClipBatch", "ClipDataset", "FrameKey", "collate_clips", "frame_keys"]


@dataclass(frozen=True)
class FrameKey:
    """Where a dataset row sits in its sequence.

    Attributes:
        sequence_id: Sequence name.
        frame_index: Frame number within it.
        action: Action label (``seq_<kind>`` for the generator's motions).
    """

    sequence_id: str
    frame_index: int
    action: str


def frame_keys(dataset: Dataset) -> list[FrameKey]:
    """`FrameKey` of every row of a dataset, in index order.

    A `sahmr.data.synthetic.SyntheticDataset` is indexed from its shard headers and frame
    index arrays (no image is decoded); any other dataset is read sample by sample.

    Args:
        dataset: A dataset of `Sample`s.

    Returns:
        One key per row.
    """
    from sahmr.data.shards import ShardReader
    from sahmr.data.synthetic import SyntheticDataset

    if isinstance(dataset, SyntheticDataset):
        per_shard: dict[int, tuple[list[str], list[str], Any]] = {}
        for k, path in enumerate(dataset.shard_paths):
            reader = ShardReader(path)
            try:
                strings = reader.header["strings"]
                frames = [int(f) for f in reader.array("frame_index")]
            finally:
                reader.close()
            per_shard[k] = (strings["sequence_id"], strings["action"], frames)
        keys = []
        for k, r in dataset._index.tolist():  # (shard, row) per dataset index
            seq, act, frames = per_shard[k]
            keys.append(FrameKey(str(seq[r]), frames[r], str(act[r])))
        return keys
    keys = []
    for i in range(len(dataset)):
        s = dataset[i]
        keys.append(FrameKey(s.sequence_id, int(s.frame_index), s.action))
    return keys


class ClipDataset(Dataset):
    """Windows of ``clip_length`` consecutive frames of one sequence.

    Args:
        dataset: The frame dataset (e.g. `sahmr.data.synthetic.SyntheticDataset`).
        clip_length: T, frames per clip.
        stride: Start-to-start distance of the windows of a sequence (default T: no overlap).
        motion_prefix: Keep only sequences whose frames' actions start with this (the
            generator labels motions ``seq_<kind>``); None keeps every sequence.
        keys: Precomputed `frame_keys` (default: computed here).

    Attributes:
        clips: Per clip, its T dataset indices in frame order.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        clip_length: int,
        stride: int | None = None,
        motion_prefix: str | None = "seq_",
        keys: Sequence[FrameKey] | None = None,
    ) -> None:
        if clip_length < 1:
            raise ValueError("clip_length must be >= 1")
        stride = clip_length if stride is None else stride
        if stride < 1:
            raise ValueError("stride must be >= 1")
        self.dataset = dataset
        self.clip_length = clip_length
        keys = list(keys) if keys is not None else frame_keys(dataset)
        if len(keys) != len(dataset):
            raise ValueError(f"{len(keys)} keys for {len(dataset)} rows")
        by_seq: dict[str, dict[int, int]] = {}
        for idx, key in enumerate(keys):
            if motion_prefix is not None and not key.action.startswith(motion_prefix):
                continue
            frames = by_seq.setdefault(key.sequence_id, {})
            if key.frame_index in frames:
                logger.warning("sequence %s: frame %d repeats", key.sequence_id, key.frame_index)
                continue
            frames[key.frame_index] = idx
        self.clips: list[list[int]] = []
        for seq in sorted(by_seq):
            frames = by_seq[seq]
            order = sorted(frames)
            # Split into runs of consecutive frame indices, then window each run.
            runs, run = [], [order[0]]
            for f in order[1:]:
                if f == run[-1] + 1:
                    run.append(f)
                else:
                    runs.append(run)
                    run = [f]
            runs.append(run)
            for run in runs:
                for s in range(0, len(run) - clip_length + 1, stride):
                    self.clips.append([frames[f] for f in run[s : s + clip_length]])
        logger.info(
            "%d clips of %d frames from %d sequences", len(self.clips), clip_length, len(by_seq)
        )

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> list[Sample]:
        return [self.dataset[j] for j in self.clips[i]]

    @property
    def scene_points(self) -> Any:
        """The frame dataset's scene points (for `collate_clips`), when it has them."""
        return getattr(self.dataset, "scene_points", None)


@dataclass
class ClipBatch:
    """B clips of T frames as one `Batch` of B * T frames (clip-major rows).

    Attributes:
        frames: The frames; row ``b * T + t`` is frame t of clip b.
        clip_length: T.
    """

    frames: Batch
    clip_length: int

    @property
    def num_clips(self) -> int:
        """B."""
        return len(self.frames) // self.clip_length

    def __len__(self) -> int:
        return self.num_clips

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipBatch:
        """A copy with every tensor on ``device``."""
        return ClipBatch(self.frames.to(device, non_blocking), self.clip_length)


def collate_clips(
    clips: Sequence[Sequence[Sample]],
    scene_points: Sequence[PointSet] | Mapping[str, PointSet] | None = None,
    *,
    keep_images: bool = False,
) -> ClipBatch:
    """Stack B clips of T samples into a `ClipBatch`.

    Args:
        clips: B lists of T `Sample`s (all clips the same length).
        scene_points: Passed to `sahmr.data.collate.collate_samples` (a mapping is looked up
            per frame; a sequence must hold B * T sets).
        keep_images: Keep full-frame images.

    Returns:
        `ClipBatch`.

    Raises:
        ValueError: On an empty batch or clips of different lengths.
    """
    if not clips:
        raise ValueError("collate_clips needs at least one clip")
    T = len(clips[0])
    if any(len(c) != T for c in clips) or T == 0:
        raise ValueError(f"clips must share one positive length, got {[len(c) for c in clips]}")
    flat = [s for clip in clips for s in clip]
    return ClipBatch(collate_samples(flat, scene_points, keep_images=keep_images), T)

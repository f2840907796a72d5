"""Stacking `Sample`s into a `Batch` of tensors, with packed variable-length point sets.

Fixed-size fields are stacked along a new batch dimension B. Variable-length point sets
(contact points, scene points) are *packed*: concatenated into one (N, 3) tensor with a
``batch_idx`` (N,) int64 tensor giving each point's sample. This is the layout spconv
voxelisation expects: the ``[b, z, y, x]`` int32 voxel coordinates are built later by
prepending ``batch_idx`` to each point's voxel index.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sahmr.data.sample import Sample

logger = logging.getLogger(__name__)

PointSet = np.ndarray | Tensor


@dataclass
class Batch:
    """A batch of B frames; world/camera conventions as in `sahmr.data.sample.Sample`.

    Attributes:
        crop: Tensor (B, S, S, 3) uint8 RGB crops (channels last, unnormalised).
        bbox: Tensor (B, 4) float32 ``xyxy`` boxes, full-image pixels.
        K: Tensor (B, 3, 3) float32 full-image intrinsics.
        T_w2c: Tensor (B, 4, 4) float32 world -> camera transforms.
        image_size: Tensor (B, 2) int64 ``(W, H)``.
        frame_index: Tensor (B,) int64.
        occlusion: Tensor (B,) float32, NaN where unknown.
        scene_id, source, sequence_id, action: Lists of B strings.
        contact_points_world: Tensor (Nc, 3) float32, packed over the batch, world frame.
        contact_point_region: Tensor (Nc,) int64 region labels 0..7.
        contact_batch_idx: Tensor (Nc,) int64 sample index of each contact point.
        betas, global_orient, body_pose, transl: Tensors (B, 10), (B, 3), (B, 69), (B, 3)
            float32 SMPL parameters (world frame), or None when the samples carry none.
        vertices_world: Tensor (B, V, 3) float32 or None.
        joints_world: Tensor (B, 24, 3) float32 or None.
        vertex_contact: Tensor (B, V) int64 or None.
        scene_points: Tensor (Ns, 3) float32 packed scene points (world frame) or None.
        scene_batch_idx: Tensor (Ns,) int64 sample index of each scene point, or None.
        images: List of B (H_i, W_i, 3) uint8 arrays (sizes may differ) or None.
        extra: List of B per-sample ``extra`` dicts.
    """

    crop: Tensor
    bbox: Tensor
    K: Tensor
    T_w2c: Tensor
    image_size: Tensor
    frame_index: Tensor
    occlusion: Tensor
    scene_id: list[str]
    source: list[str]
    sequence_id: list[str]
    action: list[str]
    contact_points_world: Tensor
    contact_point_region: Tensor
    contact_batch_idx: Tensor
    betas: Tensor | None = None
    global_orient: Tensor | None = None
    body_pose: Tensor | None = None
    transl: Tensor | None = None
    vertices_world: Tensor | None = None
    joints_world: Tensor | None = None
    vertex_contact: Tensor | None = None
    scene_points: Tensor | None = None
    scene_batch_idx: Tensor | None = None
    images: list[np.ndarray] | None = None
    extra: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return int(self.crop.shape[0])

    @property
    def batch_size(self) -> int:
        """Number of frames B."""
        return len(self)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A new Batch with every tensor moved to ``device`` (lists and arrays untouched)."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                value = value.to(device, non_blocking=non_blocking)
            moved[f.name] = value
        return Batch(**moved)


def pack_point_sets(
    point_sets: Sequence[PointSet], *, name: str = "points"
) -> tuple[Tensor, Tensor]:
    """Concatenates per-sample point sets and records each point's sample index.

    Args:
        point_sets: B arrays/tensors of shape (N_i, 3) (N_i may be 0).
        name: Field name used in error messages.

    Returns:
        ``(points, batch_idx)``: Tensor (sum N_i, 3) float32 and Tensor (sum N_i,) int64.

    Raises:
        ValueError: If any set is not of shape (N_i, 3).
    """
    tensors = []
    for i, pts in enumerate(point_sets):
        t = torch.as_tensor(pts, dtype=torch.float32)
        if t.ndim != 2 or t.shape[1] != 3:
            raise ValueError(f"{name}[{i}] must have shape (N, 3), got {tuple(t.shape)}")
        tensors.append(t)
    counts = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
    points = torch.cat(tensors, 0) if tensors else torch.zeros((0, 3), dtype=torch.float32)
    batch_idx = torch.repeat_interleave(torch.arange(len(tensors), dtype=torch.int64), counts)
    return points, batch_idx


def unpack_point_sets(points: Tensor, batch_idx: Tensor, batch_size: int) -> list[Tensor]:
    """Inverse of `pack_point_sets`: splits packed points back into B sets.

    Args:
        points: Tensor (N, C) packed rows (any C).
        batch_idx: Tensor (N,) int64 sample index of each row, in [0, batch_size).
        batch_size: B.

    Returns:
        B tensors of shape (N_i, C), in their packed order.
    """
    return [points[batch_idx == b] for b in range(batch_size)]


def _stack_required(samples: Sequence[Sample], name: str, dtype: torch.dtype) -> Tensor:
    arrays = [getattr(s, name) for s in samples]
    shapes = {tuple(a.shape) for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"cannot stack Sample.{name}: shapes differ across the batch {shapes}")
    return torch.as_tensor(np.stack(arrays), dtype=dtype)


def _stack_optional(samples: Sequence[Sample], name: str, dtype: torch.dtype) -> Tensor | None:
    arrays = [getattr(s, name) for s in samples]
    missing = [i for i, a in enumerate(arrays) if a is None]
    if len(missing) == len(arrays):
        return None
    if missing:
        raise ValueError(
            f"Sample.{name} is None for samples {missing} but present for others; a batch "
            "must be uniform (filter or split mixed datasets before collating)"
        )
    return _stack_required(samples, name, dtype)


def collate_samples(
    samples: Sequence[Sample],
    scene_points: Sequence[PointSet] | Mapping[str, PointSet] | None = None,
    *,
    keep_images: bool = True,
) -> Batch:
    """Stacks samples into a `Batch`; packs contact points and (optionally) scene points.

    Args:
        samples: B >= 1 `Sample`s.
        scene_points: Either B arrays (N_i, 3) (world frame, one per sample), or a mapping
            ``scene_id -> (N, 3)`` array looked up by each sample's ``scene_id``, or None.
        keep_images: Whether to keep the full-frame images (as a list) when present.

    Returns:
        The `Batch`.

    Raises:
        ValueError: On an empty batch, shapes that differ across samples, optional fields
            present in only some samples, or scene points that do not match the samples.
        TypeError: If an element is not a `Sample`.
    """
    if len(samples) == 0:
        raise ValueError("collate_samples needs at least one sample")
    for i, s in enumerate(samples):
        if not isinstance(s, Sample):
            raise TypeError(f"samples[{i}] is a {type(s).__name__}, expected Sample")

    contact_points, contact_idx = pack_point_sets(
        [s.contact_points_world for s in samples], name="contact_points_world"
    )
    contact_region = torch.cat(
        [torch.as_tensor(s.contact_point_region, dtype=torch.int64) for s in samples]
    )

    packed_scene = packed_scene_idx = None
    if scene_points is not None:
        if isinstance(scene_points, Mapping):
            absent = sorted({s.scene_id for s in samples} - set(scene_points))
            if absent:
                raise ValueError(f"scene_points has no entry for scene_id(s) {absent}")
            per_sample = [scene_points[s.scene_id] for s in samples]
        else:
            per_sample = list(scene_points)
            if len(per_sample) != len(samples):
                raise ValueError(
                    f"scene_points has {len(per_sample)} sets for {len(samples)} samples"
                )
        packed_scene, packed_scene_idx = pack_point_sets(per_sample, name="scene_points")

    images = None
    if keep_images:
        present = [s.image is not None for s in samples]
        if all(present):
            images = [s.image for s in samples]
        elif any(present):
            logger.debug("dropping full images: only some samples carry one")

    return Batch(
        crop=_stack_required(samples, "crop", torch.uint8),
        bbox=_stack_required(samples, "bbox", torch.float32),
        K=_stack_required(samples, "K", torch.float32),
        T_w2c=_stack_required(samples, "T_w2c", torch.float32),
        image_size=_stack_required(samples, "image_size", torch.int64),
        frame_index=torch.tensor([s.frame_index for s in samples], dtype=torch.int64),
        occlusion=torch.tensor([s.occlusion for s in samples], dtype=torch.float32),
        scene_id=[s.scene_id for s in samples],
        source=[s.source for s in samples],
        sequence_id=[s.sequence_id for s in samples],
        action=[s.action for s in samples],
        contact_points_world=contact_points,
        contact_point_region=contact_region,
        contact_batch_idx=contact_idx,
        betas=_stack_optional(samples, "betas", torch.float32),
        global_orient=_stack_optional(samples, "global_orient", torch.float32),
        body_pose=_stack_optional(samples, "body_pose", torch.float32),
        transl=_stack_optional(samples, "transl", torch.float32),
        vertices_world=_stack_optional(samples, "vertices_world", torch.float32),
        joints_world=_stack_optional(samples, "joints_world", torch.float32),
        vertex_contact=_stack_optional(samples, "vertex_contact", torch.int64),
        scene_points=packed_scene,
        scene_batch_idx=packed_scene_idx,
        images=images,
        extra=[dict(s.extra) for s in samples],
    )

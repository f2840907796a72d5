"""Realistic model inputs for the benchmarks, built once and cycled to any batch size.

Two sources, both giving the exact tensors the methods see in evaluation:

* `bundled_frames`: the demo frames shipped with the bundled rooms (``scenes/<room>/demo``:
  a rendered 640x480 image of a placed body, its camera, person box and ground-truth body),
  cropped and frustum-cut as the demo does (`sahmr.inference.frames.frame_inputs_from_image`)
  against the room's 2 cm scene points;
* `dataset_frames`: frames of a synthetic dataset split through ``SyntheticDataset`` ->
  ``collate_samples`` -> ``prepare_inputs``.

Weights do not change speed, so random-init models on these inputs time like trained ones,
except for what depends on predictions: the number of ROI voxels (the RCNet's coarse root
decides where the ROI is) and of contact points (at most 500 per frame).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sahmr.records import FrameInputs
from sahmr.scene.frontend import SceneBank
from sahmr.scene.points import SCENE_VOXEL_SIZE_M

logger = logging.getLogger(__name__)

__all__ = ["BenchFrames", "bundled_frames", "concat_inputs", "dataset_frames", "take_frames"]


def take_frames(inputs: FrameInputs, indices: Sequence[int] | Tensor) -> FrameInputs:
    """Frames ``indices`` (repeats allowed) of a batch, scene points re-packed.

    Args:
        inputs: F frames.
        indices: B frame indices in ``[0, F)``.

    Returns:
        `FrameInputs` of B frames: frame ``j`` is ``inputs``' frame ``indices[j]``, its scene
        points (in their original order) tagged ``j``, packed by frame.
    """
    device = inputs.image.device
    idx = torch.as_tensor(indices, dtype=torch.int64, device=device).reshape(-1)
    pts = bidx = None
    if inputs.scene_points_cam is not None and inputs.scene_batch_idx is not None:
        src = inputs.scene_batch_idx.long()
        counts = torch.bincount(src, minlength=inputs.batch_size)
        starts = torch.cumsum(counts, 0) - counts
        order = torch.argsort(src, stable=True)  # rows grouped by frame, original order kept
        take = counts[idx]
        bidx = torch.repeat_interleave(torch.arange(idx.numel(), device=device), take)
        first = torch.cumsum(take, 0) - take
        offset = torch.arange(bidx.numel(), device=device) - first[bidx]
        pts = inputs.scene_points_cam[order[starts[idx][bidx] + offset]]
    return FrameInputs(
        image=inputs.image[idx],
        K_crop=inputs.K_crop[idx],
        K=inputs.K[idx],
        bbox=inputs.bbox[idx],
        T_w2c=inputs.T_w2c[idx],
        scene_points_cam=pts,
        scene_batch_idx=bidx,
    )


def concat_inputs(parts: Sequence[FrameInputs]) -> FrameInputs:
    """Frames of several `FrameInputs` in one batch (scene points re-packed by frame).

    Raises:
        ValueError: For no parts, or parts that disagree on having scene points.
    """
    if not parts:
        raise ValueError("concat_inputs needs at least one FrameInputs")
    with_scene = {p.scene_points_cam is not None for p in parts}
    if len(with_scene) != 1:
        raise ValueError("either every part or none has scene points")
    pts = bidx = None
    if with_scene.pop():
        offsets = np.cumsum([0] + [p.batch_size for p in parts[:-1]])
        pts = torch.cat([p.scene_points_cam for p in parts])
        bidx = torch.cat(
            [p.scene_batch_idx.long() + int(o) for p, o in zip(parts, offsets, strict=True)]
        )
    return FrameInputs(
        image=torch.cat([p.image for p in parts]),
        K_crop=torch.cat([p.K_crop for p in parts]),
        K=torch.cat([p.K for p in parts]),
        bbox=torch.cat([p.bbox for p in parts]),
        T_w2c=torch.cat([p.T_w2c for p in parts]),
        scene_points_cam=pts,
        scene_batch_idx=bidx,
    )


@dataclass
class BenchFrames:
    """F distinct frames, cycled to make batches.

    Attributes:
        inputs: `FrameInputs` of the F frames (with frustum scene points), on the device.
        keypoints2d_crop: Tensor (F, 24, 2) ground-truth SMPL joints projected into the crop,
            pixels of ``inputs.K_crop`` (the optimisation baseline's keypoints), or None.
        scene_ids: Scene of each frame.
        scene_dir: Folder where scene ``s`` has its mesh as ``<s>/mesh.*`` (for SDFs).
        bank: The scene points the frustum points were cut from (world frame).
        source: What the frames are, for reports.
    """

    inputs: FrameInputs
    keypoints2d_crop: Tensor | None
    scene_ids: list[str]
    scene_dir: Path
    bank: SceneBank
    source: str

    @property
    def num_frames(self) -> int:
        """F."""
        return self.inputs.batch_size

    def cycle(self, batch_size: int) -> list[int]:
        """Frame indices of a batch of ``batch_size``: 0, 1, ..., F-1, 0, 1, ..."""
        return [i % self.num_frames for i in range(batch_size)]

    def batch(self, batch_size: int) -> FrameInputs:
        """`FrameInputs` of ``batch_size`` frames (the F frames cycled)."""
        return take_frames(self.inputs, self.cycle(batch_size))

    def frame_scene(self, batch_size: int) -> list[str]:
        """Scene of each frame of `batch`."""
        return [self.scene_ids[i] for i in self.cycle(batch_size)]

    def frustum_points(self) -> list[int]:
        """Number of frustum scene points of each distinct frame."""
        if self.inputs.scene_batch_idx is None:
            return [0] * self.num_frames
        counts = torch.bincount(self.inputs.scene_batch_idx.long(), minlength=self.num_frames)
        return [int(c) for c in counts]


def _project_joints(joints_world: Tensor, T_w2c: Tensor, K_crop: Tensor) -> Tensor:
    from sahmr.geometry.cameras import project, transform_points

    return project(K_crop, transform_points(T_w2c, joints_world))


def bundled_frames(
    *,
    device: torch.device | str = "cpu",
    scene_voxel_size: float = SCENE_VOXEL_SIZE_M,
    cache_dir: str | Path | None = None,
    names: Sequence[str] | None = None,
) -> BenchFrames:
    """The demo frames of the bundled rooms as model inputs.

    Args:
        device: Where the inputs go.
        scene_voxel_size: Scene point spacing, metres (the models are trained on 2 cm).
        cache_dir: Cache root of the down-sampled scene points (see
            `sahmr.inference.scene.load_scene_data`).
        names: Frames to use as ``"<room>/<frame>"`` (e.g. ``"living_room/stand"``); default
            every demo frame of every bundled room.

    Returns:
        `BenchFrames`.

    Raises:
        FileNotFoundError: If no demo frame is found.
    """
    from sahmr.body import BodyModel
    from sahmr.inference.camera_io import load_camera, read_bbox_file
    from sahmr.inference.frames import frame_inputs_from_image
    from sahmr.inference.images import read_image
    from sahmr.inference.scene import load_scene_data
    from sahmr.synth.bundled import list_bundled_scenes, scenes_root

    root = scenes_root()
    found: list[tuple[str, Path]] = []
    for scene in list_bundled_scenes():
        for cam in sorted((root / scene / "demo").glob("*.camera.json")):
            frame = cam.name[: -len(".camera.json")]
            if names is None or f"{scene}/{frame}" in names:
                found.append((scene, cam.parent / frame))
    if not found:
        raise FileNotFoundError(f"no bundled demo frames under {root} (asked for {names})")
    scenes = sorted({s for s, _ in found})
    data = {
        s: load_scene_data(root / s / "mesh.ply", name=s, voxel_size=scene_voxel_size,
                           cache_dir=cache_dir)
        for s in scenes
    }  # fmt: skip
    bank = SceneBank({s: d.points_world for s, d in data.items()}, device)
    body = BodyModel()
    parts, keypoints, scene_ids = [], [], []
    for scene, stem in found:
        camera = load_camera(stem.with_name(stem.name + ".camera.json"))
        bbox = read_bbox_file(stem.with_name(stem.name + ".bbox.json"))
        image = read_image(stem.with_name(stem.name + ".jpg"), mirrored=camera.mirrored_images)
        inputs = frame_inputs_from_image(image, bbox, camera.K, camera.T_w2c, bank, scene,
                                         device=device)  # fmt: skip
        parts.append(inputs)
        scene_ids.append(scene)
        with np.load(stem.with_name(stem.name + ".gt.npz"), allow_pickle=False) as gt:
            params = {k: torch.as_tensor(gt[k], dtype=torch.float32)[None]
                      for k in ("betas", "global_orient", "body_pose", "transl")}  # fmt: skip
        with torch.no_grad():
            joints = body(**params).joints.to(device)
        keypoints.append(_project_joints(joints, inputs.T_w2c, inputs.K_crop))
    source = "bundled demo frames " + ", ".join(f"{s}/{p.name}" for s, p in found)
    logger.info("%s; %g m scene points", source, scene_voxel_size)
    return BenchFrames(
        inputs=concat_inputs(parts),
        keypoints2d_crop=torch.cat(keypoints),
        scene_ids=scene_ids,
        scene_dir=root,
        bank=bank,
        source=source,
    )


def dataset_frames(
    root: str | Path,
    split: str = "test",
    *,
    device: torch.device | str = "cpu",
    max_frames: int = 256,
) -> BenchFrames:
    """Frames of a synthetic dataset split as model inputs (evenly spaced over the split).

    Args:
        root: Dataset folder (``dataset.json``, ``shards/``, ``rooms/``).
        split: Split name.
        device: Where the inputs go.
        max_frames: Most distinct frames loaded.

    Returns:
        `BenchFrames`.

    Raises:
        ValueError: If the split has no frames.
    """
    from sahmr.data.collate import collate_samples
    from sahmr.data.prepare import prepare_inputs
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.scene.frontend import crop_intrinsics

    root = Path(root)
    ds = SyntheticDataset(root, split)
    if len(ds) == 0:
        raise ValueError(f"{root}: split {split!r} has no frames")
    n = min(int(max_frames), len(ds))
    indices = np.unique(np.linspace(0, len(ds) - 1, n).round().astype(int)).tolist()
    batch = collate_samples([ds[i] for i in indices], keep_images=False)
    scene_ids = list(batch.scene_id)
    bank = SceneBank({s: ds.scene_points[s] for s in sorted(set(scene_ids))}, device)
    inputs = prepare_inputs(batch, bank, device=device)
    keypoints = None
    if batch.joints_world is not None:
        K_crop = crop_intrinsics(batch.K.to(device), batch.bbox.to(device),
                                 int(batch.crop.shape[1]))  # fmt: skip
        keypoints = _project_joints(batch.joints_world.to(device), batch.T_w2c.to(device), K_crop)
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    source = f"{len(indices)} frames of {root.name}/{split} (format {meta.get('format')})"
    return BenchFrames(
        inputs=inputs,
        keypoints2d_crop=keypoints,
        scene_ids=scene_ids,
        scene_dir=root / "rooms",
        bank=bank,
        source=source,
    )

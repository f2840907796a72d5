"""The scene front end: what a model reads of one frame, from its image, box, camera and scan.

The image is cut to a square crop around the person's box (`CROP_BBOX_SCALE`), normalised with
ImageNet's mean and standard deviation, and given its own intrinsics (`crop_intrinsics`); the
scan's points inside the box's frustum (`FRUSTUM_NEAR_M` .. `FRUSTUM_FAR_M`) are taken into the
camera frame (`sahmr.scene.frustum.frustum_crop`), packed over the batch. `build_inputs` gives
the `sahmr.records.FrameInputs` every model reads; `sahmr.data.prepare.prepare_inputs` calls it
on a collated batch, the inference pipeline on one full image. RCNet voxelises these points
itself (`sahmr.scene.voxels`), at its own voxel size.

Frames follow docs/design.md: world = the scan, camera = OpenCV, metres, ``T_w2c`` world -> camera.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from sahmr.geometry.crops import DEFAULT_CROP_SIZE, crop_camera, square_bbox
from sahmr.records import FrameInputs
from sahmr.scene.frustum import frustum_crop

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""RGB mean the crops are normalised with (the convention of torchvision/timm backbones)."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""RGB standard deviation the crops are normalised with."""
CROP_BBOX_SCALE = 1.2
"""Square-box enlargement used to cut the crop (must match the dataset's crops)."""
FRUSTUM_NEAR_M = 0.5
"""Nearest scene depth kept in the bbox frustum, metres (DESIGN.md)."""
FRUSTUM_FAR_M = 12.5
"""Farthest scene depth kept in the bbox frustum, metres (DESIGN.md)."""


class SceneBank:
    """Scene point clouds of several scenes, packed once on one device.

    Args:
        scenes: ``scene_id -> (N_s, 3)`` world-frame points (numpy or torch).
        device: Where the packed points live.
        max_points_per_scene: Random subset size per scene (None keeps all), seeded.
    """

    def __init__(
        self,
        scenes: Mapping[str, np.ndarray | Tensor],
        device: torch.device | str = "cpu",
        *,
        max_points_per_scene: int | None = None,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        ids = sorted(scenes)
        chunks, owner = [], []
        for k, sid in enumerate(ids):
            pts = torch.as_tensor(np.asarray(scenes[sid]), dtype=torch.float32)
            if pts.ndim != 2 or pts.shape[1] != 3:
                raise ValueError(f"scene {sid!r}: points must be (N, 3), got {tuple(pts.shape)}")
            if max_points_per_scene is not None and pts.shape[0] > max_points_per_scene:
                keep = np.sort(rng.choice(pts.shape[0], max_points_per_scene, replace=False))
                pts = pts[torch.from_numpy(keep)]
            chunks.append(pts)
            owner.append(torch.full((pts.shape[0],), k, dtype=torch.int64))
        self.scene_ids: list[str] = ids
        self._index = {sid: k for k, sid in enumerate(ids)}
        empty = torch.zeros((0, 3))
        self.points_world = (torch.cat(chunks) if chunks else empty).to(device)
        self.point_scene = (torch.cat(owner) if owner else torch.zeros(0, dtype=torch.int64)).to(
            device
        )

    @property
    def device(self) -> torch.device:
        return self.points_world.device

    def __contains__(self, scene_id: str) -> bool:
        return scene_id in self._index

    def frame_scene(self, scene_ids: list[str]) -> Tensor:
        """Tensor (B,) int64 bank index of each frame's scene.

        Raises:
            KeyError: Naming scenes the bank does not hold.
        """
        absent = sorted({s for s in scene_ids if s not in self._index})
        if absent:
            raise KeyError(f"scene bank has no scene(s) {absent}; it holds {self.scene_ids}")
        return torch.tensor([self._index[s] for s in scene_ids], device=self.device)


def normalize_crop(crop: Tensor) -> Tensor:
    """uint8 (B, S, S, 3) RGB crops -> float32 (B, 3, S, S) ImageNet-normalised images."""
    x = crop.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def crop_intrinsics(K: Tensor, bbox: Tensor, crop_size: int = DEFAULT_CROP_SIZE) -> Tensor:
    """Tensor (B, 3, 3) intrinsics of the square crop around ``bbox`` (B, 4), see `square_bbox`."""
    return crop_camera(K, square_bbox(bbox, CROP_BBOX_SCALE), crop_size)


def build_inputs(
    crop: Tensor,
    K: Tensor,
    bbox: Tensor,
    T_w2c: Tensor,
    scenes: SceneBank | None,
    scene_ids: list[str],
    *,
    near: float = FRUSTUM_NEAR_M,
    far: float = FRUSTUM_FAR_M,
) -> FrameInputs:
    """`FrameInputs` from crops and cameras already on one device (see `prepare_inputs`).

    Args:
        crop: Tensor (B, S, S, 3) uint8 RGB crops of the square boxes around ``bbox``.
        K: Tensor (B, 3, 3) full-image intrinsics.
        bbox: Tensor (B, 4) person boxes, full-image pixels.
        T_w2c: Tensor (B, 4, 4) world -> camera.
        scenes: Scene points, or None for inputs without scene points.
        scene_ids: B scene names in ``scenes``.
        near: Nearest depth of the bbox frustum, metres.
        far: Farthest depth of the bbox frustum, metres.

    Returns:
        `FrameInputs` on the inputs' device.
    """
    pts = idx = None
    if scenes is not None:
        fr = frustum_crop(
            scenes.points_world,
            K,
            T_w2c,
            bbox,
            near,
            far,
            scene_idx=scenes.point_scene,
            frame_scene=scenes.frame_scene(scene_ids),
        )
        pts, idx = fr.points_cam, fr.batch_idx
    return FrameInputs(
        image=normalize_crop(crop),
        K_crop=crop_intrinsics(K, bbox, int(crop.shape[1])),
        K=K,
        bbox=bbox,
        T_w2c=T_w2c,
        scene_points_cam=pts,
        scene_batch_idx=idx,
    )

"""What every model reads and is trained against, built from a collated `Batch`.

Models never see a `Batch` directly: `prepare_inputs` turns one into `FrameInputs`
(normalised crop, crop camera, frustum scene points in each frame's camera frame) and
`prepare_targets` into `FrameTargets` (ground truth in the camera frame, at every mesh level).
Every method returns a `BodyPrediction` from ``predict`` so evaluation, the demo and the
benchmarks treat all methods alike.

Frames follow DESIGN.md: world = the scan, camera = OpenCV, metres, ``T_w2c`` world -> camera.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from sahmr.data.collate import Batch
from sahmr.geometry.cameras import invert_rigid, project, transform_points
from sahmr.geometry.crops import DEFAULT_CROP_SIZE, crop_camera, square_bbox
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


def _move(obj, device: torch.device | str, non_blocking: bool = False):
    """Copy of a dataclass with every Tensor field (and Tensors in list fields) moved."""
    moved = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, Tensor):
            v = v.to(device, non_blocking=non_blocking)
        elif isinstance(v, list) and v and isinstance(v[0], Tensor):
            v = [t.to(device, non_blocking=non_blocking) for t in v]
        moved[f.name] = v
    return type(obj)(**moved)


@dataclass
class FrameInputs:
    """Model inputs for B frames.

    Attributes:
        image: Tensor (B, 3, S, S) float32 crop, RGB, normalised with ImageNet mean/std.
        K_crop: Tensor (B, 3, 3) intrinsics of the crop (projecting with it gives crop
            pixels; S = 224 by default).
        K: Tensor (B, 3, 3) intrinsics of the full image.
        bbox: Tensor (B, 4) person box ``x0, y0, x1, y1``, full-image pixels.
        T_w2c: Tensor (B, 4, 4) world -> camera.
        scene_points_cam: Tensor (N, 3) scene points inside each frame's bbox frustum, in
            that frame's camera frame, packed over the batch (sorted by frame); None for
            image-only methods.
        scene_batch_idx: Tensor (N,) int64 frame of each scene point, or None.
    """

    image: Tensor
    K_crop: Tensor
    K: Tensor
    bbox: Tensor
    T_w2c: Tensor
    scene_points_cam: Tensor | None = None
    scene_batch_idx: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Number of frames B."""
        return int(self.image.shape[0])

    @property
    def crop_size(self) -> int:
        """Crop side S in pixels."""
        return int(self.image.shape[-1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FrameInputs:
        """A copy with every tensor on ``device``."""
        return _move(self, device, non_blocking)


@dataclass
class FrameTargets:
    """Ground truth for B frames, camera frame unless named otherwise, metres.

    Attributes:
        verts_cam: Tensor (B, V, 3) full-resolution vertices.
        verts_cam_levels: Per mesh level l, Tensor (B, V_l, 3) (level 0 = ``verts_cam``),
            down-sampled with the body topology.
        joints_cam: Tensor (B, 24, 3) SMPL joints.
        joints14_cam: Tensor (B, 14, 3) LSP-order joints regressed from the vertices.
        root_cam: Tensor (B, 3) root (pelvis, SMPL joint 0).
        joints2d_crop: Tensor (B, 24, 2) SMPL joints projected into the crop, pixels.
        joints14_2d_crop: Tensor (B, 14, 2) LSP joints projected into the crop, pixels.
        vertex_contact: Tensor (B, V) int64 contact region 0..7 per vertex, or None.
        contact_points_cam: Tensor (P, 3) scene points in contact, camera frame, packed.
        contact_point_region: Tensor (P,) int64 region 1..7 of each contact point.
        contact_batch_idx: Tensor (P,) int64 frame of each contact point.
        betas: Tensor (B, 10) or None.
        global_orient_cam: Tensor (B, 3) axis-angle root rotation in the camera frame, or
            None (the world-frame SMPL root rotation composed with ``T_w2c``).
        body_pose: Tensor (B, 69) axis-angle, or None.
        T_w2c: Tensor (B, 4, 4), copied from the batch for world-frame losses/metrics.
    """

    verts_cam: Tensor
    verts_cam_levels: list[Tensor]
    joints_cam: Tensor
    joints14_cam: Tensor
    root_cam: Tensor
    joints2d_crop: Tensor
    joints14_2d_crop: Tensor
    vertex_contact: Tensor | None
    contact_points_cam: Tensor
    contact_point_region: Tensor
    contact_batch_idx: Tensor
    betas: Tensor | None
    global_orient_cam: Tensor | None
    body_pose: Tensor | None
    T_w2c: Tensor

    @property
    def batch_size(self) -> int:
        """Number of frames B."""
        return int(self.verts_cam.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FrameTargets:
        """A copy with every tensor on ``device``."""
        return _move(self, device, non_blocking)


@dataclass
class BodyPrediction:
    """What every method predicts, in the camera frame (absolute, metres).

    Attributes:
        verts_cam: Tensor (B, V, 3) full-resolution vertices.
        joints_cam: Tensor (B, J, 3) joints the method regresses (24 SMPL or 14 LSP).
        root_cam: Tensor (B, 3) root position.
        contact_points_cam: Tensor (P, 3) predicted scene contact points (packed), or None.
        contact_point_region: Tensor (P,) int64 region 1..7, or None.
        contact_batch_idx: Tensor (P,) int64 frame of each contact point, or None.
        params: SMPL-format parameters in the camera frame (``betas`` (B, 10),
            ``global_orient`` (B, 3), ``body_pose`` (B, 69), ``transl`` (B, 3)) for methods
            that regress or fit them, else None.
    """

    verts_cam: Tensor
    joints_cam: Tensor
    root_cam: Tensor
    contact_points_cam: Tensor | None = None
    contact_point_region: Tensor | None = None
    contact_batch_idx: Tensor | None = None
    params: dict[str, Tensor] | None = None

    def verts_world(self, T_w2c: Tensor) -> Tensor:
        """Vertices in the world frame, Tensor (B, V, 3), given ``T_w2c`` (B, 4, 4)."""
        return transform_points(invert_rigid(T_w2c.to(self.verts_cam)), self.verts_cam)

    def to(self, device: torch.device | str) -> BodyPrediction:
        """A copy with every tensor on ``device``."""
        out = _move(self, device)
        if self.params is not None:
            out.params = {k: v.to(device) for k, v in self.params.items()}
        return out


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
        self.point_scene = (
            torch.cat(owner) if owner else torch.zeros(0, dtype=torch.int64)
        ).to(device)

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


def prepare_inputs(
    batch: Batch,
    scenes: SceneBank | None = None,
    *,
    device: torch.device | str | None = None,
    near: float = FRUSTUM_NEAR_M,
    far: float = FRUSTUM_FAR_M,
) -> FrameInputs:
    """Model inputs for a batch: normalised crops, crop cameras, frustum scene points.

    Args:
        batch: Collated frames (on any device).
        scenes: Scene points of the batch's scenes; None gives inputs without scene points
            (image-only methods).
        device: Where the inputs go (default: the bank's device, else the batch's).
        near: Nearest depth of the bbox frustum, metres.
        far: Farthest depth of the bbox frustum, metres.

    Returns:
        `FrameInputs` on ``device``.
    """
    if device is None:
        device = scenes.device if scenes is not None else batch.crop.device
    return build_inputs(
        batch.crop.to(device, non_blocking=True),
        batch.K.to(device),
        batch.bbox.to(device),
        batch.T_w2c.to(device),
        scenes,
        batch.scene_id,
        near=near,
        far=far,
    )


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


def prepare_targets(
    batch: Batch,
    topology,
    j14_regressor: Tensor,
    *,
    device: torch.device | str | None = None,
    crop_size: int = DEFAULT_CROP_SIZE,
) -> FrameTargets:
    """Camera-frame ground truth of a batch that carries vertices and joints.

    Args:
        batch: Collated frames with ``vertices_world`` and ``joints_world``.
        topology: The body model's `sahmr.body.topology.BodyTopology` (mesh levels).
        j14_regressor: Tensor (14, V) LSP-joint regressor (``topology.j_regressor_j14``).
        device: Where the targets go (default: the batch's device).
        crop_size: Crop side S in pixels.

    Returns:
        `FrameTargets` on ``device``.

    Raises:
        ValueError: If the batch carries no vertices or joints.
    """
    if batch.vertices_world is None or batch.joints_world is None:
        raise ValueError("targets need Batch.vertices_world and Batch.joints_world")
    device = device if device is not None else batch.crop.device
    T_w2c = batch.T_w2c.to(device)
    K_crop = crop_intrinsics(batch.K.to(device), batch.bbox.to(device), crop_size)
    verts_cam = transform_points(T_w2c, batch.vertices_world.to(device))
    joints_cam = transform_points(T_w2c, batch.joints_world.to(device))
    levels = [verts_cam] + [
        topology.downsample(verts_cam, lv) for lv in range(1, topology.num_levels)
    ]
    reg = j14_regressor.to(device=device, dtype=verts_cam.dtype)
    joints14_cam = torch.einsum("jv,bvc->bjc", reg, verts_cam)
    P = batch.contact_points_world.shape[0]
    cidx = batch.contact_batch_idx.to(device)
    cpts = batch.contact_points_world.to(device)
    contact_cam = (
        transform_points(T_w2c[cidx], cpts[:, None, :])[:, 0] if P else cpts.new_zeros(0, 3)
    )
    orient_cam = None
    if batch.global_orient is not None:
        from sahmr.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

        R = T_w2c[:, :3, :3] @ axis_angle_to_matrix(batch.global_orient.to(device))
        orient_cam = matrix_to_axis_angle(R)

    def opt(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.to(device)

    return FrameTargets(
        verts_cam=verts_cam,
        verts_cam_levels=levels,
        joints_cam=joints_cam,
        joints14_cam=joints14_cam,
        root_cam=joints_cam[:, 0],
        joints2d_crop=project(K_crop, joints_cam),
        joints14_2d_crop=project(K_crop, joints14_cam),
        vertex_contact=opt(batch.vertex_contact),
        contact_points_cam=contact_cam,
        contact_point_region=batch.contact_point_region.to(device),
        contact_batch_idx=cidx,
        betas=opt(batch.betas),
        global_orient_cam=orient_cam,
        body_pose=opt(batch.body_pose),
        T_w2c=T_w2c,
    )

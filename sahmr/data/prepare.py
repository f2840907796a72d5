"""From a collated `Batch` to what a model reads and is trained against.

`prepare_inputs` runs the scene front end (`sahmr.scene.frontend.build_inputs`) on a batch;
`prepare_targets` takes its ground truth into the camera frame at every mesh level
(`sahmr.records.FrameTargets`). The in-memory path (`sahmr.data.memory`) builds the same records
from its cache.

Frames follow docs/design.md: world = the scan, camera = OpenCV, metres, ``T_w2c`` world -> camera.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sahmr.data.collate import Batch
from sahmr.geometry.cameras import project, transform_points
from sahmr.geometry.crops import DEFAULT_CROP_SIZE
from sahmr.records import FrameInputs, FrameTargets
from sahmr.scene.frontend import (
    FRUSTUM_FAR_M,
    FRUSTUM_NEAR_M,
    SceneBank,
    build_inputs,
    crop_intrinsics,
)


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

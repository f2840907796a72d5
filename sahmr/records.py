"""The typed records every stage hands the next: model inputs, ground truth, predictions, losses.

`FrameInputs` is what a model reads of B frames (built by the scene front end,
`sahmr.scene.frontend`), `FrameTargets` the ground truth it is trained and scored against
(`sahmr.data.prepare`), `BodyPrediction` what every method returns from ``predict`` (so the
evaluator, the demo and the benchmarks treat all methods alike) and `LossOutput` what every loss
returns. They sit below every package that passes them on (docs/design.md, "Layers").

Frames follow docs/design.md: world = the scan, camera = OpenCV, metres, ``T_w2c`` world -> camera.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import torch
from torch import Tensor

from sahmr.geometry.cameras import invert_rigid, transform_points

__all__ = [
    "BodyPrediction",
    "FrameInputs",
    "FrameTargets",
    "LossOutput",
    "RootContacts",
    "frame_name",
]


def frame_name(split: str, index: int) -> str:
    """Name of dataset frame ``index`` of ``split`` (``test-000012``): the name predictions are
    saved and scored under (`sahmr.engine.validation`, `sahmr.evaluation.readers`, the tools)."""
    return f"{split}-{index:06d}"


def _move(obj, device: torch.device | str, non_blocking: bool = False):
    """Copy of a dataclass with every Tensor field (and Tensors in list fields, and nested
    dataclass records) moved."""
    moved = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, Tensor):
            v = v.to(device, non_blocking=non_blocking)
        elif is_dataclass(v) and not isinstance(v, type):
            v = _move(v, device, non_blocking)
        elif isinstance(v, list) and v and isinstance(v[0], Tensor):
            v = [t.to(device, non_blocking=non_blocking) for t in v]
        moved[f.name] = v
    return type(obj)(**moved)


@dataclass
class RootContacts:
    """A root and scene contacts of B frames, camera frame, metres: what SA-HMR's mesh network
    is given (by RCNet at test time).

    Attributes:
        root_cam: Tensor (B, 3) root (pelvis).
        contact_points_cam: Tensor (P, 3) contact scene points, packed over the batch.
        contact_point_region: Tensor (P,) int64 body region 1..7 of each point.
        contact_batch_idx: Tensor (P,) int64 frame of each point.
    """

    root_cam: Tensor
    contact_points_cam: Tensor
    contact_point_region: Tensor
    contact_batch_idx: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> RootContacts:
        """A copy with every tensor on ``device``."""
        return _move(self, device, non_blocking)


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
        rcnet_given: A frozen RCNet's `RootContacts` of these frames computed beforehand
            (`sahmr.engine.rcnet_store`: once per training sample), used by SA-HMR instead of
            running RCNet; None (the default) runs it.
    """

    image: Tensor
    K_crop: Tensor
    K: Tensor
    bbox: Tensor
    T_w2c: Tensor
    scene_points_cam: Tensor | None = None
    scene_batch_idx: Tensor | None = None
    rcnet_given: RootContacts | None = None

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
        scene_sdf: Each frame's room SDF (`sahmr.scene.sdf_store.FrameSDFs`, world frame) for
            a scene penetration term, or None (the in-memory loader with
            ``loader.scene_sdf=true`` sets it).
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
    scene_sdf: Any = None

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

    def vertices_world(self, T_w2c: Tensor) -> Tensor:
        """Vertices in the world frame, Tensor (B, V, 3), given ``T_w2c`` (B, 4, 4)."""
        return transform_points(invert_rigid(T_w2c.to(self.verts_cam)), self.verts_cam)

    def to(self, device: torch.device | str) -> BodyPrediction:
        """A copy with every tensor on ``device``."""
        out = _move(self, device)
        if self.params is not None:
            out.params = {k: v.to(device) for k, v in self.params.items()}
        return out

    def translated(self, shift_cam: Tensor) -> BodyPrediction:
        """A copy with each frame's body moved rigidly by ``shift_cam``.

        Vertices, joints, root and the parameters' ``transl`` (an SMPL body's vertices move
        with it one to one) move together. The predicted scene contact points stay: they are
        points of the scan (where the method thinks the body touches it), not of the body.

        Args:
            shift_cam: Tensor (B, 3), camera frame, metres.
        """
        shift = shift_cam.to(self.verts_cam)
        params = self.params
        if params is not None and "transl" in params:
            params = {**params, "transl": params["transl"] + shift.to(params["transl"])}
        return BodyPrediction(
            verts_cam=self.verts_cam + shift[:, None],
            joints_cam=self.joints_cam + shift.to(self.joints_cam)[:, None],
            root_cam=self.root_cam + shift.to(self.root_cam),
            contact_points_cam=self.contact_points_cam,
            contact_point_region=self.contact_point_region,
            contact_batch_idx=self.contact_batch_idx,
            params=params,
        )


@dataclass
class LossOutput:
    """A weighted total loss and its named, already weighted terms.

    Attributes:
        total: Scalar tensor to back-propagate.
        terms: Named scalar tensors (weighted) that sum to `total`; logged per step.
    """

    total: Tensor
    terms: dict[str, Tensor]

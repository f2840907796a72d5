"""Losses of the mesh-regressing transformers: METRO and SA-HMR's mesh network.

All 3-D terms are L1 (mean absolute error per coordinate, metres) in the camera frame.
Root-relative targets subtract ``targets.root_cam`` (SMPL pelvis). Every term is reported
already weighted, and the terms sum to the total.

Terms (``w_*`` the keyword weights):

* ``verts_l{k}``: root-relative vertices of mesh level k (0 = full) against
  ``targets.verts_cam_levels[k] - root``, each weighted ``vertices / num_levels``;
* ``joints3d``: root-relative J14 joints of the joint tokens against ``targets.joints14_cam``;
* ``joints3d_reg``: J14 joints regressed from the predicted full mesh, same target;
* ``joints2d`` (METRO): weak-perspective projections of both joint sets against
  ``targets.joints14_2d_crop`` mapped to crop-normalised [-1, 1];
* ``verts_abs`` (SA-HMR): absolute camera-frame vertices (root-relative mesh + the root it was
  placed at) against ``targets.verts_cam``;
* ``scene_recon`` (SA-HMR): scene-token reconstructions against the ground-truth contact points
  they were drawn from, relative to the ground-truth root (teacher forcing only: without
  ``contact_gt_index`` or with no points the term is 0);
* ``rc/<name>`` (SA-HMR, optional): the terms of an RCNet loss on ``output.rc`` when given.

With a parametric head (``output.body`` not None), `ParamTerms` adds:

* ``param_rot``: the 24 predicted rotation matrices (global orientation in camera axes + joint
  rotations) against the ground truth's, L1 per matrix entry (only where ``targets.betas`` /
  ``global_orient_cam`` / ``body_pose`` exist);
* ``param_betas``: shape coefficients, L1;
* ``param_verts`` / ``param_joints3d``: root-relative vertices and J14 joints of the posed body;
* ``param_verts_abs`` (SA-HMR): mean Euclidean distance of the placed body's vertices to the
  ground truth - a distance, so the camera-frame and world-frame terms are the same number;
* ``param_joints2d`` (METRO): weak-perspective projections of the body's J14 joints;
* ``scene_penetration`` (SA-HMR, optional): the mean over frames and vertices of
  ``relu(-sdf)`` (metres) of the placed body in its room (``targets.scene_sdf``, the
  generator's grid of the room, `sahmr.scene.sdf_store`): vertices inside the scan pull out,
  vertices outside add nothing (the ground truth's contacts sit at ``sdf`` about 0);
* ``edge`` / ``normal`` on the free-form full mesh: edge-length error in metres (absolute:
  a relative error divides by the body's sub-millimetre sliver edges and explodes - it did,
  in the first GPU run) and ``1 - cos`` between predicted and ground-truth face normals over
  faces of at least `MIN_FACE_DOUBLE_AREA`, which keep the free-form mesh (the parametric
  head's input) surface-like.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sahmr.geometry.cameras import camera_to_world
from sahmr.geometry.rotations import axis_angle_to_matrix
from sahmr.models.metro import crop_to_normalized, weak_perspective
from sahmr.models.param_head import BodyParams
from sahmr.records import FrameTargets, LossOutput
from sahmr.scene.sdf_store import sample_frames


def _l1(pred: Tensor, target: Tensor) -> Tensor:
    return (pred.float() - target.float()).abs().mean()


def _shape_terms(
    output: Any,
    targets: FrameTargets,
    *,
    vertices: float,
    joints3d: float,
    joints3d_reg: float,
) -> dict[str, Tensor]:
    """Weighted root-relative vertex and joint terms shared by both losses."""
    root = targets.root_cam[:, None]
    levels_pred = output.verts_rel_levels[::-1]  # fine -> coarse, like the targets
    if len(levels_pred) != len(targets.verts_cam_levels):
        raise ValueError(
            f"{len(levels_pred)} predicted mesh levels, {len(targets.verts_cam_levels)} targets"
        )
    terms = {}
    for k, (pred, gt) in enumerate(zip(levels_pred, targets.verts_cam_levels)):
        terms[f"verts_l{k}"] = vertices / len(levels_pred) * _l1(pred, gt - root)
    joints_gt = targets.joints14_cam - root
    terms["joints3d"] = joints3d * _l1(output.joints14_rel, joints_gt)
    terms["joints3d_reg"] = joints3d_reg * _l1(output.joints14_from_verts_rel, joints_gt)
    return terms


def target_rotmats(targets: FrameTargets) -> Tensor | None:
    """Tensor (B, 24, 3, 3) ground-truth rotations (global orientation in camera axes first),
    or None when the targets carry no body-model parameters."""
    if targets.global_orient_cam is None or targets.body_pose is None:
        return None
    b = targets.body_pose.shape[0]
    aa = torch.cat(
        [targets.global_orient_cam.reshape(b, 1, 3), targets.body_pose.reshape(b, -1, 3)], dim=1
    )
    return axis_angle_to_matrix(aa.float())


MIN_FACE_DOUBLE_AREA = 1.0e-6
"""Faces whose ground-truth ``|e1 x e2|`` (twice the area, m^2) is below this carry no normal
term: sliver faces have ill-defined normals with huge gradients."""


def edge_length_l1(verts: Tensor, verts_gt: Tensor, faces: Tensor) -> Tensor:
    """Mean absolute edge-length difference ``|l_pred - l_gt|`` over the faces' edges, metres.

    Args:
        verts: Tensor (B, V, 3) predicted mesh.
        verts_gt: Tensor (B, V, 3) ground-truth mesh, same topology.
        faces: Tensor (F, 3) int64.

    Returns:
        Scalar Tensor, metres.
    """
    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)

    def lengths(v: Tensor) -> Tensor:
        return (v[:, edges[:, 0]] - v[:, edges[:, 1]]).float().norm(dim=-1)

    return (lengths(verts) - lengths(verts_gt)).abs().mean()


def face_cross(verts: Tensor, faces: Tensor) -> Tensor:
    """Tensor (B, F, 3) ``(v1 - v0) x (v2 - v0)`` per face (normal times twice the area)."""
    tri = verts[:, faces].float()
    return torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)


def normal_error(verts: Tensor, verts_gt: Tensor, faces: Tensor) -> Tensor:
    """Mean ``1 - cos`` between predicted and ground-truth face normals over the faces whose
    ground truth is not a sliver (`MIN_FACE_DOUBLE_AREA`); scalar Tensor in [0, 2]."""
    gt = face_cross(verts_gt, faces)
    keep = gt.norm(dim=-1) >= MIN_FACE_DOUBLE_AREA
    n_gt = torch.nn.functional.normalize(gt, dim=-1)
    n_pred = torch.nn.functional.normalize(face_cross(verts, faces), dim=-1, eps=1e-6)
    cos = (n_pred * n_gt).sum(-1)
    return ((1.0 - cos) * keep).sum() / keep.sum().clamp_min(1)


class ParamTerms(nn.Module):
    """Parametric-body and surface-quality terms shared by METRO's and SA-HMR's losses.

    Args:
        rot: Weight of the rotation-matrix term.
        betas: Weight of the shape-coefficient term.
        verts: Weight of the root-relative vertex term of the posed body.
        joints3d: Weight of its root-relative J14 joint term.
        verts_abs: Weight of the placed body's vertex distance (SA-HMR).
        joints2d: Weight of its 2-D J14 term (METRO).
        edge: Weight of the free-form mesh's edge-length error (metres).
        normal: Weight of the free-form mesh's face-normal term.
        penetration: Weight of the placed body's mean depth in the room (per metre; SA-HMR,
            needs ``targets.scene_sdf``: ``loader.scene_sdf=true``). 0: off.
    """

    def __init__(
        self,
        *,
        rot: float = 1.0,
        betas: float = 0.05,
        verts: float = 1.0,
        joints3d: float = 1.0,
        verts_abs: float = 1.0,
        joints2d: float = 0.5,
        edge: float = 1.0,
        normal: float = 0.02,
        penetration: float = 0.0,
    ) -> None:
        super().__init__()
        if penetration < 0:
            raise ValueError(f"penetration weight must be >= 0, got {penetration}")
        self.penetration = float(penetration)
        self.rot, self.betas = float(rot), float(betas)
        self.verts, self.joints3d = float(verts), float(joints3d)
        self.verts_abs, self.joints2d = float(verts_abs), float(joints2d)
        self.edge, self.normal = float(edge), float(normal)

    def forward(
        self,
        output: Any,
        targets: FrameTargets,
        *,
        root_used: Tensor | None = None,
        cam: Tensor | None = None,
        crop_size: int | None = None,
    ) -> dict[str, Tensor]:
        """Weighted terms (empty without ``output.body`` and faces).

        Args:
            output: A mesh network output with ``body`` (`BodyParams` or None), ``faces``
                and ``verts_rel_levels``.
            targets: Ground truth.
            root_used: Tensor (B, 3) where the body is placed (SA-HMR) for ``param_verts_abs``.
            cam: Tensor (B, 3) weak-perspective camera (METRO) for ``param_joints2d``.
            crop_size: Crop side S for ``param_joints2d``.
        """
        terms: dict[str, Tensor] = {}
        faces = getattr(output, "faces", None)
        if faces is not None and (self.edge > 0 or self.normal > 0):
            free = output.verts_rel_levels[-1]
            gt = targets.verts_cam
            terms["edge"] = self.edge * edge_length_l1(free, gt, faces)
            terms["normal"] = self.normal * normal_error(free, gt, faces)
        body: BodyParams | None = getattr(output, "body", None)
        if body is None:
            return terms
        root = targets.root_cam[:, None]
        terms["param_verts"] = self.verts * _l1(body.verts_rel, targets.verts_cam - root)
        joints_gt = targets.joints14_cam - root
        terms["param_joints3d"] = self.joints3d * _l1(body.joints14_rel, joints_gt)
        rot_gt = target_rotmats(targets)
        if rot_gt is not None:
            terms["param_rot"] = self.rot * _l1(body.rotmats, rot_gt)
        if targets.betas is not None:
            nb = min(body.betas.shape[-1], targets.betas.shape[-1])
            terms["param_betas"] = self.betas * _l1(body.betas[:, :nb], targets.betas[:, :nb])
        if root_used is not None:
            placed = body.verts_rel + root_used[:, None].to(body.verts_rel)
            dist = (placed.float() - targets.verts_cam.float()).norm(dim=-1)
            terms["param_verts_abs"] = self.verts_abs * dist.mean()
            if self.penetration > 0:
                depth = scene_depth(placed.float(), targets)
                terms["scene_penetration"] = self.penetration * depth.mean()
        if cam is not None and crop_size is not None:
            gt2d = crop_to_normalized(targets.joints14_2d_crop, crop_size)
            pred2d = weak_perspective(body.joints14_rel, cam)
            terms["param_joints2d"] = self.joints2d * _l1(pred2d, gt2d)
        return terms


def scene_depth(verts_cam: Tensor, targets: FrameTargets) -> Tensor:
    """Tensor (B, V): depth (metres, ``relu(-sdf)``) of camera-frame vertices (B, V, 3) in
    each frame's room (``targets.scene_sdf`` and ``targets.T_w2c``).

    Raises:
        ValueError: The targets carry no rooms (train with ``loader.scene_sdf=true``).
    """
    if targets.scene_sdf is None:
        raise ValueError("the scene penetration term needs each frame's room: train with "
                         "loader=memory and loader.scene_sdf=true")  # fmt: skip
    with torch.autocast(verts_cam.device.type, enabled=False):  # world metres need float32
        verts = verts_cam.float()
        verts_world = camera_to_world(targets.T_w2c.to(verts.device, verts.dtype), verts)
        return torch.relu(-sample_frames(verts_world, targets.scene_sdf))


def _total(terms: dict[str, Tensor]) -> LossOutput:
    return LossOutput(total=torch.stack(list(terms.values())).sum(), terms=terms)


class MetroLoss(nn.Module):
    """METRO's training loss (see the module docstring for the terms).

    Args:
        vertices: Weight of the vertex terms (split evenly over the mesh levels).
        joints3d: Weight of the token-joint term.
        joints3d_reg: Weight of the mesh-regressed-joint term.
        joints2d: Weight of the 2-D reprojection term (crop-normalised units).
        param_terms: Terms of the parametric body and the free-form surface (`ParamTerms`);
            None: the defaults.
    """

    def __init__(
        self,
        *,
        vertices: float = 1.0,
        joints3d: float = 1.0,
        joints3d_reg: float = 1.0,
        joints2d: float = 0.5,
        param_terms: ParamTerms | None = None,
    ) -> None:
        super().__init__()
        self.vertices = float(vertices)
        self.joints3d = float(joints3d)
        self.joints3d_reg = float(joints3d_reg)
        self.joints2d = float(joints2d)
        self.param_terms = param_terms if param_terms is not None else ParamTerms()

    def forward(self, output: Any, targets: FrameTargets) -> LossOutput:
        """Args: output a `sahmr.models.metro.MetroOutput`; targets the frames' ground truth.

        Returns:
            `LossOutput` with the terms ``verts_l*``, ``joints3d``, ``joints3d_reg``,
            ``joints2d``.
        """
        terms = _shape_terms(
            output, targets, vertices=self.vertices, joints3d=self.joints3d,
            joints3d_reg=self.joints3d_reg,
        )  # fmt: skip
        gt2d = crop_to_normalized(targets.joints14_2d_crop, output.crop_size)
        pred2d = torch.cat(
            [
                weak_perspective(output.joints14_rel, output.cam),
                weak_perspective(output.joints14_from_verts_rel, output.cam),
            ],
            dim=1,
        )
        terms["joints2d"] = self.joints2d * _l1(pred2d, torch.cat([gt2d, gt2d], dim=1))
        terms.update(
            self.param_terms(output, targets, cam=output.cam, crop_size=output.crop_size)
        )
        return _total(terms)


class SAHMRLoss(nn.Module):
    """SA-HMR's mesh-network loss, optionally plus an RCNet loss for joint training.

    Args:
        vertices: Weight of the root-relative vertex terms (split over the mesh levels).
        joints3d: Weight of the token-joint term.
        joints3d_reg: Weight of the mesh-regressed-joint term.
        verts_abs: Weight of the absolute camera-frame vertex term.
        scene_recon: Weight of the scene-token reconstruction term.
        rcnet_loss: A loss ``(rc_output, targets) -> LossOutput`` applied to ``output.rc``
            when RCNet ran (e.g. `sahmr.losses.rcnet.RCNetLoss`); its terms are added with the
            prefix ``rc/``. None ignores ``output.rc``.
        param_terms: Terms of the parametric body and the free-form surface (`ParamTerms`);
            None: the defaults.
    """

    def __init__(
        self,
        *,
        vertices: float = 1.0,
        joints3d: float = 1.0,
        joints3d_reg: float = 1.0,
        verts_abs: float = 1.0,
        scene_recon: float = 0.5,
        rcnet_loss: nn.Module | None = None,
        param_terms: ParamTerms | None = None,
    ) -> None:
        super().__init__()
        self.vertices = float(vertices)
        self.joints3d = float(joints3d)
        self.joints3d_reg = float(joints3d_reg)
        self.verts_abs = float(verts_abs)
        self.scene_recon = float(scene_recon)
        self.rcnet_loss = rcnet_loss
        self.param_terms = param_terms if param_terms is not None else ParamTerms()

    def forward(self, output: Any, targets: FrameTargets) -> LossOutput:
        """Args: output a `sahmr.models.sahmr.SAHMROutput`; targets the frames' ground truth.

        Returns:
            `LossOutput` with the terms ``verts_l*``, ``joints3d``, ``joints3d_reg``,
            ``verts_abs``, ``scene_recon`` and ``rc/*``.
        """
        terms = _shape_terms(
            output, targets, vertices=self.vertices, joints3d=self.joints3d,
            joints3d_reg=self.joints3d_reg,
        )  # fmt: skip
        terms["verts_abs"] = self.verts_abs * _l1(output.verts_cam, targets.verts_cam)
        idx = output.contact_gt_index
        if idx is not None and idx.numel() > 0:
            gt = targets.contact_points_cam[idx] - targets.root_cam[targets.contact_batch_idx[idx]]
            terms["scene_recon"] = self.scene_recon * _l1(output.scene_recon, gt)
        else:
            terms["scene_recon"] = output.scene_recon.float().sum() * 0.0
        terms.update(self.param_terms(output, targets, root_used=output.root_cam))
        if self.rcnet_loss is not None and output.rc is not None:
            rc = self.rcnet_loss(output.rc, targets)
            terms.update({f"rc/{k}": v for k, v in rc.terms.items()})
            if not rc.terms:
                terms["rc/total"] = rc.total
        return _total(terms)

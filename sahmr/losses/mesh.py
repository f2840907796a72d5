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
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sahmr.losses.base import LossOutput
from sahmr.models.inputs import FrameTargets
from sahmr.models.metro import crop_to_normalized, weak_perspective


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


def _total(terms: dict[str, Tensor]) -> LossOutput:
    return LossOutput(total=torch.stack(list(terms.values())).sum(), terms=terms)


class MetroLoss(nn.Module):
    """METRO's training loss (see the module docstring for the terms).

    Args:
        vertices: Weight of the vertex terms (split evenly over the mesh levels).
        joints3d: Weight of the token-joint term.
        joints3d_reg: Weight of the mesh-regressed-joint term.
        joints2d: Weight of the 2-D reprojection term (crop-normalised units).
    """

    def __init__(
        self,
        *,
        vertices: float = 1.0,
        joints3d: float = 1.0,
        joints3d_reg: float = 1.0,
        joints2d: float = 0.5,
    ) -> None:
        super().__init__()
        self.vertices = float(vertices)
        self.joints3d = float(joints3d)
        self.joints3d_reg = float(joints3d_reg)
        self.joints2d = float(joints2d)

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
    ) -> None:
        super().__init__()
        self.vertices = float(vertices)
        self.joints3d = float(joints3d)
        self.joints3d_reg = float(joints3d_reg)
        self.verts_abs = float(verts_abs)
        self.scene_recon = float(scene_recon)
        self.rcnet_loss = rcnet_loss

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
        if self.rcnet_loss is not None and output.rc is not None:
            rc = self.rcnet_loss(output.rc, targets)
            terms.update({f"rc/{k}": v for k, v in rc.terms.items()})
            if not rc.terms:
                terms["rc/total"] = rc.total
        return _total(terms)

"""Losses of the parametric baselines: HMR, SPIN and VIBE (plus their adversarial terms).

All terms are means of squared errors, as in HMR/SPIN/VIBE:

* ``keypoints2d``: 2-D SMPL joints in crop-normalised coordinates (crop edges at +-1), the
  weak-perspective projection against the ground truth projected into the crop;
* ``keypoints3d``: pelvis-relative 3-D SMPL joints, metres (camera axes) — where labels exist;
* ``pose``: the 24 rotation matrices (root in the camera frame) against the ground truth;
* ``betas``: shape coefficients;
* ``camera``: SPIN's ``exp(-10 s)^2`` keeping the weak-perspective scale positive;
* ``adversarial``: the encoder's least-squares GAN loss ``sum_d mean_b (D_d(pred) - 1)^2``
  from the scores the model computed with its discriminator frozen (HMR);
* SPIN: ``fit_pose`` / ``fit_betas`` supervise with the in-the-loop fits where they are valid;
* VIBE: ``motion_adversarial`` on the motion discriminator's scores of the predicted clips.

Terms whose weight is zero, or whose labels are missing, are left out of ``LossOutput.terms``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from sahmr.geometry.rotations import axis_angle_to_matrix
from sahmr.models.discriminators import lsgan_generator_loss
from sahmr.models.hmr import HMROutput, crop_to_normalized
from sahmr.records import FrameTargets, LossOutput

if TYPE_CHECKING:
    from sahmr.models.spin import SPINOutput
    from sahmr.models.vibe import ClipTargets, VIBEOutput

__all__ = ["HMRLoss", "SPINLoss", "VIBELoss", "target_rotmats"]


def target_rotmats(targets: FrameTargets) -> Tensor | None:
    """Ground-truth rotations (B, 24, 3, 3), root in the camera frame, or None if unlabelled."""
    if targets.global_orient_cam is None or targets.body_pose is None:
        return None
    B = targets.body_pose.shape[0]
    pose = torch.cat([targets.global_orient_cam[:, None], targets.body_pose.reshape(B, -1, 3)], 1)
    return axis_angle_to_matrix(pose)


class HMRLoss(nn.Module):
    """HMR's regression losses and its encoder-side adversarial loss.

    Args:
        keypoints2d: Weight of the 2-D joint loss (crop-normalised units).
        keypoints3d: Weight of the pelvis-relative 3-D joint loss (metres).
        pose: Weight of the rotation-matrix loss against ground-truth parameters.
        betas: Weight of the shape loss against ground-truth betas.
        camera: Weight of the positive-scale camera term.
        adversarial: Weight of the encoder's adversarial loss (needs ``disc_scores``).
    """

    def __init__(
        self,
        *,
        keypoints2d: float = 5.0,
        keypoints3d: float = 5.0,
        pose: float = 1.0,
        betas: float = 0.001,
        camera: float = 60.0,
        adversarial: float = 1.0,
    ) -> None:
        super().__init__()
        self.weights = {
            "keypoints2d": keypoints2d,
            "keypoints3d": keypoints3d,
            "pose": pose,
            "betas": betas,
            "camera": camera,
            "adversarial": adversarial,
        }

    def unweighted(self, output: HMROutput, targets: FrameTargets) -> dict[str, Tensor]:
        """Every available term before weighting."""
        S = output.crop_size
        terms: dict[str, Tensor] = {
            "keypoints2d": (
                crop_to_normalized(output.joints2d_crop, S)
                - crop_to_normalized(targets.joints2d_crop, S)
            )
            .pow(2)
            .mean(),
            "keypoints3d": (
                (output.joints - output.joints[:, :1])
                - (targets.joints_cam - targets.root_cam[:, None])
            )
            .pow(2)
            .mean(),
            "camera": torch.exp(-10.0 * output.cam[:, 0]).pow(2).mean(),
        }
        gt_rot = target_rotmats(targets)
        if gt_rot is not None:
            terms["pose"] = (output.rotmats - gt_rot).pow(2).mean()
        if targets.betas is not None:
            nb = min(output.betas.shape[1], targets.betas.shape[1])
            terms["betas"] = (output.betas[:, :nb] - targets.betas[:, :nb]).pow(2).mean()
        if output.disc_scores is not None:
            terms["adversarial"] = lsgan_generator_loss(output.disc_scores)
        return terms

    def combine(self, terms: dict[str, Tensor], weights: dict[str, float]) -> LossOutput:
        """Weighted sum of the terms with a non-zero weight."""
        weighted = {k: weights[k] * v for k, v in terms.items() if weights.get(k, 0.0) != 0.0}
        if not weighted:
            raise ValueError("no loss term has both a label and a non-zero weight")
        total = torch.stack(list(weighted.values())).sum()
        return LossOutput(total=total, terms=weighted)

    def forward(self, output: HMROutput, targets: FrameTargets) -> LossOutput:
        """Weighted losses of a batch.

        Args:
            output: `sahmr.models.hmr.HMROutput` (or a subclass).
            targets: Camera-frame ground truth.

        Returns:
            `LossOutput`.
        """
        return self.combine(self.unweighted(output, targets), self.weights)


def _masked_mse(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean squared error over the valid rows (zero, with a graph, when none is valid)."""
    mask = valid.to(pred.dtype).reshape(-1, *([1] * (pred.dim() - 1)))
    per = (pred - target).pow(2) * mask
    count = mask.sum() * pred[0].numel()
    return per.sum() / count.clamp_min(1.0)


class SPINLoss(HMRLoss):
    """SPIN: HMR's losses plus supervision by the in-the-loop SMPLify fits.

    SPIN regresses towards the best fit found so far for each sample where that fit is valid
    (``SPINOutput.fit_valid``); with ground-truth parameters available (synthetic data)
    ``pose``/``betas`` may also be used, but SPIN's setting for 2-D-labelled data is
    ``pose = betas = 0`` (configs/loss/spin.yaml).

    Args:
        fit_pose: Weight of the rotation loss against the fit.
        fit_betas: Weight of the shape loss against the fit.
        **kwargs: `HMRLoss` weights.
    """

    def __init__(self, *, fit_pose: float = 1.0, fit_betas: float = 0.001, **kwargs: float):
        kwargs.setdefault("adversarial", 0.0)
        super().__init__(**kwargs)
        self.weights.update({"fit_pose": fit_pose, "fit_betas": fit_betas})

    def forward(self, output: SPINOutput, targets: FrameTargets) -> LossOutput:
        """Weighted losses; fit terms only when the output carries fits (training)."""
        terms = self.unweighted(output, targets)
        if output.fit_rotmats is not None and output.fit_valid is not None:
            terms["fit_pose"] = _masked_mse(output.rotmats, output.fit_rotmats, output.fit_valid)
            terms["fit_betas"] = _masked_mse(output.betas, output.fit_betas, output.fit_valid)
        return self.combine(terms, self.weights)


class VIBELoss(HMRLoss):
    """VIBE: per-frame HMR losses over every clip frame plus the motion adversarial loss.

    Args:
        motion_adversarial: Weight of the generator loss on the motion discriminator's
            scores (VIBE: 0.5 relative to its keypoint weights).
        **kwargs: `HMRLoss` weights (``adversarial`` for an optional per-frame prior).
    """

    def __init__(self, *, motion_adversarial: float = 0.5, **kwargs: float) -> None:
        kwargs.setdefault("adversarial", 0.0)
        super().__init__(**kwargs)
        self.weights["motion_adversarial"] = motion_adversarial

    def forward(self, output: VIBEOutput, targets: ClipTargets) -> LossOutput:
        """Weighted losses of a batch of clips (frames flattened clip-major)."""
        terms = self.unweighted(output, targets.frames)
        if output.motion_scores is not None:
            terms["motion_adversarial"] = lsgan_generator_loss(output.motion_scores)
        return self.combine(terms, self.weights)

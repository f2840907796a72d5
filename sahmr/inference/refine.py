"""Scene fitting after a parametric method ("HMR + scene fitting"): `SceneFitRefiner`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sahmr.inference.errors import InputError
from sahmr.records import BodyPrediction, FrameInputs


class SceneFitRefiner:
    """PROX-style scene fitting after a parametric method ("HMR + scene fitting").

    The method's SMPL-format parameters start `sahmr.optim.scene_fit.SceneFitter` (staged
    SMPLify with the scene SDF's penetration and contact terms, known camera). The keypoints
    fitted are the person detector's when the frame has them (the demo without ``--bbox``),
    weighted by their confidences; otherwise the method's own 24 joints projected into the
    full image: the fit keeps the image evidence the method saw and moves the body out of the
    scene and onto nearby surfaces. Contact regions predicted by the
    method (RCNet-style points) restrict which regions are pulled, when present.

    Args:
        body: `sahmr.body.BodyModel` (the method's body); moved to ``device``, so pass an
            instance of its own.
        iterations: Adam steps per fitting stage (`default_prox_stages`).
        lr: Adam step size.
        device: Where the fit runs.
    """

    def __init__(
        self,
        *,
        body: nn.Module,
        iterations: int = 40,
        lr: float = 0.02,
        device: torch.device | str = "cpu",
    ) -> None:
        from sahmr.optim.priors import GaussianMixturePrior
        from sahmr.optim.scene_fit import SceneFitter, default_prox_stages

        self.fitter = SceneFitter(
            body_model=body,
            pose_prior=GaussianMixturePrior.from_asset(),
            stages=default_prox_stages(iterations, lr),
        ).to(device)
        self.last_seconds = 0.0

    def refine(
        self,
        pred: BodyPrediction,
        inputs: FrameInputs,
        sdf: Any,
        keypoints2d: Tensor | None = None,
        keypoint_weights: Tensor | None = None,
    ) -> BodyPrediction:
        """Fit the predicted bodies in the scene.

        Args:
            pred: The method's prediction (camera frame) with ``params``.
            inputs: The frames' inputs (``K``, ``T_w2c``).
            sdf: The scene's `sahmr.scene.sdf.SDFGrid` (world frame).
            keypoints2d: Optional Tensor (B, 24, 2) detected SMPL joints, pixels of ``K``
                (default: the method's joints projected).
            keypoint_weights: Optional Tensor (B, 24) their confidences.

        Returns:
            A `BodyPrediction` of the fitted bodies (contact points kept from ``pred``).

        Raises:
            InputError: The method gives no SMPL-format parameters, or there is no SDF.
        """
        from sahmr.geometry.cameras import project
        from sahmr.optim.smplify import SMPLParams

        keys = ("betas", "global_orient", "body_pose", "transl")
        if pred.params is None or not all(k in pred.params for k in keys):
            raise InputError(
                "scene fitting needs a method that predicts SMPL-format "
                "parameters (hmr, spin); this one regresses vertices only"
            )
        if sdf is None:
            raise InputError("scene fitting needs the scan as a mesh (for its SDF)")
        device = self.fitter.vertex_region.device
        K = inputs.K.to(device).float()
        T = inputs.T_w2c.to(device).float()
        init = SMPLParams(**{k: pred.params[k].detach().to(device).float() for k in keys})
        weights = None
        if keypoints2d is not None:
            keypoints = keypoints2d.to(device).float()
            if keypoint_weights is not None:
                weights = keypoint_weights.to(device).float()
        else:
            with torch.no_grad():
                joints = self.fitter.body_model(**init.as_dict()).joints
            keypoints = project(K, joints)
        regions = None
        if pred.contact_point_region is not None and pred.contact_point_region.numel():
            R = self.fitter.num_regions
            regions = torch.zeros(inputs.batch_size, R, dtype=torch.bool, device=device)
            b = pred.contact_batch_idx.to(device)
            r = pred.contact_point_region.to(device).long()
            regions[b, (r - 1).clamp(0, R - 1)] = True
        res = self.fitter.fit(
            init, keypoints, K, T, [sdf], contact_regions=regions, keypoint_weights=weights
        )
        self.last_seconds = res.seconds
        return BodyPrediction(
            verts_cam=res.vertices,
            joints_cam=res.joints,
            root_cam=res.joints[:, 0],
            contact_points_cam=pred.contact_points_cam,
            contact_point_region=pred.contact_point_region,
            contact_batch_idx=pred.contact_batch_idx,
            params=res.params.as_dict(),
        )

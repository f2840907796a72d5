"""PROX-style scene-constrained fitting: SMPLify plus scene penetration and contact terms.

PROX (Hassan et al., ICCV 2019) fits a body to 2-D keypoints with a known camera and adds two
scene terms, both read from the scene's signed distance field:

* penetration: ``sum_v max(0, -sdf(v))^2`` over body vertices (m^2): vertices inside
  furniture, walls or under the floor are pushed out;
* contact: body vertices of the contact regions (feet, hands, back, gluteus, thighs; by
  default all seven, or the regions assigned per frame) that are within ``contact_distance``
  of a scene surface are pulled onto it with a robust penalty ``rho(|sdf(v)|)``
  (Geman-McClure, scale ``contact_sigma`` metres).

As in the published method the fit is staged (`sahmr.optim.smplify.FitStage`): the camera
stage (root rotation + translation on the torso), then stages with decreasing pose/shape
prior weights, the scene terms switched on in the last stage(s) once the body roughly
matches the image. The SDF is sampled with `sahmr.scene.sdf.SDFGrid.sample` (trilinear,
differentiable, world frame); each frame of a batch may be in a different scene.
The defaults of `default_prox_stages` are the ones tuned on the synthetic validation split
(configs/optim/prox.yaml, docs/baselines.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sahmr.geometry.cameras import invert_rigid, transform_points
from sahmr.optim.priors import GaussianMixturePrior
from sahmr.optim.smplify import TORSO_JOINTS, FitResult, FitStage, SMPLify, SMPLParams, gmof

logger = logging.getLogger(__name__)

__all__ = [
    "SceneContext",
    "SceneFitter",
    "default_prox_stages",
    "penetration_energy",
]


def default_prox_stages(iterations: int = 120, lr: float = 0.02) -> list[FitStage]:
    """Staged schedule: camera, three body stages with annealed priors, scene terms last.

    Prior weights follow PROX/SMPLify's annealing (each stage lowers them); the scene terms
    are on in the last stage only; no depth prior (the start's depth comes from the torso).
    The same schedule as configs/optim/prox.yaml (tuned on the validation split).
    """
    cam = ("global_orient", "transl")
    return [
        FitStage(iterations, lr, params=cam, torso_only=True, depth_weight=0.0),
        FitStage(
            iterations,
            lr,
            pose_prior_weight=4.0 * 4.78**2,
            shape_prior_weight=100.0,
            depth_weight=0.0,
        ),
        FitStage(
            iterations, lr, pose_prior_weight=4.78**2, shape_prior_weight=25.0, depth_weight=0.0
        ),
        FitStage(
            iterations,
            lr,
            pose_prior_weight=4.78**2,
            shape_prior_weight=25.0,
            depth_weight=0.0,
            penetration_weight=1.0e4,
            contact_weight=1.0e3,
        ),
    ]


def penetration_energy(sdf: Tensor) -> Tensor:
    """``sum_v max(0, -sdf_v)^2`` per frame (m^2), for sdf Tensor (B, V) in metres."""
    return torch.relu(-sdf).pow(2).sum(-1)


@dataclass
class SceneContext:
    """What the scene terms read for a batch of B frames.

    Attributes:
        T_c2w: Tensor (B, 4, 4) camera -> world of each frame.
        sdfs: Distinct scene SDFs (`sahmr.scene.sdf.SDFGrid`, world frame).
        frame_scene: Tensor (B,) int64 index into ``sdfs`` of each frame.
        candidate: Tensor (B, V) bool: vertices of each frame's contact regions.
        values: Per SDF, its grid already on the fitting device (``to_torch(device)[0]``).
    """

    T_c2w: Tensor
    sdfs: Sequence
    frame_scene: Tensor
    candidate: Tensor
    values: list[Tensor]

    def sample(self, vertices_world: Tensor) -> Tensor:
        """Signed distances Tensor (B, V), metres (differentiable)."""
        out = vertices_world.new_zeros(vertices_world.shape[:2])
        for s, sdf in enumerate(self.sdfs):
            rows = (self.frame_scene == s).nonzero().squeeze(1)
            if rows.numel():
                out = out.index_put((rows,), sdf.sample(vertices_world[rows], self.values[s]))
        return out


class SceneFitter(SMPLify):
    """SMPLify with PROX's scene penetration and contact terms (batched, any device).

    Args:
        body_model: A `sahmr.body.BodyModel` (its topology gives the contact regions).
        pose_prior: The pose mixture.
        stages: `FitStage` list (default `default_prox_stages`); stages with a positive
            ``penetration_weight`` / ``contact_weight`` use the scene.
        sigma_px: Geman-McClure scale of the reprojection term, pixels.
        torso_joints: Keypoints of the camera stage.
        contact_distance: Metres; contact-region vertices nearer a surface are pulled to it.
        contact_sigma: Metres; Geman-McClure scale of the contact term.
        start_orientations: See `sahmr.optim.smplify.SMPLify` (multi-start).
        start_stages: See `sahmr.optim.smplify.SMPLify` (multi-start).
    """

    def __init__(
        self,
        *,
        body_model: nn.Module,
        pose_prior: GaussianMixturePrior,
        stages: Sequence[FitStage] | None = None,
        sigma_px: float = 100.0,
        torso_joints: Sequence[str] = TORSO_JOINTS,
        contact_distance: float = 0.05,
        contact_sigma: float = 0.05,
        start_orientations: int = 2,
        start_stages: int = 1,
    ) -> None:
        super().__init__(
            body_model=body_model,
            pose_prior=pose_prior,
            stages=list(stages) if stages is not None else default_prox_stages(),
            sigma_px=sigma_px,
            torso_joints=torso_joints,
            start_orientations=start_orientations,
            start_stages=start_stages,
        )
        self.contact_distance = float(contact_distance)
        self.contact_sigma = float(contact_sigma)
        labels = torch.as_tensor(body_model.topology.contact_labels[0], dtype=torch.int64)
        self.register_buffer("vertex_region", labels, persistent=False)
        # SDF grids already uploaded, by (id(grid), device); the grid is kept alive with them.
        self._grid_values: dict[tuple[int, str], tuple[object, Tensor]] = {}

    @property
    def num_regions(self) -> int:
        """Contact regions 1..R of the body topology."""
        return int(self.vertex_region.max())

    def scene_terms(
        self, params: SMPLParams, vertices_cam: Tensor, stage: FitStage, scene: object
    ) -> dict[str, Tensor]:
        """Per-frame penetration (m^2) and contact energies (B,)."""
        if not isinstance(scene, SceneContext):
            raise TypeError("scene stages need a SceneContext (use SceneFitter.fit)")
        vertices_world = transform_points(scene.T_c2w, vertices_cam)
        sdf = scene.sample(vertices_world)
        dist = sdf.abs()
        near = scene.candidate & (dist < self.contact_distance)
        contact = (gmof(dist, self.contact_sigma) * near).sum(-1)
        return {"penetration": penetration_energy(sdf), "contact": contact}

    def _context(
        self,
        T_w2c: Tensor,
        sdfs: Sequence,
        frame_scene: Tensor | None,
        contact_regions: Tensor | None,
    ) -> SceneContext:
        B = T_w2c.shape[0]
        device = T_w2c.device
        if frame_scene is None:
            if len(sdfs) != 1:
                raise ValueError("frame_scene is needed with several SDFs")
            frame_scene = torch.zeros(B, dtype=torch.int64, device=device)
        region = self.vertex_region.to(device)
        if contact_regions is None:
            candidate = (region > 0).expand(B, -1)
        else:
            table = torch.cat(
                [torch.zeros_like(contact_regions[:, :1]), contact_regions.bool()], dim=1
            )  # (B, R + 1): region 0 never pulls
            candidate = table.gather(1, region.expand(B, -1))
        return SceneContext(
            T_c2w=invert_rigid(T_w2c),
            sdfs=list(sdfs),
            frame_scene=frame_scene.to(device),
            candidate=candidate,
            values=[self._values(g, device) for g in sdfs],
        )

    def _values(self, grid, device: torch.device) -> Tensor:
        """The grid's values on ``device``, uploaded once (a few grids are kept)."""
        key = (id(grid), str(device))
        if key not in self._grid_values:
            if len(self._grid_values) >= 8:
                self._grid_values.pop(next(iter(self._grid_values)))
            self._grid_values[key] = (grid, grid.to_torch(device)[0])
        return self._grid_values[key][1]

    def fit(
        self,
        init: SMPLParams,
        keypoints2d: Tensor,
        K: Tensor,
        T_w2c: Tensor,
        sdfs: Sequence,
        frame_scene: Tensor | None = None,
        *,
        contact_regions: Tensor | None = None,
        keypoint_weights: Tensor | None = None,
        stages: Sequence[FitStage] | None = None,
    ) -> FitResult:
        """Fit a batch of frames in their scenes.

        Args:
            init: Initial parameters, camera frame.
            keypoints2d: Tensor (B, J, 2) keypoints in pixels of ``K`` (J = 24 or 14).
            K: Tensor (B, 3, 3) intrinsics.
            T_w2c: Tensor (B, 4, 4) world -> camera of each frame.
            sdfs: Scene SDFs (`sahmr.scene.sdf.SDFGrid`, world frame).
            frame_scene: Tensor (B,) int64 index into ``sdfs`` (optional with one SDF).
            contact_regions: Optional Tensor (B, R) bool, regions 1..R allowed to be pulled
                into contact per frame (e.g. predicted by a contact network); default all.
            keypoint_weights: Tensor (B, J) confidences; default ones.
            stages: Run these stages instead of ``self.stages`` (e.g. the rest after
                `search_start`).

        Returns:
            `FitResult` in the camera frame (``iterations`` per stage, ``seconds``).
        """
        scene = self._context(T_w2c, sdfs, frame_scene, contact_regions)
        return self(init, keypoints2d, K, keypoint_weights, scene=scene, stages=stages)

"""Batched SMPLify: fit SMPL-format bodies to 2-D keypoints with a known pinhole camera.

The objective of SMPLify (Bogo et al., ECCV 2016) as used in SPIN's in-the-loop fitting
(Kolotouros et al., ICCV 2019), per frame::

    E = w_kp  sum_j c_j sum_{u,v} rho_sigma(pi(K, J_j) - x_j)      reprojection, robust, px^2
      + w_pose E_gmm(theta)                                       pose prior (mixture energy)
      + w_shape |beta|^2                                          shape prior
      + w_bent sum exp(s theta_hinge)^2                           bent elbows / knees
      + w_depth (t_z - t_z^init)^2                                keep the depth of the start

with ``rho_sigma(r) = sigma^2 r^2 / (sigma^2 + r^2)`` (Geman-McClure), ``c_j`` keypoint
confidences and ``pi`` the perspective projection with the frame's intrinsics (the crop
camera ``K_crop`` for crop keypoints; SPIN's fixed 5000 px focal length is replaced by the
known camera). Optimisation runs in stages (`FitStage`): first the root rotation and
translation on the torso keypoints, then every parameter on every keypoint, with Adam.
Frames are independent: the batch objective is the sum of per-frame objectives and Adam is
element-wise, so a batch of B frames fits as B separate problems in one pass (GPU-friendly).

Everything is in the camera frame (OpenCV axes, metres): ``global_orient`` rotates the body
into the camera, ``transl`` places it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor, nn

from sahmr.body.constants import H36M_JOINT_NAMES, H36M_TO_J14, SMPL_JOINT_NAMES
from sahmr.body.kinematics import KinematicTree
from sahmr.geometry.cameras import invert_rigid, project
from sahmr.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from sahmr.optim.priors import GaussianMixturePrior, bent_joint_penalty, shape_prior

logger = logging.getLogger(__name__)

__all__ = [
    "PARAM_NAMES",
    "BodyJoints",
    "FitResult",
    "FitStage",
    "SMPLParams",
    "SMPLify",
    "default_smplify_stages",
    "exclude_from_state_dict",
    "gmof",
    "root_rest_joint",
    "transform_params",
]

PARAM_NAMES: tuple[str, ...] = ("global_orient", "body_pose", "betas", "transl")
"""Names of the fitted parameter groups."""

TORSO_JOINTS: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "spine2", "spine3", "neck", "left_shoulder",
    "right_shoulder",
)  # fmt: skip
"""Keypoints of the camera stage and of the translation start: the nearly rigid torso (those
present in the keypoint set: all nine of the 24 SMPL joints, hips and shoulders of LSP's 14)."""

J14_NAMES: tuple[str, ...] = tuple(H36M_JOINT_NAMES[i] for i in H36M_TO_J14)


def gmof(residual: Tensor, sigma: float) -> Tensor:
    """Geman-McClure robust penalty ``sigma^2 r^2 / (sigma^2 + r^2)``, element-wise.

    Args:
        residual: Tensor of any shape (pixels for reprojection).
        sigma: Scale (same unit); the penalty saturates at ``sigma^2``.

    Returns:
        Tensor of the same shape.
    """
    sq = residual * residual
    return sigma * sigma * sq / (sq + sigma * sigma)


@dataclass
class SMPLParams:
    """SMPL-format parameters of B bodies in the camera frame.

    Attributes:
        global_orient: Tensor (B, 3), axis-angle root rotation (body -> camera), radians.
        body_pose: Tensor (B, 69), axis-angle joint rotations, radians.
        betas: Tensor (B, NB) shape coefficients.
        transl: Tensor (B, 3), metres, camera frame.
    """

    global_orient: Tensor
    body_pose: Tensor
    betas: Tensor
    transl: Tensor

    @property
    def batch_size(self) -> int:
        """B."""
        return int(self.global_orient.shape[0])

    def detach(self) -> SMPLParams:
        """A detached copy."""
        return SMPLParams(**{f.name: getattr(self, f.name).detach().clone() for f in fields(self)})

    def as_dict(self) -> dict[str, Tensor]:
        """``{"global_orient", "body_pose", "betas", "transl"}`` -> tensors."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def index(self, idx: Tensor | slice) -> SMPLParams:
        """The rows ``idx`` of every field."""
        return SMPLParams(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def where(self, mask: Tensor, other: SMPLParams) -> SMPLParams:
        """Rows of ``self`` where ``mask`` (B,) is true, else of ``other``."""
        return SMPLParams(
            **{
                f.name: torch.where(mask[:, None], getattr(self, f.name), getattr(other, f.name))
                for f in fields(self)
            }
        )


@dataclass(frozen=True)
class FitStage:
    """One optimisation stage: which parameters move, for how long, under which weights.

    Attributes:
        iterations: Adam steps.
        lr: Adam learning rate.
        params: Parameter groups optimised (subset of `PARAM_NAMES`).
        torso_only: Reprojection on the torso keypoints only (`TORSO_JOINTS`).
        keypoint_weight: Weight of the robust reprojection term (px^2).
        pose_prior_weight: Weight of the mixture pose prior.
        shape_prior_weight: Weight of ``|betas|^2``.
        bent_joint_weight: Weight of the bent-joint penalty.
        depth_weight: Weight of ``(t_z - t_z^init)^2``, per m^2.
        penetration_weight: Weight of the scene penetration term (scene fitting only).
        contact_weight: Weight of the scene contact term (scene fitting only).
    """

    iterations: int
    lr: float = 0.01
    params: tuple[str, ...] = PARAM_NAMES
    torso_only: bool = False
    keypoint_weight: float = 1.0
    pose_prior_weight: float = 4.78**2
    shape_prior_weight: float = 5.0**2
    bent_joint_weight: float = 15.2**2
    depth_weight: float = 100.0**2
    penetration_weight: float = 0.0
    contact_weight: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(self.params))  # configs give lists
        unknown = sorted(set(self.params) - set(PARAM_NAMES))
        if unknown:
            raise ValueError(f"unknown parameter groups {unknown}; choose from {PARAM_NAMES}")
        if self.iterations < 0:
            raise ValueError("iterations must be >= 0")

    @property
    def uses_scene(self) -> bool:
        """Whether the stage has scene terms (and so needs the full mesh)."""
        return self.penetration_weight > 0 or self.contact_weight > 0


def default_smplify_stages(iterations: int = 100, lr: float = 0.01) -> list[FitStage]:
    """SPIN's two stages: root rotation + translation on the torso, then everything."""
    return [
        FitStage(iterations, lr, params=("global_orient", "transl"), torso_only=True),
        FitStage(iterations, lr),
    ]


@dataclass
class FitResult:
    """Outcome of a fit, camera frame.

    Attributes:
        params: The fitted `SMPLParams` (detached).
        vertices: Tensor (B, V, 3) fitted mesh, metres.
        joints: Tensor (B, 24, 3) SMPL joints, metres.
        reprojection_error_px: Tensor (B,) mean keypoint distance (confidence-weighted), px.
        loss: Tensor (B,) final objective of the last stage.
        terms: Per-frame unweighted final terms of the last stage (B,) each.
        iterations: Adam steps per stage.
        seconds: Wall time of the whole fit (device synchronised), seconds.
    """

    params: SMPLParams
    vertices: Tensor
    joints: Tensor
    reprojection_error_px: Tensor
    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    iterations: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def seconds_per_frame(self) -> float:
        """Wall time divided by the batch size."""
        return self.seconds / max(self.params.batch_size, 1)


class BodyJoints(nn.Module):
    """SMPL's 24 joints without skinning the mesh (the fast path of keypoint fitting).

    SMPL's joints are the kinematic chain applied to the rest joints ``J_regressor @
    (v_template + shapedirs @ betas)``, which is linear in betas: ``J(beta) = J_0 + S beta``
    with ``S = J_regressor @ shapedirs`` precomputed. Equal to the body model's
    ``BodyOutput.joints`` (tested), at a fraction of the cost.

    Args:
        body_model: A `sahmr.body.BodyModel` (or any smplx SMPL layer).
    """

    def __init__(self, *, body_model: nn.Module) -> None:
        super().__init__()
        reg = body_model.J_regressor
        reg = (reg.to_dense() if reg.is_sparse else reg).double()
        self.register_buffer("j_template", (reg @ body_model.v_template.double()).float())
        self.register_buffer(
            "j_shapedirs", torch.einsum("jv,vck->jck", reg, body_model.shapedirs.double()).float()
        )
        self.kinematic_tree = KinematicTree(body_model.parents.tolist())  # no host reads

    def forward(self, betas: Tensor, global_orient: Tensor, body_pose: Tensor, transl: Tensor):
        """Posed joints.

        Args:
            betas: Tensor (B, NB), NB <= the model's.
            global_orient: Tensor (B, 3) axis-angle or (B, 3, 3).
            body_pose: Tensor (B, 69) axis-angle or (B, 23, 3, 3).
            transl: Tensor (B, 3).

        Returns:
            Tensor (B, 24, 3), metres, the frame of ``global_orient`` / ``transl``.
        """
        B = betas.shape[0]
        nb = betas.shape[1]
        rest = self.j_template + torch.einsum("jck,bk->bjc", self.j_shapedirs[..., :nb], betas)
        go = global_orient if global_orient.dim() == 3 else axis_angle_to_matrix(global_orient)
        bp = (
            body_pose
            if body_pose.dim() == 4
            else axis_angle_to_matrix(body_pose.reshape(B, -1, 3))
        )
        rot = torch.cat([go.reshape(B, 1, 3, 3), bp], dim=1)
        posed, _ = self.kinematic_tree(rot, rest)
        return posed + transl[:, None, :]


def transform_params(params: SMPLParams, T: Tensor, root_rest: Tensor) -> SMPLParams:
    """Rewrite SMPL root parameters for a rigidly moved body (torch, batched).

    SMPL rotates about the rest root joint ``J_0``: ``x = R_g (x_rest - J_0) + J_0 + t``.
    After ``T = [R | d]``: ``R_g' = R R_g`` and ``t' = R (J_0 + t) + d - J_0``.

    Args:
        params: Parameters in the source frame.
        T: Tensor (B, 4, 4) rigid source -> target transform (e.g. camera -> world).
        root_rest: Tensor (B, 3) rest root joint for each body's betas.

    Returns:
        `SMPLParams` in the target frame (pose and shape unchanged).
    """
    R, d = T[:, :3, :3], T[:, :3, 3]
    Rg = axis_angle_to_matrix(params.global_orient)
    orient = matrix_to_axis_angle(R @ Rg)
    transl = (R @ (root_rest + params.transl)[..., None])[..., 0] + d - root_rest
    return SMPLParams(
        global_orient=orient, body_pose=params.body_pose, betas=params.betas, transl=transl
    )


def root_rest_joint(joints: BodyJoints, betas: Tensor) -> Tensor:
    """Rest-pose root joint ``J_0(betas)``, Tensor (B, 3), model frame, metres."""
    nb = betas.shape[1]
    return joints.j_template[0] + betas @ joints.j_shapedirs[0, :, :nb].T


def exclude_from_state_dict(module: nn.Module) -> nn.Module:
    """Make every buffer of ``module`` (and its children) non-persistent; returns it.

    Used for the body model inside a network: its arrays (~20 MB for SMPL's mesh) are data
    rebuilt from the config, not learned, so checkpoints need not carry them.
    """
    for m in module.modules():
        for name, buf in list(m._buffers.items()):
            if buf is not None:
                m.register_buffer(name, buf, persistent=False)
    return module


def _keypoint_index(num_keypoints: int, names: Sequence[str]) -> list[int]:
    order = SMPL_JOINT_NAMES if num_keypoints == len(SMPL_JOINT_NAMES) else J14_NAMES
    return [order.index(n) for n in names if n in order]


class SMPLify(nn.Module):
    """Staged, batched SMPLify (Adam) with a known camera.

    Args:
        body_model: A `sahmr.body.BodyModel`.
        pose_prior: The pose mixture (`GaussianMixturePrior.from_asset()`).
        stages: The `FitStage` sequence (default `default_smplify_stages`).
        sigma_px: Geman-McClure scale of the reprojection term, pixels.
        torso_joints: Keypoints of ``torso_only`` stages and of `torso_translation` (SMPL
            joint names; those absent from the keypoint set are skipped).
        start_orientations: Root rotations `search_start` tries (turns about the body's
            vertical axis by multiples of 360 / n degrees; SMPLify: 2).
        start_stages: Leading stages `search_start` runs from every start (none may use the
            scene).
    """

    def __init__(
        self,
        *,
        body_model: nn.Module,
        pose_prior: GaussianMixturePrior,
        stages: Sequence[FitStage] | None = None,
        sigma_px: float = 100.0,
        torso_joints: Sequence[str] = TORSO_JOINTS,
        start_orientations: int = 2,
        start_stages: int = 1,
    ) -> None:
        super().__init__()
        self.body_model = body_model
        self.pose_prior = pose_prior
        self.joints_fast = BodyJoints(body_model=body_model)
        # Body arrays and the prior are data rebuilt from the config: keep them out of the
        # state dict of any network holding a fitter (SPIN).
        for m in (self.body_model, self.pose_prior, self.joints_fast):
            exclude_from_state_dict(m)
        self.stages: list[FitStage] = list(stages) if stages is not None else (
            default_smplify_stages()
        )
        self.sigma_px = float(sigma_px)
        self.torso_joints = tuple(torso_joints)
        if start_orientations < 1 or start_stages < 1:
            raise ValueError("need start_orientations >= 1 and start_stages >= 1")
        self.start_orientations = int(start_orientations)
        self.start_stages = int(start_stages)

    # ------------------------------------------------------------------ pieces

    def _posed(
        self, params: SMPLParams, num_keypoints: int, need_vertices: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Keypoint joints (B, J, 3) and, when asked or needed, vertices (B, V, 3)."""
        if not need_vertices and num_keypoints == len(SMPL_JOINT_NAMES):
            p = params
            return self.joints_fast(p.betas, p.global_orient, p.body_pose, p.transl), None
        out = self.body_model(
            betas=params.betas,
            global_orient=params.global_orient,
            body_pose=params.body_pose,
            transl=params.transl,
        )
        joints = out.joints if num_keypoints == len(SMPL_JOINT_NAMES) else out.joints14
        return joints, out.vertices

    def scene_terms(
        self, params: SMPLParams, vertices_cam: Tensor, stage: FitStage, scene: object
    ) -> dict[str, Tensor]:
        """Extra per-frame energies (B,) of scene-aware subclasses; none here."""
        return {}

    def energy(
        self,
        params: SMPLParams,
        keypoints2d: Tensor,
        K: Tensor,
        keypoint_weights: Tensor,
        stage: FitStage,
        transl_init: Tensor,
        scene: object = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-frame objective of one stage.

        Args:
            params: Current parameters (camera frame).
            keypoints2d: Tensor (B, J, 2) observed keypoints, pixels of ``K``; J = 24 (SMPL
                joints) or 14 (LSP order).
            K: Tensor (B, 3, 3) intrinsics.
            keypoint_weights: Tensor (B, J) confidences (0 ignores a keypoint).
            stage: The stage's weights.
            transl_init: Tensor (B, 3) translation at the start of the fit.
            scene: Passed to `scene_terms`.

        Returns:
            ``(total (B,), unweighted terms {name: (B,)})``.
        """
        num_kp = keypoints2d.shape[1]
        joints, verts = self._posed(params, num_kp, stage.uses_scene)
        w = keypoint_weights
        if stage.torso_only:
            mask = torch.zeros_like(w)
            mask[:, _keypoint_index(num_kp, self.torso_joints)] = 1.0
            w = w * mask
        residual = project(K, joints) - keypoints2d
        terms = {
            "keypoints": (gmof(residual, self.sigma_px).sum(-1) * w).sum(-1),
            "pose_prior": self.pose_prior(params.body_pose),
            "shape_prior": shape_prior(params.betas),
            "bent_joints": bent_joint_penalty(params.body_pose),
            "depth": (params.transl[:, 2] - transl_init[:, 2]) ** 2,
        }
        weights = {
            "keypoints": stage.keypoint_weight,
            "pose_prior": stage.pose_prior_weight,
            "shape_prior": stage.shape_prior_weight,
            "bent_joints": stage.bent_joint_weight,
            "depth": stage.depth_weight,
        }
        if stage.uses_scene:
            extra = self.scene_terms(params, verts, stage, scene)
            terms.update(extra)
            weights.update(
                {"penetration": stage.penetration_weight, "contact": stage.contact_weight}
            )
        total = sum(weights[k] * v for k, v in terms.items() if weights.get(k, 0.0) != 0.0)
        if not torch.is_tensor(total):
            total = keypoints2d.new_zeros(keypoints2d.shape[0])
        return total, terms

    @torch.no_grad()
    def fitting_loss(
        self,
        params: SMPLParams,
        keypoints2d: Tensor,
        K: Tensor,
        keypoint_weights: Tensor | None = None,
    ) -> Tensor:
        """Robust reprojection loss of given parameters on every keypoint (SPIN's
        ``get_fitting_loss``), used to compare a stored fit with a new one for a frame.

        Returns:
            Tensor (B,), px^2.
        """
        w = keypoint_weights if keypoint_weights is not None else keypoints2d.new_ones(
            keypoints2d.shape[:2]
        )
        joints, _ = self._posed(params, keypoints2d.shape[1], need_vertices=False)
        residual = project(K, joints) - keypoints2d
        return (gmof(residual, self.sigma_px).sum(-1) * w).sum(-1)

    @torch.no_grad()
    def reprojection_error(
        self,
        params: SMPLParams,
        keypoints2d: Tensor,
        K: Tensor,
        keypoint_weights: Tensor | None = None,
    ) -> Tensor:
        """Mean (confidence-weighted) keypoint distance in pixels, Tensor (B,)."""
        w = keypoint_weights if keypoint_weights is not None else keypoints2d.new_ones(
            keypoints2d.shape[:2]
        )
        joints, _ = self._posed(params, keypoints2d.shape[1], need_vertices=False)
        dist = (project(K, joints) - keypoints2d).norm(dim=-1)
        return (dist * w).sum(-1) / w.sum(-1).clamp_min(1e-8)

    # ------------------------------------------------------------------ fitting

    def forward(
        self,
        init: SMPLParams,
        keypoints2d: Tensor,
        K: Tensor,
        keypoint_weights: Tensor | None = None,
        *,
        scene: object = None,
        stages: Sequence[FitStage] | None = None,
    ) -> FitResult:
        """Fit every frame of the batch, starting from ``init``.

        Args:
            init: Initial parameters, camera frame (not modified).
            keypoints2d: Tensor (B, J, 2), pixels of ``K`` (J = 24 SMPL joints or 14 LSP).
            K: Tensor (B, 3, 3) intrinsics.
            keypoint_weights: Tensor (B, J) confidences; default ones.
            scene: Scene description for `scene_terms` (subclasses).
            stages: Run these stages instead of ``self.stages``.

        Returns:
            `FitResult` (detached tensors); ``loss`` and ``terms`` under the last stage run.
        """
        stages = list(stages) if stages is not None else self.stages
        if keypoints2d.shape[1] not in (len(SMPL_JOINT_NAMES), len(J14_NAMES)):
            raise ValueError(f"keypoints must be 24 SMPL or 14 LSP joints, got {keypoints2d.shape}")
        sync = keypoints2d.is_cuda
        if sync:
            torch.cuda.synchronize(keypoints2d.device)
        start = time.perf_counter()
        w = keypoint_weights if keypoint_weights is not None else keypoints2d.new_ones(
            keypoints2d.shape[:2]
        )
        keypoints2d, K, w = keypoints2d.detach(), K.detach(), w.detach()
        transl_init = init.transl.detach().clone()
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in init.as_dict().items()}
        params = SMPLParams(**leaves)
        iterations: list[int] = []
        with torch.enable_grad():
            for stage in stages:
                if stage.iterations == 0:
                    iterations.append(0)
                    continue
                opt = torch.optim.Adam([leaves[n] for n in stage.params], lr=stage.lr)
                for _ in range(stage.iterations):
                    opt.zero_grad(set_to_none=True)
                    total, _ = self.energy(params, keypoints2d, K, w, stage, transl_init, scene)
                    total.sum().backward()
                    opt.step()
                iterations.append(stage.iterations)
        fitted = params.detach()
        with torch.no_grad():
            last = stages[-1]
            total, terms = self.energy(fitted, keypoints2d, K, w, last, transl_init, scene)
            out = self.body_model(**fitted.as_dict())
            kp = out.joints if keypoints2d.shape[1] == len(SMPL_JOINT_NAMES) else out.joints14
            dist = (project(K, kp) - keypoints2d).norm(dim=-1)
            err = (dist * w).sum(-1) / w.sum(-1).clamp_min(1e-8)
        if sync:
            torch.cuda.synchronize(keypoints2d.device)
        return FitResult(
            params=fitted,
            vertices=out.vertices,
            joints=out.joints,
            reprojection_error_px=err,
            loss=total,
            terms={k: v.detach() for k, v in terms.items()},
            iterations=iterations,
            seconds=time.perf_counter() - start,
        )

    @torch.no_grad()
    def torso_translation(
        self, params: SMPLParams, keypoints2d: Tensor, K: Tensor, keypoint_weights: Tensor | None
    ) -> Tensor:
        """Translation placing the body's torso keypoints on the observed ones (PnP with the
        rotation fixed, `sahmr.geometry.pnp.estimate_translation`), Tensor (B, 3).

        The torso is nearly rigid, so this depth is far less sensitive to a wrong limb pose
        than one from all keypoints (SMPLify's start uses the torso length likewise).
        """
        from sahmr.geometry.pnp import estimate_translation

        num_kp = keypoints2d.shape[1]
        zero = SMPLParams(params.global_orient, params.body_pose, params.betas,
                          torch.zeros_like(params.transl))  # fmt: skip
        joints, _ = self._posed(zero, num_kp, need_vertices=False)
        w = keypoints2d.new_zeros(keypoints2d.shape[:2])
        w[:, _keypoint_index(num_kp, self.torso_joints)] = 1.0
        if keypoint_weights is not None:
            w = w * keypoint_weights
        return estimate_translation(joints, keypoints2d, K, w)

    def mean_pose_start(
        self, keypoints2d: Tensor, K: Tensor, keypoint_weights: Tensor | None = None
    ) -> SMPLParams:
        """The start of a fit without a method's prediction: the pose prior's mean pose, upright
        and facing the camera (root turned by pi about x), zero shape, the torso placed on the
        keypoints by `torso_translation`.

        Args:
            keypoints2d: Tensor (B, J, 2) keypoints, pixels of ``K``.
            K: Tensor (B, 3, 3) intrinsics.
            keypoint_weights: Optional Tensor (B, J) their confidences (default ones).

        Returns:
            Camera-frame `SMPLParams`.
        """
        B, dev = keypoints2d.shape[0], keypoints2d.device
        init = SMPLParams(
            global_orient=torch.tensor([[math.pi, 0.0, 0.0]], device=dev).repeat(B, 1),
            body_pose=self.pose_prior.mean_body_pose[None].to(dev).repeat(B, 1),
            betas=torch.zeros(B, self.body_model.num_betas, device=dev),
            transl=torch.zeros(B, 3, device=dev),
        )
        init.transl = self.torso_translation(init, keypoints2d, K, keypoint_weights)
        return init

    def search_start(
        self,
        init: SMPLParams,
        keypoints2d: Tensor,
        K: Tensor,
        keypoint_weights: Tensor | None = None,
    ) -> SMPLParams:
        """Multi-start: the first `start_stages` stages from several root rotations, the best
        result per frame (lowest objective of the last of those stages).

        Starts turn ``init``'s root about the body's vertical axis by ``360 k / n`` degrees
        (``n = start_orientations``; SMPLify tried the two facing directions), each placed by
        `torso_translation`. A torso-only stage cannot tell a person facing the camera from
        one facing away, and a fit started the wrong way round ends in a poor minimum.
        Continue with ``forward(..., stages=self.stages[self.start_stages:])``.

        Returns:
            Camera-frame `SMPLParams` after the leading stages.
        """
        leading = self.stages[: self.start_stages]
        if len(leading) < self.start_stages or any(st.uses_scene for st in leading):
            raise ValueError("search_start needs start_stages leading stages without scene terms")
        B, n = init.batch_size, self.start_orientations
        w = keypoint_weights if keypoint_weights is not None else keypoints2d.new_ones(
            keypoints2d.shape[:2]
        )
        R0 = axis_angle_to_matrix(init.global_orient)
        starts = []
        for k in range(n):
            turn = init.global_orient.new_tensor([0.0, 2.0 * math.pi * k / n, 0.0])
            p = SMPLParams(
                global_orient=matrix_to_axis_angle(R0 @ axis_angle_to_matrix(turn)),
                body_pose=init.body_pose,
                betas=init.betas,
                transl=init.transl,
            )
            p.transl = self.torso_translation(p, keypoints2d, K, w)
            starts.append(p)
        both = SMPLParams(**{k: torch.cat([getattr(p, k) for p in starts]) for k in PARAM_NAMES})
        res = self(both, keypoints2d.repeat(n, 1, 1), K.repeat(n, 1, 1), w.repeat(n, 1),
                   stages=leading)  # fmt: skip
        pick = res.loss.reshape(n, B).argmin(0)
        return res.params.index(pick * B + torch.arange(B, device=pick.device))

    def to_world(self, params: SMPLParams, T_w2c: Tensor) -> SMPLParams:
        """Camera-frame parameters -> world-frame parameters (for files and the evaluator).

        Args:
            params: Camera-frame parameters.
            T_w2c: Tensor (B, 4, 4) world -> camera.

        Returns:
            World-frame `SMPLParams`.
        """
        root = root_rest_joint(self.joints_fast, params.betas)
        return transform_params(params, invert_rigid(T_w2c.to(params.transl)), root)

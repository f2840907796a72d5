"""HMR (Kanazawa et al., CVPR 2018): image encoder + iterative error feedback to SMPL parameters.

An image backbone's globally pooled feature and the current parameter estimate go through
a two-layer MLP that predicts a correction; three iterations from the mean parameters
(`MeanParams`) give the body's joint rotations (24: the root in the camera frame, then the
23 body joints), its shape ``betas`` and a weak-perspective camera ``(s, tx, ty)`` projecting
the model-frame joints to crop-normalised coordinates ``s * (X, Y) + (tx, ty)`` in [-1, 1].
Rotations are regressed in a chosen parameterisation (`Rot6D`, Zhou et al. 2019, as in SPIN,
or `AxisAngle`, as in the original HMR).

Adversarial prior: with a `sahmr.models.discriminators.FactorisedPoseDiscriminator` and a
`sahmr.models.discriminators.PoseLibrary` of "real" poses, the forward pass also scores its
predictions with the discriminator's current weights *detached* (``HMROutput.disc_scores``;
the encoder's adversarial loss in `sahmr.losses.hmr.HMRLoss` reaches only the encoder), and
`HMR.discriminator_step` gives the discriminator's own loss. The training engine must:

1. back-propagate the main loss and step its optimiser (the discriminator's parameters get no
   gradient from it, so an optimiser over all parameters leaves them alone; better, build it
   over `HMR.generator_parameters`);
2. call ``loss = model.discriminator_step(output)``, back-propagate ``loss.total`` and step a
   second optimiser over `HMR.discriminator_parameters` (HMR: Adam, lr 1e-4, weight decay
   1e-4), whenever `HMR.has_discriminator`.

Under DDP the discriminator is unused in the main graph: wrap with
``find_unused_parameters=True``.

`HMR.predict` places the body in the camera: the translation whose perspective projection
with the crop camera ``K_crop`` best matches the weak-perspective 2-D joints
(`sahmr.geometry.pnp.estimate_translation`); world-frame results follow from ``T_w2c``
(`sahmr.records.BodyPrediction.vertices_world`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.func import functional_call

from sahmr.geometry.pnp import estimate_translation
from sahmr.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rot6d,
    rot6d_to_matrix,
)
from sahmr.models.discriminators import (
    FactorisedPoseDiscriminator,
    PoseLibrary,
    lsgan_discriminator_loss,
)
from sahmr.models.modes import eval_mode
from sahmr.optim.smplify import exclude_from_state_dict
from sahmr.records import BodyPrediction, FrameInputs, FrameTargets, LossOutput

__all__ = [
    "HMR",
    "AxisAngle",
    "HMROutput",
    "IEFRegressor",
    "MeanParams",
    "Rot6D",
    "crop_to_normalized",
    "exclude_from_state_dict",
    "normalized_to_crop",
    "weak_perspective",
]

NUM_POSE_JOINTS = 24
"""Rotations regressed per body: SMPL's root + 23 body joints."""


# ------------------------------------------------------------------------------------------
# Rotation parameterisations


class Rot6D(nn.Module):
    """The continuous 6-D rotation representation (first two matrix columns)."""

    dim = 6

    def to_matrix(self, x: Tensor) -> Tensor:
        """Tensor (..., 6) -> rotation matrices (..., 3, 3) (Gram-Schmidt)."""
        return rot6d_to_matrix(x)

    def from_matrix(self, R: Tensor) -> Tensor:
        """Rotation matrices (..., 3, 3) -> Tensor (..., 6)."""
        return matrix_to_rot6d(R)


class AxisAngle(nn.Module):
    """Axis-angle vectors (radians), HMR's original parameterisation."""

    dim = 3

    def to_matrix(self, x: Tensor) -> Tensor:
        """Tensor (..., 3) -> rotation matrices (..., 3, 3) (Rodrigues)."""
        return axis_angle_to_matrix(x)

    def from_matrix(self, R: Tensor) -> Tensor:
        """Rotation matrices (..., 3, 3) -> Tensor (..., 3)."""
        return matrix_to_axis_angle(R)


RotationParameterization = Rot6D | AxisAngle


# ------------------------------------------------------------------------------------------
# Crop coordinates


def crop_to_normalized(uv_crop: Tensor, crop_size: int) -> Tensor:
    """Crop pixels (..., 2) -> crop-normalised coordinates (crop edges at -1 and +1)."""
    return uv_crop * (2.0 / crop_size) - 1.0


def normalized_to_crop(uv_norm: Tensor, crop_size: int) -> Tensor:
    """Crop-normalised coordinates (..., 2) -> crop pixels."""
    return (uv_norm + 1.0) * (crop_size / 2.0)


def weak_perspective(points: Tensor, cam: Tensor) -> Tensor:
    """HMR's weak-perspective projection ``s * (X, Y) + (tx, ty)``.

    Args:
        points: Tensor (B, N, 3) model-frame points with camera-frame axes, metres.
        cam: Tensor (B, 3) ``(s, tx, ty)``.

    Returns:
        Tensor (B, N, 2) crop-normalised coordinates.
    """
    return cam[:, None, :1] * points[..., :2] + cam[:, None, 1:]


# ------------------------------------------------------------------------------------------
# Mean parameters and the regressor


class MeanParams(nn.Module):
    """The regressor's starting point: mean pose, shape and camera (buffers).

    HMR/SPIN start from mean SMPL parameters of their mocap data; here the body-pose mean is
    the chordal mean of the generator's pose library (stored with the pose prior,
    `sahmr.optim.priors`), the root faces the camera upright (a half turn about the camera's
    x axis: the body's y-up, z-forward frame -> OpenCV's y-down, z-forward), betas are zero.

    Args:
        body_pose: Tensor (23, 3) or (69,) mean body pose, axis-angle radians.
        global_orient: Tensor (3,) mean root rotation in the camera frame, axis-angle.
        num_betas: Shape coefficients (mean zero).
        cam: Mean weak-perspective camera ``(s, tx, ty)``.
    """

    def __init__(
        self,
        *,
        body_pose: Tensor,
        global_orient: Tensor | None = None,
        num_betas: int = 10,
        cam: tuple[float, float, float] = (0.9, 0.0, 0.0),
    ) -> None:
        super().__init__()
        if global_orient is None:
            global_orient = torch.tensor([math.pi, 0.0, 0.0])
        pose = torch.cat([global_orient.reshape(1, 3), body_pose.reshape(-1, 3)]).float()
        self.register_buffer("rotmats", axis_angle_to_matrix(pose))  # (24, 3, 3)
        self.register_buffer("betas", torch.zeros(num_betas))
        self.register_buffer("cam", torch.tensor(cam, dtype=torch.float32))

    @classmethod
    def from_pose_prior(
        cls,
        path: str | Path | None = None,
        *,
        num_betas: int = 10,
        cam: tuple[float, float, float] = (0.9, 0.0, 0.0),
    ) -> MeanParams:
        """Mean parameters from the pose-prior file (default: the shipped ``pose_gmm.npz``)."""
        from sahmr.optim.priors import load_pose_gmm_arrays

        arrays = load_pose_gmm_arrays(path)
        return cls(
            body_pose=torch.from_numpy(arrays["mean_body_pose"]), num_betas=num_betas, cam=cam
        )

    def state(self, batch_size: int, rotation: RotationParameterization) -> Tensor:
        """The mean as a regressor state, Tensor (B, 24 * dim + NB + 3)."""
        flat = torch.cat([rotation.from_matrix(self.rotmats).reshape(-1), self.betas, self.cam])
        return flat.expand(batch_size, -1)


class IEFRegressor(nn.Module):
    """Iterative error feedback: ``state += MLP([feature, state])``, ``num_iterations`` times.

    State layout: 24 rotations (``rotation.dim`` each; root first), NB betas, camera (3).

    Args:
        feature_dim: C of the pooled image (or temporal) feature.
        rotation: `Rot6D` or `AxisAngle`.
        num_betas: NB.
        hidden_dim: Width of the two hidden layers (HMR/SPIN: 1024).
        num_iterations: Feedback iterations (HMR/SPIN: 3).
        dropout: Dropout after each hidden layer (HMR/SPIN: 0.5).
    """

    def __init__(
        self,
        *,
        feature_dim: int,
        rotation: RotationParameterization,
        num_betas: int = 10,
        hidden_dim: int = 1024,
        num_iterations: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.rotation = rotation
        self.num_betas = num_betas
        self.num_iterations = num_iterations
        self.pose_dim = NUM_POSE_JOINTS * rotation.dim
        self.state_dim = self.pose_dim + num_betas + 3
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim + self.state_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.dec_pose = nn.Linear(hidden_dim, self.pose_dim)
        self.dec_shape = nn.Linear(hidden_dim, num_betas)
        self.dec_cam = nn.Linear(hidden_dim, 3)
        for layer in (self.dec_pose, self.dec_shape, self.dec_cam):  # small first corrections
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor, init: Tensor) -> list[Tensor]:
        """Run the iterations.

        Args:
            features: Tensor (N, C).
            init: Tensor (N, state_dim) starting state.

        Returns:
            The N x state_dim state after each iteration (the last is the estimate).
        """
        state = init
        states = []
        for _ in range(self.num_iterations):
            h = self.mlp(torch.cat([features, state], dim=1))
            state = state + torch.cat([self.dec_pose(h), self.dec_shape(h), self.dec_cam(h)], 1)
            states.append(state)
        return states

    def split(self, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """State -> ``(rotmats (N, 24, 3, 3), betas (N, NB), cam (N, 3))``."""
        N = state.shape[0]
        pose = state[:, : self.pose_dim].reshape(N, NUM_POSE_JOINTS, self.rotation.dim)
        betas = state[:, self.pose_dim : self.pose_dim + self.num_betas]
        cam = state[:, self.pose_dim + self.num_betas :]
        return self.rotation.to_matrix(pose), betas, cam


# ------------------------------------------------------------------------------------------
# HMR


@dataclass
class HMROutput:
    """HMR's estimate for B frames. Rotations and points use camera-frame axes.

    Attributes:
        global_orient_rotmat: Tensor (B, 3, 3) root rotation, body -> camera.
        body_pose_rotmat: Tensor (B, 23, 3, 3) joint rotations.
        betas: Tensor (B, NB).
        cam: Tensor (B, 3) weak-perspective ``(s, tx, ty)``.
        vertices: Tensor (B, V, 3) posed mesh in the model frame (no translation), metres.
        joints: Tensor (B, 24, 3) SMPL joints, model frame.
        joints14: Tensor (B, 14, 3) LSP joints, model frame.
        joints2d_crop: Tensor (B, 24, 2) weak-perspective projection of ``joints``, crop px.
        joints14_2d_crop: Tensor (B, 14, 2) the same for ``joints14``.
        crop_size: Crop side S in pixels.
        disc_scores: Tensor (B, D) scores of the predictions by the (frozen) discriminator,
            or None (no discriminator, or eval mode).
    """

    global_orient_rotmat: Tensor
    body_pose_rotmat: Tensor
    betas: Tensor
    cam: Tensor
    vertices: Tensor
    joints: Tensor
    joints14: Tensor
    joints2d_crop: Tensor
    joints14_2d_crop: Tensor
    crop_size: int
    disc_scores: Tensor | None = None

    @property
    def rotmats(self) -> Tensor:
        """Tensor (B, 24, 3, 3): root then body joints."""
        return torch.cat([self.global_orient_rotmat[:, None], self.body_pose_rotmat], dim=1)


def body_outputs(
    body_model: nn.Module,
    regressor: IEFRegressor,
    state: Tensor,
    crop_size: int,
    betas_override: Tensor | None = None,
) -> HMROutput:
    """Pose the body of a regressor state (shared by HMR, SPIN and VIBE).

    Args:
        body_model: `sahmr.body.BodyModel`.
        regressor: The regressor that produced ``state`` (for its layout).
        state: Tensor (N, state_dim).
        crop_size: S.
        betas_override: Optional Tensor (N, NB) replacing the state's betas (VIBE's shape
            shared over a clip).

    Returns:
        `HMROutput` (without discriminator scores).
    """
    rotmats, betas, cam = regressor.split(state)
    if betas_override is not None:
        betas = betas_override
    body = body_model(betas=betas, global_orient=rotmats[:, :1], body_pose=rotmats[:, 1:])
    j2d = normalized_to_crop(weak_perspective(body.joints, cam), crop_size)
    j14_2d = normalized_to_crop(weak_perspective(body.joints14, cam), crop_size)
    return HMROutput(
        global_orient_rotmat=rotmats[:, 0],
        body_pose_rotmat=rotmats[:, 1:],
        betas=betas,
        cam=cam,
        vertices=body.vertices,
        joints=body.joints,
        joints14=body.joints14,
        joints2d_crop=j2d,
        joints14_2d_crop=j14_2d,
        crop_size=crop_size,
    )


def place_in_camera(output: HMROutput, K_crop: Tensor) -> BodyPrediction:
    """Camera-frame body of a weak-perspective estimate by perspective-n-point.

    The translation makes the perspective projection (``K_crop``) of the 24 joints match
    their weak-perspective projection in least squares (the rotation is the network's).

    Args:
        output: The estimate.
        K_crop: Tensor (B, 3, 3) crop intrinsics.

    Returns:
        `BodyPrediction` (24 SMPL joints, root = pelvis, camera-frame SMPL parameters).
    """
    t = estimate_translation(
        output.joints.float(), output.joints2d_crop.float(), K_crop.float()
    ).to(output.joints.dtype)
    joints_cam = output.joints + t[:, None]
    B = t.shape[0]
    params = {
        "betas": output.betas,
        "global_orient": matrix_to_axis_angle(output.global_orient_rotmat),
        "body_pose": matrix_to_axis_angle(output.body_pose_rotmat).reshape(B, -1),
        "transl": t,
    }
    return BodyPrediction(
        verts_cam=output.vertices + t[:, None],
        joints_cam=joints_cam,
        root_cam=joints_cam[:, 0],
        params=params,
    )


def pooled_features(backbone: nn.Module, image: Tensor) -> Tensor:
    """Global average of the backbone's grid, Tensor (B, C)."""
    return backbone(image).mean(dim=(-2, -1))


class HMR(nn.Module):
    """HMR: backbone -> pooled feature -> IEF regressor -> SMPL-format body.

    Args:
        backbone: Image backbone with ``out_channels`` (`sahmr.models.backbones.Backbone`).
        body_model: `sahmr.body.BodyModel` posing the estimates (its buffers are made
            non-persistent: not saved in checkpoints, see `exclude_from_state_dict`).
        regressor: `IEFRegressor` with ``feature_dim = backbone.out_channels``.
        mean_params: `MeanParams` (the iteration's start).
        discriminator: Optional `FactorisedPoseDiscriminator` (the adversarial prior).
        pose_library: "Real" poses/shapes for the discriminator (needed with it).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        body_model: nn.Module,
        regressor: IEFRegressor,
        mean_params: MeanParams,
        discriminator: FactorisedPoseDiscriminator | None = None,
        pose_library: PoseLibrary | None = None,
    ) -> None:
        super().__init__()
        if discriminator is not None and pose_library is None:
            raise ValueError("an adversarial prior needs a pose_library of real samples")
        self.backbone = backbone
        self.body_model = exclude_from_state_dict(body_model)
        self.regressor = regressor
        self.mean_params = mean_params
        self.discriminator = discriminator
        self.pose_library = pose_library

    # ------------------------------------------------------------------ parameters

    @property
    def has_discriminator(self) -> bool:
        """Whether the engine must run `discriminator_step` after each training step."""
        return self.discriminator is not None

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Parameters of the discriminator (the second optimiser's)."""
        return [] if self.discriminator is None else list(self.discriminator.parameters())

    def generator_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the discriminator's (the main optimiser's)."""
        skip = {id(p) for p in self.discriminator_parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    # ------------------------------------------------------------------ forward

    def regress(self, features: Tensor, crop_size: int) -> HMROutput:
        """IEF from the mean parameters on pooled features (N, C)."""
        init = self.mean_params.state(features.shape[0], self.regressor.rotation)
        state = self.regressor(features, init)[-1]
        return body_outputs(self.body_model, self.regressor, state, crop_size)

    def score_frozen(self, output: HMROutput) -> Tensor | None:
        """Discriminator scores with its weights detached (the encoder's adversarial input)."""
        if self.discriminator is None:
            return None
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        return functional_call(
            self.discriminator, frozen, (output.body_pose_rotmat, output.betas)
        )

    def forward(self, inputs: FrameInputs, targets: FrameTargets | None = None) -> HMROutput:
        """Estimate bodies from crops (targets are not used).

        Args:
            inputs: `FrameInputs` (image (B, 3, S, S)).
            targets: Unused (kept for the common method signature).

        Returns:
            `HMROutput`; ``disc_scores`` in training mode with a discriminator.
        """
        out = self.regress(pooled_features(self.backbone, inputs.image), inputs.crop_size)
        if self.training:
            out.disc_scores = self.score_frozen(out)
        return out

    def discriminator_step(self, output: HMROutput) -> LossOutput:
        """The discriminator's least-squares loss: library samples real, predictions fake.

        ``sum_d mean_b (D_d(real) - 1)^2 + sum_d mean_b D_d(fake)^2`` over the J + 2
        discriminators, with as many real samples as predictions. Back-propagate ``total``
        into `discriminator_parameters` only (predictions are detached).

        Raises:
            RuntimeError: Without a discriminator.
        """
        if self.discriminator is None or self.pose_library is None:
            raise RuntimeError("this HMR has no discriminator")
        B = output.betas.shape[0]
        real_pose, real_betas = self.pose_library.sample(B)
        d_real = self.discriminator(real_pose.to(output.betas), real_betas.to(output.betas))
        d_fake = self.discriminator(output.body_pose_rotmat.detach(), output.betas.detach())
        real, fake = lsgan_discriminator_loss(d_real, d_fake)
        return LossOutput(total=real + fake, terms={"disc_real": real, "disc_fake": fake})

    def predict(self, inputs: FrameInputs) -> BodyPrediction:
        """Camera-frame bodies (eval mode, no gradients), placed by `place_in_camera`."""
        with eval_mode(self), torch.no_grad():
            out = self.forward(inputs)
        return place_in_camera(out, inputs.K_crop)

"""VIBE (Kocabas et al., CVPR 2020): temporal encoder over per-frame features + HMR's regressor.

For a clip of T frames: per-frame pooled backbone features (B, T, C) -> a GRU temporal
encoder with a residual connection (`TemporalEncoder`) -> the IEF regressor of HMR
(`sahmr.models.hmr.IEFRegressor`) per frame from the mean parameters; the body shape is
shared over the clip (the per-frame betas averaged over T). A motion discriminator
(`sahmr.models.discriminators.MotionDiscriminator`: GRU + attention pooling) judges the
predicted pose sequences against "real" ones (`sahmr.models.discriminators.MotionLibrary`:
the generator's poses interpolated into motions; VIBE used AMASS). The engine calls
`VIBE.discriminator_step` after each step exactly as for `sahmr.models.hmr.HMR` (see its
module documentation).

Clips come as `ClipInputs` / `ClipTargets`: the frame-level `FrameInputs` / `FrameTargets`
of B * T frames, clip-major (row ``b * T + t``), plus T; build them from a
`sahmr.data.sequences.ClipBatch` with `prepare_clip_inputs` / `prepare_clip_targets`.
`VIBE.forward` also accepts plain `FrameInputs` (each frame a clip of length 1: no temporal
context). `VIBE.metrics` reports the acceleration error of the clips.

Differences from the published VIBE (docs/baselines.md): the backbone is trained end to end
by default (VIBE froze SPIN-pretrained features; ``freeze_backbone=True`` does that with a
loaded backbone), real motions come from the generator's pose library, rotations enter the
motion discriminator as 6-D.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn
from torch.func import functional_call

from sahmr.data.prepare import prepare_inputs, prepare_targets
from sahmr.data.sequences import ClipBatch
from sahmr.evaluation.metrics import acceleration_error
from sahmr.models.discriminators import (
    MotionDiscriminator,
    MotionLibrary,
    lsgan_discriminator_loss,
)
from sahmr.models.hmr import (
    HMROutput,
    IEFRegressor,
    MeanParams,
    body_outputs,
    exclude_from_state_dict,
    place_in_camera,
    pooled_features,
)
from sahmr.models.modes import eval_mode
from sahmr.records import BodyPrediction, FrameInputs, FrameTargets, LossOutput
from sahmr.scene.frontend import SceneBank

__all__ = [
    "VIBE",
    "ClipInputs",
    "ClipTargets",
    "TemporalEncoder",
    "VIBEOutput",
    "clip_acceleration_error",
    "prepare_clip_inputs",
    "prepare_clip_targets",
]


@dataclass
class ClipInputs:
    """Inputs of B clips of T frames.

    Attributes:
        frames: `FrameInputs` of the B * T frames, clip-major.
        clip_length: T.
    """

    frames: FrameInputs
    clip_length: int

    @property
    def batch_size(self) -> int:
        """Number of clips B."""
        return self.frames.batch_size // self.clip_length

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipInputs:
        """A copy on ``device``."""
        return ClipInputs(self.frames.to(device, non_blocking), self.clip_length)


@dataclass
class ClipTargets:
    """Ground truth of B clips of T frames.

    Attributes:
        frames: `FrameTargets` of the B * T frames, clip-major.
        clip_length: T.
    """

    frames: FrameTargets
    clip_length: int

    @property
    def batch_size(self) -> int:
        """Number of clips B."""
        return self.frames.batch_size // self.clip_length

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipTargets:
        """A copy on ``device``."""
        return ClipTargets(self.frames.to(device, non_blocking), self.clip_length)


def prepare_clip_inputs(
    batch: ClipBatch, scenes: SceneBank | None = None, *, device: torch.device | str | None = None
) -> ClipInputs:
    """`sahmr.data.prepare.prepare_inputs` of a clip batch's frames."""
    return ClipInputs(prepare_inputs(batch.frames, scenes, device=device), batch.clip_length)


def prepare_clip_targets(
    batch: ClipBatch,
    topology,
    j14_regressor: Tensor,
    *,
    device: torch.device | str | None = None,
) -> ClipTargets:
    """`sahmr.data.prepare.prepare_targets` of a clip batch's frames."""
    frames = prepare_targets(batch.frames, topology, j14_regressor, device=device)
    return ClipTargets(frames, batch.clip_length)


class TemporalEncoder(nn.Module):
    """VIBE's temporal encoder: GRU over per-frame features, projected back, residual.

    Args:
        feature_dim: C of the per-frame features.
        hidden_dim: GRU width (VIBE: 1024).
        num_layers: GRU layers (VIBE: 2).
        bidirectional: Bidirectional GRU (VIBE: False).
    """

    def __init__(
        self,
        *,
        feature_dim: int,
        hidden_dim: int = 1024,
        num_layers: int = 2,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.gru = nn.GRU(
            feature_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
        )
        self.proj = nn.Linear(hidden_dim * (2 if bidirectional else 1), feature_dim)

    def forward(self, features: Tensor) -> Tensor:
        """Tensor (B, T, C) -> Tensor (B, T, C): ``x + Linear(GRU(x))``."""
        h, _ = self.gru(features)
        return features + self.proj(h)


@dataclass
class VIBEOutput(HMROutput):
    """`HMROutput` of the B * T clip frames (clip-major) plus the clip structure.

    Attributes:
        clip_length: T.
        motion_scores: Tensor (B, 1) frozen motion-discriminator scores of the predicted
            clips (training with a discriminator), else None.
        transl_cam: Tensor (B * T, 3) detached translation placing each frame's body in the
            camera by PnP (`sahmr.models.hmr.place_in_camera`), for the metrics.
    """

    clip_length: int = 1
    motion_scores: Tensor | None = None
    transl_cam: Tensor | None = None

    def per_clip(self, x: Tensor) -> Tensor:
        """Reshape a per-frame tensor (B * T, ...) to (B, T, ...)."""
        return x.reshape(-1, self.clip_length, *x.shape[1:])


def clip_acceleration_error(pred: Tensor, gt: Tensor) -> Tensor:
    """Acceleration error of clips (mm / frame^2), `sahmr.evaluation.metrics.acceleration_error`.

    Args:
        pred: Tensor (B, T, J, 3) predicted points, metres.
        gt: Tensor (B, T, J, 3) ground truth.

    Returns:
        Tensor (B, T - 2).
    """
    return torch.stack([acceleration_error(p, g) for p, g in zip(pred, gt)])


class VIBE(nn.Module):
    """VIBE: backbone -> temporal GRU -> IEF regressor per frame, shape shared per clip.

    Args:
        backbone: Image backbone with ``out_channels``.
        body_model: `sahmr.body.BodyModel` (buffers not checkpointed).
        encoder: `TemporalEncoder` with ``feature_dim = backbone.out_channels``.
        regressor: `sahmr.models.hmr.IEFRegressor` on the encoded features.
        mean_params: `sahmr.models.hmr.MeanParams`.
        motion_discriminator: Optional `MotionDiscriminator` (the adversarial motion prior).
        motion_library: "Real" motions (needed with the discriminator).
        freeze_backbone: Keep the backbone fixed (no gradients, eval mode), as VIBE did
            with its pretrained SPIN features.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        body_model: nn.Module,
        encoder: TemporalEncoder,
        regressor: IEFRegressor,
        mean_params: MeanParams,
        motion_discriminator: MotionDiscriminator | None = None,
        motion_library: MotionLibrary | None = None,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        if motion_discriminator is not None and motion_library is None:
            raise ValueError("a motion discriminator needs a motion_library of real motions")
        self.backbone = backbone
        self.body_model = exclude_from_state_dict(body_model)
        self.encoder = encoder
        self.regressor = regressor
        self.mean_params = mean_params
        self.motion_discriminator = motion_discriminator
        self.motion_library = motion_library
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> VIBE:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    # ------------------------------------------------------------------ parameters

    @property
    def has_discriminator(self) -> bool:
        """Whether the engine must run `discriminator_step` after each training step."""
        return self.motion_discriminator is not None

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Parameters of the motion discriminator (the second optimiser's)."""
        d = self.motion_discriminator
        return [] if d is None else list(d.parameters())

    def generator_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter except the discriminator's."""
        skip = {id(p) for p in self.discriminator_parameters()}
        return [p for p in self.parameters() if id(p) not in skip and p.requires_grad]

    # ------------------------------------------------------------------ forward

    def forward(
        self, inputs: ClipInputs | FrameInputs, targets: ClipTargets | None = None
    ) -> VIBEOutput:
        """Estimate bodies for every frame of the clips.

        Args:
            inputs: `ClipInputs` (or `FrameInputs`: clips of one frame).
            targets: Unused (common signature).

        Returns:
            `VIBEOutput` over the B * T frames.
        """
        clip = inputs if isinstance(inputs, ClipInputs) else ClipInputs(inputs, 1)
        frames, T = clip.frames, clip.clip_length
        if self.freeze_backbone:
            with torch.no_grad():
                feats = pooled_features(self.backbone, frames.image)
        else:
            feats = pooled_features(self.backbone, frames.image)
        N, C = feats.shape
        B = N // T
        encoded = self.encoder(feats.reshape(B, T, C)).reshape(N, C)
        init = self.mean_params.state(N, self.regressor.rotation)
        state = self.regressor(encoded, init)[-1]
        _, betas, _ = self.regressor.split(state)
        shared = betas.reshape(B, T, -1).mean(1, keepdim=True).expand(B, T, -1).reshape(N, -1)
        out = body_outputs(self.body_model, self.regressor, state, frames.crop_size, shared)
        result = VIBEOutput(**{f.name: getattr(out, f.name) for f in fields(HMROutput)})
        result.clip_length = T
        with torch.no_grad():
            result.transl_cam = place_in_camera(out, frames.K_crop).params["transl"]
        if self.training and self.motion_discriminator is not None:
            frozen = {k: v.detach() for k, v in self.motion_discriminator.named_parameters()}
            result.motion_scores = functional_call(
                self.motion_discriminator, frozen, (result.per_clip(result.body_pose_rotmat),)
            )
        return result

    def discriminator_step(self, output: VIBEOutput) -> LossOutput:
        """The motion discriminator's least-squares loss (library motions real, predictions
        fake, as many as predicted clips); back-propagate into `discriminator_parameters`.

        Raises:
            RuntimeError: Without a motion discriminator.
        """
        if self.motion_discriminator is None or self.motion_library is None:
            raise RuntimeError("this VIBE has no motion discriminator")
        fake = output.per_clip(output.body_pose_rotmat.detach())
        real = self.motion_library.sample(fake.shape[0], output.clip_length).to(fake)
        d_real = self.motion_discriminator(real)
        d_fake = self.motion_discriminator(fake)
        r, f = lsgan_discriminator_loss(d_real, d_fake)
        return LossOutput(total=r + f, terms={"motion_disc_real": r, "motion_disc_fake": f})

    def predict(self, inputs: ClipInputs | FrameInputs) -> BodyPrediction:
        """Camera-frame bodies of every frame (B * T rows, clip-major), placed by PnP."""
        frames = inputs.frames if isinstance(inputs, ClipInputs) else inputs
        with eval_mode(self), torch.no_grad():
            out = self.forward(inputs)
        return place_in_camera(out, frames.K_crop)

    def metrics(
        self, output: VIBEOutput, targets: ClipTargets
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Acceleration errors (mm / frame^2) as ``(sum, count)`` over interior clip frames.

        ``accel_error``: pelvis-relative SMPL joints (VIBE's protocol, root-aligned);
        ``accel_error_cam``: absolute camera-frame joints after placement by PnP.
        """
        T = output.clip_length
        if T < 3:
            return {}
        gt = targets.frames
        pred_rel = output.joints - output.joints[:, :1]
        gt_rel = gt.joints_cam - gt.root_cam[:, None]
        e_rel = clip_acceleration_error(output.per_clip(pred_rel), output.per_clip(gt_rel))
        n = torch.tensor(float(e_rel.numel()))
        out = {"accel_error": (e_rel.sum().detach(), n)}
        if output.transl_cam is not None:
            pred_cam = output.joints + output.transl_cam[:, None]
            e_cam = clip_acceleration_error(
                output.per_clip(pred_cam), output.per_clip(gt.joints_cam)
            )
            out["accel_error_cam"] = (e_cam.sum().detach(), n)
        return out

"""Parametric body head: transformer outputs -> body-model parameters -> a valid body.

METRO-style mesh networks regress free vertex positions, which nothing ties to a body: after
short training they come out torn and flattened. `ParametricBodyHead` reads the same encoder
outputs and predicts SMPL-format parameters instead; the vertices then come from the loaded
`sahmr.body.BodyModel` (the license-free body or a user's SMPL), so the output is always a
body.

How it reads the encoder: every mesh query token (J14 joints + coarse vertices) is embedded
from ``[token feature (C), its regressed root-relative position (3)]``. A small transformer
decoder lets ``24 + 1`` learned queries (one per body-model joint, one for the shape) attend to
those tokens; each joint query regresses a continuous 6-D rotation (Zhou et al., CVPR 2019),
the shape query the ``num_betas`` shape coefficients. The rotations are residuals on a rest
rotation: identity for the body joints, and for the global orientation an upright body facing
the camera in OpenCV axes (``diag(1, -1, -1)``), so an untrained head already returns a
plausible person.

Frames: the body is posed in camera axes (``global_orient_cam``) with its root joint (SMPL
joint 0, the pelvis) at the origin; callers place it (SA-HMR at RCNet's root, METRO by PnP) and
express the placement as ``transl_cam = root_cam - J0(betas)`` so that
``body_model(betas, global_orient_cam, body_pose, transl_cam)`` reproduces the placed mesh.

Scale: the crop is cut to the person's box, so the image alone cannot tell a tall person far
away from a short one near by, and a head that reads only the crop learns mean-height bodies
(the run-5 checkpoint's statures spread 2 cm against 8 cm in the data; given the true shape,
its own poses scored 2.3 % edge-length error instead of 6.9 %: docs/results.md, runs 6-8).
A head built with ``crop_scale`` also reads how many metres the crop spans at the depth
the body is placed at (`sahmr.geometry.crops.crop_side_m`; SA-HMR: RCNet's root), from
which the person's height in the crop gives their height in metres. Its branch starts at
zero, so a checkpoint trained without it predicts exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sahmr.body.constants import NUM_SMPL_JOINTS
from sahmr.geometry.rotations import matrix_to_axis_angle, matrix_to_rot6d, rot6d_to_matrix

CROP_SIDE_REF_M = 2.0
"""Reference of the crop-scale input: the head reads ``log(crop_side_m / CROP_SIDE_REF_M)``
(a standing adult's box with the crop margin spans about 2 m)."""

UPRIGHT_FACING_CAMERA = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))
"""Rotation from the body-model frame (y up, facing +z) to an upright body facing an OpenCV
camera (y down, z forward): the mean global orientation the head starts from."""


@dataclass
class BodyParams:
    """Body-model parameters and the posed body, camera axes, root at the origin.

    Attributes:
        betas: Tensor (B, NB) shape coefficients.
        rotmats: Tensor (B, 24, 3, 3); ``[:, 0]`` the global orientation in camera axes,
            ``[:, 1:]`` the joint rotations relative to their parents.
        verts_rel: Tensor (B, V, 3) vertices minus the root joint, metres.
        joints_rel: Tensor (B, 24, 3) body-model joints minus the root joint.
        joints14_rel: Tensor (B, 14, 3) LSP joints (H36M-style regressor) minus the root joint.
        root_rest: Tensor (B, 3) root joint of the posed body before centring (= J0 of the
            shaped rest body; ``transl = root - root_rest`` places the body).
        root_offset: Tensor (B, 3) camera-frame correction (metres) the head adds to the root
            it was given (SA-HMR: RCNet's), or None when the head does not predict one.
    """

    betas: Tensor
    rotmats: Tensor
    verts_rel: Tensor
    joints_rel: Tensor
    joints14_rel: Tensor
    root_rest: Tensor
    root_offset: Tensor | None = None

    def smpl_params(self, root_cam: Tensor) -> dict[str, Tensor]:
        """SMPL-format parameters (smplx names, axis-angle) of the body placed at ``root_cam``.

        Args:
            root_cam: Tensor (B, 3) where the root joint goes, camera frame, metres.

        Returns:
            ``betas`` (B, NB), ``global_orient`` (B, 3), ``body_pose`` (B, 69), ``transl``
            (B, 3), all float32, camera frame.
        """
        aa = matrix_to_axis_angle(self.rotmats.float())
        return {
            "betas": self.betas.float(),
            "global_orient": aa[:, 0],
            "body_pose": aa[:, 1:].reshape(aa.shape[0], -1),
            "transl": (root_cam - self.root_rest).float(),
        }


def _scale_branch(width: int) -> nn.Sequential:
    """``log crop side (B, 1) -> (B, width)``, its output layer at zero (no effect at first)."""
    branch = nn.Sequential(nn.Linear(1, width), nn.GELU(), nn.Linear(width, width))
    nn.init.zeros_(branch[-1].weight)
    nn.init.zeros_(branch[-1].bias)
    return branch


def _freeze_buffers(module: nn.Module) -> None:
    """Keep a body model's arrays out of state dicts (they belong to the body file)."""
    for sub in module.modules():
        sub._non_persistent_buffers_set.update(sub._buffers.keys())


class BodyHead(nn.Module):
    """What every parametric head shares: the body model (arrays not saved), the rest
    rotations the regressed 6-D residuals start from, posing and the forward pass.

    Subclasses implement `regress_all` ``(tokens (B, Q, C), xyz_rel (B, Q, 3), crop_side_m
    (B,) or None) -> (rotmats (B, 24, 3, 3), betas (B, NB), root offset (B, 3) or None)``;
    `regress` drops the offset.

    Args:
        body_model: A `sahmr.body.BodyModel` (any SMPL-format body).
        crop_scale: The head reads the crop's metric side (see the module docstring); every
            call must then pass ``crop_side_m``.
    """

    def __init__(self, *, body_model: nn.Module, crop_scale: bool = False) -> None:
        super().__init__()
        self.crop_scale = bool(crop_scale)
        self.body_model = body_model
        _freeze_buffers(self.body_model)
        self.body_model.requires_grad_(False)
        self.num_betas = int(body_model.num_betas)
        self.num_joints = NUM_SMPL_JOINTS
        rest = torch.eye(3).repeat(self.num_joints, 1, 1)
        rest[0] = torch.tensor(UPRIGHT_FACING_CAMERA)
        self.register_buffer("rest_rot6d", matrix_to_rot6d(rest), persistent=False)

    def regress_all(
        self, tokens: Tensor, xyz_rel: Tensor, crop_side_m: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """From the mesh query tokens (B, Q, C), their regressed root-relative positions
        (B, Q, 3), camera axes, and (``crop_scale`` heads) the crop's side in metres at the
        body's depth (B,): ``(rotmats (B, 24, 3, 3), betas (B, NB), root offset (B, 3)
        float32 metres, or None for a head without one)``."""
        raise NotImplementedError

    def regress(
        self, tokens: Tensor, xyz_rel: Tensor, crop_side_m: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Rotations (B, 24, 3, 3) and shape (B, NB) from the mesh query tokens."""
        rotmats, betas, _ = self.regress_all(tokens, xyz_rel, crop_side_m)
        return rotmats, betas

    def scale_input(self, crop_side_m: Tensor | None, dtype: torch.dtype) -> Tensor:
        """Tensor (B, 1) ``log(crop_side_m / CROP_SIDE_REF_M)`` for a ``crop_scale`` head.

        Raises:
            ValueError: If ``crop_side_m`` is None.
        """
        if crop_side_m is None:
            raise ValueError("this head reads the crop's metric scale: pass crop_side_m")
        side = crop_side_m.float().clamp_min(1e-3)
        return torch.log(side / CROP_SIDE_REF_M)[:, None].to(dtype)

    def rotations(self, rot6d_residual: Tensor) -> Tensor:
        """Tensor (B, 24, 3, 3) from 6-D residuals (B, 24, 6) on the rest rotations."""
        return rot6d_to_matrix(rot6d_residual.float() + self.rest_rot6d)

    def pose_body(self, rotmats: Tensor, betas: Tensor) -> BodyParams:
        """Poses the body model (float32) with its root joint at the origin.

        Args:
            rotmats: Tensor (B, 24, 3, 3).
            betas: Tensor (B, NB).
        """
        with torch.autocast(device_type=rotmats.device.type, enabled=False):
            out = self.body_model(
                betas=betas.float(), global_orient=rotmats[:, :1].float(),
                body_pose=rotmats[:, 1:].float(),
            )  # fmt: skip
        root = out.joints[:, 0]
        return BodyParams(
            betas=betas,
            rotmats=rotmats,
            verts_rel=out.vertices - root[:, None],
            joints_rel=out.joints - root[:, None],
            joints14_rel=out.joints14 - root[:, None],
            root_rest=root,
        )

    def forward(
        self, tokens: Tensor, xyz_rel: Tensor, crop_side_m: Tensor | None = None
    ) -> BodyParams:
        """Parameters and posed body from the mesh query tokens (see `regress_all`)."""
        rotmats, betas, root_offset = self.regress_all(tokens, xyz_rel, crop_side_m)
        body = self.pose_body(rotmats, betas)
        body.root_offset = root_offset
        return body


class ParametricBodyHead(BodyHead):
    """Mesh query tokens -> SMPL-format parameters -> posed body (see the module docstring).

    Args:
        body_model: A `sahmr.body.BodyModel` (any SMPL-format body); its arrays are not saved
            in checkpoints (they come from the body file).
        in_width: Channel width C of the encoder's output tokens.
        width: Width of the head's decoder.
        num_layers: Decoder layers.
        num_heads: Attention heads.
        dropout: Dropout in the decoder.
        num_tokens: Q, given by the mesh network (unused: attention takes any count).
        root_offset: Also regress a camera-frame root correction (metres) from one more
            learned query; its output layer starts at zero (see `MLPBodyHead`).
        crop_scale: Add an embedding of the crop's metric side to every query (see the
            module docstring).
    """

    def __init__(
        self,
        *,
        body_model: nn.Module,
        in_width: int,
        width: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        dropout: float = 0.0,
        num_tokens: int | None = None,
        root_offset: bool = False,
        crop_scale: bool = False,
    ) -> None:
        super().__init__(body_model=body_model, crop_scale=crop_scale)
        self.scale_embed = _scale_branch(width) if crop_scale else None
        self.token_embed = nn.Sequential(nn.Linear(in_width + 3, width), nn.LayerNorm(width))
        self.queries = nn.Parameter(torch.randn(self.num_joints + 1, width) * 0.02)
        layer = nn.TransformerDecoderLayer(
            d_model=width,
            nhead=num_heads,
            dim_feedforward=2 * width,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers=num_layers)
        self.norm = nn.LayerNorm(width)
        self.rot_out = nn.Linear(width, 6)
        self.betas_out = nn.Linear(width, self.num_betas)
        for lin in (self.rot_out, self.betas_out):
            nn.init.normal_(lin.weight, std=1e-3)
            nn.init.zeros_(lin.bias)
        self.root_query = nn.Parameter(torch.randn(1, width) * 0.02) if root_offset else None
        self.root_out = nn.Linear(width, 3) if root_offset else None
        if self.root_out is not None:
            nn.init.zeros_(self.root_out.weight)
            nn.init.zeros_(self.root_out.bias)

    def regress_all(
        self, tokens: Tensor, xyz_rel: Tensor, crop_side_m: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Rotations, shape and root offset from the mesh query tokens.

        Args:
            tokens: Tensor (B, Q, C) encoder outputs of the Q mesh query tokens.
            xyz_rel: Tensor (B, Q, 3) their regressed root-relative positions, camera axes.
            crop_side_m: Tensor (B,) the crop's side in metres at the body's depth
                (``crop_scale`` heads; ignored otherwise).

        Returns:
            ``(rotmats (B, 24, 3, 3), betas (B, NB), offset (B, 3) float32 metres, or None
            without ``root_offset``)``.
        """
        memory = self.token_embed(torch.cat([tokens, xyz_rel.to(tokens.dtype)], dim=-1))
        queries = self.queries
        if self.root_query is not None:
            queries = torch.cat([queries, self.root_query], dim=0)
        queries = queries.to(memory.dtype)[None].expand(memory.shape[0], -1, -1)
        if self.scale_embed is not None:
            scale = self.scale_embed(self.scale_input(crop_side_m, memory.dtype))
            queries = queries + scale[:, None].to(memory.dtype)
        out = self.norm(self.decoder(queries, memory))
        rot = self.rotations(self.rot_out(out[:, : self.num_joints]))
        betas = self.betas_out(out[:, self.num_joints]).float()
        offset = None
        if self.root_out is not None:
            offset = self.root_out(out[:, self.num_joints + 1]).float()
        return rot, betas, offset


class MLPBodyHead(BodyHead):
    """Parametric head as an MLP over all mesh query tokens at once (HMR-style regressor).

    Each token ``[feature (C), regressed position (3)]`` is projected to ``token_dim``
    channels; the flattened ``Q * token_dim`` vector goes through an MLP to 24 6-D rotation
    residuals and the betas. Unlike the decoder head it ties every output to every token from
    the first step, so it learns fast from a pretrained mesh network (fixed ``Q``).

    Args:
        body_model: A `sahmr.body.BodyModel`.
        in_width: Channel width C of the encoder's output tokens.
        num_tokens: Q mesh query tokens (given by the mesh network).
        token_dim: Channels per token after projection.
        hidden: Width of the MLP's hidden layers.
        root_offset: Also regress a camera-frame correction (metres) of the root the body is
            placed at, from the same MLP features (SA-HMR: the encoder has cross-attended the
            contact points, expressed relative to RCNet's root, so the tokens see where the
            body's contact regions sit against the scene). Its output layer starts at zero:
            an SA-HMR trained without it predicts exactly as before.
        crop_scale: Add an embedding of the crop's metric side to the MLP's features (see
            the module docstring); it starts at zero as well.
    """

    def __init__(
        self,
        *,
        body_model: nn.Module,
        in_width: int,
        num_tokens: int,
        token_dim: int = 8,
        hidden: int = 512,
        root_offset: bool = False,
        crop_scale: bool = False,
    ) -> None:
        super().__init__(body_model=body_model, crop_scale=crop_scale)
        self.scale_net = _scale_branch(hidden) if crop_scale else None
        self.num_tokens = int(num_tokens)
        self.token_proj = nn.Linear(in_width + 3, token_dim)
        self.mlp = nn.Sequential(
            nn.LayerNorm(self.num_tokens * token_dim),
            nn.Linear(self.num_tokens * token_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
        )
        self.out = nn.Linear(hidden, self.num_joints * 6 + self.num_betas)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)
        self.root_out = nn.Linear(hidden, 3) if root_offset else None
        if self.root_out is not None:
            nn.init.zeros_(self.root_out.weight)
            nn.init.zeros_(self.root_out.bias)

    def regress_all(
        self, tokens: Tensor, xyz_rel: Tensor, crop_side_m: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Rotations, shape and root offset from the mesh query tokens.

        Args:
            tokens: Tensor (B, Q, C) encoder outputs of the Q mesh query tokens.
            xyz_rel: Tensor (B, Q, 3) their regressed root-relative positions, camera axes.
            crop_side_m: Tensor (B,) the crop's side in metres at the body's depth
                (``crop_scale`` heads; ignored otherwise).

        Returns:
            ``(rotmats (B, 24, 3, 3), betas (B, NB), offset (B, 3) float32 metres, or None
            without ``root_offset``)``.

        Raises:
            ValueError: If Q differs from ``num_tokens``.
        """
        if tokens.shape[1] != self.num_tokens:
            raise ValueError(f"{tokens.shape[1]} tokens, the head was built for {self.num_tokens}")
        feat = self.token_proj(torch.cat([tokens, xyz_rel.to(tokens.dtype)], dim=-1))
        hidden = self.mlp(feat.flatten(1))
        if self.scale_net is not None:
            hidden = hidden + self.scale_net(self.scale_input(crop_side_m, hidden.dtype))
        out = self.out(hidden).float()
        rot6d = out[:, : self.num_joints * 6].reshape(-1, self.num_joints, 6)
        offset = None if self.root_out is None else self.root_out(hidden).float()
        return self.rotations(rot6d), out[:, self.num_joints * 6 :], offset

"""METRO (Lin et al., CVPR 2021): a transformer regressing a body mesh from one image crop.

Tokens (letters: B batch, J = 14 LSP joints, Vc coarse vertices, G = h*w image-grid cells,
C backbone channels, W encoder width):

* J joint queries and Vc coarse-vertex queries, each ``Linear([template xyz (3), global image
  feature (C)]) -> W``. Templates: the rest-pose J14 joints (``topology.j_regressor_j14 @
  templates[0]``) and the coarsest template ``topology.templates[-1]``, both centred on the
  rest pelvis. In training a random fraction (``mask_ratio``) of the queries get their image
  feature replaced by a learned mask embedding (masked vertex modelling).
* G image-grid tokens, ``Linear(C) -> W`` of the backbone's feature grid, which the queries
  attend to (all tokens share one self-attention).
* A learned position/identity embedding per token.

A width-reducing `sahmr.models.transformer.TransformerCascade` encodes them; one shared
``Linear -> 3`` regresses the queries to root-relative camera-frame joints and coarse vertices
(metres, root = SMPL pelvis joint 0); a learned `sahmr.models.upsampling.MeshUpsampler` gives
the finer levels. A weak-perspective camera ``(s, tx, ty)`` from the global feature projects
root-relative points to crop-normalised coordinates ``s * (X, Y) + (tx, ty)`` in [-1, 1].

`METRO.predict` places the body in the camera with the translation that makes the perspective
projection (crop camera ``K_crop``) of its joints and coarse vertices match their
weak-perspective projection (least squares, `sahmr.geometry.pnp.estimate_translation`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from sahmr.body.topology import BodyTopology
from sahmr.geometry.crops import DEFAULT_CROP_SIZE
from sahmr.geometry.pnp import estimate_translation
from sahmr.models.modes import eval_mode
from sahmr.models.param_head import BodyHead, BodyParams
from sahmr.models.transformer import TransformerCascade
from sahmr.models.upsampling import MeshUpsampler
from sahmr.records import BodyPrediction, FrameInputs, FrameTargets

PELVIS_H36M = 0
"""Row of the pelvis in `BodyTopology.j_regressor_h36m` (centre of the query templates)."""


# ------------------------------------------------------------------------------------------
# Crop coordinates and the weak-perspective camera


def crop_to_normalized(uv_crop: Tensor, crop_size: int) -> Tensor:
    """Crop pixels (..., 2) -> crop-normalised coordinates in [-1, 1] (crop edges at +-1)."""
    return uv_crop * (2.0 / crop_size) - 1.0


def normalized_to_crop(uv_norm: Tensor, crop_size: int) -> Tensor:
    """Crop-normalised coordinates (..., 2) in [-1, 1] -> crop pixels."""
    return (uv_norm + 1.0) * (crop_size / 2.0)


def weak_perspective(points_rel: Tensor, cam: Tensor) -> Tensor:
    """Weak-perspective projection ``s * (X, Y) + (tx, ty)``.

    Args:
        points_rel: Tensor (B, N, 3) root-relative points, camera axes, metres.
        cam: Tensor (B, 3) ``(s, tx, ty)``: scale (crop-normalised units per metre) and shift.

    Returns:
        Tensor (B, N, 2) crop-normalised coordinates.
    """
    return cam[:, None, :1] * points_rel[..., :2] + cam[:, None, 1:]


# ------------------------------------------------------------------------------------------
# Output


@dataclass
class MetroOutput:
    """What `METRO.forward` returns (camera axes, metres, relative to the root = SMPL pelvis).

    Attributes:
        joints14_rel: Tensor (B, 14, 3) LSP joints regressed by the joint tokens.
        verts_rel_levels: Per mesh level, coarse -> fine, Tensor (B, V_l, 3); the last is the
            full-resolution mesh.
        joints14_from_verts_rel: Tensor (B, 14, 3) LSP joints regressed from the full mesh
            with ``topology.j_regressor_j14``.
        cam: Tensor (B, 3) weak-perspective camera ``(s, tx, ty)`` for crop-normalised 2-D.
        crop_size: Crop side S in pixels of the input images.
        attention: None, or per encoder block the last layer's head-averaged self-attention
            Tensor (B, T, T) over the tokens ``[J joints, Vc vertices, G grid cells]``.
        body: The parametric body (root-relative, camera axes), or None without a
            parametric head.
        faces: Tensor (F, 3) int64 faces of the full-resolution mesh.
    """

    joints14_rel: Tensor
    verts_rel_levels: list[Tensor]
    joints14_from_verts_rel: Tensor
    cam: Tensor
    crop_size: int
    attention: list[Tensor] | None = None
    body: BodyParams | None = None
    faces: Tensor | None = None

    @property
    def verts_rel(self) -> Tensor:
        """Tensor (B, V, 3) full-resolution root-relative vertices."""
        return self.verts_rel_levels[-1]

    def joints14_2d(self) -> Tensor:
        """Tensor (B, 14, 2) weak-perspective projection of `joints14_rel`, crop-normalised."""
        return weak_perspective(self.joints14_rel, self.cam)


# ------------------------------------------------------------------------------------------
# Shared token machinery of METRO and SA-HMR's mesh network


def _query_templates(topology: BodyTopology) -> tuple[np.ndarray, int]:
    """Rest-pose query positions ``[J14 joints; coarsest vertices]`` centred on the pelvis."""
    verts0 = np.asarray(topology.templates[0], dtype=np.float64)
    joints = np.asarray(topology.j_regressor_j14, dtype=np.float64) @ verts0
    pelvis = np.asarray(topology.j_regressor_h36m[PELVIS_H36M], dtype=np.float64) @ verts0
    coarse = np.asarray(topology.templates[-1], dtype=np.float64)
    return np.concatenate([joints, coarse]) - pelvis, joints.shape[0]


class MeshTokenNet(nn.Module):
    """Image encoding, query/grid token embedding and mesh decoding shared by METRO and
    `sahmr.models.scene_mesh_net.SceneAwareMeshNet` (the encoder is the subclass's business).

    Args:
        backbone: Image CNN with attributes ``out_channels`` (C) and ``out_stride``.
        topology: Body topology (templates, J14 regressor, up-sampling pattern).
        width: Input width W of the encoder.
        out_width: Output width of the encoder (input of the shared regression layer).
        mask_ratio: Fraction of query tokens masked in training, in [0, 1].
        image_size: Crop side S the grid position embeddings are built for.
        upsample_residual: Learn per-vertex offsets in the up-sampling.
        param_head: Factory of the parametric body head, called with the encoder's output
            width and query count (``param_head(in_width=..., num_tokens=...)``; hydra
            ``_partial_: true``); None
            regresses free-form vertices only.
        free_form_output: With a parametric head, still return the free-form vertices from
            ``predict`` (for comparison; the default returns the parametric body).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        topology: BodyTopology,
        width: int,
        out_width: int,
        mask_ratio: float,
        image_size: int,
        upsample_residual: bool,
        param_head: Callable[..., BodyHead] | None = None,
        free_form_output: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
        channels = int(backbone.out_channels)
        stride = int(backbone.out_stride)
        if image_size % stride:
            raise ValueError(f"image_size {image_size} is not a multiple of stride {stride}")
        templates, num_joints = _query_templates(topology)
        self.backbone = backbone
        self.num_joints = num_joints
        self.num_coarse = int(topology.num_vertices[-1])
        self.num_queries = num_joints + self.num_coarse
        self.image_size = int(image_size)
        self.grid_side = self.image_size // stride
        self.num_grid = self.grid_side**2
        self.mask_ratio = float(mask_ratio)
        self.register_buffer(
            "query_templates", torch.as_tensor(templates, dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            "j14_regressor",
            torch.as_tensor(np.asarray(topology.j_regressor_j14), dtype=torch.float32),
            persistent=False,
        )
        self.query_embed = nn.Linear(3 + channels, width)
        self.grid_embed = nn.Linear(channels, width)
        self.mask_embedding = nn.Parameter(torch.randn(channels) * 0.02)
        self.token_embedding = nn.Parameter(
            torch.randn(self.num_queries + self.num_grid, width) * 0.02
        )
        self.regressor = nn.Linear(out_width, 3)
        self.upsampler = MeshUpsampler(topology=topology, residual=upsample_residual)
        self.param_head = (
            None
            if param_head is None
            else param_head(in_width=out_width, num_tokens=self.num_queries)
        )
        self.free_form_output = bool(free_form_output)
        self.register_buffer(
            "faces", torch.as_tensor(np.asarray(topology.faces[0]), dtype=torch.int64),
            persistent=False,
        )  # fmt: skip
        if self.param_head is not None:
            nv = int(self.param_head.body_model.num_vertices)
            if nv != int(topology.num_vertices[0]):
                raise ValueError(
                    f"parametric head's body has {nv} vertices, the topology "
                    f"{topology.num_vertices[0]}: build both from the same body"
                )

    @property
    def parametric(self) -> bool:
        """Whether ``predict`` returns the parametric body (else the free-form vertices)."""
        return self.param_head is not None and not self.free_form_output

    def body_params(
        self,
        tokens_out: Tensor,
        joints: Tensor,
        coarse: Tensor,
        crop_side_m: Tensor | None = None,
    ) -> BodyParams | None:
        """The parametric body from the encoded query tokens, or None without a head.

        Args:
            tokens_out: Tensor (B, J + Vc + G, C) encoder outputs.
            joints: Tensor (B, J, 3) regressed root-relative joints of the joint tokens.
            coarse: Tensor (B, Vc, 3) regressed root-relative coarse vertices.
            crop_side_m: Tensor (B,) the crop's side in metres at the body's depth, for a
                head built with ``crop_scale`` (`sahmr.models.param_head`).
        """
        if self.param_head is None:
            return None
        xyz = torch.cat([joints, coarse], dim=1)
        return self.param_head(tokens_out[:, : self.num_queries], xyz, crop_side_m)

    def encode_image(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Backbone features of the crops.

        Args:
            image: Tensor (B, 3, S, S), ImageNet-normalised, S = ``image_size``.

        Returns:
            ``(global (B, C) mean-pooled feature, grid (B, G, C) row-major cells)``.
        """
        feat = self.backbone(image)
        h, w = feat.shape[-2:]
        if h * w != self.num_grid:
            raise ValueError(
                f"feature grid {h}x{w} does not match image_size {self.image_size} "
                f"({self.grid_side}x{self.grid_side}); got images of side {image.shape[-1]}"
            )
        return feat.mean(dim=(2, 3)), feat.flatten(2).transpose(1, 2)

    def embed_queries(self, global_feat: Tensor) -> Tensor:
        """Joint + coarse-vertex query tokens (with masking in training).

        Args:
            global_feat: Tensor (B, C).

        Returns:
            Tensor (B, J + Vc, W), before the identity embedding.
        """
        b, c = global_feat.shape
        feat = global_feat[:, None, :].expand(b, self.num_queries, c)
        if self.training:  # (also at ratio 0, so the embedding always takes part, e.g. in DDP)
            mask = torch.rand(b, self.num_queries, 1, device=feat.device) < self.mask_ratio
            feat = torch.where(mask, self.mask_embedding.to(feat.dtype), feat)
        xyz = self.query_templates.to(feat.dtype)[None].expand(b, -1, -1)
        return self.query_embed(torch.cat([xyz, feat], dim=-1))

    def embed_tokens(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """All mesh-branch tokens of a batch of crops.

        Args:
            image: Tensor (B, 3, S, S).

        Returns:
            ``(tokens (B, J + Vc + G, W) with identity embeddings, global feature (B, C))``.
        """
        global_feat, grid = self.encode_image(image)
        tokens = torch.cat([self.embed_queries(global_feat), self.grid_embed(grid)], dim=1)
        return tokens + self.token_embedding.to(tokens.dtype), global_feat

    def decode(self, tokens_out: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """Regresses encoded mesh-branch tokens to a mesh.

        Args:
            tokens_out: Tensor (B, J + Vc + G, out_width) (only the queries are read).

        Returns:
            ``(joints14_rel (B, J, 3), verts_rel_levels coarse -> fine, joints14 from the full
            mesh (B, J, 3))``, camera axes, metres, root-relative.
        """
        xyz = self.regressor(tokens_out[:, : self.num_queries])
        joints = xyz[:, : self.num_joints]
        levels = self.upsampler(xyz[:, self.num_joints :])
        reg = self.j14_regressor.to(levels[-1].dtype)
        return joints, levels, torch.einsum("jv,bvc->bjc", reg, levels[-1])


class METRO(MeshTokenNet):
    """METRO: image -> root-relative mesh + weak-perspective camera.

    Args:
        backbone: Image CNN (``out_channels``, ``out_stride``), e.g. from
            `sahmr.models.backbones.build_backbone`.
        encoder: The transformer cascade (its ``widths[0]`` is the token width).
        topology: Body topology (`sahmr.models.topology_io.load_topology`).
        mask_ratio: Fraction of query tokens masked in training (masked vertex modelling).
        image_size: Crop side S.
        upsample_residual: Learn per-vertex offsets in the up-sampling.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        encoder: TransformerCascade,
        topology: BodyTopology,
        mask_ratio: float = 0.3,
        image_size: int = DEFAULT_CROP_SIZE,
        upsample_residual: bool = True,
        param_head: Callable[..., BodyHead] | None = None,
        free_form_output: bool = False,
    ) -> None:
        super().__init__(
            backbone=backbone,
            topology=topology,
            width=encoder.in_width,
            out_width=encoder.out_width,
            mask_ratio=mask_ratio,
            image_size=image_size,
            upsample_residual=upsample_residual,
            param_head=param_head,
            free_form_output=free_form_output,
        )
        self.encoder = encoder
        self.cam_head = nn.Linear(int(backbone.out_channels), 3)
        nn.init.normal_(self.cam_head.weight, std=1e-3)
        with torch.no_grad():
            self.cam_head.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))

    def forward(
        self,
        inputs: FrameInputs,
        targets: FrameTargets | None = None,
        *,
        return_attention: bool = False,
    ) -> MetroOutput:
        """Regresses the mesh of each crop.

        Args:
            inputs: Frames; only ``image`` is read.
            targets: Unused (METRO needs no teacher forcing); accepted for the common API.
            return_attention: Also return the encoder's attention maps.

        Returns:
            `MetroOutput`.
        """
        tokens, global_feat = self.embed_tokens(inputs.image)
        encoded, attention = self.encoder(tokens, return_attention=return_attention)
        joints, levels, joints_reg = self.decode(encoded)
        return MetroOutput(
            joints14_rel=joints,
            verts_rel_levels=levels,
            joints14_from_verts_rel=joints_reg,
            cam=self.cam_head(global_feat),
            crop_size=inputs.crop_size,
            attention=attention,
            body=self.body_params(encoded, joints, levels[0]),
            faces=self.faces,
        )

    def predict(self, inputs: FrameInputs) -> BodyPrediction:
        """METRO + PnP: the mesh placed in the camera frame (eval mode, no gradients).

        The translation solves, in least squares, for the perspective projection with
        ``inputs.K_crop`` of the J joints and Vc coarse vertices to match their weak-perspective
        projection (`sahmr.geometry.pnp.estimate_translation`); the rotation is the network's.

        With a parametric head (the default output) the PnP points are the parametric body's
        joints and every ``V // Vc``-th vertex, and ``params`` holds its camera-frame SMPL
        parameters.

        Returns:
            `BodyPrediction` with ``verts_cam`` (B, V, 3), ``joints_cam`` (B, 14, 3) the J14
            LSP joints (not SMPL's 24), ``root_cam`` (B, 3) = the translation, and ``params``.
        """
        with eval_mode(self), torch.no_grad():
            out = self.forward(inputs)
            body = out.body if self.parametric else None
            if body is None:
                joints, verts = out.joints14_rel, out.verts_rel
                points = torch.cat([joints, out.verts_rel_levels[0]], dim=1)
            else:
                joints, verts = body.joints14_rel, body.verts_rel
                step = max(1, verts.shape[1] // self.num_coarse)
                points = torch.cat([joints, verts[:, ::step]], dim=1)
            uv = normalized_to_crop(weak_perspective(points, out.cam), out.crop_size)
            t = estimate_translation(points.float(), uv.float(), inputs.K_crop.float())
            t = t.to(points.dtype)
        return BodyPrediction(
            verts_cam=verts + t[:, None],
            joints_cam=joints + t[:, None],
            root_cam=t,
            params=None if body is None else body.smpl_params(t.float()),
        )

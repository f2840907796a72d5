"""The scene-aware mesh network of SA-HMR (Shen et al., CVPR 2023).

`SceneAwareMeshNet` is METRO (`sahmr.models.metro`) with a parallel branch of scene-contact
tokens: every contact scene point (camera frame) of a frame becomes a token
``Linear([point - root (3), part token of its region (W)])``, where the part token of region
``r`` is the mean of the vertex query tokens whose coarse-level contact label
(``topology.contact_labels[-1]``) is ``r``. Every encoder block runs mesh self-attention, scene
self-attention and mesh <- scene cross-attention (`sahmr.models.transformer.SceneAwareCascade`);
one regression layer is shared by both token kinds, so scene tokens regress their own point
relative to the root (a reconstruction loss keeps the scene branch geometric).

Scene tokens are padded per frame behind a key-padding mask. Each frame's scene sequence starts
with one learned, never-masked *null* token, so frames without contact points attend to it
instead of to an empty set (its regression is discarded).

The whole method (RCNet + this network) is `sahmr.models.sahmr.SAHMR`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from sahmr.body.constants import CONTACT_REGION_NAMES
from sahmr.body.topology import BodyTopology
from sahmr.geometry.crops import DEFAULT_CROP_SIZE
from sahmr.models.metro import MeshTokenNet
from sahmr.models.param_head import BodyHead, BodyParams
from sahmr.models.transformer import SceneAwareAttention, SceneAwareCascade
from sahmr.scene.contact import MAX_CONTACTS_PER_FRAME

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------
# Packed <-> padded per-frame sets


def frame_slots(batch_idx: Tensor, num_frames: int) -> tuple[Tensor, int]:
    """Rank of each packed element within its frame (in packed order).

    Args:
        batch_idx: Tensor (P,) int64 frame of each element, in [0, num_frames).
        num_frames: B.

    Returns:
        ``(slot (P,) int64, largest per-frame count)``.
    """
    counts = torch.bincount(batch_idx, minlength=num_frames)
    starts = counts.cumsum(0) - counts
    order = torch.argsort(batch_idx, stable=True)
    slot = torch.empty_like(batch_idx)
    slot[order] = (
        torch.arange(batch_idx.numel(), device=batch_idx.device) - starts[batch_idx[order]]
    )
    return slot, int(counts.max()) if num_frames > 0 and batch_idx.numel() else 0


def cap_per_frame(batch_idx: Tensor, cap: int, *, shuffle: bool) -> Tensor:
    """Indices keeping at most ``cap`` elements per frame, sorted by frame.

    Args:
        batch_idx: Tensor (P,) int64 frame of each element.
        cap: Most elements kept per frame.
        shuffle: Keep a random subset (torch's global RNG); else the first ``cap`` per frame
            in packed order.

    Returns:
        Tensor (P',) int64 indices into the packed elements, grouped by frame.
    """
    num = batch_idx.numel()
    device = batch_idx.device
    order = torch.randperm(num, device=device) if shuffle else torch.arange(num, device=device)
    order = order[torch.argsort(batch_idx[order], stable=True)]
    frames = batch_idx[order]
    counts = torch.bincount(frames)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(num, device=device) - starts[frames]
    return order[rank < cap]


# ------------------------------------------------------------------------------------------
# Mesh network


@dataclass
class SceneMeshOutput:
    """What `SceneAwareMeshNet.forward` returns (camera axes, metres, root-relative).

    Attributes:
        joints14_rel: Tensor (B, 14, 3) LSP joints from the joint tokens.
        verts_rel_levels: Per mesh level, coarse -> fine, Tensor (B, V_l, 3).
        joints14_from_verts_rel: Tensor (B, 14, 3) joints regressed from the full mesh.
        scene_recon: Tensor (P, 3) each contact point minus the root, regressed by its token.
        attention: None, or one `SceneAwareAttention` per encoder block; its scene axis is
            ``[null token, frame's points in packed order, padding]``.
        body: The parametric body (root-relative, camera axes), or None without a head.
    """

    joints14_rel: Tensor
    verts_rel_levels: list[Tensor]
    joints14_from_verts_rel: Tensor
    scene_recon: Tensor
    attention: list[SceneAwareAttention] | None = None
    body: BodyParams | None = None


class SceneAwareMeshNet(MeshTokenNet):
    """METRO with scene-contact tokens (see the module docstring).

    Args:
        backbone: Image CNN (``out_channels``, ``out_stride``).
        encoder: The two-branch cascade (its ``widths[0]`` is the token width).
        topology: Body topology (templates, regressor, up-sampling, contact labels).
        mask_ratio: Fraction of mesh query tokens masked in training.
        image_size: Crop side S.
        upsample_residual: Learn per-vertex offsets in the up-sampling.
        max_contacts: Most contact points per frame accepted (more raise).
        param_head: Factory of the parametric body head (`sahmr.models.param_head`), called
            with the encoder's output width; None regresses free-form vertices only.
        free_form_output: With a head, still return the free-form vertices from ``predict``.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        encoder: SceneAwareCascade,
        topology: BodyTopology,
        mask_ratio: float = 0.3,
        image_size: int = DEFAULT_CROP_SIZE,
        upsample_residual: bool = True,
        max_contacts: int = MAX_CONTACTS_PER_FRAME,
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
        self.max_contacts = int(max_contacts)
        width = encoder.in_width
        labels = np.asarray(topology.contact_labels[-1], dtype=np.int64)
        num_regions = len(CONTACT_REGION_NAMES)
        member = np.zeros((num_regions, self.num_coarse), dtype=np.float32)
        member[labels, np.arange(self.num_coarse)] = 1.0
        counts = member.sum(axis=1, keepdims=True)
        empty = [CONTACT_REGION_NAMES[r] for r in range(1, num_regions) if counts[r, 0] == 0]
        if empty:
            logger.warning("no coarse vertex in contact region(s) %s: zero part token", empty)
        self.register_buffer(
            "region_mean", torch.from_numpy(member / np.maximum(counts, 1.0)), persistent=False
        )
        # each full-mesh vertex's contact region (test-time view selection, `flip_test`)
        self.register_buffer(
            "vertex_region",
            torch.as_tensor(np.asarray(topology.contact_labels[0], dtype=np.int64)),
            persistent=False,
        )
        self.scene_embed = nn.Linear(3 + width, width)
        self.null_token = nn.Parameter(torch.randn(width) * 0.02)

    def part_tokens(self, tokens: Tensor) -> Tensor:
        """Tensor (B, R, W): per contact region the mean of its vertex query tokens.

        Args:
            tokens: Tensor (B, J + Vc + G, W) mesh-branch tokens.
        """
        verts = tokens[:, self.num_joints : self.num_queries]
        return torch.einsum("rv,bvw->brw", self.region_mean.to(verts.dtype), verts)

    def forward(
        self,
        image: Tensor,
        root_cam: Tensor,
        contact_points_cam: Tensor,
        contact_point_region: Tensor,
        contact_batch_idx: Tensor,
        *,
        crop_side_m: Tensor | None = None,
        return_attention: bool = False,
    ) -> SceneMeshOutput:
        """Regresses the root-relative mesh given the root and the contact scene points.

        Args:
            image: Tensor (B, 3, S, S) ImageNet-normalised crops.
            root_cam: Tensor (B, 3) root (pelvis), camera frame, metres.
            contact_points_cam: Tensor (P, 3) contact scene points, camera frame, packed.
            contact_point_region: Tensor (P,) int64 region 1..7 of each point.
            contact_batch_idx: Tensor (P,) int64 frame of each point (any order).
            crop_side_m: Tensor (B,) metres the crop spans at the root's depth
                (`sahmr.geometry.crops.crop_side_m`), for a head built with ``crop_scale``.
            return_attention: Also return the attention maps.

        Returns:
            `SceneMeshOutput`.

        Raises:
            ValueError: If a frame has more than ``max_contacts`` points.
        """
        tokens, _ = self.embed_tokens(image)
        b, _, width = tokens.shape
        slot, longest = frame_slots(contact_batch_idx, b)
        if longest > self.max_contacts:
            raise ValueError(f"{longest} contact points in a frame > max {self.max_contacts}")
        part = self.part_tokens(tokens)[contact_batch_idx, contact_point_region]  # (P, W)
        rel = (contact_points_cam - root_cam[contact_batch_idx]).to(part.dtype)
        scene_packed = self.scene_embed(torch.cat([rel, part], dim=-1))  # (P, W)
        scene = scene_packed.new_zeros(b, 1 + longest, width)
        scene[:, 0] = self.null_token.to(scene.dtype)
        scene[contact_batch_idx, 1 + slot] = scene_packed
        padding = torch.ones(b, 1 + longest, dtype=torch.bool, device=tokens.device)
        padding[:, 0] = False
        padding[contact_batch_idx, 1 + slot] = False
        mesh_out, scene_out, attention = self.encoder(
            tokens, scene, padding, return_attention=return_attention
        )
        joints, levels, joints_reg = self.decode(mesh_out)
        scene_recon = self.regressor(scene_out[contact_batch_idx, 1 + slot])
        return SceneMeshOutput(
            joints14_rel=joints,
            verts_rel_levels=levels,
            joints14_from_verts_rel=joints_reg,
            scene_recon=scene_recon,
            attention=attention,
            body=self.body_params(mesh_out, joints, levels[0], crop_side_m),
        )

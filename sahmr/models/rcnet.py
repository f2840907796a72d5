"""RCNet: the root and contact network of SA-HMR (CVPR 2023), on spconv.

Pipeline for B frames (camera frame = OpenCV, metres; crop pixels follow
`sahmr.geometry.crops`: pixel centres at integer coordinates)::

    image crop (B,3,S,S) -> backbone -> neck -> feature map F (B,C,h,w), h = w = S/4 typically
    F -> root heatmap (B,1,h,w) logits, 7 part heatmaps (B,7,h,w) logits (contact regions 1..7)
    backbone features -> normalised root depth d (B,);  z = d * K_crop[0,0] / S
    soft-argmax(root heatmap) -> crop pixel (u, v); unproject with K_crop at depth z
        -> root_coarse_cam (B,3)
    anchors: the ROI centre c and c + o * c/|c| for o in anchor_offsets (default 0, -0.5, +0.5 m
        along the viewing ray through c) -> anchors_cam (B,A,3); c = root_coarse_cam (detached),
        or in training with targets (teacher forcing) the ground-truth root plus Gaussian noise
    ROI: for each (frame b, anchor a) the frame's frustum scene points within roi_radius of that
        anchor form sparse sample s = b * A + a (a point near several anchors is in several
        samples); each sample is voxelised (voxel_size) in its own cubic grid centred on its
        anchor
    voxel feature = [anchor - voxel centre (3), F bilinearly sampled at the centre's crop
        projection (C)] -> sparse 3-D U-Net -> per voxel: confidence (1), offset to the root (3),
        contact logits (8: none + 7 regions)
    root_cam = sum over all voxels of the frame (all its samples) of
        softmax(confidence) * (voxel centre + offset); frames without ROI points keep the coarse
        root
    contact points: every ROI scene point gets the contact probabilities of its voxel(s)
        (averaged over the samples holding it); points whose argmax class is not 0 are
        contacts with that region, at most max_contacts_per_frame per frame, highest contact
        probability (1 - p_none) first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from sahmr.evaluation.rcnet_metrics import rcnet_metrics
from sahmr.geometry.cameras import project, unproject
from sahmr.models.sparse_unet import SparseUNet
from sahmr.records import FrameInputs, FrameTargets
from sahmr.scene.contact import (
    MAX_CONTACTS_PER_FRAME,
    NUM_CONTACT_CLASSES,
    NUM_CONTACT_REGIONS,
)
from sahmr.scene.frustum import roi_select
from sahmr.scene.voxels import voxelize

logger = logging.getLogger(__name__)

__all__ = [
    "NUM_CONTACT_CLASSES",
    "NUM_PARTS",
    "RCNet",
    "RCNetOutput",
    "RCNetVoxels",
    "RoiVote",
    "UpsampleNeck",
    "frame_evidence",
    "heatmap_pixel_centres",
    "normalised_depth",
    "ray_anchors",
    "sample_feature_map",
    "soft_argmax_2d",
    "top_k_per_frame",
    "vote_root",
]

NUM_PARTS = NUM_CONTACT_REGIONS
"""Contact regions 1..7, one auxiliary part heatmap each. (``NUM_CONTACT_CLASSES``, the 8
voxel classes 0 none + regions, comes from `sahmr.scene.contact`.)"""
_DEPTH_LOG_RANGE = 3.0  # d = depth_prior * exp(clamp(raw, -3, 3))


# ----------------------------------------------------------------------------- pure helpers


def heatmap_pixel_centres(
    height: int,
    width: int,
    crop_size: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Crop-pixel coordinates of the heatmap cell centres.

    Cell ``j`` of a ``width``-wide map covers crop pixels ``[j S / w - 0.5, (j + 1) S / w - 0.5]``
    (pixel centres at integers), so its centre is ``(j + 0.5) S / w - 0.5``.

    Args:
        height: h.
        width: w.
        crop_size: S, crop side in pixels.
        device: Device of the result.
        dtype: Floating dtype.

    Returns:
        ``(u, v)``: Tensors of shape (w,) and (h,), crop pixels.
    """
    u = (torch.arange(width, device=device, dtype=dtype) + 0.5) * (crop_size / width) - 0.5
    v = (torch.arange(height, device=device, dtype=dtype) + 0.5) * (crop_size / height) - 0.5
    return u, v


def soft_argmax_2d(logits: Tensor, crop_size: int) -> Tensor:
    """Expected crop pixel under the spatial softmax of each heatmap channel.

    Args:
        logits: Tensor of shape (B, J, h, w).
        crop_size: S.

    Returns:
        Tensor of shape (B, J, 2), ``(u, v)`` crop pixels.
    """
    B, J, h, w = logits.shape
    prob = torch.softmax(logits.reshape(B, J, h * w), dim=-1).reshape(B, J, h, w)
    u, v = heatmap_pixel_centres(h, w, crop_size, device=logits.device, dtype=logits.dtype)
    return torch.stack([(prob.sum(2) * u).sum(-1), (prob.sum(3) * v).sum(-1)], dim=-1)


def normalised_depth(z: Tensor, K_crop: Tensor, crop_size: int) -> Tensor:
    """Normalised depth ``d = z * S / f_crop`` (= z * bbox side / f in the full image).

    Args:
        z: Tensor of shape (B,), camera depth, metres.
        K_crop: Tensor of shape (B, 3, 3).
        crop_size: S.

    Returns:
        Tensor of shape (B,), metres (the crop's physical width at depth z).
    """
    return z * crop_size / K_crop[:, 0, 0]


def ray_anchors(centre_cam: Tensor, offsets: Sequence[float]) -> Tensor:
    """Points along the viewing ray through each centre.

    Args:
        centre_cam: Tensor of shape (B, 3), camera frame, metres.
        offsets: A offsets along the unit ray ``centre / |centre|``, metres.

    Returns:
        Tensor of shape (B, A, 3): ``centre + o * ray`` for each offset o.
    """
    ray = centre_cam / centre_cam.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    off = torch.as_tensor(list(offsets), dtype=centre_cam.dtype, device=centre_cam.device)
    return centre_cam[:, None, :] + off[None, :, None] * ray[:, None, :]


def sample_feature_map(
    feature_map: Tensor, uv_crop: Tensor, batch_idx: Tensor, crop_size: int
) -> Tensor:
    """Bilinear samples of a per-frame feature map at packed crop-pixel positions.

    Equals ``F.grid_sample(feature_map[b:b+1], grid, align_corners=False,
    padding_mode="zeros")`` with ``grid = (uv + 0.5) / S * 2 - 1``: positions outside the map
    blend in zeros.

    Args:
        feature_map: Tensor of shape (B, C, h, w) covering the S x S crop.
        uv_crop: Tensor of shape (M, 2), crop pixels (u right, v down).
        batch_idx: int64 Tensor of shape (M,), frame of each position.
        crop_size: S.

    Returns:
        Tensor of shape (M, C).
    """
    B, C, h, w = feature_map.shape
    x = (uv_crop[:, 0] + 0.5) * (w / crop_size) - 0.5
    y = (uv_crop[:, 1] + 0.5) * (h / crop_size) - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    flat = feature_map.permute(0, 2, 3, 1).reshape(B * h * w, C)
    out = feature_map.new_zeros(uv_crop.shape[0], C)
    b = batch_idx.long()
    for dx, dy, weight in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        idx = (b * h + yi.clamp(0, h - 1)) * w + xi.clamp(0, w - 1)
        out = out + flat[idx] * (weight * inside.to(weight.dtype))[:, None]
    return out


def _frame_max(values: Tensor, batch_idx: Tensor, num_frames: int) -> Tensor:
    """Per-frame maximum of ``values`` (K,) (detached; -inf for a frame without any), (B,)."""
    top = torch.full((num_frames,), -torch.inf, dtype=values.dtype, device=values.device)
    return top.scatter_reduce(0, batch_idx, values.detach(), reduce="amax", include_self=True)


def vote_root(
    confidence: Tensor, votes: Tensor, batch_idx: Tensor, fallback: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-frame softmax-weighted vote: ``root_b = sum_k softmax_b(conf)_k * votes_k``.

    Args:
        confidence: Tensor of shape (K,), voxel confidence logits.
        votes: Tensor of shape (K, 3), each voxel's root estimate (centre + offset).
        batch_idx: int64 Tensor of shape (K,), frame of each voxel.
        fallback: Tensor of shape (B, 3), used for frames without voxels.

    Returns:
        ``(root, voted)``: Tensor (B, 3) and bool Tensor (B,) (frame had voxels).
    """
    B = fallback.shape[0]
    b = batch_idx.long()
    voted = torch.bincount(b, minlength=B)[:B] > 0
    if confidence.numel() == 0:
        return fallback, voted
    # The vote is a weighted mean of positions in metres: always float32, also under bf16
    # autocast (heads may emit bf16).
    confidence, votes, fallback = confidence.float(), votes.float(), fallback.float()
    top = _frame_max(confidence, b, B)
    e = torch.exp(confidence - top[b])
    denom = torch.zeros(B, dtype=e.dtype, device=e.device).index_add(0, b, e)
    weight = e / denom[b]
    root = torch.zeros(B, 3, dtype=votes.dtype, device=votes.device).index_add(
        0, b, weight[:, None] * votes
    )
    return torch.where(voted[:, None], root, fallback), voted


def frame_evidence(confidence: Tensor, batch_idx: Tensor, num_frames: int) -> Tensor:
    """How much scene evidence a frame's ROI holds: the log-sum-exp of its voxels' confidence
    logits (the log of the softmax denominator of `vote_root`), -inf for a frame without voxels.

    Args:
        confidence: Tensor (K,), voxel confidence logits.
        batch_idx: int64 Tensor (K,), frame of each voxel.
        num_frames: B.

    Returns:
        float32 Tensor (B,).
    """
    conf = confidence.detach().float()
    b = batch_idx.long()
    top = _frame_max(conf, b, num_frames)
    total = torch.zeros(num_frames, dtype=conf.dtype, device=conf.device)
    total = total.index_add(0, b, torch.exp(conf - top[b]))
    return torch.where(total > 0, top + torch.log(total.clamp_min(1e-30)), top)


def top_k_per_frame(score: Tensor, batch_idx: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` highest scores of every frame.

    Args:
        score: Tensor of shape (M,).
        batch_idx: int64 Tensor of shape (M,).
        k: Cap per frame.

    Returns:
        int64 Tensor of kept indices, grouped by frame (ascending), scores descending within
        a frame (ties keep input order).
    """
    if score.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=score.device)
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(batch_idx[order], stable=True)]
    b = batch_idx[order].long()
    counts = torch.bincount(b)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=score.device) - starts[b]
    return order[rank < k]


# ----------------------------------------------------------------------------- modules


class UpsampleNeck(nn.Module):
    """Brings a backbone grid to the heatmap resolution: ``num_upsamples`` x2 deconvolutions.

    Each step is ConvTranspose2d(kernel 4, stride 2, padding 1) + BatchNorm + ReLU; with no
    up-sampling it is a 3x3 conv + BatchNorm + ReLU (a channel adapter).

    Args:
        in_channels: Backbone channels C_b.
        out_channels: Feature channels C of the heatmap grid.
        num_upsamples: Number of x2 steps (stride r backbone -> stride r / 2**n).

    Attributes:
        out_channels: C.
    """

    def __init__(self, *, in_channels: int, out_channels: int, num_upsamples: int = 1) -> None:
        super().__init__()
        self.out_channels = int(out_channels)
        layers: list[nn.Module] = []
        c = in_channels
        if num_upsamples == 0:
            layers += [nn.Conv2d(c, out_channels, 3, padding=1, bias=False)]
            layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        for _ in range(num_upsamples):
            layers += [nn.ConvTranspose2d(c, out_channels, 4, stride=2, padding=1, bias=False)]
            layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
            c = out_channels
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        """Up-sample features.

        Args:
            features: Tensor of shape (B, C_b, h, w).

        Returns:
            Tensor of shape (B, C, h * 2**n, w * 2**n).
        """
        return self.layers(features)


@dataclass
class RCNetVoxels:
    """The voxels of all ROI samples of a batch (sample s = frame * A + anchor).

    Attributes:
        centres_cam: Tensor (K, 3) voxel centres, camera frame, metres.
        batch_idx: int64 Tensor (K,) frame of each voxel.
        sample_idx: int64 Tensor (K,) sample ``b * A + a`` of each voxel.
        coords: int32 Tensor (K, 4) ``[sample, z, y, x]`` in the sample's grid.
        confidence: Tensor (K,) vote confidence logits.
        offset: Tensor (K, 3) predicted root minus voxel centre, metres, camera frame.
        contact_logits: Tensor (K, 8) logits of classes 0 (none) .. 7 (regions).
        sample_origin_cam: Tensor (B * A, 3) corner of voxel (0, 0, 0) of each sample.
        voxel_size: Voxel edge, metres.
        spatial_shape: ``[D, H, W]`` of every sample grid.
        num_anchors: A.
    """

    centres_cam: Tensor
    batch_idx: Tensor
    sample_idx: Tensor
    coords: Tensor
    confidence: Tensor
    offset: Tensor
    contact_logits: Tensor
    sample_origin_cam: Tensor
    voxel_size: float
    spatial_shape: list[int]
    num_anchors: int

    @property
    def num_voxels(self) -> int:
        """K."""
        return int(self.centres_cam.shape[0])

    @property
    def votes_cam(self) -> Tensor:
        """Tensor (K, 3) each voxel's root vote ``centre + offset``, camera frame."""
        return self.centres_cam + self.offset


@dataclass
class RoiVote:
    """One pass of RCNet's sparse branch (`RCNet.vote_from`).

    Attributes:
        anchors_cam: Tensor (B, A, 3), the ROI anchors.
        voxels: `RCNetVoxels` of all ROI samples.
        pair_rows: int64 Tensor (Q,), scene row of every (scene point, sample) ROI pair.
        pair_voxel: int64 Tensor (Q,), its voxel.
        root_cam: Tensor (B, 3), the voted root (the fallback where the ROI was empty).
        voted: bool Tensor (B,), frames whose ROI held voxels.
    """

    anchors_cam: Tensor
    voxels: RCNetVoxels
    pair_rows: Tensor
    pair_voxel: Tensor
    root_cam: Tensor
    voted: Tensor


@dataclass
class RCNetOutput:
    """What RCNet predicts for B frames (camera frame, metres).

    Attributes:
        root_heatmap: Tensor (B, 1, h, w) root heatmap logits (spatial softmax).
        part_heatmaps: Tensor (B, 7, h, w) logits, one per contact region 1..7 (part centre =
            mean of the region's vertices).
        root_depth: Tensor (B,) normalised root depth d; ``z = d * K_crop[0, 0] / S``.
        root_pixel_crop: Tensor (B, 2) soft-argmax of the root heatmap, crop pixels.
        root_coarse_cam: Tensor (B, 3) root unprojected from the heatmap and depth.
        roi_centre_cam: Tensor (B, 3) centre the anchors were built around (the detached
            coarse root, or the noisy ground truth under teacher forcing).
        anchors_cam: Tensor (B, A, 3) ROI anchors (anchor 0 = the centre for the default
            offsets).
        voxels: `RCNetVoxels` of the ROI samples.
        root_cam: Tensor (B, 3) voted root (the coarse root for frames without ROI points).
        root_voted: bool Tensor (B,), frame had ROI voxels.
        contact_points_cam: Tensor (P, 3) predicted contact scene points, packed by frame.
        contact_point_region: int64 Tensor (P,) region 1..7.
        contact_batch_idx: int64 Tensor (P,) frame of each contact point.
        contact_point_score: Tensor (P,) contact probability ``1 - p(none)``.
        contact_point_index: int64 Tensor (P,) row in ``FrameInputs.scene_points_cam``.
        K_crop: Tensor (B, 3, 3) crop intrinsics used.
        crop_size: S.
    """

    root_heatmap: Tensor
    part_heatmaps: Tensor
    root_depth: Tensor
    root_pixel_crop: Tensor
    root_coarse_cam: Tensor
    roi_centre_cam: Tensor
    anchors_cam: Tensor
    voxels: RCNetVoxels
    root_cam: Tensor
    root_voted: Tensor
    contact_points_cam: Tensor
    contact_point_region: Tensor
    contact_batch_idx: Tensor
    contact_point_score: Tensor
    contact_point_index: Tensor
    K_crop: Tensor
    crop_size: int


class RCNet(nn.Module):
    """Root and contact network (see the module docstring for the pipeline).

    Args:
        backbone: 2-D CNN, images (B, 3, S, S) -> (B, C_b, S/r, S/r); must expose
            ``out_channels`` (e.g. `sahmr.models.backbones.build_backbone`).
        neck: Maps backbone features to the heatmap grid (B, C, h, w); must expose
            ``out_channels`` (e.g. `UpsampleNeck`). Either built, or a builder called as
            ``neck(in_channels=backbone.out_channels)`` (a ``_partial_`` config).
        unet: Sparse 3-D U-Net with ``in_channels == 3 + neck.out_channels``: built, or a
            builder called as ``unet(in_channels=3 + neck.out_channels)``.
        depth_hidden: Hidden width of the depth MLP.
        depth_prior: Normalised depth at initialisation (metres; the crop's width at the
            person's depth, about 1.2 x body height).
        roi_radius: ROI ball radius around every anchor, metres.
        anchor_offsets: Anchor offsets along the viewing ray, metres.
        voxel_size: Voxel edge, metres.
        max_contacts_per_frame: Cap on predicted contact points per frame.
        teacher_forcing: In training mode with targets, centre the ROI on the ground-truth
            root plus noise instead of the coarse root, so the sparse branch learns from
            step 0.
        roi_noise_std: Standard deviation of that noise per axis, metres.
        roi_depth_noise: Standard deviation of the log of a scale applied to the teacher-forced
            centre's depth along its camera ray before that noise (0: none; the scale is kept
            within [0.5, 2]). At test time the first ROI sits at the image-only depth, often
            10-15 % off along the ray, and a voter trained only on ROIs within 0.1 m of the
            root keeps a fifth to a third of its ROI's offset (docs/results.md, section (z));
            ROIs drawn along the ray teach it to vote from there.
        roi_refinements: Further passes of the sparse branch when the ROI is not teacher-forced
            (inference, or training without teacher forcing): each centres the anchors on the
            previous pass's voted root and votes again; contacts come from the last pass. The
            image-only coarse root is often 0.3-0.5 m off in depth, and the vote from an ROI
            centred there is worse than from one centred near the body (docs/results.md,
            run 12). 0: one pass, as trained.
        depth_hypotheses: Scales of the coarse root's depth (along its camera ray) from which
            the sparse branch votes again at inference, each followed by ``roi_refinements``
            passes (e.g. ``[0.6, 0.8, 1.25, 1.6]``; empty: none, the default). The image-only
            depth is the scale/depth ambiguity of one image: a far, tall person read as a near,
            short one puts the ROI metres off, and refinements do not walk that far. A frame
            keeps the vote of the ROI it already had unless another hypothesis's scene
            evidence (`frame_evidence` of its last pass) is larger by at least
            ``depth_hypothesis_margin``; then that hypothesis's last pass (root and contacts)
            replaces it. Never in training.
        depth_hypothesis_margin: That margin, in logits of the voxel confidence.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        neck: nn.Module | Callable[..., nn.Module],
        unet: SparseUNet | Callable[..., SparseUNet],
        depth_hidden: int = 256,
        depth_prior: float = 2.0,
        roi_radius: float = 1.25,
        anchor_offsets: Sequence[float] = (0.0, -0.5, 0.5),
        voxel_size: float = 0.05,
        max_contacts_per_frame: int = MAX_CONTACTS_PER_FRAME,
        teacher_forcing: bool = True,
        roi_noise_std: float = 0.1,
        roi_depth_noise: float = 0.0,
        roi_refinements: int = 0,
        depth_hypotheses: Sequence[float] = (),
        depth_hypothesis_margin: float = 2.0,
    ) -> None:
        super().__init__()
        if not (math.isfinite(float(roi_depth_noise)) and float(roi_depth_noise) >= 0):
            raise ValueError(f"roi_depth_noise must be >= 0, got {roi_depth_noise}")
        if int(roi_refinements) < 0:
            raise ValueError(f"roi_refinements must be >= 0, got {roi_refinements}")
        hypotheses = tuple(float(f) for f in depth_hypotheses)
        if any(not math.isfinite(f) or f <= 0 for f in hypotheses):
            raise ValueError(f"depth_hypotheses must be positive scales, got {list(hypotheses)}")
        if not math.isfinite(float(depth_hypothesis_margin)):
            raise ValueError(
                f"depth_hypothesis_margin must be finite, got {depth_hypothesis_margin}"
            )
        if not isinstance(neck, nn.Module):  # sizes derived from the built parts
            neck = neck(in_channels=int(backbone.out_channels))
        feat_c = int(neck.out_channels)
        if not isinstance(unet, nn.Module):
            unet = unet(in_channels=3 + feat_c)
        if unet.in_channels != 3 + feat_c:
            raise ValueError(
                f"unet.in_channels must be 3 + neck.out_channels = {3 + feat_c}, "
                f"got {unet.in_channels}"
            )
        self.backbone = backbone
        self.neck = neck
        self.unet = unet
        self.heatmap_head = nn.Sequential(
            nn.Conv2d(feat_c, feat_c, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(feat_c, 1 + NUM_PARTS, 1),
        )
        self.depth_head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(int(backbone.out_channels), depth_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(depth_hidden, 1),
        )
        nn.init.zeros_(self.depth_head[-1].weight)
        nn.init.zeros_(self.depth_head[-1].bias)
        c0 = unet.out_channels
        self.confidence_head = nn.Linear(c0, 1)
        self.offset_head = nn.Linear(c0, 3)
        self.contact_head = nn.Linear(c0, NUM_CONTACT_CLASSES)
        self.depth_prior = float(depth_prior)
        self.roi_radius = float(roi_radius)
        self.anchor_offsets = tuple(float(o) for o in anchor_offsets)
        self.voxel_size = float(voxel_size)
        self.max_contacts_per_frame = int(max_contacts_per_frame)
        self.teacher_forcing = bool(teacher_forcing)
        self.roi_noise_std = float(roi_noise_std)
        self.roi_depth_noise = float(roi_depth_noise)
        self.roi_refinements = int(roi_refinements)
        self.depth_hypotheses = tuple(f for f in hypotheses if f != 1.0)
        self.depth_hypothesis_margin = float(depth_hypothesis_margin)
        # Cubic grid per sample, centred on its anchor, one voxel of margin on each side.
        self.grid_size = math.ceil(2 * self.roi_radius / self.voxel_size - 1e-6) + 2

    @property
    def num_anchors(self) -> int:
        """A."""
        return len(self.anchor_offsets)

    def forward(self, inputs: FrameInputs, targets: FrameTargets | None = None) -> RCNetOutput:
        """Predict root heatmaps, coarse and voted root, and contact scene points.

        Args:
            inputs: `FrameInputs` with ``scene_points_cam``/``scene_batch_idx`` (frames
                without scene points, or ``None`` for all, keep the coarse root and get no
                contacts).
            targets: Ground truth; used only for teacher forcing (training mode).

        Returns:
            `RCNetOutput`.
        """
        S = inputs.crop_size
        K_crop = inputs.K_crop
        fmap, root_hm, part_hm, d, uv, root_coarse = self.image_stage(inputs)

        centre = root_coarse.detach()
        forced = self.training and self.teacher_forcing and targets is not None
        if forced:
            centre = self.teacher_centre(targets.root_cam.to(centre))
        refinements = 0 if forced else self.roi_refinements
        vote, centre, fallback = self._refined_vote(inputs, fmap, centre, root_coarse, refinements)
        if self.depth_hypotheses and not self.training:
            vote, centre = self._depth_search(
                inputs, fmap, root_coarse.detach(), vote, centre, fallback
            )
        anchors, voxels, root, voted = vote.anchors_cam, vote.voxels, vote.root_cam, vote.voted
        contacts = self._select_contacts(inputs, voxels, vote.pair_rows, vote.pair_voxel)
        return RCNetOutput(
            root_heatmap=root_hm,
            part_heatmaps=part_hm,
            root_depth=d,
            root_pixel_crop=uv,
            root_coarse_cam=root_coarse,
            roi_centre_cam=centre,
            anchors_cam=anchors,
            voxels=voxels,
            root_cam=root,
            root_voted=voted,
            contact_points_cam=contacts[0],
            contact_point_region=contacts[1],
            contact_batch_idx=contacts[2],
            contact_point_score=contacts[3],
            contact_point_index=contacts[4],
            K_crop=K_crop,
            crop_size=S,
        )

    def teacher_centre(self, root_cam: Tensor) -> Tensor:
        """A teacher-forced ROI centre (B, 3) camera frame, from the true roots (B, 3): the
        root scaled along its ray by ``exp(roi_depth_noise * N(0, 1))`` (within [0.5, 2]),
        then moved by N(0, ``roi_noise_std``^2) per axis."""
        centre = root_cam
        if self.roi_depth_noise > 0:
            log_scale = self.roi_depth_noise * torch.randn_like(root_cam[:, :1])
            centre = centre * log_scale.exp().clamp(0.5, 2.0)  # the ray through the origin
        return centre + self.roi_noise_std * torch.randn_like(root_cam)

    def image_stage(
        self, inputs: FrameInputs
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The image-only part: ``(fmap (B,C,h,w), root heatmap (B,1,h,w), part heatmaps
        (B,7,h,w), normalised depth (B,), root crop pixel (B,2), coarse root (B,3) camera
        frame)``."""
        S = inputs.crop_size
        K_crop = inputs.K_crop
        feats = self.backbone(inputs.image)  # (B, C_b, S/r, S/r)
        fmap = self.neck(feats)  # (B, C, h, w)
        heatmaps = self.heatmap_head(fmap)  # (B, 1 + 7, h, w)
        root_hm, part_hm = heatmaps[:, :1], heatmaps[:, 1:]
        raw = self.depth_head(feats).squeeze(-1).clamp(-_DEPTH_LOG_RANGE, _DEPTH_LOG_RANGE)
        d = self.depth_prior * torch.exp(raw)  # (B,)
        uv = soft_argmax_2d(root_hm, S)[:, 0]  # (B, 2)
        z = d * K_crop[:, 0, 0] / S
        root_coarse = unproject(K_crop, uv[:, None, :], z[:, None])[:, 0]  # (B, 3)
        return fmap, root_hm, part_hm, d, uv, root_coarse

    def vote_from(
        self, inputs: FrameInputs, fmap: Tensor, centre_cam: Tensor, fallback_cam: Tensor
    ) -> RoiVote:
        """One pass of the sparse branch from ROIs around ``centre_cam`` and its vote.

        Args:
            inputs: The frames (their scene points).
            fmap: (B, C, h, w) neck feature map of the frames.
            centre_cam: (B, 3) ROI centres (the anchors lie on the ray through them); or
                (H * B, 3): H ROIs per frame voted on each on its own (set h of frame b at row
                ``h * B + b``), as H separate calls would.
            fallback_cam: Like ``centre_cam``: root kept where the ROI holds no scene point.

        Returns:
            `RoiVote` (of the B or H * B ROI sets).
        """
        if centre_cam.shape[0] % inputs.K_crop.shape[0]:
            raise ValueError(f"{centre_cam.shape[0]} ROI centres for {inputs.K_crop.shape[0]} "
                             "frames: need a multiple")  # fmt: skip
        anchors = ray_anchors(centre_cam, self.anchor_offsets)  # (B, A, 3)
        voxels, pair_rows, pair_voxel = self._sparse_branch(inputs, fmap, anchors)
        root, voted = vote_root(voxels.confidence, voxels.votes_cam, voxels.batch_idx,
                                fallback_cam)  # fmt: skip
        return RoiVote(anchors, voxels, pair_rows, pair_voxel, root, voted)

    def _refined_vote(
        self, inputs: FrameInputs, fmap: Tensor, centre: Tensor, fallback: Tensor, passes: int
    ) -> tuple[RoiVote, Tensor, Tensor]:
        """A vote from ROIs around ``centre``, then ``passes`` more, each re-centred on the
        previous vote (a frame the new ROI finds empty keeps the previous root).

        Only the last pass is differentiated. The passes before it only decide where the last
        ROI sits (their roots become detached centres), so they run without autograd; with it,
        their sparse U-Net backward ran on zero gradients. A frame whose last ROI holds no
        scene point keeps the previous root, without its gradient; a frame that never voted
        keeps ``fallback`` (the coarse root), with its gradient.

        Returns:
            ``(vote, centre (B, 3), fallback (B, 3))``: the last pass's vote, and the centre
            and fallback it was made with (`_depth_search` repeats a pass from them).
        """
        grad = torch.is_grad_enabled()
        first_fallback = fallback
        vote = None
        for k in range(passes + 1):
            if vote is not None:
                # the previous root where a pass voted; else the original fallback, with its
                # gradient (the same values as the previous pass's root_cam)
                fallback = torch.where(vote.voted[:, None], vote.root_cam.detach(),
                                       first_fallback)  # fmt: skip
                centre = vote.root_cam.detach().to(centre.dtype)
            with torch.set_grad_enabled(grad and k == passes):
                again = self.vote_from(inputs, fmap, centre, fallback)
            vote = again if vote is None else replace(again, voted=vote.voted | again.voted)
        return vote, centre, fallback

    @torch.no_grad()
    def _depth_search(
        self,
        inputs: FrameInputs,
        fmap: Tensor,
        root_coarse: Tensor,
        vote: RoiVote,
        centre: Tensor,
        fallback: Tensor,
    ) -> tuple[RoiVote, Tensor]:
        """Votes from ROIs at ``depth_hypotheses`` x the coarse depth; each frame takes the
        hypothesis with the most scene evidence if it beats its own vote's by the margin.

        Returns:
            ``(vote, centre)``: the kept or replaced vote, and the centre of its last pass.
        """
        B = root_coarse.shape[0]
        best = frame_evidence(vote.voxels.confidence, vote.voxels.batch_idx, B)
        own = best + self.depth_hypothesis_margin
        centre_pick, fallback_pick, voted_pick = centre.clone(), fallback.clone(), vote.voted
        switched = torch.zeros(B, dtype=torch.bool, device=root_coarse.device)
        # every hypothesis of every frame in one batch of H x B ROI sets (hypothesis-major):
        # the same votes as H separate passes (tests/models/test_rcnet.py), H times fewer calls
        H = len(self.depth_hypotheses)
        scales = root_coarse.new_tensor(self.depth_hypotheses)
        start = (scales[:, None, None] * root_coarse[None]).reshape(H * B, 3)  # same rays
        alt, alt_centre, alt_fallback = self._refined_vote(
            inputs, fmap, start.to(centre.dtype), start, self.roi_refinements
        )
        evidence = frame_evidence(alt.voxels.confidence, alt.voxels.batch_idx, H * B)
        evidence, alt_voted = evidence.reshape(H, B), alt.voted.reshape(H, B)
        alt_centre, alt_fallback = alt_centre.reshape(H, B, 3), alt_fallback.reshape(H, B, 3)
        for h in range(H):  # in the configured order: ties go to the earlier hypothesis
            take = (evidence[h] >= own) & (evidence[h] > best)
            best = torch.where(take, evidence[h], best)
            centre_pick = torch.where(take[:, None], alt_centre[h], centre_pick)
            fallback_pick = torch.where(take[:, None], alt_fallback[h].to(fallback_pick),
                                        fallback_pick)  # fmt: skip
            voted_pick = torch.where(take, alt_voted[h], voted_pick)
            switched |= take
        if not bool(switched.any()):
            return vote, centre
        # every frame's last pass again, from the centre it was made with: the same vote and
        # contacts for the frames kept, the chosen hypothesis's for the others
        final = self.vote_from(inputs, fmap, centre_pick, fallback_pick)
        return replace(final, voted=final.voted | voted_pick), centre_pick

    def _roi_pairs(self, inputs: FrameInputs, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """(scene row, sample) pairs: row n is within roi_radius of anchor a of its frame.

        ``anchors`` (H * B, A, 3) may hold H sets of ROIs for the B frames (set h of frame b
        at row ``h * B + b``, `_depth_search`); sample ``(h * B + b) * A + a``.
        """
        pts, bidx = inputs.scene_points_cam, inputs.scene_batch_idx
        empty = torch.zeros(0, dtype=torch.int64, device=anchors.device)
        if pts is None or bidx is None or pts.shape[0] == 0:
            return empty, empty
        B = inputs.K_crop.shape[0]
        A = anchors.shape[1]
        rows, samples = [], []
        for h in range(anchors.shape[0] // B):
            own = anchors[h * B : (h + 1) * B]
            for a in range(A):
                r = torch.nonzero(roi_select(pts, bidx, own[:, a : a + 1], self.roi_radius))
                r = r.squeeze(1)
                rows.append(r)
                samples.append((bidx[r].long() + h * B) * A + a)
        return torch.cat(rows), torch.cat(samples)

    def _voxel_heads(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Confidence (K,), offset (K, 3) and contact logits (K, 8) from voxel features."""
        return self.confidence_head(h).squeeze(-1), self.offset_head(h), self.contact_head(h)

    def _sparse_branch(
        self, inputs: FrameInputs, fmap: Tensor, anchors: Tensor
    ) -> tuple[RCNetVoxels, Tensor, Tensor]:
        """Voxelise the ROI samples, run the U-Net and the voxel heads.

        ``anchors`` (B, A, 3), or (H * B, A, 3) for H sets of ROIs per frame (`_roi_pairs`):
        the voxels' ``batch_idx`` is then the set ``h * B + b``, their image features frame
        b's.

        Returns:
            ``(voxels, pair_rows, pair_voxel)``: the voxels, and for every (scene row, sample)
            pair of the ROI the scene row (Q,) and its voxel (Q,).
        """
        B, A = anchors.shape[:2]
        G = self.grid_size
        origin = (anchors - 0.5 * G * self.voxel_size).reshape(B * A, 3)
        rows, samples = self._roi_pairs(inputs, anchors)
        c0 = self.unet.out_channels
        if rows.numel() == 0:
            feats = torch.zeros(0, c0, device=fmap.device)
            idx = torch.zeros(0, dtype=torch.int64, device=fmap.device)
            with torch.autocast(fmap.device.type, enabled=False):
                heads = self._voxel_heads(feats)
            voxels = RCNetVoxels(
                centres_cam=feats.new_zeros(0, 3),
                batch_idx=idx,
                sample_idx=idx.clone(),
                coords=torch.zeros(0, 4, dtype=torch.int32, device=fmap.device),
                confidence=heads[0],
                offset=heads[1],
                contact_logits=heads[2],
                sample_origin_cam=origin,
                voxel_size=self.voxel_size,
                spatial_shape=[G, G, G],
                num_anchors=A,
            )
            return voxels, idx, idx.clone()
        # Geometry and the sparse stage stay float32 under autocast: voxel indices need metre
        # precision and spconv has no bfloat16 kernels.
        pts = inputs.scene_points_cam[rows].float()
        grid = voxelize(
            pts, samples, pts, self.voxel_size, origin=origin, spatial_shape=[G, G, G],
            batch_size=B * A,
        )
        sample_idx = grid.coords[:, 0].long()
        frame = sample_idx // A  # the ROI set (the frame itself unless H > 1)
        image = frame % inputs.K_crop.shape[0]  # the frame whose crop and features it reads
        centres = grid.centres  # (K, 3) camera frame
        uv = project(inputs.K_crop[image], centres[:, None, :])[:, 0]  # (K, 2) crop pixels
        image_feat = sample_feature_map(fmap.float(), uv, image, inputs.crop_size)  # (K, C)
        rel = anchors.reshape(B * A, 3)[sample_idx].float() - centres
        with torch.autocast(fmap.device.type, enabled=False):
            x = grid.tensor.replace_feature(torch.cat([rel, image_feat], dim=1))
            h = self.unet(x).features.features  # (K, c0)
            heads = self._voxel_heads(h)
        voxels = RCNetVoxels(
            centres_cam=centres,
            batch_idx=frame,
            sample_idx=sample_idx,
            coords=grid.coords,
            confidence=heads[0],
            offset=heads[1],
            contact_logits=heads[2],
            sample_origin_cam=origin,
            voxel_size=self.voxel_size,
            spatial_shape=[G, G, G],
            num_anchors=A,
        )
        return voxels, rows, grid.point2voxel

    @torch.no_grad()
    def _select_contacts(
        self, inputs: FrameInputs, voxels: RCNetVoxels, pair_rows: Tensor, pair_voxel: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Contact scene points: argmax class != 0, capped per frame by contact probability."""
        device = voxels.centres_cam.device
        if pair_rows.numel() == 0:
            idx = torch.zeros(0, dtype=torch.int64, device=device)
            return voxels.centres_cam.new_zeros(0, 3), idx, idx, idx.float(), idx
        pts, bidx = inputs.scene_points_cam, inputs.scene_batch_idx
        N = pts.shape[0]
        probs = torch.softmax(voxels.contact_logits.float(), dim=-1)[pair_voxel]  # (Q, 8)
        acc = probs.new_zeros(N, NUM_CONTACT_CLASSES).index_add_(0, pair_rows, probs)
        count = torch.bincount(pair_rows, minlength=N)
        row = torch.nonzero(count > 0).squeeze(1)
        mean = acc[row] / count[row, None].to(acc.dtype)
        cls = mean.argmax(dim=1)
        hit = cls != 0
        row, cls, score = row[hit], cls[hit], 1.0 - mean[hit, 0]
        keep = top_k_per_frame(score, bidx[row].long(), self.max_contacts_per_frame)
        row = row[keep]
        return pts[row], cls[keep], bidx[row].long(), score[keep], row

    def metrics(self, output: RCNetOutput, targets: FrameTargets) -> dict[str, tuple[float, float]]:
        """Validation metrics as ``name -> (sum, count)``.

        See `sahmr.evaluation.rcnet_metrics.rcnet_metrics` (root error in mm, scene-contact
        precision/recall/F1, per region); its ``per_frame`` values (e.g. for medians) come
        from calling that function directly.

        Args:
            output: This model's output for a batch.
            targets: The batch's ground truth.

        Returns:
            Count-weighted sums.
        """
        return rcnet_metrics(output, targets).sums

    def per_frame_metrics(self, output: RCNetOutput, targets: FrameTargets) -> dict[str, Tensor]:
        """Per-frame values (``root_error_mm``, ``root_coarse_error_mm``, contact P/R/F1),
        ``name -> Tensor (B,)``; the engine reports their medians."""
        return rcnet_metrics(output, targets).per_frame

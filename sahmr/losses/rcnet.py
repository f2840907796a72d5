"""Losses of RCNet (root heatmap, depth, root votes, voxel contact classes, part heatmaps).

Terms (camera frame, metres; crop pixels as in `sahmr.geometry.crops`):

* ``heatmap``: KL divergence from a normalised Gaussian (``heatmap_sigma`` crop pixels) at the
  ground-truth root's crop projection to the spatial softmax of the root heatmap (the same
  softmax the soft-argmax reads); frames whose root projects outside the crop are skipped.
* ``part_heatmap``: the same per contact region r = 1..7, the target centred on the projection
  of the mean of the region's ground-truth vertices (`vertex_region` says which vertices).
* ``depth``: L1 on the normalised depth ``d = z * S / K_crop[0, 0]``.
* ``offset``: L1 (summed over x, y, z) between each voxel's vote ``centre + offset`` and the
  ground-truth root, over voxels within ``offset_radius`` of it.
* ``root``: Euclidean distance between the voted and the ground-truth root, over frames that
  had ROI voxels.
* ``contact``: per-voxel 8-way focal cross-entropy. Labels: a voxel takes the region of the
  nearest ground-truth contact point of its frame (``FrameTargets.contact_points_cam`` /
  ``contact_point_region``) when that point lies within ``contact_label_radius`` of the voxel
  centre (default 5 cm: every point inside a 5 cm voxel is within 4.3 cm of its centre), else
  0 (none). Class imbalance: class 0 is weighted by ``contact_background_weight`` and the focal
  factor ``(1 - p_y) ** gamma`` down-weights easy voxels; the sum is normalised by the summed
  class weights.

Every term is returned already multiplied by its weight; ``total`` is their sum. Terms with
nothing to score (no voxels, no visible root) are zeros that keep the graph connected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sahmr.evaluation.rcnet_metrics import nearest_in_frame
from sahmr.geometry.cameras import project
from sahmr.models.rcnet import (
    NUM_CONTACT_CLASSES,
    NUM_PARTS,
    RCNetOutput,
    RCNetVoxels,
    heatmap_pixel_centres,
    normalised_depth,
)
from sahmr.records import FrameTargets, LossOutput

logger = logging.getLogger(__name__)

__all__ = [
    "RCNetLoss",
    "body_vertex_regions",
    "focal_cross_entropy",
    "gaussian_heatmap_targets",
    "heatmap_kl",
    "part_centres",
    "voxel_contact_labels",
]


def body_vertex_regions(body) -> Tensor:
    """int64 Tensor (V,) contact region 0..7 of every full-resolution vertex of a body model.

    Args:
        body: A `sahmr.body.BodyModel` (its ``topology.contact_labels[0]``).
    """
    return torch.as_tensor(np.asarray(body.topology.contact_labels[0]), dtype=torch.int64)


def gaussian_heatmap_targets(
    centres_px: Tensor, height: int, width: int, crop_size: int, sigma: float
) -> Tensor:
    """Normalised Gaussian target distributions on the heatmap grid.

    Args:
        centres_px: Tensor of shape (B, J, 2), crop pixels.
        height: h.
        width: w.
        crop_size: S.
        sigma: Standard deviation, crop pixels.

    Returns:
        Tensor of shape (B, J, h, w); every (b, j) map sums to 1.
    """
    u, v = heatmap_pixel_centres(
        height, width, crop_size, device=centres_px.device, dtype=centres_px.dtype
    )
    du = (u[None, None, :] - centres_px[..., 0:1]).square()  # (B, J, w)
    dv = (v[None, None, :] - centres_px[..., 1:2]).square()  # (B, J, h)
    logit = -(dv[..., :, None] + du[..., None, :]) / (2 * sigma * sigma)  # (B, J, h, w)
    B, J = centres_px.shape[:2]
    return torch.softmax(logit.reshape(B, J, -1), dim=-1).reshape(B, J, height, width)


def heatmap_kl(logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean over valid maps of ``KL(target || softmax(logits))`` over the spatial cells.

    Args:
        logits: Tensor of shape (B, J, h, w).
        target: Tensor of shape (B, J, h, w), distributions.
        valid: bool Tensor of shape (B, J).

    Returns:
        Scalar Tensor (0, still connected to ``logits``, when nothing is valid).
    """
    B, J = logits.shape[:2]
    log_p = torch.log_softmax(logits.reshape(B, J, -1), dim=-1)
    kl = F.kl_div(log_p, target.reshape(B, J, -1), reduction="none").sum(-1)  # (B, J)
    return _masked_mean(kl, valid)


def part_centres(verts_cam: Tensor, vertex_region: Tensor, num_parts: int = NUM_PARTS) -> Tensor:
    """Mean vertex of every contact region.

    Args:
        verts_cam: Tensor of shape (B, V, 3).
        vertex_region: int64 Tensor of shape (V,), values 0..num_parts.
        num_parts: R.

    Returns:
        Tensor of shape (B, R, 3) (zeros for a region without vertices).
    """
    onehot = F.one_hot(vertex_region.long(), num_parts + 1)[:, 1:].to(verts_cam.dtype)  # (V, R)
    counts = onehot.sum(0).clamp_min(1)
    return torch.einsum("vr,bvc->brc", onehot, verts_cam) / counts[None, :, None]


def voxel_contact_labels(
    voxels: RCNetVoxels, targets: FrameTargets, radius: float
) -> Tensor:
    """Contact class of every voxel from the ground-truth contact points (module docstring).

    Args:
        voxels: The output's voxels (K voxels).
        targets: Ground truth with packed ``contact_points_cam`` / ``contact_point_region`` /
            ``contact_batch_idx``.
        radius: Label radius around the voxel centre, metres.

    Returns:
        int64 Tensor of shape (K,), 0..7.
    """
    labels = torch.zeros(voxels.num_voxels, dtype=torch.int64, device=voxels.centres_cam.device)
    if voxels.num_voxels == 0 or targets.contact_points_cam.shape[0] == 0:
        return labels
    dist, idx = nearest_in_frame(
        voxels.centres_cam.detach(),
        voxels.batch_idx,
        targets.contact_points_cam.to(voxels.centres_cam),
        targets.contact_batch_idx.to(labels.device),
        max_distance=radius,
        exact=False,  # labels: a near-tie between two contact points may go either way
    )
    region = targets.contact_point_region.to(labels.device).long()
    hit = dist <= radius
    labels[hit] = region[idx[hit]]
    return labels


def focal_cross_entropy(
    logits: Tensor, labels: Tensor, class_weight: Tensor, gamma: float
) -> Tensor:
    """Class-weighted focal cross-entropy ``sum_i w_yi (1 - p_yi)^gamma (-log p_yi) / sum_i w_yi``.

    With ``gamma = 0`` this equals ``F.cross_entropy(logits, labels, weight=class_weight)``.

    Args:
        logits: Tensor of shape (K, C).
        labels: int64 Tensor of shape (K,).
        class_weight: Tensor of shape (C,).
        gamma: Focusing exponent (>= 0).

    Returns:
        Scalar Tensor (0, connected to ``logits``, for K = 0).
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    log_p = torch.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
    w = class_weight.to(logits)[labels]
    focal = (1 - log_p.exp()).clamp_min(0).pow(gamma) if gamma > 0 else torch.ones_like(log_p)
    return (w * focal * -log_p).sum() / w.sum().clamp_min(1e-12)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values[mask]``; a zero connected to ``values`` when the mask is empty."""
    if bool(mask.any()):
        return values[mask].mean()
    return values.sum() * 0.0


def _inside_crop(px: Tensor, crop_size: int) -> Tensor:
    """bool (..., ) pixels inside ``[-0.5, S - 0.5]^2``."""
    return ((px >= -0.5) & (px <= crop_size - 0.5)).all(-1)


class RCNetLoss(nn.Module):
    """Weighted sum of RCNet's loss terms (see the module docstring).

    Args:
        vertex_region: (V,) contact region 0..7 per full-resolution vertex
            (`body_vertex_regions` of the body model), for the part-heatmap targets.
        heatmap_weight: Weight of ``heatmap``.
        part_heatmap_weight: Weight of ``part_heatmap``.
        depth_weight: Weight of ``depth``.
        offset_weight: Weight of ``offset``.
        root_weight: Weight of ``root``.
        contact_weight: Weight of ``contact``.
        heatmap_sigma: Gaussian standard deviation of the heatmap targets, crop pixels.
        offset_radius: Voxels within this distance of the ground-truth root train their
            offsets, metres.
        contact_label_radius: Voxel label radius around ground-truth contact points, metres.
        contact_background_weight: Class weight of "no contact" (regions weigh 1).
        contact_focal_gamma: Focal exponent (0: weighted cross-entropy).
    """

    def __init__(
        self,
        *,
        vertex_region: Tensor | np.ndarray | Sequence[int],
        heatmap_weight: float = 1.0,
        part_heatmap_weight: float = 0.1,
        depth_weight: float = 1.0,
        offset_weight: float = 1.0,
        root_weight: float = 1.0,
        contact_weight: float = 1.0,
        heatmap_sigma: float = 8.0,
        offset_radius: float = 1.0,
        contact_label_radius: float = 0.05,
        contact_background_weight: float = 0.1,
        contact_focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        region = torch.as_tensor(np.asarray(vertex_region), dtype=torch.int64)
        self.register_buffer("vertex_region", region, persistent=False)
        class_weight = torch.ones(NUM_CONTACT_CLASSES)
        class_weight[0] = contact_background_weight
        self.register_buffer("class_weight", class_weight, persistent=False)
        self.weights = {
            "heatmap": float(heatmap_weight),
            "part_heatmap": float(part_heatmap_weight),
            "depth": float(depth_weight),
            "offset": float(offset_weight),
            "root": float(root_weight),
            "contact": float(contact_weight),
        }
        self.heatmap_sigma = float(heatmap_sigma)
        self.offset_radius = float(offset_radius)
        self.contact_label_radius = float(contact_label_radius)
        self.contact_focal_gamma = float(contact_focal_gamma)

    def forward(self, output: RCNetOutput, targets: FrameTargets) -> LossOutput:
        """Compute the loss.

        Args:
            output: `RCNetOutput` of a batch.
            targets: Its camera-frame ground truth.

        Returns:
            `LossOutput` with weighted terms ``heatmap``, ``part_heatmap``, ``depth``,
            ``offset``, ``root``, ``contact``.
        """
        S = output.crop_size
        K_crop = output.K_crop
        root_gt = targets.root_cam.to(output.root_cam)
        h, w = output.root_heatmap.shape[-2:]

        root_px = project(K_crop, root_gt[:, None, :])  # (B, 1, 2)
        valid = _inside_crop(root_px, S) & (root_gt[:, None, 2] > 0)
        target = gaussian_heatmap_targets(root_px, h, w, S, self.heatmap_sigma)
        heatmap = heatmap_kl(output.root_heatmap, target, valid)

        centres = part_centres(targets.verts_cam.to(root_gt), self.vertex_region)  # (B, R, 3)
        part_px = project(K_crop, centres)
        has = torch.bincount(self.vertex_region, minlength=NUM_PARTS + 1)[1:] > 0
        part_valid = _inside_crop(part_px, S) & (centres[..., 2] > 0) & has[None, :]
        part_target = gaussian_heatmap_targets(part_px, h, w, S, self.heatmap_sigma)
        part_heatmap = heatmap_kl(output.part_heatmaps, part_target, part_valid)

        d_gt = normalised_depth(root_gt[:, 2], K_crop, S)
        depth = (output.root_depth - d_gt).abs().mean()

        raw = {
            "heatmap": heatmap,
            "part_heatmap": part_heatmap,
            "depth": depth,
            **self.vote_terms(output.voxels, output.root_cam, output.root_voted, targets),
        }
        terms = {k: self.weights[k] * v for k, v in raw.items()}
        total = torch.stack(list(terms.values())).sum()
        return LossOutput(total=total, terms=terms)

    def vote_terms(
        self, voxels: RCNetVoxels, root_cam: Tensor, root_voted: Tensor, targets: FrameTargets
    ) -> dict[str, Tensor]:
        """The sparse branch's terms ``offset``, ``root``, ``contact``, unweighted.

        Args:
            voxels: The voxels of one pass (`RCNetOutput.voxels`, `RoiVote.voxels`).
            root_cam: (B, 3) the voted root.
            root_voted: bool (B,) frames whose ROI held voxels.
            targets: Camera-frame ground truth.
        """
        root_gt = targets.root_cam.to(root_cam)
        err = voxels.votes_cam - root_gt[voxels.batch_idx]  # (K, 3)
        near = (voxels.centres_cam - root_gt[voxels.batch_idx]).norm(dim=-1) <= self.offset_radius
        labels = voxel_contact_labels(voxels, targets, self.contact_label_radius)
        return {
            "offset": _masked_mean(err.abs().sum(-1), near),
            "root": _masked_mean((root_cam - root_gt).norm(dim=-1), root_voted),
            "contact": focal_cross_entropy(
                voxels.contact_logits, labels, self.class_weight, self.contact_focal_gamma
            ),
        }

"""Label scene points with the body contact region they touch (torch, CPU or CUDA).

Regions follow DESIGN.md: 0 none, 1 left foot, 2 right foot, 3 left hand, 4 right hand,
5 back, 6 gluteus, 7 thighs. The per-vertex region array comes from ``sahmr.body``.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["scene_contact_labels"]


def scene_contact_labels(
    points: Tensor,
    batch_idx: Tensor,
    body_vertices: Tensor,
    vertex_region: Tensor,
    threshold: float = 0.07,
    chunk_size: int = 65536,
) -> Tensor:
    """Give each scene point the region of its nearest region vertex, if close enough.

    Only vertices with a region label in 1..7 are candidates. A point gets the label of
    its nearest candidate vertex of its own frame when that distance is ``<= threshold``,
    else 0. Brute force over candidates in chunks of points (``torch.cdist``), no KD-tree.

    Args:
        points: Tensor of shape (M, 3), metres, same frame as ``body_vertices``.
        batch_idx: int64 Tensor of shape (M,), frame of each point in ``0..B-1``.
        body_vertices: Tensor of shape (B, V, 3), metres.
        vertex_region: int64 Tensor of shape (V,), values in 0..7.
        threshold: contact distance, metres (7 cm by default, as in SA-HMR).
        chunk_size: points per chunk; memory ~ chunk_size * (#candidate vertices) * 4 B.

    Returns:
        int64 Tensor of shape (M,), labels in 0..7.
    """
    vertex_region = vertex_region.to(points.device).long()
    cand = torch.nonzero(vertex_region > 0).squeeze(1)
    labels = torch.zeros(points.shape[0], dtype=torch.int64, device=points.device)
    if cand.numel() == 0 or points.shape[0] == 0:
        return labels
    verts = body_vertices[:, cand].to(points.dtype)  # (B, Vc, 3)
    cand_region = vertex_region[cand]
    batch_idx = batch_idx.long()
    for b in torch.unique(batch_idx).tolist():
        rows = torch.nonzero(batch_idx == b).squeeze(1)
        for start in range(0, rows.shape[0], chunk_size):
            r = rows[start : start + chunk_size]
            d = torch.cdist(points[r], verts[b], compute_mode="donot_use_mm_for_euclid_dist")
            dmin, arg = d.min(dim=1)
            labels[r] = torch.where(dmin <= threshold, cand_region[arg], 0)
    return labels

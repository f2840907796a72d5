"""Label scene points with the body contact region they touch (torch, CPU or CUDA).

Regions follow DESIGN.md: 0 none, 1 left foot, 2 right foot, 3 left hand, 4 right hand,
5 back, 6 gluteus, 7 thighs. The per-vertex region array comes from ``sahmr.body``.

The one definition of contact (DESIGN.md) lives here and is imported everywhere (generator
labels, RCNet targets, losses, data loaders, evaluator, demo): a body vertex is in contact
when it belongs to one of the :data:`NUM_CONTACT_REGIONS` contact regions and lies within
:data:`CONTACT_THRESHOLD_M` of the scan (:func:`vertex_contact`). Both sides of every
comparison use this same vertex set.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from sahmr.body.constants import CONTACT_REGION_NAMES

logger = logging.getLogger(__name__)

__all__ = [
    "CONTACT_THRESHOLD_M",
    "MAX_CONTACTS_PER_FRAME",
    "NUM_CONTACT_CLASSES",
    "NUM_CONTACT_REGIONS",
    "scene_contact_labels",
    "vertex_contact",
]

CONTACT_THRESHOLD_M = 0.07
"""Vertex-to-scene distance (metres) below which a contact-region vertex is in contact (7 cm,
as SA-HMR). The only place this number is written."""

MAX_CONTACTS_PER_FRAME = 500
"""Most scene contact points per frame RCNet hands the mesh network (SA-HMR's cap). The only
place this number is written."""

NUM_CONTACT_CLASSES = len(CONTACT_REGION_NAMES)
"""Contact classes including 0 = none (8): RCNet's per-voxel / per-point classification."""

NUM_CONTACT_REGIONS = NUM_CONTACT_CLASSES - 1
"""Contact regions 1..7 (left foot ... thighs): the labels that can be in contact (7)."""


def vertex_contact(
    distance: Tensor, vertex_region: Tensor, threshold: float = CONTACT_THRESHOLD_M
) -> Tensor:
    """Per-vertex contact region: the vertex's region where it is in contact, else 0.

    A vertex is in contact when its region label is in 1..7 and ``|distance| < threshold``.
    Vertices outside the contact regions are never in contact, whatever their distance.

    Args:
        distance: Tensor of shape (..., V), metres: signed (SDF) or unsigned distance of each
            body vertex to the scan.
        vertex_region: int Tensor of shape (V,), region label 0..7 per vertex
            (``BodyModel.topology.contact_labels[0]``).
        threshold: Contact distance, metres.

    Returns:
        int64 Tensor of shape (..., V), labels 0..7 (``> 0`` = in contact).
    """
    region = vertex_region.to(device=distance.device, dtype=torch.int64)
    near = distance.abs() < threshold
    return torch.where(near & (region > 0), region, torch.zeros_like(region))


def scene_contact_labels(
    points: Tensor,
    batch_idx: Tensor,
    body_vertices: Tensor,
    vertex_region: Tensor,
    threshold: float = CONTACT_THRESHOLD_M,
    chunk_size: int = 65536,
) -> Tensor:
    """Give each scene point the region of its nearest region vertex, if close enough.

    Only vertices with a region label in 1..7 are candidates. A point gets the label of
    its nearest candidate vertex of its own frame when that distance is ``< threshold``,
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
            labels[r] = torch.where(dmin < threshold, cand_region[arg], 0)
    return labels

"""Per-frame evaluation metrics for human meshes in scenes (torch, batched).

Every function returns per-item values (one per frame, shape (B,)) or per-item counts, never a
batch mean: averaging across frames, batches and processes is done by
:class:`sahmr.evaluation.reduction.Accumulator` from sums and counts.

Units: inputs are metres; distance errors are returned in millimetres (``MM_PER_M``).
Frames: MPJPE/MPVE and their PA variants are frame-independent (they align); G-MPJPE,
G-MPVE, root error, PenE and ConFE are measured in the world frame (the scan's frame).

Signed distances (``sdf``) are per-vertex values in metres from the scene's SDF
(``SDFGrid.sample``), negative inside furniture and below the floor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sahmr.geometry.procrustes import procrustes_align
from sahmr.scene.contact import CONTACT_THRESHOLD_M, NUM_CONTACT_REGIONS

MM_PER_M = 1000.0
"""Millimetres per metre: metric outputs are in mm."""

PelvisSpec = int | Sequence[int]


def _pelvis(points: Tensor, pelvis: PelvisSpec) -> Tensor:
    """Pelvis position (..., 3) as one joint or the mean of several (e.g. both hips)."""
    if isinstance(pelvis, int):
        return points[..., pelvis, :]
    return points[..., list(pelvis), :].mean(-2)


def _mean_distance_mm(pred: Tensor, gt: Tensor) -> Tensor:
    """Mean over points of the Euclidean distance, (B, N, 3) x2 -> (B,) mm."""
    return (pred - gt).norm(dim=-1).mean(-1) * MM_PER_M


def mpjpe(
    pred_joints: Tensor,
    gt_joints: Tensor,
    *,
    pelvis: PelvisSpec | None = 0,
    pred_pelvis: Tensor | None = None,
    gt_pelvis: Tensor | None = None,
) -> Tensor:
    """Mean per-joint position error after aligning the pelvis (root) of each.

    Both joint sets are translated so that their pelvis is at the origin, then the mean
    Euclidean distance over joints is taken.

    Args:
        pred_joints: Tensor of shape (B, J, 3), metres, any frame shared with ``gt_joints``.
        gt_joints: Tensor of shape (B, J, 3), metres.
        pelvis: Index of the pelvis joint, or indices whose mean is the pelvis (e.g. the two
            hips of a 14-joint LSP set). Ignored when explicit positions are given.
        pred_pelvis: Optional Tensor of shape (B, 3), metres: pelvis of the prediction.
        gt_pelvis: Optional Tensor of shape (B, 3), metres: pelvis of the ground truth.

    Returns:
        Tensor of shape (B,), millimetres.
    """
    if (pred_pelvis is None) != (gt_pelvis is None):
        raise ValueError("pass both pred_pelvis and gt_pelvis, or neither")
    if pred_pelvis is None:
        if pelvis is None:
            raise ValueError("pass a pelvis index or pelvis positions")
        pred_pelvis = _pelvis(pred_joints, pelvis)
        gt_pelvis = _pelvis(gt_joints, pelvis)
    return _mean_distance_mm(pred_joints - pred_pelvis[:, None], gt_joints - gt_pelvis[:, None])


def mpve(pred_verts: Tensor, gt_verts: Tensor, pred_pelvis: Tensor, gt_pelvis: Tensor) -> Tensor:
    """Mean per-vertex error after aligning the pelvis joints.

    Args:
        pred_verts: Tensor of shape (B, V, 3), metres.
        gt_verts: Tensor of shape (B, V, 3), metres, same vertex order.
        pred_pelvis: Tensor of shape (B, 3), metres: the prediction's pelvis joint.
        gt_pelvis: Tensor of shape (B, 3), metres: the ground truth's pelvis joint.

    Returns:
        Tensor of shape (B,), millimetres.
    """
    return _mean_distance_mm(pred_verts - pred_pelvis[:, None], gt_verts - gt_pelvis[:, None])


def pa_mpjpe(pred_joints: Tensor, gt_joints: Tensor) -> Tensor:
    """Mean per-joint error after similarity Procrustes alignment of the prediction.

    Reflection-safe: the alignment rotation always has ``det = +1``.

    Args:
        pred_joints: Tensor of shape (B, J, 3), metres.
        gt_joints: Tensor of shape (B, J, 3), metres.

    Returns:
        Tensor of shape (B,), millimetres.
    """
    aligned = procrustes_align(pred_joints, gt_joints)
    return _mean_distance_mm(aligned, gt_joints)


def pa_mpve(pred_verts: Tensor, gt_verts: Tensor) -> Tensor:
    """Mean per-vertex error after similarity Procrustes alignment over all vertices.

    Args:
        pred_verts: Tensor of shape (B, V, 3), metres.
        gt_verts: Tensor of shape (B, V, 3), metres.

    Returns:
        Tensor of shape (B,), millimetres.
    """
    return pa_mpjpe(pred_verts, gt_verts)


def g_mpjpe(pred_joints_world: Tensor, gt_joints_world: Tensor) -> Tensor:
    """Global mean per-joint error: world frame, no alignment at all.

    Args:
        pred_joints_world: Tensor of shape (B, J, 3), metres, world frame.
        gt_joints_world: Tensor of shape (B, J, 3), metres, world frame.

    Returns:
        Tensor of shape (B,), millimetres.
    """
    return _mean_distance_mm(pred_joints_world, gt_joints_world)


def g_mpve(pred_verts_world: Tensor, gt_verts_world: Tensor) -> Tensor:
    """Global mean per-vertex error: world frame, no alignment at all.

    Args:
        pred_verts_world: Tensor of shape (B, V, 3), metres, world frame.
        gt_verts_world: Tensor of shape (B, V, 3), metres, world frame.

    Returns:
        Tensor of shape (B,), millimetres.
    """
    return _mean_distance_mm(pred_verts_world, gt_verts_world)


def root_error(pred_root: Tensor, gt_root: Tensor) -> Tensor:
    """Euclidean error of the root (pelvis) position.

    Args:
        pred_root: Tensor of shape (B, 3), metres, world (or camera) frame.
        gt_root: Tensor of shape (B, 3), metres, same frame.

    Returns:
        Tensor of shape (B,), millimetres.
    """
    return (pred_root - gt_root).norm(dim=-1) * MM_PER_M


def penetration(sdf: Tensor) -> dict[str, Tensor]:
    """Penetration of the body into the scene, per frame (PenE as in SA-HMR).

    ``PenE = sum over vertices v with sdf_v < 0 of |sdf_v|``, converted to millimetres: the
    total depth of all penetrating vertices (not a mean; it grows with the number of
    penetrating vertices). Also returned: the number of penetrating vertices (``pen_count``)
    so the dataset-level mean penetration depth is ``sum(PenE) / sum(pen_count)`` (mm per
    penetrating vertex), and the fraction of penetrating vertices.

    Args:
        sdf: Tensor of shape (B, V), metres, signed distance of each predicted vertex (world
            frame), negative inside the scene.

    Returns:
        Dict of Tensors of shape (B,): ``"pene"`` mm (sum of depths), ``"pen_count"`` (number
        of vertices with ``sdf < 0``), ``"pen_depth_mean"`` mm (mean depth over penetrating
        vertices, 0 when none), ``"pen_fraction"`` (percent of vertices penetrating, 0..100).
    """
    inside = sdf < 0
    depth = torch.where(inside, -sdf, torch.zeros_like(sdf))
    pene = depth.sum(-1) * MM_PER_M
    count = inside.sum(-1).to(sdf.dtype)
    return {
        "pene": pene,
        "pen_count": count,
        "pen_depth_mean": pene / count.clamp_min(1),
        "pen_fraction": 100.0 * count / sdf.shape[-1],
    }


def contact_fitting_error(sdf: Tensor, gt_contact: Tensor) -> Tensor:
    """Contact-fitting error (ConFE) as in SA-HMR, per frame, millimetres.

    Penalises both penetration and missing contact, using the ground-truth contact labels::

        ConFE = sum_{v not in C, sdf_v < 0} |sdf_v|  +  sum_{v in C} |sdf_v|

    where ``C`` is the set of vertices labelled in contact in the ground truth and ``sdf_v``
    the predicted vertex's signed distance. Non-contact vertices only count when they
    penetrate; contact vertices count by their distance to the surface on either side (a
    contact vertex should lie exactly on the surface).

    Args:
        sdf: Tensor of shape (B, V), metres, signed distance of each predicted vertex.
        gt_contact: Bool (or 0/1) Tensor of shape (B, V): ground-truth contact labels.

    Returns:
        Tensor of shape (B,), millimetres.
    """
    contact = gt_contact.bool()
    err = torch.where(contact, sdf.abs(), (-sdf).clamp_min(0))
    return err.sum(-1) * MM_PER_M


def penetration_and_confe(sdf: Tensor, gt_contact: Tensor) -> dict[str, Tensor]:
    """PenE, penetrating-vertex count and ConFE in one pass (for large-scale evaluation).

    Uses ``ConFE = PenE + sum_{v in C} max(sdf_v, 0)``, which equals the definition in
    :func:`contact_fitting_error` because ``|s| = max(-s, 0) + max(s, 0)``.

    Args:
        sdf: Tensor of shape (B, V), metres.
        gt_contact: Bool Tensor of shape (B, V) or (V,), ground-truth contact labels.

    Returns:
        Dict of Tensors of shape (B,): ``"pene"`` mm, ``"pen_count"``, ``"confe"`` mm.
    """
    depth = (-sdf).clamp_min(0)
    pene = depth.sum(-1)
    above_contact = (sdf.clamp_min(0) * gt_contact.to(sdf.dtype)).sum(-1)
    return {
        "pene": pene * MM_PER_M,
        "pen_count": (sdf < 0).sum(-1).to(sdf.dtype),
        "confe": (pene + above_contact) * MM_PER_M,
    }


def predicted_contact(sdf: Tensor, threshold: float = CONTACT_THRESHOLD_M) -> Tensor:
    """Vertices in contact with the scene: ``|sdf| < threshold``.

    Args:
        sdf: Tensor of shape (B, V), metres.
        threshold: Distance in metres (default `CONTACT_THRESHOLD_M`, the labelling threshold).

    Returns:
        Bool Tensor of shape (B, V).
    """
    return sdf.abs() < threshold


def binary_counts(pred: Tensor, gt: Tensor) -> dict[str, Tensor]:
    """True/false positive and false negative counts per item.

    Args:
        pred: Bool Tensor of shape (B, N).
        gt: Bool Tensor of shape (B, N).

    Returns:
        Dict of float64 Tensors of shape (B,): ``"tp"``, ``"fp"``, ``"fn"``.
    """
    pred = pred.bool()
    gt = gt.bool()
    return {
        "tp": (pred & gt).sum(-1).double(),
        "fp": (pred & ~gt).sum(-1).double(),
        "fn": (~pred & gt).sum(-1).double(),
    }


def precision_recall_f1(tp: Tensor, fp: Tensor, fn: Tensor) -> dict[str, Tensor]:
    """Precision, recall, F1 and IoU from counts (any shape, element-wise), as fractions 0..1.

    Empty denominators give NaN (undefined), never 1: precision is undefined when nothing is
    predicted, recall when nothing is labelled, F1 / IoU when both are empty. Means over
    frames skip undefined values and report how many were defined.

    Args:
        tp: Tensor of true positive counts.
        fp: Tensor of false positive counts.
        fn: Tensor of false negative counts.

    Returns:
        Dict of Tensors: ``"precision"``, ``"recall"``, ``"f1"``, ``"iou"``.
    """
    tp, fp, fn = (x.double() for x in (tp, fp, fn))
    nan = torch.full_like(tp, float("nan"))
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), nan)
    recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), nan)
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), nan)
    union = tp + fp + fn
    iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
    return {"precision": precision, "recall": recall, "f1": f1, "iou": iou}


def vertex_contact_counts(
    sdf: Tensor,
    gt_contact: Tensor,
    *,
    threshold: float = CONTACT_THRESHOLD_M,
    regions: Tensor | None = None,
    num_regions: int = NUM_CONTACT_REGIONS,
) -> dict[str, Tensor]:
    """Vertex-level contact confusion counts, overall and per body region.

    A vertex is predicted in contact when ``|sdf| < threshold`` (see
    :func:`predicted_contact`); the ground truth comes from per-vertex labels. With
    ``regions``, both sides are restricted to the vertices of the contact regions (labels
    1..num_regions), the one definition of contact (`sahmr.scene.contact.vertex_contact`):
    a vertex outside them counts neither as predicted nor as ground-truth contact.

    Args:
        sdf: Tensor of shape (B, V), metres, predicted vertices' signed distances.
        gt_contact: Bool Tensor of shape (B, V), ground-truth contact labels.
        threshold: Contact distance in metres.
        regions: Optional int Tensor of shape (V,), body part label 0..num_regions per vertex
            (``BodyModel.topology.contact_regions``; 0 = not in a contact region).
        num_regions: Number of regions (labels 1..num_regions).

    Returns:
        Dict with ``"tp"``, ``"fp"``, ``"fn"`` (B,) float64 and, when ``regions`` is given,
        ``"region_tp"``, ``"region_fp"``, ``"region_fn"`` of shape (B, num_regions) for labels
        1..num_regions.
    """
    pred = predicted_contact(sdf, threshold)
    gt = gt_contact.bool()
    if regions is not None:
        in_region = regions.to(pred.device) > 0
        pred = pred & in_region
        gt = gt & in_region
    out = binary_counts(pred, gt)
    if regions is not None:
        onehot = torch.nn.functional.one_hot(regions.long(), num_regions + 1)[:, 1:]
        onehot = onehot.to(torch.float64)  # (V, R)
        out["region_tp"] = (pred & gt).double() @ onehot
        out["region_fp"] = (pred & ~gt).double() @ onehot
        out["region_fn"] = (~pred & gt).double() @ onehot
    return out


def scene_contact_class_counts(
    pred_labels: Tensor, gt_labels: Tensor, num_classes: int = NUM_CONTACT_REGIONS
) -> dict[str, Tensor]:
    """Per-class confusion counts of scene-point contact labels (RCNet's 8-way output).

    For class ``c`` in 1..num_classes: ``tp = #(pred == c and gt == c)``,
    ``fp = #(pred == c and gt != c)``, ``fn = #(pred != c and gt == c)``; class 0 (no
    contact) is the background and not scored. Precision/recall/IoU per class follow from the
    summed counts via :func:`precision_recall_f1`; the evaluator averages over the classes
    present in the prediction or the ground truth.

    Args:
        pred_labels: Int Tensor of shape (B, N), predicted class per scene point, 0..7.
        gt_labels: Int Tensor of shape (B, N), ground-truth class per scene point.
        num_classes: Number of foreground classes.

    Returns:
        Dict of float64 Tensors of shape (B, num_classes): ``"tp"``, ``"fp"``, ``"fn"``.
    """
    classes = torch.arange(1, num_classes + 1, device=pred_labels.device)
    p = pred_labels[..., None] == classes  # (B, N, C)
    g = gt_labels[..., None] == classes
    return {
        "tp": (p & g).sum(-2).double(),
        "fp": (p & ~g).sum(-2).double(),
        "fn": (~p & g).sum(-2).double(),
    }


def acceleration_error(
    pred: Tensor, gt: Tensor, *, fps: float | None = None, valid: Tensor | None = None
) -> Tensor:
    """Acceleration error of a sequence by second-order finite differences.

    ``a_t = x_{t+1} - 2 x_t + x_{t-1}`` for every point; the error at frame t is the mean
    over points of ``|a_t(pred) - a_t(gt)|``.

    Args:
        pred: Tensor of shape (T, N, 3), metres, one sequence of joints or vertices.
        gt: Tensor of shape (T, N, 3), metres.
        fps: Frame rate; when given the result is in mm/s^2 (multiplied by ``fps^2``),
            otherwise in mm/frame^2.
        valid: Optional bool Tensor of shape (T,); an interior frame is scored only when it
            and both its neighbours are valid.

    Returns:
        Tensor of shape (T - 2,) for frames 1..T-2 in mm/frame^2 (or mm/s^2); frames that
        are not scored hold NaN.
    """
    acc_pred = pred[2:] - 2 * pred[1:-1] + pred[:-2]
    acc_gt = gt[2:] - 2 * gt[1:-1] + gt[:-2]
    err = (acc_pred - acc_gt).norm(dim=-1).mean(-1) * MM_PER_M
    if fps is not None:
        err = err * fps * fps
    if valid is not None:
        ok = valid[2:] & valid[1:-1] & valid[:-2]
        err = torch.where(ok, err, torch.full_like(err, float("nan")))
    return err


def mesh_edges(faces: Tensor) -> Tensor:
    """The unique undirected edges of a triangle mesh.

    Args:
        faces: int Tensor of shape (F, 3).

    Returns:
        int64 Tensor of shape (E, 2), each row ``(i, j)`` with ``i < j``, sorted.
    """
    f = faces.long()
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], dim=0)
    e = torch.sort(e, dim=1).values
    return torch.unique(e, dim=0)


MIN_EDGE_LENGTH_M = 1e-3
"""Ground-truth edges shorter than this (metres) are left out of :func:`edge_length_error`.

A relative error over a near-degenerate edge is ill-conditioned: the license-free body's
decimated mesh has 62 of its 20,664 edges under 1 mm (some under 10 micrometres), where the
float32 rounding of world coordinates alone moves the ratio by percent and one free-form
vertex turns one edge into 800 %; those 0.3 % of the edges made up 31 of a free-form
output's 72 %."""


def edge_length_error(
    pred_verts: Tensor,
    gt_verts: Tensor,
    edges: Tensor,
    *,
    min_gt_length: float = MIN_EDGE_LENGTH_M,
) -> Tensor:
    """Mesh plausibility: mean relative edge-length error against the ground-truth mesh.

    ``100 * mean over edges (i, j) of | |p_i - p_j| - |g_i - g_j| | / |g_i - g_j|``, over the
    edges whose ground-truth length is at least ``min_gt_length``: a rigidly moved copy of
    the ground truth scores 0, a copy scaled by ``s`` scores ``100 |s - 1|``, a torn or
    crumpled surface scores tens of percent. Invariant to rotation and translation.

    Args:
        pred_verts: Tensor of shape (B, V, 3), metres, any frame.
        gt_verts: Tensor of shape (B, V, 3), metres, same topology.
        edges: int64 Tensor of shape (E, 2) (:func:`mesh_edges`).
        min_gt_length: Metres; shorter ground-truth edges are skipped
            (:data:`MIN_EDGE_LENGTH_M`; 0 keeps every edge of non-zero length).

    Returns:
        Tensor of shape (B,), percent (NaN for a frame without any edge to score).
    """
    i, j = edges[:, 0], edges[:, 1]
    len_pred = (pred_verts[:, i] - pred_verts[:, j]).norm(dim=-1)
    len_gt = (gt_verts[:, i] - gt_verts[:, j]).norm(dim=-1)
    valid = (len_gt > 0) & (len_gt >= min_gt_length)
    rel = (len_pred - len_gt).abs() / len_gt.clamp_min(torch.finfo(len_gt.dtype).tiny)
    rel = torch.where(valid, rel, torch.zeros_like(rel))
    count = valid.sum(-1).to(rel.dtype)
    out = 100.0 * rel.sum(-1) / count.clamp_min(1)
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))

"""Validation metrics of RCNet: root error and scene-contact precision/recall/F1.

Everything is returned as count-weighted ``(sum, count)`` pairs (``mean = sum / count``,
summed over batches and processes, see `sahmr.evaluation.reduction.Accumulator`), plus the
per-frame values a median needs.

Scene contact is scored on points, camera frame, metres. RCNet predicts contact *scene
points* (rows of the frame's scene point cloud, each with a region 1..7); the ground truth
``FrameTargets.contact_points_cam`` are surface points under the contact vertices, which need
not coincide with scene points. A predicted point is correct when a ground-truth contact point
of its frame lies within ``tolerance`` (default 5 cm, one RCNet voxel); a ground-truth point
is found when a predicted point of its frame lies within ``tolerance``. Hence::

    precision = #correct predicted points / #predicted points     ("contact_precision")
    recall    = #found ground-truth points / #ground-truth points ("contact_recall")

Per region ``r`` (``contact_precision/left_foot`` ...) both sides are restricted to points of
region r. ``contact_f1`` is the mean over frames of the per-frame F1, over the frames where
it is defined: a frame with nothing predicted and nothing to find has no F1 (NaN per frame,
left out of the mean, never 1); with only one side empty it scores 0. A per-frame precision
without predictions, or recall without ground truth, is NaN likewise (the convention of
`sahmr.evaluation.metrics.precision_recall_f1`). The F1 of the dataset-level precision and
recall is `f1_from_sums`.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from sahmr.body.constants import CONTACT_REGION_NAMES
from sahmr.evaluation.metrics import root_error

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MATCH_TOLERANCE_M",
    "RCNetMetrics",
    "contact_match_counts",
    "f1_from_sums",
    "nearest_in_frame",
    "rcnet_metrics",
]

DEFAULT_MATCH_TOLERANCE_M = 0.05
"""Distance (metres) within which a predicted and a ground-truth contact point match."""


def nearest_in_frame(
    query: Tensor,
    query_group: Tensor,
    ref: Tensor,
    ref_group: Tensor,
    *,
    chunk_size: int = 8192,
    max_distance: float | None = None,
    exact: bool = True,
) -> tuple[Tensor, Tensor]:
    """Nearest reference point of the same group (frame) for every query point.

    Brute force per group with ``torch.cdist`` in chunks of query points (no KD-tree). With
    ``max_distance``, a query point outside its group's reference bounding box grown by
    ``max_distance`` is skipped (reported ``inf`` / -1); every distance ``<= max_distance`` is
    unchanged. ``exact=False`` (training labels) finds the nearest point by batched
    matrix-product distances on coordinates centred on the group, all groups at once
    (`_nearest_padded`) - GEMMs and no loop, where the exact search runs one elementwise kernel
    per group and a host round trip each: on an H200 that was the e2e training step's top
    device op (237 ms of 555, docs/benchmarks.md) - and reports that point's exact distance:
    only in a near-tie (distances equal to ~1e-6 of the group's squared extent) may it pick
    another point.

    Args:
        query: Tensor of shape (Q, 3), metres.
        query_group: int64 Tensor of shape (Q,), group of each query point (e.g. frame, or
            ``frame * 8 + region``).
        ref: Tensor of shape (R, 3), same frame and unit.
        ref_group: int64 Tensor of shape (R,).
        chunk_size: Query points per cdist call (exact search); ``exact=False`` computes up
            to ``chunk_size * 4096`` distances at once.
        max_distance: Only distances up to this (metres) are needed; None: all.
        exact: False: the matrix-product search (above).

    Returns:
        ``(distance, index)``: Tensor (Q,) metres (``inf`` where the group holds no reference
        point, or with ``max_distance`` possibly where the nearest is farther) and int64
        Tensor (Q,) row into ``ref`` (-1 there).
    """
    dist = torch.full((query.shape[0],), float("inf"), dtype=query.dtype, device=query.device)
    index = torch.full((query.shape[0],), -1, dtype=torch.int64, device=query.device)
    if query.shape[0] == 0 or ref.shape[0] == 0:
        return dist, index
    ref = ref.to(query.dtype)
    rows = None  # query rows searched (None: all)
    if max_distance is not None or not exact:
        groups, inverse = torch.unique(torch.cat([query_group, ref_group]), return_inverse=True)
        query_group, ref_group = inverse[: query.shape[0]], inverse[query.shape[0] :]
        if max_distance is not None:
            near = _near_group_box(query, query_group, ref, ref_group, len(groups), max_distance)
            rows = torch.nonzero(near).squeeze(1)
        if not exact:
            sel = slice(None) if rows is None else rows
            dist[sel], index[sel] = _nearest_padded(
                query[sel], query_group[sel], ref, ref_group, len(groups), chunk_size * 4096
            )
            return dist, index
    q_group = query_group if rows is None else query_group[rows]
    for g in torch.unique(q_group).tolist():
        r_rows = torch.nonzero(ref_group == g).squeeze(1)
        if r_rows.numel() == 0:
            continue
        q_rows = torch.nonzero(q_group == g).squeeze(1)
        if rows is not None:
            q_rows = rows[q_rows]
        for start in range(0, q_rows.numel(), chunk_size):
            q = q_rows[start : start + chunk_size]
            d = torch.cdist(query[q], ref[r_rows], compute_mode="donot_use_mm_for_euclid_dist")
            dmin, arg = d.min(dim=1)
            dist[q] = dmin
            index[q] = r_rows[arg]
    return dist, index


def _near_group_box(
    query: Tensor, q_gid: Tensor, ref: Tensor, r_gid: Tensor, num_groups: int, margin: float
) -> Tensor:
    """bool (Q,): query points inside the bounding box of their group's reference points grown
    by ``margin`` (a slightly larger box, so that rounding never drops a point at exactly
    ``margin``); False where the group has no reference point. Groups are dense ids
    ``0..num_groups-1``. Vectorised, no loop."""
    idx = r_gid[:, None].expand(-1, 3)
    inf = torch.full((num_groups, 3), float("inf"), dtype=ref.dtype, device=ref.device)
    lo = inf.scatter_reduce(0, idx, ref, reduce="amin")
    hi = (-inf).scatter_reduce(0, idx, ref, reduce="amax")
    pad = margin * (1 + 1e-4) + 1e-6
    return ((query >= lo[q_gid] - pad) & (query <= hi[q_gid] + pad)).all(dim=1)


def _nearest_padded(
    query: Tensor, q_gid: Tensor, ref: Tensor, r_gid: Tensor, num_groups: int, max_elems: int
) -> tuple[Tensor, Tensor]:
    """`nearest_in_frame`'s ``exact=False`` search without a loop over groups: queries and
    references are laid out per (dense) group in padded (G, Qmax, 3) / (G, Rmax, 3) tensors,
    centred on the group's reference mean, and searched by batched matrix-product distances in
    chunks of groups of at most ``max_elems`` distances; the chosen point's distance is then
    computed exactly. Two host round trips (the padded sizes), whatever the number of groups.

    Returns:
        ``(distance, index)`` (Q,) as `nearest_in_frame`.
    """
    device, dtype = query.device, query.dtype
    q_count = torch.bincount(q_gid, minlength=num_groups)
    r_count = torch.bincount(r_gid, minlength=num_groups)
    q_max, r_max = (int(v) for v in torch.stack([q_count.max(), r_count.max()]).tolist())
    dist = torch.full((query.shape[0],), float("inf"), dtype=dtype, device=device)
    index = torch.full((query.shape[0],), -1, dtype=torch.int64, device=device)
    if q_max == 0 or r_max == 0:
        return dist, index

    def slots(gid: Tensor, count: Tensor) -> Tensor:
        """Position of every row within its group (rows of a group keep their order)."""
        order = torch.argsort(gid, stable=True)
        start = torch.cumsum(count, 0) - count
        pos = torch.empty_like(gid)
        pos[order] = torch.arange(gid.shape[0], device=device) - start[gid[order]]
        return pos

    q_pos, r_pos = slots(q_gid, q_count), slots(r_gid, r_count)
    centre = torch.zeros(num_groups, 3, dtype=dtype, device=device).index_add_(0, r_gid, ref)
    centre = centre / r_count.clamp_min(1)[:, None].to(dtype)
    q_pad = torch.zeros(num_groups, q_max, 3, dtype=dtype, device=device)
    r_pad = torch.zeros(num_groups, r_max, 3, dtype=dtype, device=device)
    r_row = torch.full((num_groups, r_max), -1, dtype=torch.int64, device=device)
    q_pad[q_gid, q_pos] = query - centre[q_gid]
    r_pad[r_gid, r_pos] = ref - centre[r_gid]
    r_row[r_gid, r_pos] = torch.arange(ref.shape[0], device=device)
    arg = torch.zeros(num_groups, q_max, dtype=torch.int64, device=device)
    step = max(1, max_elems // (q_max * r_max))
    for g0 in range(0, num_groups, step):
        sl = slice(g0, g0 + step)
        d = torch.cdist(q_pad[sl], r_pad[sl], compute_mode="use_mm_for_euclid_dist")
        d = d.masked_fill(r_row[sl, None, :] < 0, float("inf"))
        arg[sl] = d.argmin(dim=2)
    chosen = r_row[q_gid, arg[q_gid, q_pos]]  # -1: the group has no reference point
    has = chosen >= 0
    index = torch.where(has, chosen, index)
    exact_d = torch.linalg.vector_norm(query - ref[chosen.clamp_min(0)], dim=1)
    dist = torch.where(has, exact_d, dist)
    return dist, index


def contact_match_counts(
    pred_points: Tensor,
    pred_region: Tensor,
    pred_batch: Tensor,
    gt_points: Tensor,
    gt_region: Tensor,
    gt_batch: Tensor,
    batch_size: int,
    *,
    tolerance: float = DEFAULT_MATCH_TOLERANCE_M,
    num_regions: int = len(CONTACT_REGION_NAMES) - 1,
) -> dict[str, Tensor]:
    """Per-frame matching counts of predicted and ground-truth contact points.

    Args:
        pred_points: Tensor (P, 3) predicted contact points, metres.
        pred_region: int64 Tensor (P,) region 1..num_regions.
        pred_batch: int64 Tensor (P,) frame of each point.
        gt_points: Tensor (G, 3) ground-truth contact points, same frame as the predictions.
        gt_region: int64 Tensor (G,) region 1..num_regions.
        gt_batch: int64 Tensor (G,) frame of each point.
        batch_size: B.
        tolerance: Matching distance, metres.
        num_regions: Number of regions R (labels 1..R).

    Returns:
        float64 Tensors: ``pred_correct``, ``pred_total``, ``gt_found``, ``gt_total`` of shape
        (B,) (any region), and ``region_pred_correct``, ``region_pred_total``,
        ``region_gt_found``, ``region_gt_total`` of shape (B, R) (same-region matches only).
    """
    device = pred_points.device
    pred_batch, gt_batch = pred_batch.long().to(device), gt_batch.long().to(device)
    pred_region, gt_region = pred_region.long().to(device), gt_region.long().to(device)
    gt_points = gt_points.to(device)
    groups = num_regions + 1

    def count(values: Tensor, idx: Tensor, size: int) -> Tensor:
        return torch.zeros(size, dtype=torch.float64, device=device).index_add_(
            0, idx, values.double()
        )

    near = functools.partial(nearest_in_frame, max_distance=tolerance)  # only `<= tolerance`
    d_pred, _ = near(pred_points, pred_batch, gt_points, gt_batch)
    d_gt, _ = near(gt_points, gt_batch, pred_points, pred_batch)
    d_pred_r, _ = near(
        pred_points, pred_batch * groups + pred_region, gt_points, gt_batch * groups + gt_region
    )
    d_gt_r, _ = near(
        gt_points, gt_batch * groups + gt_region, pred_points, pred_batch * groups + pred_region
    )
    ones_p = torch.ones_like(d_pred)
    ones_g = torch.ones_like(d_gt)
    cell_p = pred_batch * num_regions + (pred_region - 1)
    cell_g = gt_batch * num_regions + (gt_region - 1)
    cells = batch_size * num_regions
    shape = (batch_size, num_regions)
    return {
        "pred_correct": count((d_pred <= tolerance), pred_batch, batch_size),
        "pred_total": count(ones_p, pred_batch, batch_size),
        "gt_found": count((d_gt <= tolerance), gt_batch, batch_size),
        "gt_total": count(ones_g, gt_batch, batch_size),
        "region_pred_correct": count((d_pred_r <= tolerance), cell_p, cells).view(shape),
        "region_pred_total": count(ones_p, cell_p, cells).view(shape),
        "region_gt_found": count((d_gt_r <= tolerance), cell_g, cells).view(shape),
        "region_gt_total": count(ones_g, cell_g, cells).view(shape),
    }


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, NaN (undefined) where ``den == 0`` (nothing claimed / nothing to find)."""
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, float("nan")))


def _f1(precision: Tensor, recall: Tensor) -> Tensor:
    """F1 of per-frame precision/recall: NaN when both are undefined (both sides empty), 0 when
    only one is (a side is empty, the other not: nothing right)."""
    p, r = torch.nan_to_num(precision, nan=0.0), torch.nan_to_num(recall, nan=0.0)
    s = p + r
    f1 = torch.where(s > 0, 2 * p * r / s.clamp_min(1e-12), torch.zeros_like(s))
    both = torch.isnan(precision) & torch.isnan(recall)
    return torch.where(both, torch.full_like(f1, float("nan")), f1)


@dataclass
class RCNetMetrics:
    """RCNet metrics of one batch.

    Attributes:
        sums: ``name -> (sum, count)``; ``sum / count`` is the metric (mm for ``*_mm``,
            fractions 0..1 for contact scores).
        per_frame: ``name -> Tensor (B,)`` float64 per-frame values (``root_error_mm``,
            ``root_coarse_error_mm``, ``contact_precision``, ``contact_recall``,
            ``contact_f1``), e.g. for medians.
    """

    sums: dict[str, tuple[float, float]]
    per_frame: dict[str, Tensor]


def rcnet_metrics(
    output,
    targets,
    *,
    tolerance: float = DEFAULT_MATCH_TOLERANCE_M,
) -> RCNetMetrics:
    """Root error (mm) and scene-contact precision/recall/F1 of an RCNet output.

    Args:
        output: `sahmr.models.rcnet.RCNetOutput` (camera frame): ``root_cam``,
            ``root_coarse_cam``, ``contact_points_cam``, ``contact_point_region``,
            ``contact_batch_idx``.
        targets: `sahmr.records.FrameTargets` (``root_cam``, ``contact_points_cam``,
            ``contact_point_region``, ``contact_batch_idx``).
        tolerance: Contact matching distance, metres.

    Returns:
        `RCNetMetrics`; keys ``root_error_mm``, ``root_coarse_error_mm``,
        ``contact_precision``, ``contact_recall``, ``contact_f1`` and per region name ``n``
        ``contact_precision/n``, ``contact_recall/n``, ``contact_f1/n`` (the per-region F1 is
        averaged over the frames where the region is predicted or labelled).
    """
    with torch.no_grad():
        B = int(output.root_cam.shape[0])
        gt_root = targets.root_cam.to(output.root_cam)
        err = root_error(output.root_cam, gt_root).double()
        err_coarse = root_error(output.root_coarse_cam, gt_root).double()
        c = contact_match_counts(
            output.contact_points_cam,
            output.contact_point_region,
            output.contact_batch_idx,
            targets.contact_points_cam,
            targets.contact_point_region,
            targets.contact_batch_idx,
            B,
            tolerance=tolerance,
        )
        precision = _ratio(c["pred_correct"], c["pred_total"])
        recall = _ratio(c["gt_found"], c["gt_total"])
        f1 = _f1(precision, recall)
        sums: dict[str, tuple[float, float]] = {
            "root_error_mm": (float(err.sum()), float(B)),
            "root_coarse_error_mm": (float(err_coarse.sum()), float(B)),
            "contact_precision": (float(c["pred_correct"].sum()), float(c["pred_total"].sum())),
            "contact_recall": (float(c["gt_found"].sum()), float(c["gt_total"].sum())),
            "contact_f1": (float(f1.nan_to_num(0.0).sum()), float((~f1.isnan()).sum())),
        }
        r_prec = _ratio(c["region_pred_correct"], c["region_pred_total"])
        r_rec = _ratio(c["region_gt_found"], c["region_gt_total"])
        r_f1 = _f1(r_prec, r_rec)
        present = (c["region_pred_total"] + c["region_gt_total"]) > 0  # (B, R)
        for r, name in enumerate(CONTACT_REGION_NAMES[1:]):
            sums[f"contact_precision/{name}"] = (
                float(c["region_pred_correct"][:, r].sum()),
                float(c["region_pred_total"][:, r].sum()),
            )
            sums[f"contact_recall/{name}"] = (
                float(c["region_gt_found"][:, r].sum()),
                float(c["region_gt_total"][:, r].sum()),
            )
            sums[f"contact_f1/{name}"] = (  # present <=> F1 defined
                float(r_f1[:, r][present[:, r]].sum()),
                float(present[:, r].sum()),
            )
    per_frame = {
        "root_error_mm": err.cpu(),
        "root_coarse_error_mm": err_coarse.cpu(),
        "contact_precision": precision.cpu(),
        "contact_recall": recall.cpu(),
        "contact_f1": f1.cpu(),
    }
    return RCNetMetrics(sums=sums, per_frame=per_frame)


def f1_from_sums(sums: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Dataset-level F1 from accumulated ``contact_precision*`` / ``contact_recall*`` sums.

    Args:
        sums: ``name -> (sum, count)`` holding ``contact_precision`` and ``contact_recall``
            (and optionally their ``/region`` variants), summed over the whole dataset.

    Returns:
        ``contact_f1_global`` and ``contact_f1_global/<region>`` for every pair present: NaN
        when nothing was predicted and nothing labelled, 0 when only one side is empty.
    """
    out: dict[str, float] = {}
    for key in sums:
        if not key.startswith("contact_precision"):
            continue
        suffix = key[len("contact_precision"):]
        rec_key = "contact_recall" + suffix
        if rec_key not in sums:
            continue
        p_sum, p_cnt = sums[key]
        r_sum, r_cnt = sums[rec_key]
        if p_cnt <= 0 and r_cnt <= 0:
            out["contact_f1_global" + suffix] = float("nan")
            continue
        p = p_sum / p_cnt if p_cnt > 0 else 0.0
        r = r_sum / r_cnt if r_cnt > 0 else 0.0
        out["contact_f1_global" + suffix] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return out


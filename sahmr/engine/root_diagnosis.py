"""Where an SA-HMR root error comes from: RCNet's coarse root, its vote, the mesh network's
offset, and how well RCNet votes from an ROI centred on the truth.

RCNet (`sahmr.models.rcnet.RCNet`) finds a coarse root from the image alone, centres its ROI
there, and votes the root from the scene voxels in it; the mesh network's parametric head may
add a root offset. Each stage's error, per frame, separates a bad coarse depth (the ROI in the
wrong place) from a bad vote and from the head's correction. ``roi_refinements`` (RCNet votes
again from an ROI re-centred on its previous vote) is measured at several values on the same
frames, with the weights unchanged.

    rows = diagnose_roots(model, steps, scene_ids, refinements=(0, 1, 2))
    table = summarise(rows)          # per scene and "all": mean errors in mm
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from sahmr.models.modes import eval_mode


@dataclasses.dataclass
class RootErrors:
    """Root errors of one frame, millimetres (camera frame; the error is the same in world).

    Attributes:
        scene: Scene id of the frame.
        depth_m: Ground-truth root depth (camera z), metres.
        coarse_mm: RCNet's image-only coarse root.
        coarse_depth_mm: |z| error of that coarse root.
        gt_roi_mm: RCNet's vote from an ROI centred on the ground-truth root (no noise): what
            the voter can do when the ROI is right.
        voted_mm: RCNet's voted root, per refinement count (same order as ``refinements``).
        final_mm: The placed body's root (vote + the head's offset), per refinement count.
    """

    scene: str
    depth_m: float
    coarse_mm: float
    coarse_depth_mm: float
    gt_roi_mm: float
    voted_mm: tuple[float, ...]
    final_mm: tuple[float, ...]


def _mm(pred: Tensor, gt: Tensor) -> list[float]:
    return ((pred.double() - gt.double()).norm(dim=-1) * 1000.0).tolist()


def diagnose_roots(
    model: torch.nn.Module,
    steps: Iterable,
    scene_ids: Sequence[str],
    refinements: Sequence[int] = (0,),
) -> list[RootErrors]:
    """Per-frame root errors of an SA-HMR model with an RCNet.

    Args:
        model: `sahmr.models.sahmr.SAHMR` with ``rcnet`` (evaluated in eval mode; its RCNet's
            ``roi_refinements`` is restored afterwards).
        steps: Prepared steps (``.inputs``, ``.frame_targets`` with ``root_cam``), in the order
            of ``scene_ids``.
        scene_ids: Scene id of every frame (len = frames in ``steps``).
        refinements: ROI refinement counts to score.

    Returns:
        One `RootErrors` per frame.

    Raises:
        ValueError: If the model has no RCNet, or ``scene_ids`` and the frames differ in number.
    """
    rcnet = getattr(model, "rcnet", None)
    if rcnet is None:
        raise ValueError("the root diagnosis needs an SA-HMR model with an RCNet")
    if not refinements:
        raise ValueError("refinements: give at least one count")
    kept = rcnet.roi_refinements
    rows: list[RootErrors] = []
    try:
        with eval_mode(model), torch.no_grad():
            for step in steps:
                gt = step.frame_targets.root_cam
                voted, final = [], []
                for r in refinements:
                    rcnet.roi_refinements = int(r)
                    out = model(step.inputs)
                    voted.append(_mm(out.rc.root_cam, gt))
                    final.append(_mm(out.root_cam, gt))
                coarse = out.rc.root_coarse_cam
                # one pass from ROIs centred on the true root (the teacher-forced ROI without
                # its training noise), the coarse root kept where they hold no scene point
                fmap = rcnet.image_stage(step.inputs)[0]
                at_gt = rcnet.vote_from(step.inputs, fmap, gt.to(coarse), coarse)
                gt_roi, coarse_err = _mm(at_gt.root_cam, gt), _mm(coarse, gt)
                depth_err = ((coarse[:, 2].double() - gt[:, 2].double()).abs() * 1000).tolist()
                for b in range(gt.shape[0]):
                    i = len(rows)
                    if i >= len(scene_ids):
                        raise ValueError(f"more frames than scene ids ({len(scene_ids)})")
                    rows.append(
                        RootErrors(
                            scene=str(scene_ids[i]),
                            depth_m=float(gt[b, 2]),
                            coarse_mm=coarse_err[b],
                            coarse_depth_mm=depth_err[b],
                            gt_roi_mm=gt_roi[b],
                            voted_mm=tuple(v[b] for v in voted),
                            final_mm=tuple(f[b] for f in final),
                        )
                    )
    finally:
        rcnet.roi_refinements = kept
    if len(rows) != len(scene_ids):
        raise ValueError(f"{len(rows)} frames but {len(scene_ids)} scene ids")
    return rows


def summarise(rows: Sequence[RootErrors], refinements: Sequence[int]) -> list[dict]:
    """Mean errors per scene (sorted) and over all frames (last row, scene ``"all"``).

    Returns:
        Dicts with ``scene``, ``frames``, ``depth_m``, ``coarse_mm``, ``coarse_depth_mm``,
        ``gt_roi_mm`` and ``voted_mm_r{r}`` / ``final_mm_r{r}`` per refinement count.
    """
    groups = sorted({r.scene for r in rows})
    out = []
    for scene in [*groups, "all"]:
        sel = [r for r in rows if scene == "all" or r.scene == scene]
        if not sel:
            continue
        row = {
            "scene": scene,
            "frames": len(sel),
            "depth_m": float(np.mean([r.depth_m for r in sel])),
            "coarse_mm": float(np.mean([r.coarse_mm for r in sel])),
            "coarse_depth_mm": float(np.mean([r.coarse_depth_mm for r in sel])),
            "gt_roi_mm": float(np.mean([r.gt_roi_mm for r in sel])),
        }
        for k, n in enumerate(refinements):
            row[f"voted_mm_r{n}"] = float(np.mean([r.voted_mm[k] for r in sel]))
            row[f"final_mm_r{n}"] = float(np.mean([r.final_mm[k] for r in sel]))
        out.append(row)
    return out


def markdown_table(summary: Sequence[dict], refinements: Sequence[int]) -> str:
    """The summary as a Markdown table (mm; depth in m)."""
    head = ["scene", "frames", "depth m", "coarse", "coarse depth", "vote from GT-centred ROI"]
    for n in refinements:
        head += [f"voted r={n}", f"final r={n}"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for row in summary:
        cells = [row["scene"], str(row["frames"]), f"{row['depth_m']:.1f}",
                 f"{row['coarse_mm']:.1f}", f"{row['coarse_depth_mm']:.1f}",
                 f"{row['gt_roi_mm']:.1f}"]  # fmt: skip
        for n in refinements:
            cells += [f"{row[f'voted_mm_r{n}']:.1f}", f"{row[f'final_mm_r{n}']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

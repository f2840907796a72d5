"""Slide a predicted body along its camera ray out of the scan: `ray_slide`, `slide_out_of_scene`.

A monocular method is least sure of depth, so a body sunk into a sofa may simply sit too far
along its camera ray. Sliding the whole body along that ray (its image position barely
changes) to where it penetrates the scan least tells a placement error from a pose error:
penetration the slide removes was placement; what stays is the pose or shape.

The slide is chosen among offsets ``0, +step, -step, +2 step, ...`` up to ``max_slide_m``
(positive: away from the camera) to minimise ``PenE(offset) + slide_cost * |offset|``, both in
mm (PenE summed over vertices, as `sahmr.evaluation.metrics.penetration`); ``slide_cost`` is
how many mm of PenE one mm of slide must remove to be worth it. Among equal costs the smallest
slide wins, so a body that penetrates nothing stays where it was.

Measured on held-out rooms (docs/results.md, 2026-12-05 (d)): at a low price the slide removes
most penetration but moves bodies that were right (most deep penetration is pose: hands
through the wall a person touches, knees through the floor); at `SLIDE_COST` it takes the
placement part and leaves the world error as it was.

Units metres, world frame = the scan, ``T_w2c`` world -> camera (OpenCV).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sahmr.geometry.cameras import invert_rigid
from sahmr.records import BodyPrediction

__all__ = [
    "MAX_SLIDE_M",
    "SLIDE_COST",
    "SLIDE_STEP_M",
    "RaySlide",
    "ray_slide",
    "sampler_sdf",
    "slide_offsets",
    "slide_out_of_scene",
]

SLIDE_COST = 30.0
"""mm of PenE a mm of slide must remove (the price chosen on validation frames)."""

MAX_SLIDE_M = 0.5
"""Largest slide tried either way, metres."""

SLIDE_STEP_M = 0.01
"""Spacing of the slides tried, metres."""

SDF = Callable[[Tensor], Tensor]
"""Signed distance of points (N, 3) -> (N,), metres, negative inside the scene."""


def sampler_sdf(sampler: Any) -> SDF | None:
    """A scene SDF object with ``sample(points)`` (`sahmr.scene.sdf.SDFGrid`, the evaluator's
    `ExactSceneSDF`: its grid lookup) as an `SDF` on the points' device, or None for None."""
    if sampler is None:
        return None
    return lambda points: sampler.sample(points.detach().float().cpu()).to(points.device)


def slide_offsets(max_slide_m: float, step_m: float) -> Tensor:
    """Candidate slides ``0, +step, -step, +2 step, -2 step, ...`` (ordered by size, so the
    first of equal costs is the smallest slide), up to ``max_slide_m``.

    Returns:
        Tensor (2 * floor(max / step) + 1,), float64, metres.
    """
    if not (step_m > 0 and max_slide_m >= 0):
        raise ValueError(f"need step > 0 and max >= 0, got step {step_m}, max {max_slide_m}")
    n = int(max_slide_m / step_m + 1e-9)
    k = torch.arange(1, n + 1, dtype=torch.float64) * step_m
    return torch.cat([torch.zeros(1, dtype=torch.float64), torch.stack([k, -k], 1).reshape(-1)])


@dataclass(frozen=True)
class RaySlide:
    """One body's best slide along its camera ray.

    Attributes:
        slide_m: The chosen offset, metres (positive: away from the camera).
        direction_world: Tensor (3,), unit ray from the camera through the body's centre.
        pene_mm: PenE where the body was predicted, mm summed over vertices.
        pene_slid_mm: PenE after the slide.
    """

    slide_m: float
    direction_world: Tensor
    pene_mm: float
    pene_slid_mm: float

    @property
    def shift_world(self) -> Tensor:
        """Tensor (3,): the translation that applies the slide, world frame, metres."""
        return self.slide_m * self.direction_world


def ray_slide(
    vertices_world: Tensor,
    camera_world: Tensor,
    sdf: SDF,
    *,
    max_slide_m: float = MAX_SLIDE_M,
    step_m: float = SLIDE_STEP_M,
    slide_cost: float = SLIDE_COST,
) -> RaySlide:
    """The slide along the camera ray that trades penetration against distance best.

    Args:
        vertices_world: Tensor (V, 3), the predicted body, world frame, metres.
        camera_world: Tensor (3,), the camera centre, world frame.
        sdf: Signed distance of points (N, 3) -> (N,) (e.g. `sahmr.scene.sdf.SDFGrid.sample`).
        max_slide_m: Largest slide tried either way.
        step_m: Spacing of the slides tried.
        slide_cost: mm of PenE a mm of slide must remove (0: the least penetration wins,
            however far).

    Returns:
        `RaySlide` (float64 direction on the vertices' device).
    """
    if not slide_cost >= 0:
        raise ValueError(f"slide_cost must be >= 0, got {slide_cost}")
    v = vertices_world.to(torch.float64)
    ray = v.mean(0) - camera_world.to(v)
    direction = ray / ray.norm().clamp_min(1e-12)
    offsets = slide_offsets(max_slide_m, step_m).to(v.device)
    points = v[None] + offsets[:, None, None] * direction  # (S, V, 3)
    dist = sdf(points.reshape(-1, 3)).to(torch.float64).reshape(len(offsets), -1)
    pene_mm = (-dist).clamp(min=0).sum(-1) * 1000.0  # (S,)
    cost = pene_mm + slide_cost * offsets.abs() * 1000.0
    best = int(cost.argmin())  # the first minimum: the smallest of equal-cost slides
    return RaySlide(
        slide_m=float(offsets[best]),
        direction_world=direction,
        pene_mm=float(pene_mm[0]),
        pene_slid_mm=float(pene_mm[best]),
    )


def slide_out_of_scene(
    pred: BodyPrediction,
    T_w2c: Tensor,
    sdfs: Sequence[SDF | None],
    *,
    slide_cost: float = SLIDE_COST,
    max_slide_m: float = MAX_SLIDE_M,
    step_m: float = SLIDE_STEP_M,
) -> tuple[BodyPrediction, Tensor]:
    """`ray_slide` applied to each body of a prediction (`BodyPrediction.translated`: the
    vertices, joints, root and the parameters' translation move together; the predicted scene
    contact points stay on the scan).

    Args:
        pred: The method's prediction (camera frame).
        T_w2c: Tensor (B, 4, 4), world -> camera of each frame.
        sdfs: One SDF (points (N, 3) world -> (N,)) or None (no scan: left as it is) per frame.
        slide_cost, max_slide_m, step_m: As `ray_slide`.

    Returns:
        ``(prediction, shift_world (B, 3))``: the slid prediction and each body's world
        translation, metres (zero rows for bodies left where they were).
    """
    if len(sdfs) != pred.verts_cam.shape[0]:
        raise ValueError(f"{len(sdfs)} SDFs for {pred.verts_cam.shape[0]} bodies")
    T = T_w2c.to(device=pred.verts_cam.device, dtype=torch.float64)
    vertices_world = pred.vertices_world(T).double()
    camera_world = invert_rigid(T)[:, :3, 3]
    shift_world = torch.zeros_like(camera_world)
    for b, sdf in enumerate(sdfs):
        if sdf is not None:
            shift_world[b] = ray_slide(vertices_world[b], camera_world[b], sdf,
                                       max_slide_m=max_slide_m, step_m=step_m,
                                       slide_cost=slide_cost).shift_world  # fmt: skip
    if not bool(shift_world.abs().sum() > 0):
        return pred, shift_world
    shift_cam = torch.einsum("bij,bj->bi", T[:, :3, :3], shift_world)  # a direction: R only
    return pred.translated(shift_cam), shift_world

"""Settle a body placed under a scan's solid ground back onto it, along the camera ray.

A monocular method's largest errors are in depth: a person lying on the floor 7 m away,
placed twice as far, ends up a metre under the floor (seen on the test splits: one frame in
1,000 of each, and each held most of its split's PenE). The scan resolves that ambiguity: the
ray from the camera through the body cannot pass under the ground, so a body whose centre is
below the ground (`sahmr.scene.sdf.SolidGround`) is slid back along the ray from the camera
through its centre until its lowest vertex rests on the ground. Sliding along that ray keeps
the centre's image position; only the depth changes, which is what was wrong.

Only bodies whose centre is under the ground move: a body with a foot or a knee through the
floor has a pose error, not a depth error, and is left as predicted (its penetration is
scored). When the camera itself is at or under the ground, or the slide would come within
``1 - MAX_RAY_FRACTION`` of the camera, the rest is made up by lifting the body straight up.

Units metres, world frame = the scan, ``T_w2c`` world -> camera (OpenCV).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from sahmr.geometry.cameras import invert_rigid
from sahmr.records import BodyPrediction
from sahmr.scene.orientation import up_vector
from sahmr.scene.sdf import SolidGround

__all__ = ["MAX_RAY_FRACTION", "ground_shift", "settle_on_ground"]

MAX_RAY_FRACTION = 0.9
"""Largest share of the camera-to-centre distance a body is slid towards the camera."""


def ground_shift(
    vertices_world: Tensor, camera_world: Tensor, grounds: Sequence[SolidGround | None]
) -> Tensor:
    """The world translation that settles each body whose centre is under its ground.

    Args:
        vertices_world: Tensor (B, V, 3), world frame, metres.
        camera_world: Tensor (B, 3), each frame's camera centre, world frame.
        grounds: One `SolidGround` (or None: no ground, no shift) per frame.

    Returns:
        Tensor (B, 3), world frame, metres (zero rows for bodies left as they are); the
        dtype and device of ``vertices_world``.
    """
    if len(grounds) != vertices_world.shape[0]:
        raise ValueError(f"{len(grounds)} grounds for {vertices_world.shape[0]} bodies")
    kw = dict(dtype=vertices_world.dtype, device=vertices_world.device)
    # per frame: the ground's up vector (zero without a ground) and height
    up = torch.as_tensor(np.stack([up_vector(g.up_axis) if g is not None else np.zeros(3)
                                   for g in grounds]), **kw)  # fmt: skip
    height = torch.tensor([g.height if g is not None else 0.0 for g in grounds], **kw)
    has_ground = torch.tensor([g is not None for g in grounds], device=vertices_world.device)
    centre = vertices_world.mean(dim=1)  # (B, 3)
    cam = camera_world.to(**kw)
    h_centre = (centre * up).sum(-1) - height
    h_cam = (cam * up).sum(-1) - height
    lowest = ((vertices_world * up[:, None]).sum(-1) - height[:, None]).amin(dim=1)  # (B,)
    climb = h_cam - h_centre
    # slide towards the camera while the ray rises from the centre, at most MAX_RAY_FRACTION
    fraction = torch.where(h_cam > 0, (-lowest / climb).clamp(max=MAX_RAY_FRACTION),
                           torch.zeros_like(climb))  # fmt: skip
    rest = (-lowest - fraction * climb).clamp(min=0.0)  # still under the ground: lift
    shift = fraction[:, None] * (cam - centre) + rest[:, None] * up
    moving = has_ground & (h_centre < 0)
    return torch.where(moving[:, None], shift, torch.zeros_like(shift))


def settle_on_ground(
    pred: BodyPrediction, T_w2c: Tensor, grounds: Sequence[SolidGround | None]
) -> tuple[BodyPrediction, Tensor]:
    """`ground_shift` applied to a prediction (every part of each body moves together).

    Args:
        pred: The method's prediction (camera frame).
        T_w2c: Tensor (B, 4, 4), world -> camera of each frame.
        grounds: One `SolidGround` or None per frame.

    Returns:
        ``(prediction, shift_world (B, 3))``: the settled prediction and each body's world
        translation, metres (zero where it was left as predicted).
    """
    T = T_w2c.to(device=pred.verts_cam.device, dtype=torch.float64)
    vertices_world = pred.vertices_world(T).double()
    camera_world = invert_rigid(T)[:, :3, 3]
    shift_world = ground_shift(vertices_world, camera_world, grounds)
    if not bool(shift_world.abs().sum() > 0):
        return pred, shift_world
    shift_cam = torch.einsum("bij,bj->bi", T[:, :3, :3], shift_world)  # a direction: R only
    return pred.translated(shift_cam), shift_world

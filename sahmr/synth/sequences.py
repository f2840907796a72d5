"""Short scene-interaction motions built from placements: walk to a chair and sit, stand up, reach.

A sequence is a list of :class:`sahmr.synth.placement.PlacedBody`, one per frame (frame
indices 0..T-1), with one body shape. Key frames come from :class:`Placer` (so the end
frame of ``walk_to_sit`` and ``reach`` and the start frame... are accepted placements);
frames in between interpolate the root trajectory linearly, the root and joint rotations by
slerp (``R0 @ exp(t * log(R0^T R1))`` on rotation matrices), and are then refined together,
lightly (few Adam steps, penetration + the phase's contacts + a pose prior + a penalty on
the second difference of the root translation across frames). Intermediate frames are not
held to the placer's tolerances: their ``max_penetration`` and ``contact_gap`` record how well
they did; a motion is redrawn when one of them penetrates deeper than
`MAX_FRAME_PENETRATION`, or when the standing start of a walk (the last frame of
``stand_up``) misses the placer's penetration or contact tolerance.

Kinds:
    * ``walk_to_sit``: stand on walkable floor 0.1-0.2 m per walking frame (0.6-2.5 m in
      all) from a seat (chair, sofa, bed edge or stool whose front is walkable), walk to it
      (gait alternating between the walk pose and its mirror), turn, sit down (60 % of the
      frames walking).
    * ``stand_up``: a ``walk_to_sit`` sequence played backwards (ends standing).
    * ``reach``: stand facing a wall or table and raise the right hand until it touches (the
      left hand when the touch was drawn as its mirror image).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from sahmr.body.pose_library import (
    ACTIONS,
    BODY_JOINT_NAMES,
    ActionSpec,
    body_axis_angle_to_euler_deg,
    body_euler_deg_to_axis_angle,
    mirror_body_euler_deg,
    sample_pose_euler,
)
from sahmr.synth.placement import PlacedBody, Placer
from sahmr.synth.placement_rules import Target, body_to_room_rotation

logger = logging.getLogger(__name__)

__all__ = ["SEQUENCE_KINDS", "mirror_body_euler_deg", "sample_sequence", "slerp_matrices"]

SEQUENCE_KINDS: tuple[str, ...] = ("walk_to_sit", "stand_up", "reach")
_SIT_ACTIONS = ("sit_chair", "sit_sofa", "sit_bed_edge", "sit_stool")
MAX_FRAME_PENETRATION = 0.05
"""Deepest penetration (m) an in-between frame of a kept motion may have."""
_FRAME_MARGIN = 0.004
"""Penetration margin (m) of the in-between frames' refinement: they are not rejected, so
they need none of the accepted placements' extra margin and stay closer to the surfaces."""


def _so3_log(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R.reshape(-1, 3, 3)).as_rotvec().reshape(*R.shape[:-2], 3)


def _so3_exp(v: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(v.reshape(-1, 3)).as_matrix().reshape(*v.shape[:-1], 3, 3)


def slerp_matrices(R0: np.ndarray, R1: np.ndarray, t: float) -> np.ndarray:
    """Geodesic interpolation of rotation matrices.

    Args:
        R0: array of shape (..., 3, 3) at ``t = 0``.
        R1: array of shape (..., 3, 3) at ``t = 1``.
        t: interpolation parameter in [0, 1].

    Returns:
        Array of shape (..., 3, 3): ``R0 @ exp(t * log(R0^T @ R1))``.
    """
    rel = np.swapaxes(R0, -1, -2) @ R1
    return R0 @ _so3_exp(t * _so3_log(rel))


def _body_mats(euler_deg: np.ndarray) -> np.ndarray:
    return _so3_exp(body_euler_deg_to_axis_angle(euler_deg))


def _slerp_body_euler(e0: np.ndarray, e1: np.ndarray, t: float) -> np.ndarray:
    """Slerp between two body poses given as Euler angles (23, 3) in degrees."""
    R = slerp_matrices(_body_mats(e0), _body_mats(e1), t)
    return body_axis_angle_to_euler_deg(_so3_log(R))


def _root_body_from_room(R_room: np.ndarray, yaw: float) -> np.ndarray:
    """Body-frame root rotation giving room rotation ``R_room`` under a yaw."""
    return body_to_room_rotation(yaw).T @ R_room


def _placed_root_room(p: PlacedBody) -> np.ndarray:
    return _so3_exp(p.global_orient)


def _refine_frames(
    placer: Placer,
    spec: ActionSpec,
    targets: list[Target],
    betas: np.ndarray,
    root_room: np.ndarray,
    body_euler_deg: np.ndarray,
    transl: np.ndarray | None,
    iterations: int,
) -> list[PlacedBody]:
    """Refine a batch of frames jointly (no rejection); yaw is folded into the root."""
    T = len(targets)
    yaws = np.array([t.yaw for t in targets])
    root_body = np.stack([_root_body_from_room(root_room[i], yaws[i]) for i in range(T)])
    return placer._place(
        spec,
        targets,
        np.repeat(betas[None], T, axis=0),
        root_body,
        np.deg2rad(body_euler_deg),
        init_transl=transl,
        iterations=iterations,
        prior_weight=5.0,
        smooth_weight=50.0,
        keep_all=True,
        margin=_FRAME_MARGIN,
    )


def _segment_walkable(placer: Placer, a: np.ndarray, b: np.ndarray) -> bool:
    s = np.linspace(0.0, 1.0, 12)[:, None]
    return bool(np.all(placer.room.free_space.is_walkable(a[None, :2] * (1 - s) + b[None, :2] * s)))


def _walk_to_sit(
    placer: Placer, rng: np.random.Generator, num_frames: int, iterations: int
) -> list[PlacedBody] | None:
    seats = [a for a in _SIT_ACTIONS if a in placer.feasible_actions()]
    if not seats:
        return None
    sit = placer.sample(rng, seats[rng.integers(len(seats))])
    if sit is None:
        return None
    front = _placed_root_room(sit) @ np.array([0.0, 0.0, 1.0])  # body +z in the room
    front[2] = 0.0
    front /= np.linalg.norm(front)
    yaw_sit = float(np.arctan2(front[0], -front[1]))
    presit = None
    for ahead in (0.35, 0.5, 0.65, 0.8):  # stand in front of the seat, on walkable floor
        p = sit.joints_world[0].astype(np.float64) + ahead * front
        p[2] = 0.0
        if placer.room.free_space.is_walkable(p[:2]):
            presit = p
            break
    if presit is None:
        return None
    n_walk = max(2, round(0.6 * num_frames))
    n_sit = num_frames - n_walk
    start = None
    for _ in range(30):
        ang = rng.uniform(-np.pi, np.pi)
        dist = float(np.clip(rng.uniform(0.1, 0.2) * (n_walk - 1), 0.6, 2.5))
        cand = presit + dist * np.array([np.cos(ang), np.sin(ang), 0.0])
        if _segment_walkable(placer, cand, presit):
            start = cand
            break
    if start is None:
        return None
    d = presit - start
    yaw_walk = float(np.arctan2(d[0], -d[1]))
    _, stand = sample_pose_euler("stand", rng)
    _, walk = sample_pose_euler("walk", rng)
    walk_m = mirror_body_euler_deg(walk)
    targets, poses, roots = [], [], []
    dist = float(np.linalg.norm(d[:2]))
    for i in range(n_walk):
        s = i / (n_walk - 1)
        turn = float(np.clip((s - 0.6) / 0.4, 0.0, 1.0))
        turn = turn * turn * (3 - 2 * turn)
        dyaw = (yaw_sit - yaw_walk + np.pi) % (2 * np.pi) - np.pi
        yaw = yaw_walk + turn * dyaw
        phase = 0.5 - 0.5 * np.cos(2 * np.pi * s * dist / 1.2)
        gait = _slerp_body_euler(walk, walk_m, phase)
        pose = _slerp_body_euler(gait, stand, float(np.clip((s - 0.8) / 0.2, 0.0, 1.0)))
        anchor = start * (1 - s) + presit * s
        facing = body_to_room_rotation(yaw) @ np.array([0.0, 0.0, 1.0])
        targets.append(Target(-1, placer.room.objects[0].surfaces[0], yaw, anchor, facing))
        poses.append(pose)
        roots.append(body_to_room_rotation(yaw))
    frames = _refine_frames(
        placer, ACTIONS["walk"], targets, sit.betas, np.stack(roots), np.stack(poses), None,
        iterations,
    )  # fmt: skip
    last = frames[-1]
    sit_euler = body_axis_angle_to_euler_deg(sit.body_pose.reshape(23, 3))
    R_stand, R_sit = _placed_root_room(last), _placed_root_room(sit)
    t_stand, t_sit = last.transl, sit.transl
    seg_t, seg_p, seg_r, seg_x = [], [], [], []
    for j in range(1, n_sit):
        u = j / n_sit
        seg_p.append(_slerp_body_euler(stand, sit_euler, u))
        seg_r.append(slerp_matrices(R_stand, R_sit, u))
        seg_x.append(t_stand * (1 - u) + t_sit * u)
        seg_t.append(Target(sit.object_id, targets[-1].surface, 0.0, presit, front))
    # the end frame is an accepted placement; in-between frames keep its action name
    if seg_t:  # sitting down: only penetration and the prior (contacts would pull ahead)
        no_contacts = dataclasses.replace(ACTIONS[sit.action], contacts=())
        frames += _refine_frames(
            placer, no_contacts, seg_t, sit.betas, np.stack(seg_r), np.stack(seg_p),
            np.stack(seg_x), iterations,
        )  # fmt: skip
    frames.append(sit)
    return frames


def _reach(
    placer: Placer, rng: np.random.Generator, num_frames: int, iterations: int
) -> list[PlacedBody] | None:
    feasible = [a for a in ("touch_wall", "touch_table") if a in placer.feasible_actions()]
    if not feasible:
        return None
    end = placer.sample(rng, feasible[rng.integers(len(feasible))])
    if end is None:
        return None
    end_euler = body_axis_angle_to_euler_deg(end.body_pose.reshape(23, 3))
    _, stand = sample_pose_euler("stand", rng)
    start_euler = end_euler.copy()
    side = "left_" if end.mirrored else "right_"  # the touching hand (a mirror-image touch)
    arm_parts = ("collar", "shoulder", "elbow", "wrist", "hand")
    arm = [
        i
        for i, n in enumerate(BODY_JOINT_NAMES)
        if n.startswith(side) and n.split("_")[1] in arm_parts
    ]
    start_euler[arm] = stand[arm]
    R = _placed_root_room(end)
    targets, poses = [], []
    for i in range(num_frames - 1):
        u = i / (num_frames - 1)
        poses.append(_slerp_body_euler(start_euler, end_euler, u))
        targets.append(
            Target(
                end.object_id,
                placer.room.objects[0].surfaces[0],
                0.0,
                end.transl.copy(),
                np.zeros(3),
            )
        )
    frames = _refine_frames(
        placer, ACTIONS["stand"], targets, end.betas, np.repeat(R[None], len(targets), 0),
        np.stack(poses), np.repeat(end.transl[None], len(targets), 0), iterations,
    )  # fmt: skip
    for f in frames:
        f.action, f.mirrored = end.action, end.mirrored
    frames.append(end)
    return frames


def _frames_ok(placer: Placer, frames: list[PlacedBody], kind: str) -> bool:
    """Whether a motion is kept: no frame deeper than `MAX_FRAME_PENETRATION`, and a walk's
    standing start (``stand_up``: its last frame) within the placer's tolerances."""
    if max(f.max_penetration for f in frames) > MAX_FRAME_PENETRATION:
        return False
    if kind == "reach":
        return True
    standing = frames[-1] if kind == "stand_up" else frames[0]
    gaps = list(standing.contact_gap.values())
    return standing.max_penetration <= placer.penetration_tol and (
        not gaps or max(gaps) <= placer.contact_tol
    )


def sample_sequence(
    placer: Placer,
    rng: np.random.Generator,
    kind: str,
    num_frames: int = 16,
    *,
    iterations: int = 8,
    max_tries: int = 4,
) -> list[PlacedBody] | None:
    """Sample a short motion in the placer's room.

    Args:
        placer: a :class:`Placer` of the room (its SDF and body model are reused).
        rng: numpy random generator.
        kind: one of :data:`SEQUENCE_KINDS`.
        num_frames: T >= 4 frames.
        iterations: Adam steps of the joint refinement of the in-between frames.
        max_tries: attempts before giving up.

    Returns:
        T :class:`PlacedBody` frames (room frame) with ``frame_index`` 0..T-1 and one set of
        betas, or None if the room does not allow the motion. The end frame (start frame for
        ``stand_up``) is an accepted placement; the others are refined, and the motion is
        redrawn (up to ``max_tries`` times) when one of them penetrates deeper than
        `MAX_FRAME_PENETRATION` or a walk's standing frame misses the placer's tolerances.
    """
    if kind not in SEQUENCE_KINDS:
        raise KeyError(f"unknown sequence kind {kind!r}; choose from {SEQUENCE_KINDS}")
    if num_frames < 4:
        raise ValueError("num_frames must be >= 4")
    for _ in range(max_tries):
        if kind == "reach":
            frames = _reach(placer, rng, num_frames, iterations)
        else:
            frames = _walk_to_sit(placer, rng, num_frames, iterations)
            if frames is not None and kind == "stand_up":
                frames = frames[::-1]
        if frames is not None and _frames_ok(placer, frames, kind):
            for i, f in enumerate(frames):
                f.frame_index = i
            return frames
    logger.info("no %s sequence after %d tries", kind, max_tries)
    return None

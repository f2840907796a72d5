"""Placement rules: where the contact placer first puts a body of each action, as a table.

An action's placement mode (:attr:`sahmr.body.pose_library.ActionSpec.placement`) and the kind
of the surface drawn for it pick a :class:`PlacementRule` from :data:`RULES` (:func:`rule_for`).
A rule's ``target`` function draws the candidate's anchor point, facing and yaw on the surface;
its ``translation`` function moves the posed body so that the action's primary contact regions
land on the anchor. The numbers of each rule (spreads, clearances, insets) are its fields; the
functions only read them. The refinement (:class:`sahmr.synth.placement.Placer`) starts from
there.

Frames: the ROOM frame is z up, floor at z = 0, metres. The body's frame is y up, facing +z;
at zero yaw it faces room -y.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sahmr.body.constants import ContactRegion
from sahmr.synth.furniture import Surface
from sahmr.synth.rooms import Room

__all__ = [
    "RULES",
    "YAW_JITTER_DEG",
    "PlacementRule",
    "PosedCandidate",
    "RoomSite",
    "Target",
    "TargetDraw",
    "body_to_room_rotation",
    "facing_to_yaw",
    "rule_for",
]

BODY_TO_ROOM = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Rotation taking the body frame (y up, facing +z) to the room frame (z up, facing -y)."""

YAW_JITTER_DEG = 6.0
"""Standard deviation (deg) of the yaw jitter drawn for every candidate; a rule applies
``yaw_jitter`` times it."""


def facing_to_yaw(facing_xy: np.ndarray) -> float:
    """Yaw (rad, about room +z) that turns the body to face a horizontal direction.

    Args:
        facing_xy: (2,) direction in the room's x-y plane (need not be unit).

    Returns:
        Yaw angle in radians.
    """
    return float(np.arctan2(facing_xy[0], -facing_xy[1]))


def body_to_room_rotation(yaw: float) -> np.ndarray:
    """(3, 3) rotation from the body frame to the room frame for a given yaw (rad)."""
    c, s = np.cos(yaw), np.sin(yaw)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return rz @ BODY_TO_ROOM


@dataclass
class Target:
    """Initial placement of one candidate (room frame)."""

    object_id: int
    surface: Surface
    yaw: float
    anchor: np.ndarray  # (3,) point the placement rule aligns to
    facing: np.ndarray  # (3,) horizontal unit facing direction
    support: Surface | None = None  # second surface of the object (the backrest), if used


def horizontal_axis(surface: Surface) -> tuple[np.ndarray, float]:
    """The in-plane axis of a vertical surface that is horizontal, and its half size."""
    if abs(surface.axis_u[2]) < 0.5:
        return surface.axis_u, float(surface.half_size[0])
    return surface.axis_v, float(surface.half_size[1])


def z_range(surface: Surface) -> tuple[float, float]:
    """Lowest and highest z (m) of a surface rectangle."""
    c = surface.corners()[:, 2]
    return float(c.min()), float(c.max())


class RoomSite:
    """What the rules read of the room: walkable floor, backrests, the allowed region.

    Args:
        room: The room (z up, metres).
        region_xy: Optional (2, 2) ``[[xmin, ymin], [xmax, ymax]]`` (m): only anchors inside.
    """

    def __init__(self, room: Room, region_xy: np.ndarray | None = None) -> None:
        self.room = room
        self.region_xy = region_xy

    def backrest(self, object_id: int) -> Surface | None:
        """The first backrest surface of an object (None when it has none)."""
        for s in self.room.objects[object_id].surfaces:
            if s.kind == "backrest":
                return s
        return None

    def in_region(self, xy: np.ndarray) -> bool:
        """Whether a point (2,) lies in the allowed region (always, without one)."""
        if self.region_xy is None:
            return True
        return bool(np.all(xy >= self.region_xy[0]) and np.all(xy <= self.region_xy[1]))

    def walkable_point(self, rng: np.random.Generator) -> np.ndarray | None:
        """A random point (3,) on walkable floor in the region (None when there is none)."""
        fs = self.room.free_space
        centers = fs.cell_centers()[fs.walkable]
        if self.region_xy is not None:
            inside = np.all((centers >= self.region_xy[0]) & (centers <= self.region_xy[1]), 1)
            centers = centers[inside]
        if len(centers) == 0:
            return None
        xy = centers[rng.integers(len(centers))]
        xy = xy + rng.uniform(-0.5, 0.5, 2) * fs.cell_size
        return np.array([xy[0], xy[1], 0.0])


@dataclass(frozen=True)
class PosedCandidate:
    """A candidate's posed body before translation (room frame, metres).

    Attributes:
        verts: (S, 3) skinned subset vertices, yaw and root rotation applied, no translation.
        pelvis: (3,) the rest root joint (SMPL rotates about it, so it stays put).
        labels: (S,) contact region of each subset vertex (0: none).
        primary: (S,) bool: the vertex is in a region of the action's primary contact.
    """

    verts: np.ndarray
    pelvis: np.ndarray
    labels: np.ndarray
    primary: np.ndarray


@dataclass(frozen=True)
class TargetDraw:
    """What a rule's target function draws on.

    Attributes:
        site: The room (walkable floor, backrests, the allowed region).
        object_id: The object of ``surface`` (an index into ``Room.objects``).
        surface: The surface drawn for the candidate's action.
        jitter: Yaw jitter (rad) drawn for the candidate.
        rng: The random generator (every draw comes from it, in a fixed order).
    """

    site: RoomSite
    object_id: int
    surface: Surface
    jitter: float
    rng: np.random.Generator


TargetFn = Callable[["PlacementRule", TargetDraw], "Target | None"]
"""``(rule, draw) -> Target | None``."""
TranslationFn = Callable[["PlacementRule", Target, PosedCandidate, float], np.ndarray]
"""``(rule, target, posed body, refinement margin (m)) -> translation (3,)``."""


@dataclass(frozen=True, kw_only=True)
class PlacementRule:
    """How a body of one placement mode is first put on one kind of surface.

    Attributes:
        target: Draws the anchor, facing and yaw (:data:`TargetFn`).
        translation: Puts the primary contact regions on the anchor (:data:`TranslationFn`).
        standing: The accepted body's pelvis and ankles must be over walkable floor.
        needs_backrest: Only objects with a backrest are targets.
        faces_in: Face the surface (lean on a table, touch a wall) rather than away from it.
        yaw_jitter: Share of the drawn yaw jitter applied.
        anchor_spread: Anchor offset on the surface, as a share of its half size (+-).
        lateral_margin: Distance (m) the anchor keeps from the ends of an edge or wall.
        reach_out: Distance (m) beyond an edge or wall that must be walkable floor.
        inset: Distance (m) from the edge to the anchor, towards the surface's centre.
        knee_clearance: How far (m) the knees overhang the front edge of a seat deeper than
            the thighs (None: the knees are left where the pose puts them).
    """

    target: TargetFn
    translation: TranslationFn
    standing: bool = False
    needs_backrest: bool = False
    faces_in: bool = False
    yaw_jitter: float = 1.0
    anchor_spread: float = 0.0
    lateral_margin: float = 0.0
    reach_out: float = 0.0
    inset: float = 0.0
    knee_clearance: float | None = None


# ----------------------------------------------------------------------------------------
# targets


def on_walkable_floor(rule: PlacementRule, at: TargetDraw) -> Target | None:
    """A random walkable point, any heading."""
    site, oid, s, rng = at.site, at.object_id, at.surface, at.rng
    anchor = site.walkable_point(rng)
    if anchor is None:
        return None
    yaw = rng.uniform(-np.pi, np.pi)
    facing = body_to_room_rotation(yaw) @ np.array([0.0, 0.0, 1.0])
    return Target(oid, s, yaw, anchor, facing)


def on_seat(rule: PlacementRule, at: TargetDraw) -> Target | None:
    """Near the seat's centre, facing the object's front (a random heading without one)."""
    site, oid, s, jitter, rng = at.site, at.object_id, at.surface, at.jitter, at.rng
    front = site.room.objects[oid].front
    facing = np.array([front[0], front[1], 0.0]) if front is not None else None
    if facing is None or np.linalg.norm(facing) < 1e-6:
        facing = np.append(rng.normal(size=2), 0.0)
    facing /= np.linalg.norm(facing)
    off = rng.uniform(-rule.anchor_spread, rule.anchor_spread, 2) * s.half_size
    anchor = s.center + off[0] * s.axis_u + off[1] * s.axis_v
    return Target(oid, s, facing_to_yaw(facing) + rule.yaw_jitter * jitter, anchor, facing)


def against_backrest(rule: PlacementRule, at: TargetDraw) -> Target | None:
    """Along the object's backrest at seat height, facing away from it."""
    site, oid, s, jitter, rng = at.site, at.object_id, at.surface, at.jitter, at.rng
    back = site.backrest(oid)
    if back is None:
        return None
    facing = np.array([back.normal[0], back.normal[1], 0.0])
    facing /= np.linalg.norm(facing)
    h, half_h = horizontal_axis(back)
    anchor = back.center + h * rng.uniform(-1.0, 1.0) * max(half_h - rule.lateral_margin, 0.0)
    anchor[2] = s.center[2]
    yaw = facing_to_yaw(facing) + rule.yaw_jitter * jitter
    return Target(oid, s, yaw, anchor, facing, support=back)


def at_edge(rule: PlacementRule, at: TargetDraw) -> Target | None:
    """At a random edge of the rectangle with walkable floor beyond it, facing out (sit on
    the edge) or in (``faces_in``: lean on a table)."""
    site, oid, s, jitter, rng = at.site, at.object_id, at.surface, at.jitter, at.rng
    fs = site.room.free_space
    edges = []
    for axis, half in ((s.axis_u, s.half_size[0]), (s.axis_v, s.half_size[1])):
        for sign in (1.0, -1.0):
            d = sign * axis
            outside = s.center[:2] + d[:2] * (half + rule.reach_out)
            if fs.is_walkable(outside):
                edges.append(
                    (
                        d,
                        half,
                        s.half_size[1] if axis is s.axis_u else s.half_size[0],
                        s.axis_v if axis is s.axis_u else s.axis_u,
                    )
                )
    if not edges:
        return None
    d, half, half_t, tang = edges[rng.integers(len(edges))]
    t_off = rng.uniform(-0.5, 0.5) * max(half_t - rule.lateral_margin, 0.0)
    edge_point = s.center + d * half + tang * t_off
    facing = -d if rule.faces_in else d.copy()
    anchor = edge_point - d * rule.inset
    facing[2] = 0.0
    facing /= np.linalg.norm(facing)
    return Target(oid, s, facing_to_yaw(facing) + rule.yaw_jitter * jitter, anchor, facing)


def along_long_axis(rule: PlacementRule, at: TargetDraw) -> Target | None:
    """Near the centre, the body along the rectangle's long axis (head either way)."""
    oid, s, jitter, rng = at.object_id, at.surface, at.jitter, at.rng
    long_axis = s.axis_u if s.half_size[0] >= s.half_size[1] else s.axis_v
    head = long_axis * (1.0 if rng.random() < 0.5 else -1.0)
    yaw = float(np.arctan2(-head[0], head[1])) + rule.yaw_jitter * jitter
    off = rng.uniform(-rule.anchor_spread, rule.anchor_spread, 2) * s.half_size
    anchor = s.center + off[0] * s.axis_u + off[1] * s.axis_v
    facing = body_to_room_rotation(yaw) @ np.array([0.0, 0.0, 1.0])
    return Target(oid, s, yaw, anchor, facing)


def at_wall(rule: PlacementRule, at: TargetDraw) -> Target | None:
    """On the floor along a wall with walkable floor in front, facing it (``faces_in``) or
    turning the back to it."""
    site, s, jitter, rng = at.site, at.surface, at.jitter, at.rng
    fs = site.room.free_space
    h, half_h = horizontal_axis(s)
    t_off = rng.uniform(-1.0, 1.0) * (half_h - rule.lateral_margin)
    anchor = s.center + h * t_off
    anchor[2] = 0.0
    outward = np.array([s.normal[0], s.normal[1], 0.0])
    outward /= np.linalg.norm(outward)
    if not fs.is_walkable(anchor[:2] + outward[:2] * rule.reach_out):
        return None
    facing = -outward if rule.faces_in else outward
    return Target(-1, s, facing_to_yaw(facing) + rule.yaw_jitter * jitter, anchor, facing)


# ----------------------------------------------------------------------------------------
# translations: (rule, target, posed body, margin) -> (3,)


def _seat_reach(s: Surface, f: np.ndarray) -> float:
    """Half depth (m) of a seat rectangle along a horizontal direction."""
    return abs(s.axis_u @ f) * s.half_size[0] + abs(s.axis_v @ f) * s.half_size[1]


def pelvis_over_anchor(
    rule: PlacementRule, target: Target, body: PosedCandidate, margin: float
) -> np.ndarray:
    """Pelvis over the anchor, the lowest vertex on the anchor's height."""
    t = np.zeros(3)
    t[:2] = target.anchor[:2] - body.pelvis[:2]
    t[2] = target.anchor[2] - body.verts[:, 2].min()
    return t


def seated_on_anchor(
    rule: PlacementRule, target: Target, body: PosedCandidate, margin: float
) -> np.ndarray:
    """Primary regions centred on the anchor and resting on the surface; with
    ``knee_clearance``, slid forward on a seat deeper than the thighs (a sofa) until the
    knees overhang its front edge, so that the shins clear it."""
    verts, prim, s = body.verts, body.primary, target.surface
    t = np.zeros(3)
    c = verts[prim].mean(0)
    t[:2] = target.anchor[:2] - c[:2]
    t[2] = s.center[2] - verts[prim, 2].min()
    if rule.knee_clearance is not None:
        f = target.facing
        reach = _seat_reach(s, f)
        knees = (verts[body.labels == ContactRegion.THIGHS] @ f).max() + t @ f
        t += f * max(0.0, s.center @ f + reach + rule.knee_clearance - knees)
    return t


def seated_against_backrest(
    rule: PlacementRule, target: Target, body: PosedCandidate, margin: float
) -> np.ndarray:
    """Seated on the seat, the back (and the buttocks) just in front of the backrest; with
    ``knee_clearance`` (a seat, not a bed where the legs lie), slid forward until the knees
    overhang a seat deeper than the thighs, the refinement reclining the back onto the
    backrest."""
    verts, prim, s = body.verts, body.primary, target.surface
    f, back = target.facing, target.support
    t = np.zeros(3)
    t[2] = s.center[2] - verts[prim, 2].min()
    rear = verts[np.isin(body.labels, (ContactRegion.BACK, ContactRegion.GLUTEUS))]
    along = back.center @ f - (rear @ f).min() + 0.5 * margin
    c = verts[prim].mean(0)
    if rule.knee_clearance is not None:
        reach = _seat_reach(s, f)
        knees = (verts[body.labels == ContactRegion.THIGHS] @ f).max()
        along = max(along, s.center @ f + reach + rule.knee_clearance - knees)
    lateral = np.array([-f[1], f[0], 0.0])
    t[:2] = (f * along + lateral * ((target.anchor - c) @ lateral))[:2]
    return t


def lying_on_anchor(
    rule: PlacementRule, target: Target, body: PosedCandidate, margin: float
) -> np.ndarray:
    """The body's centroid over the anchor, its lowest vertex on the anchor's height."""
    verts = body.verts
    t = np.zeros(3)
    c = verts.mean(0)
    t[:2] = target.anchor[:2] - c[:2]
    t[2] = target.anchor[2] - verts[:, 2].min()
    return t


def _standing_facing(target: Target, body: PosedCandidate, along_of: Callable) -> np.ndarray:
    """Feet on the floor, the primary regions moved ``along_of(pv, c, f)`` metres along the
    facing and onto the anchor's line sideways."""
    f = target.facing
    t = np.zeros(3)
    t[2] = -body.verts[:, 2].min()
    pv = body.verts[body.primary]
    c = pv.mean(0)
    lateral = np.array([-f[1], f[0], 0.0])
    along = along_of(pv, c, f)
    t += f * along + lateral * ((target.anchor - c) @ lateral)
    return t


def standing_at_anchor(
    rule: PlacementRule, target: Target, body: PosedCandidate, margin: float
) -> np.ndarray:
    """Standing, the primary regions' centroid brought to the anchor (at a table)."""
    return _standing_facing(target, body, lambda pv, c, f: target.anchor @ f - c @ f)


def standing_at_wall(
    rule: PlacementRule, target: Target, body: PosedCandidate, margin: float
) -> np.ndarray:
    """Standing, the primary regions' front-most (``faces_in``) or back-most vertex on the
    wall's plane."""
    s = target.surface
    if rule.faces_in:
        return _standing_facing(target, body, lambda pv, c, f: s.center @ f - (pv @ f).max())
    return _standing_facing(target, body, lambda pv, c, f: s.center @ f - (pv @ f).min())


# ----------------------------------------------------------------------------------------
# the table

_WALL = {"lateral_margin": 0.35, "reach_out": 0.5, "yaw_jitter": 0.5}
_TABLE_EDGE = {"reach_out": 0.45, "lateral_margin": 0.3}
_BACKREST = {"needs_backrest": True, "yaw_jitter": 0.5, "lateral_margin": 0.3}

RULES: dict[tuple[str, str | None], PlacementRule] = {
    # (placement mode, surface kind or None for any): rule
    ("floor", None): PlacementRule(
        target=on_walkable_floor, translation=pelvis_over_anchor, standing=True
    ),
    ("seat", None): PlacementRule(
        target=on_seat, translation=seated_on_anchor, anchor_spread=0.25, knee_clearance=0.04
    ),
    ("seat_back", "seat"): PlacementRule(
        target=against_backrest,
        translation=seated_against_backrest,
        knee_clearance=0.02,
        **_BACKREST,
    ),
    ("seat_back", None): PlacementRule(
        target=against_backrest, translation=seated_against_backrest, **_BACKREST
    ),
    ("edge", None): PlacementRule(
        target=at_edge, translation=seated_on_anchor, inset=0.2, **_TABLE_EDGE
    ),
    ("lie", None): PlacementRule(
        target=along_long_axis, translation=lying_on_anchor, anchor_spread=0.15, yaw_jitter=0.5
    ),
    ("lie", "floor"): PlacementRule(target=on_walkable_floor, translation=lying_on_anchor),
    ("face", "tabletop"): PlacementRule(
        target=at_edge, translation=standing_at_anchor, faces_in=True, inset=0.1, **_TABLE_EDGE
    ),
    ("face", None): PlacementRule(
        target=at_wall, translation=standing_at_wall, faces_in=True, **_WALL
    ),
    ("back_to", None): PlacementRule(target=at_wall, translation=standing_at_wall, **_WALL),
}
"""Placement rule per (mode, surface kind); ``None`` matches any kind without its own row."""


def rule_for(mode: str, surface_kind: str) -> PlacementRule:
    """The rule of a placement mode on a surface kind (:data:`RULES`).

    Raises:
        ValueError: An unknown mode.
    """
    rule = RULES.get((mode, surface_kind)) or RULES.get((mode, None))
    if rule is None:
        raise ValueError(f"unknown placement mode {mode!r}")
    return rule

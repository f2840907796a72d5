"""The placement rules table: every action has a rule, rows per surface kind override the
mode's default, and each rule's target and translation do what its fields say (tiny rooms
built in code)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sahmr.body.constants import ContactRegion
from sahmr.body.pose_library import ACTIONS
from sahmr.synth.furniture import horizontal_surface, vertical_surface
from sahmr.synth.placement_rules import (
    PosedCandidate,
    RoomSite,
    Target,
    TargetDraw,
    along_long_axis,
    at_edge,
    at_wall,
    body_to_room_rotation,
    on_walkable_floor,
    rule_for,
)


def _open_site() -> RoomSite:
    """A room whose floor is walkable everywhere (the rules read nothing else of it here)."""
    floor = SimpleNamespace(is_walkable=lambda xy: True)
    return RoomSite(SimpleNamespace(free_space=floor))


def _draw(surface, seed: int = 0) -> TargetDraw:
    return TargetDraw(_open_site(), 3, surface, 0.0, np.random.default_rng(seed))


def test_every_action_has_a_rule_on_each_of_its_surfaces():
    for spec in ACTIONS.values():
        for kind in spec.target_surfaces:
            rule = rule_for(spec.placement, kind)
            assert rule.standing == (spec.placement == "floor"), spec.name
            assert rule.needs_backrest == (spec.placement == "seat_back"), spec.name


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="hover"):
        rule_for("hover", "floor")


def test_rows_of_a_surface_kind_override_the_mode_default():
    assert rule_for("lie", "floor").target is on_walkable_floor
    assert rule_for("lie", "bed").target is along_long_axis
    assert rule_for("face", "tabletop").target is at_edge
    assert rule_for("face", "wall").target is at_wall
    assert rule_for("seat_back", "seat").knee_clearance == 0.02
    assert rule_for("seat_back", "bed").knee_clearance is None  # the legs lie on a bed


@pytest.mark.parametrize("mode", ["face", "back_to"])
def test_wall_rule_faces_the_wall_or_turns_its_back_to_it(mode):
    wall = vertical_surface("wall", (0.0, 2.0, 1.2), (0.0, -1.0, 0.0), 1.5, 1.2)
    rule = rule_for(mode, "wall")
    for seed in range(5):
        t = rule.target(rule, _draw(wall, seed))
        assert t.object_id == -1 and t.anchor[2] == 0.0
        assert abs(t.anchor[0]) <= 1.5 - rule.lateral_margin + 1e-9
        to_wall = float(t.facing @ np.array([0.0, 1.0, 0.0]))
        assert to_wall == pytest.approx(1.0 if mode == "face" else -1.0)
        # with no jitter the yaw turns the body's facing (+z) onto the target's facing
        np.testing.assert_allclose(body_to_room_rotation(t.yaw) @ [0, 0, 1], t.facing, atol=1e-12)


@pytest.mark.parametrize(("mode", "kind"), [("edge", "bed"), ("face", "tabletop")])
def test_edge_rule_insets_the_anchor_and_faces_out_or_in(mode, kind):
    top = horizontal_surface(kind, (0.0, 0.0, 0.75), (0.6, 0.4))
    rule = rule_for(mode, kind)
    t = rule.target(rule, _draw(top))
    half = np.array([0.6, 0.4])
    k = int(np.argmax(np.abs(t.anchor[:2]) / half))  # the axis across the chosen edge
    out = np.sign(t.anchor[k])  # from the centre towards that edge
    assert abs(t.anchor[k]) == pytest.approx(half[k] - rule.inset)
    assert np.sign(t.facing[k]) == (-out if rule.faces_in else out)
    assert t.facing[2] == 0.0


def test_translations_put_the_primary_regions_where_the_rule_says():
    rng = np.random.default_rng(1)
    verts = rng.uniform(-0.3, 0.3, (200, 3)) + np.array([0.0, 0.0, 0.9])
    labels = np.zeros(200, np.int64)
    labels[:20] = ContactRegion.RIGHT_HAND
    hand = labels == ContactRegion.RIGHT_HAND
    body = PosedCandidate(verts, np.array([0.05, -0.02, 0.9]), labels, hand)
    floor = horizontal_surface("floor", (0.0, 0.0, 0.0), (3.0, 3.0))
    anchor = np.array([1.0, 2.0, 0.0])
    rule = rule_for("floor", "floor")
    t = rule.translation(rule, Target(0, floor, 0.0, anchor, np.array([0.0, -1.0, 0.0])), body, 0.0)
    np.testing.assert_allclose(body.pelvis[:2] + t[:2], anchor[:2])
    assert (verts[:, 2] + t[2]).min() == pytest.approx(0.0)
    # touching a wall: feet on the floor, the hand's front-most vertex on the wall's plane
    wall = vertical_surface("wall", (0.0, 2.0, 1.2), (0.0, -1.0, 0.0), 1.5, 1.2)
    facing = np.array([0.0, 1.0, 0.0])
    rule = rule_for("face", "wall")
    t = rule.translation(rule, Target(-1, wall, 0.0, np.array([0.4, 2.0, 0.0]), facing), body, 0.0)
    assert (verts[:, 2] + t[2]).min() == pytest.approx(0.0)
    assert ((verts[hand] + t) @ facing).max() == pytest.approx(2.0)
    assert (verts[hand] + t)[:, 0].mean() == pytest.approx(0.4)

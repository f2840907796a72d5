"""The room kinds: one seeded recipe per kind (shell, then furniture), and `generate_room`.

``generate_room(kind, seed)`` always returns the same mesh, face labels and metadata: one
``numpy.random.Generator`` drives every choice of a recipe in a fixed order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from sahmr.synth.furniture import BUILDERS
from sahmr.synth.room_layout import (
    Layout,
    chairs_around_table,
    desk_with_chair,
    front_xy,
    in_front,
    other_sides,
    turns_facing,
)
from sahmr.synth.room_mesh import assemble_room
from sahmr.synth.room_shell import WALL_SIDES, Shell, choose_holes, indoor_shell, snap_to_cell
from sahmr.synth.rooms import ROOM_KINDS, Room

logger = logging.getLogger(__name__)

_PARAPET_COLOR = (0.68, 0.67, 0.64)


def _living_room(rng: np.random.Generator) -> tuple[Shell, Layout]:
    shell = indoor_shell(rng, (5.0, 7.0), (4.2, 5.5), (2.5, 2.8), int(rng.integers(1, 3)))
    lay = Layout(shell)
    quiet = other_sides(shell)
    sofa = lay.against_wall(BUILDERS["sofa"](rng, label="sofa"), rng, quiet)
    if sofa is not None:
        table = BUILDERS["low_table"](rng)
        lay.add(
            table,
            sofa.turns,
            in_front(sofa, table, float(rng.uniform(0.35, 0.5)), sofa.turns),
            clearance=0.05,
        )
        table_p = lay.placements[-1] if lay.placements[-1].model is table else None
        if table_p is not None:
            # An armchair beside the coffee table, facing it.
            arm = BUILDERS["chair"](rng, label="armchair")
            f = front_xy(sofa.turns)
            lat = np.array([f[1], -f[0]]) * (1 if rng.uniform() < 0.5 else -1)
            turns = turns_facing(-lat)
            depth = arm.half_extent_xy[1]
            pos = table_p.xy + lat * (table_p.model.half_extent_xy[0] + 0.35 + depth)
            lay.add(arm, turns, pos, clearance=0.1)
    if rng.uniform() < 0.5:
        lay.against_wall(BUILDERS["sofa"](rng, label="loveseat"), rng, quiet)
    dining = lay.anywhere(
        BUILDERS["table"](rng, label="dining_table"), rng, (0, 1), clearance=0.6, tries=80
    )
    if dining is not None:
        chairs_around_table(lay, rng, dining, int(rng.integers(2, 5)))
    for _ in range(int(rng.integers(1, 3))):
        lay.against_wall(BUILDERS["shelf"](rng, label="bookshelf"), rng)
    if rng.uniform() < 0.7:
        lay.anywhere(BUILDERS["mat"](rng, label="rug"), rng, (0, 1), clearance=0.1)
    if rng.uniform() < 0.6:
        lay.anywhere(BUILDERS["stool"](rng), rng, clearance=0.3)
    return shell, lay


def _office(rng: np.random.Generator) -> tuple[Shell, Layout]:
    shell = indoor_shell(rng, (5.0, 7.5), (4.5, 6.0), (2.6, 3.0), int(rng.integers(1, 4)))
    lay = Layout(shell)
    n_desks = int(rng.integers(2, 5))
    for _ in range(n_desks):
        desk_with_chair(lay, rng, list(shell.sides))
    for _ in range(int(rng.integers(1, 3))):
        lay.against_wall(BUILDERS["shelf"](rng, label="filing_shelf"), rng)
    if rng.uniform() < 0.7:
        meeting = lay.anywhere(
            BUILDERS["table"](rng, label="meeting_table"), rng, (0, 1), clearance=0.7
        )
        if meeting is not None:
            chairs_around_table(lay, rng, meeting, int(rng.integers(2, 5)))
    if rng.uniform() < 0.5:
        lay.against_wall(BUILDERS["sofa"](rng, label="loveseat"), rng, other_sides(shell))
    if rng.uniform() < 0.5:
        lay.anywhere(BUILDERS["stool"](rng), rng, clearance=0.3)
    return shell, lay


def _bedroom(rng: np.random.Generator) -> tuple[Shell, Layout]:
    shell = indoor_shell(rng, (3.6, 5.0), (3.6, 4.6), (2.5, 2.7), int(rng.integers(1, 3)))
    lay = Layout(shell)
    label = "single_bed" if rng.uniform() < 0.3 else "double_bed"
    bed = lay.against_wall(BUILDERS["bed"](rng, label=label), rng, other_sides(shell), tries=80)
    if bed is not None and rng.uniform() < 0.6:
        bench = BUILDERS["bench"](rng, label="bed_bench")
        if bench.half_extent_xy[0] <= bed.model.half_extent_xy[0]:
            lay.add(bench, bed.turns, in_front(bed, bench, 0.1, bed.turns), clearance=0.05)
    lay.against_wall(BUILDERS["shelf"](rng, label="bookshelf"), rng)
    if rng.uniform() < 0.85:
        desk_with_chair(lay, rng, list(shell.sides))
    if bed is not None and rng.uniform() < 0.7:
        rug = BUILDERS["mat"](rng, label="rug")
        f = front_xy(bed.turns)
        lat = np.array([f[1], -f[0]]) * (1 if rng.uniform() < 0.5 else -1)
        turns = bed.turns + 1  # long side of the rug along the bed
        xy = bed.xy + lat * (bed.model.half_extent_xy[0] + 0.05 + rug.half_extent_xy[1])
        lay.add(rug, turns, xy, clearance=0.02)
    if rng.uniform() < 0.5:
        lay.anywhere(BUILDERS["stool"](rng), rng, clearance=0.3)
    return shell, lay


def _lecture_hall(rng: np.random.Generator) -> tuple[Shell, Layout]:
    W, D = snap_to_cell(rng.uniform(9.0, 12.0)), snap_to_cell(rng.uniform(8.5, 11.0))
    H = float(np.round(rng.uniform(3.0, 3.6), 3))
    # Front (lecturer) wall is north; the door is on a side wall near the back.
    holes = choose_holes(
        rng,
        W,
        D,
        H,
        ("east", "west"),
        ("east", "west"),
        int(rng.integers(2, 5)),
        door_width=(0.9, 1.2),
        door_height=(2.1, 2.3),
        door_s=(1.2, 2.0),
    )
    shell = Shell(W, D, H, 0.15, WALL_SIDES, holes)
    lay = Layout(shell)
    platform = BUILDERS["step"](rng, label="platform")
    py = D / 2 - 0.02 - platform.half_extent_xy[1]
    px = float(rng.uniform(-0.5, 0.5))
    lay.add(platform, 0, np.array([px, py]), clearance=0.05)
    lectern = BUILDERS["desk"](rng, label="lecturer_desk", width_range=(1.2, 1.6))
    lx = px + (1 if rng.uniform() < 0.5 else -1) * (
        platform.half_extent_xy[0] + 0.4 + lectern.half_extent_xy[0]
    )
    ly = D / 2 - 0.9 - lectern.half_extent_xy[1]
    if lay.add(lectern, 0, np.array([lx, ly]), clearance=0.1):
        chair = BUILDERS["chair"](rng, label="lecturer_chair")
        lay.add(chair, 2, in_front(lay.placements[-1], chair, 0.1, 2), clearance=0.02)
    # Audience: rows of desks, two chairs behind each, facing north; aisles between.
    desk_w = float(np.round(rng.uniform(1.2, 1.5), 3))
    desk_d = float(np.round(rng.uniform(0.55, 0.62), 3))
    centre_aisle, side_aisle = 1.2, 0.8
    block = (W - centre_aisle - 2 * side_aisle) / 2
    per_block = max(int((block + 0.05) // (desk_w + 0.05)), 1)
    row_gap = float(rng.uniform(0.5, 0.65))
    y_top = D / 2 - max(2 * platform.half_extent_xy[1], 1.9) - 1.0
    while y_top - desk_d - 0.06 - 0.46 > -D / 2 + 1.2:
        for sgn in (-1, 1):
            for c in range(per_block):
                x = sgn * (centre_aisle / 2 + desk_w / 2 + c * (desk_w + 0.05))
                d = BUILDERS["desk"](
                    rng,
                    label="row_desk",
                    width_range=(desk_w, desk_w),
                    depth_range=(desk_d, desk_d),
                )
                if not lay.add(d, 2, np.array([x, y_top - desk_d / 2]), clearance=0.02):
                    continue
                for off in (-desk_w / 4, desk_w / 4):
                    ch = BUILDERS["chair"](rng, label="chair")
                    cy = y_top - desk_d - 0.06 - ch.half_extent_xy[1]
                    lay.add(ch, 0, np.array([x + off, cy]), clearance=0.02)
        y_top -= desk_d + 0.06 + 0.46 + row_gap
    return shell, lay


def _gym(rng: np.random.Generator) -> tuple[Shell, Layout]:
    shell = indoor_shell(rng, (8.0, 12.0), (7.0, 10.0), (3.0, 3.6), int(rng.integers(2, 5)))
    lay = Layout(shell)
    # A block of exercise mats in one half of the hall.
    W, D = shell.width, shell.depth
    left = rng.uniform() < 0.5
    region = (
        np.array([-W / 2, -D / 2, 0.0, D / 2]) if left else np.array([0.0, -D / 2, W / 2, D / 2])
    )
    for _ in range(int(rng.integers(3, 7))):
        lay.anywhere(
            BUILDERS["mat"](rng, label="gym_mat"),
            rng,
            (0, 1),
            clearance=0.15,
            region=region,
            margin=0.3,
        )
    for _ in range(int(rng.integers(2, 4))):
        lay.against_wall(BUILDERS["bench"](rng, label="bench"), rng)
    if rng.uniform() < 0.8:
        lay.against_wall(BUILDERS["step"](rng, label="platform"), rng)
    other = (
        np.array([0.0, -D / 2, W / 2, D / 2]) if left else np.array([-W / 2, -D / 2, 0.0, D / 2])
    )
    for _ in range(int(rng.integers(2, 5))):
        lay.anywhere(BUILDERS["step"](rng, label="step"), rng, (0, 1), clearance=0.4, region=other)
    for _ in range(int(rng.integers(1, 3))):
        lay.anywhere(
            BUILDERS["box"](rng, label="plyo_box"), rng, (0, 1), clearance=0.4, region=other
        )
    if rng.uniform() < 0.7:
        lay.against_wall(BUILDERS["shelf"](rng, label="equipment_rack"), rng)
    return shell, lay


def _outdoor_platform(rng: np.random.Generator) -> tuple[Shell, Layout]:
    W, D = snap_to_cell(rng.uniform(12.0, 16.0)), snap_to_cell(rng.uniform(10.0, 14.0))
    if rng.uniform() < 0.65:  # low parapet walls with walk-through gaps
        H = float(np.round(rng.uniform(0.6, 1.1), 3))
        holes = choose_holes(
            rng, W, D, H, WALL_SIDES, WALL_SIDES, 0, door_width=(1.8, 3.0), door_height=(H, H)
        )
        shell = Shell(W, D, H, 0.2, WALL_SIDES, holes, "parapet", _PARAPET_COLOR)
    else:
        shell = Shell(W, D, 0.0, 0.0, (), [], "parapet", _PARAPET_COLOR)
    # A raised platform along one edge, parking bays painted along the opposite edge.
    side = WALL_SIDES[int(rng.integers(4))]
    bay_side = WALL_SIDES[(WALL_SIDES.index(side) + 2) % 4]
    door_span = [(h.s0, h.s1) for h in shell.holes if h.side == bay_side]
    L = shell.wall_length(bay_side)
    bay_w, bay_l, line = 2.5, 4.8, 0.12
    n_bays = int((L - 1.0) // bay_w)
    s0 = 0.5 * (L - n_bays * bay_w)
    bays = []
    for i in range(n_bays + 1):
        s = s0 + i * bay_w
        if any(a - 0.3 < s < b + 0.3 for a, b in door_span):
            continue
        a = shell.to_world_xy(bay_side, s - line / 2, 0.4)
        b = shell.to_world_xy(bay_side, s + line / 2, 0.4 + bay_l)
        bays.append(np.array([*np.minimum(a, b), *np.maximum(a, b)]))
    shell.markings = bays
    lay = Layout(shell)
    a = shell.to_world_xy(bay_side, s0, 0.0)
    b = shell.to_world_xy(bay_side, L - s0, 0.4 + bay_l)
    lay.reserved.append(np.array([*np.minimum(a, b), *np.maximum(a, b)]))  # keep bays clear
    platform = BUILDERS["step"](rng, label="platform")
    spot = None
    for _ in range(30):
        spot = lay.wall_spot(platform, rng, side, gap=0.0 if not shell.sides else 0.02)
        if spot is not None and lay.add(platform, *spot):
            break
        spot = None
    if spot is not None:
        anchor = lay.placements[-1]
        for off in (-0.5, 0.5)[: int(rng.integers(1, 3))]:
            step = BUILDERS["step"](rng, label="step")
            lay.add(
                step,
                anchor.turns,
                in_front(anchor, step, 0.0, anchor.turns, off * anchor.model.half_extent_xy[0]),
                clearance=0.0,
            )
    # A row of bollards separating the parking bays from the pedestrian area.
    n_bollards = int(rng.integers(4, 9))
    spacing = float(rng.uniform(1.2, 1.8))
    for i in range(n_bollards):
        s = 0.5 * L + (i - (n_bollards - 1) / 2) * spacing
        xy = shell.to_world_xy(bay_side, s, 0.4 + bay_l + 0.6)
        lay.add(BUILDERS["bollard"](rng), 0, xy, clearance=0.3)
    for _ in range(int(rng.integers(3, 7))):
        bench = BUILDERS["bench"](rng, label="bench")
        if shell.sides and rng.uniform() < 0.5:
            lay.against_wall(bench, rng)
        else:
            lay.anywhere(bench, rng, clearance=0.6)
    for _ in range(int(rng.integers(2, 5))):
        label = "concrete_block" if rng.uniform() < 0.5 else "crate"
        lay.anywhere(BUILDERS["box"](rng, label=label), rng, clearance=0.5)
    return shell, lay


KIND_BUILDERS: dict[str, Callable[[np.random.Generator], tuple[Shell, Layout]]] = {
    "living_room": _living_room,
    "office": _office,
    "bedroom": _bedroom,
    "lecture_hall": _lecture_hall,
    "gym": _gym,
    "outdoor_platform": _outdoor_platform,
}


def generate_room(kind: str, seed: int, *, ceiling: bool = False) -> Room:
    """Generate a furnished room.

    Args:
        kind: one of :data:`ROOM_KINDS`.
        seed: any non-negative integer; the same (kind, seed, GENERATOR_VERSION) always gives
            the same room.
        ceiling: add a ceiling slab (off by default so that cameras see in); not allowed for
            rooms without walls.

    Returns:
        The Room, world frame z up, metres, floor top at z = 0.
    """
    if kind not in KIND_BUILDERS:
        raise KeyError(f"unknown room kind {kind!r}; choose one of {', '.join(ROOM_KINDS)}")
    rng = np.random.default_rng([int(seed), ROOM_KINDS.index(kind)])
    shell, lay = KIND_BUILDERS[kind](rng)
    room = assemble_room(kind, seed, shell, lay, ceiling)
    logger.debug(
        "%s seed %d: %d objects, %d faces, walkable %.2f",
        kind,
        seed,
        len(room.objects),
        len(room.mesh.faces),
        room.free_space.walkable_fraction,
    )
    return room

"""Furniture layout on a room's floor: footprints, walkability from the door, and the
furnishing moves the room kinds are written in (against a wall, around a table, ...).

Furniture is rotated by quarter turns about z only, so every footprint is an axis-aligned
rectangle and overlap tests are exact. An object is kept only if, afterwards, the floor area
a standing person (a disc of radius `sahmr.synth.rooms.BODY_RADIUS`) can reach from the door
is at least `sahmr.synth.rooms.MIN_WALKABLE_FRACTION` of the floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sahmr.synth.furniture import BUILDERS, FurnitureModel, quarter_turn_rotation
from sahmr.synth.room_shell import WALL_SIDES, Shell
from sahmr.synth.rooms import BODY_RADIUS, CELL_SIZE, MIN_WALKABLE_FRACTION

_BACK_TO_WALL_TURNS = {"south": 0, "east": 1, "north": 2, "west": 3}
"""Quarter turns that put an object's back (local -y) against a wall."""


@dataclass
class LayoutItem:
    model: FurnitureModel
    turns: int
    xy: np.ndarray


class Layout:
    """Footprint bookkeeping and walkability checks for one room."""

    def __init__(self, shell: Shell, cell: float = CELL_SIZE) -> None:
        self.shell = shell
        self.cell = cell
        W, D = shell.width, shell.depth
        self.nx, self.ny = round(W / cell), round(D / cell)
        self.origin = np.array([-W / 2, -D / 2])
        self.blocked = np.zeros((self.ny, self.nx), dtype=bool)
        self.rects: list[np.ndarray] = []
        self.reserved: list[np.ndarray] = []
        self.placements: list[LayoutItem] = []
        self.seeds: list[tuple[int, int]] = []  # grid cells (j, i) just inside each door
        for h in shell.holes:
            if h.kind != "door":
                continue
            s_mid = 0.5 * (h.s0 + h.s1)
            a = shell.to_world_xy(h.side, h.s0 - 0.15, 0.0)
            b = shell.to_world_xy(h.side, h.s1 + 0.15, 1.0)
            self.reserved.append(np.array([*np.minimum(a, b), *np.maximum(a, b)]))
            p = shell.to_world_xy(h.side, s_mid, BODY_RADIUS + 2 * cell)
            i, j = np.floor((p - self.origin) / cell).astype(int)
            self.seeds.append((int(j), int(i)))

    # geometry -------------------------------------------------------------------------
    @staticmethod
    def footprint(model: FurnitureModel, turns: int, xy: np.ndarray) -> np.ndarray:
        hx, hy = model.half_extent_xy
        if turns % 2:
            hx, hy = hy, hx
        return np.array([xy[0] - hx, xy[1] - hy, xy[0] + hx, xy[1] + hy])

    def _cells(self, rect: np.ndarray) -> tuple[slice, slice]:
        """Grid cells whose centres fall inside ``rect``."""
        i0 = int(np.ceil((rect[0] - self.origin[0]) / self.cell - 0.5 - 1e-9))
        i1 = int(np.floor((rect[2] - self.origin[0]) / self.cell - 0.5 + 1e-9))
        j0 = int(np.ceil((rect[1] - self.origin[1]) / self.cell - 0.5 - 1e-9))
        j1 = int(np.floor((rect[3] - self.origin[1]) / self.cell - 0.5 + 1e-9))
        return slice(max(j0, 0), max(j1 + 1, 0)), slice(max(i0, 0), max(i1 + 1, 0))

    def fits(self, rect: np.ndarray, clearance: float, margin: float) -> bool:
        W, D = self.shell.width, self.shell.depth
        if (
            rect[0] < -W / 2 + margin - 1e-9
            or rect[2] > W / 2 - margin + 1e-9
            or rect[1] < -D / 2 + margin - 1e-9
            or rect[3] > D / 2 - margin + 1e-9
        ):
            return False
        for r in self.rects:
            if (
                rect[0] < r[2] + clearance
                and r[0] < rect[2] + clearance
                and rect[1] < r[3] + clearance
                and r[1] < rect[3] + clearance
            ):
                return False
        return all(
            not (rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3])
            for r in self.reserved
        )

    def walkable(self, blocked: np.ndarray) -> np.ndarray:
        """Cells a disc of radius BODY_RADIUS sweeps, starting from the door."""
        free = ~blocked
        dist = ndimage.distance_transform_edt(np.pad(free, 1))[1:-1, 1:-1] * self.cell
        centres = dist > BODY_RADIUS
        labels, n = ndimage.label(centres)
        if n == 0:
            return np.zeros_like(free)
        if self.seeds:
            ids = {
                int(labels[j, i]) for j, i in self.seeds if 0 <= j < self.ny and 0 <= i < self.nx
            }
            ids.discard(0)
            if len(ids) != 1:  # a door is blocked, or two doors lead to separate regions
                return np.zeros_like(free)
            keep = ids.pop()
        else:
            keep = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
        comp = labels == keep
        reach = ndimage.distance_transform_edt(~comp) * self.cell <= BODY_RADIUS + 1e-9
        return reach & free

    def walkable_fraction(self, blocked: np.ndarray) -> float:
        return float(self.walkable(blocked).mean())

    # placing --------------------------------------------------------------------------
    def add(
        self,
        model: FurnitureModel,
        turns: int,
        xy: np.ndarray,
        *,
        clearance: float = 0.1,
        margin: float = 0.0,
    ) -> bool:
        """Place a model if it fits and the room stays walkable; returns whether it did."""
        xy = np.round(np.asarray(xy, dtype=np.float64), 4)
        rect = self.footprint(model, turns, xy)
        if not self.fits(rect, clearance, margin):
            return False
        blocks = model.category != "mat"
        if blocks:
            trial = self.blocked.copy()
            trial[self._cells(rect)] = True
            if self.walkable_fraction(trial) < MIN_WALKABLE_FRACTION:
                return False
            self.blocked = trial
        self.rects.append(rect)
        self.placements.append(LayoutItem(model, turns % 4, xy))
        return True

    def add_group(self, items: Sequence[tuple[FurnitureModel, int, np.ndarray, float]]) -> bool:
        """Place all ``(model, turns, xy, clearance)`` items or none of them."""
        state = (self.blocked.copy(), list(self.rects), list(self.placements))
        for model, turns, xy, clearance in items:
            if not self.add(model, turns, xy, clearance=clearance):
                self.blocked, self.rects, self.placements = state
                return False
        return True

    def wall_spot(
        self, model: FurnitureModel, rng: np.random.Generator, side: str, gap: float = 0.02
    ) -> tuple[int, np.ndarray] | None:
        """A random position with the model's back against a wall (None if it cannot fit).

        Tall objects avoid windows; nothing is put in front of a door (reserved zones).
        """
        turns = _BACK_TO_WALL_TURNS[side]
        hx, hy = model.half_extent_xy
        L = self.shell.wall_length(side)
        lo, hi = hx + 0.03, L - hx - 0.03
        if hi < lo:
            return None
        s = float(rng.uniform(lo, hi))
        for h in self.shell.holes:
            if (
                h.side == side
                and h.kind == "window"
                and model.height > h.z0 - 0.05
                and s - hx < h.s1 + 0.1
                and h.s0 - 0.1 < s + hx
            ):
                return None
        return turns, self.shell.to_world_xy(side, s, gap + hy)

    def against_wall(
        self,
        model: FurnitureModel,
        rng: np.random.Generator,
        sides: Sequence[str] | None = None,
        tries: int = 40,
        clearance: float = 0.1,
    ) -> LayoutItem | None:
        sides = list(sides or self.shell.sides or WALL_SIDES)
        for _ in range(tries):
            spot = self.wall_spot(model, rng, sides[int(rng.integers(len(sides)))])
            if spot is not None and self.add(model, *spot, clearance=clearance):
                return self.placements[-1]
        return None

    def anywhere(
        self,
        model: FurnitureModel,
        rng: np.random.Generator,
        turns: Sequence[int] = (0, 1, 2, 3),
        tries: int = 40,
        clearance: float = 0.1,
        region: np.ndarray | None = None,
        margin: float = 0.3,
    ) -> LayoutItem | None:
        W, D = self.shell.width, self.shell.depth
        region = np.array([-W / 2, -D / 2, W / 2, D / 2]) if region is None else region
        for _ in range(tries):
            k = int(turns[int(rng.integers(len(turns)))])
            hx, hy = model.half_extent_xy
            if k % 2:
                hx, hy = hy, hx
            lo = region[:2] + np.array([hx, hy]) + margin
            hi = region[2:] - np.array([hx, hy]) - margin
            if np.any(hi < lo):
                continue
            xy = rng.uniform(lo, hi)
            if self.add(model, k, xy, clearance=clearance):
                return self.placements[-1]
        return None


def front_xy(turns: int) -> np.ndarray:
    """World x, y direction of local +y after ``turns`` quarter turns."""
    return quarter_turn_rotation(turns)[:2, 1]


def turns_facing(direction_xy: np.ndarray) -> int:
    """Quarter turns that make local +y point along an axis-aligned world direction."""
    return int(np.argmax([np.dot(front_xy(k), direction_xy) for k in range(4)]))


def in_front(
    anchor: LayoutItem, model: FurnitureModel, gap: float, turns: int, offset_lateral: float = 0.0
) -> np.ndarray:
    """Position of ``model`` (rotated by ``turns``) ``gap`` metres in front of ``anchor``."""
    f = front_xy(anchor.turns)
    lat = np.array([f[1], -f[0]])
    ahy = anchor.model.half_extent_xy[1]
    mhx, mhy = model.half_extent_xy
    depth_along_f = mhy if (turns - anchor.turns) % 2 == 0 else mhx
    return anchor.xy + f * (ahy + gap + depth_along_f) + lat * offset_lateral


def chairs_around_table(
    layout: Layout, rng: np.random.Generator, table: LayoutItem, n_chairs: int, label: str = "chair"
) -> None:
    """Chairs on the table's long sides (then ends), each facing the table."""
    w = 2 * table.model.half_extent_xy[0]
    per_side = 1 if w < 1.3 else 2
    slots: list[tuple[int, float]] = []  # (side sign along table local y, lateral offset)
    for i in range(per_side):
        off = 0.0 if per_side == 1 else (i - 0.5) * w / 2
        slots += [(1, off), (-1, off)]
    order = [int(i) for i in rng.permutation(len(slots))][:n_chairs]
    for idx in order:
        sign, off = slots[idx]
        chair = BUILDERS["chair"](rng, label=label)
        anchor_turns = table.turns if sign > 0 else table.turns + 2
        anchor = LayoutItem(table.model, anchor_turns % 4, table.xy)
        turns = (anchor_turns + 2) % 4  # chair faces back towards the table
        gap = float(rng.uniform(0.02, 0.12))
        xy = in_front(anchor, chair, gap, turns, off * sign)
        layout.add(chair, turns, xy, clearance=0.02)


def desk_with_chair(
    layout: Layout,
    rng: np.random.Generator,
    sides: Sequence[str],
    tries: int = 40,
    label: str = "desk",
) -> bool:
    desk = BUILDERS["desk"](rng, label=label)
    chair = BUILDERS["chair"](rng, label="desk_chair")
    for _ in range(tries):
        spot = layout.wall_spot(desk, rng, sides[int(rng.integers(len(sides)))])
        if spot is None:
            continue
        turns, xy = spot
        anchor = LayoutItem(desk, turns, xy)
        chair_turns = (turns + 2) % 4
        chair_xy = in_front(anchor, chair, float(rng.uniform(0.05, 0.2)), chair_turns)
        if layout.add_group([(desk, turns, xy, 0.1), (chair, chair_turns, chair_xy, 0.02)]):
            return True
    return False


def other_sides(shell: Shell, avoid_door: bool = True) -> list[str]:
    door_sides = {h.side for h in shell.holes if h.kind == "door"}
    sides = [s for s in shell.sides if not (avoid_door and s in door_sides)]
    return sides or list(shell.sides)

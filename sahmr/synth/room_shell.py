"""A room's shell: its size, the walls around the floor and the door / window holes in them.

Frame as `sahmr.synth.rooms`: z up, metres, the floor's interior rectangle is
``[-W/2, W/2] x [-D/2, D/2]`` and walls stand outside it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import trimesh

from sahmr.synth.furniture import CATEGORY_COLORS, Surface, box_mesh, vertical_surface
from sahmr.synth.rooms import CELL_SIZE

WALL_SIDES: tuple[str, ...] = ("south", "east", "north", "west")
INWARD = {"south": (0.0, 1.0), "north": (0.0, -1.0), "west": (1.0, 0.0), "east": (-1.0, 0.0)}
"""Inward unit normal (x, y) of the wall on each side."""


@dataclass
class HoleSpec:
    side: str
    kind: str
    s0: float  # along the wall's interior length, metres
    s1: float
    z0: float
    z1: float


@dataclass
class Shell:
    width: float
    depth: float
    height: float
    thickness: float
    sides: tuple[str, ...]
    holes: list[HoleSpec]
    wall_label: str = "wall"
    wall_color: tuple[float, float, float] = CATEGORY_COLORS["wall"]
    markings: list[np.ndarray] = field(default_factory=list)  # painted floor rects x0,y0,x1,y1

    def wall_length(self, side: str) -> float:
        return self.width if side in ("south", "north") else self.depth

    def to_world_xy(self, side: str, s: float, inset: float) -> np.ndarray:
        """World x, y of the point at ``s`` along a wall, ``inset`` metres into the room."""
        W, D = self.width, self.depth
        if side == "south":
            return np.array([s - W / 2, -D / 2 + inset])
        if side == "north":
            return np.array([s - W / 2, D / 2 - inset])
        if side == "west":
            return np.array([-W / 2 + inset, s - D / 2])
        return np.array([W / 2 - inset, s - D / 2])


def interval_minus(lo: float, hi: float, cuts: list[tuple[float, float]]) -> list[tuple]:
    """Parts of [lo, hi] not covered by any cut."""
    parts, cur = [], lo
    for a, b in sorted(cuts):
        if a > cur + 1e-9:
            parts.append((cur, min(a, hi)))
        cur = max(cur, b)
    if cur < hi - 1e-9:
        parts.append((cur, hi))
    return [(a, b) for a, b in parts if b - a > 1e-9]


def wall_pieces(shell: Shell, side: str) -> tuple[list[trimesh.Trimesh], list[Surface]]:
    """Boxes making up one wall around its holes, and the inner-face surfaces."""
    W, D, H, t = shell.width, shell.depth, shell.height, shell.thickness
    L = shell.wall_length(side)
    ext = t if side in ("south", "north") else 0.0  # N/S walls cover the corners
    holes = [h for h in shell.holes if h.side == side]
    breaks = sorted({-ext, L + ext, *[h.s0 for h in holes], *[h.s1 for h in holes]})
    nx, ny = INWARD[side]
    meshes, surfaces = [], []
    for sa, sb in itertools.pairwise(breaks):
        mid = 0.5 * (sa + sb)
        cuts = [(h.z0, h.z1) for h in holes if h.s0 <= mid <= h.s1]
        for za, zb in interval_minus(0.0, H, cuts):
            if side == "south":
                lo, hi = (sa - W / 2, -D / 2 - t, za), (sb - W / 2, -D / 2, zb)
            elif side == "north":
                lo, hi = (sa - W / 2, D / 2, za), (sb - W / 2, D / 2 + t, zb)
            elif side == "west":
                lo, hi = (-W / 2 - t, sa - D / 2, za), (-W / 2, sb - D / 2, zb)
            else:
                lo, hi = (W / 2, sa - D / 2, za), (W / 2 + t, sb - D / 2, zb)
            lo, hi = np.array(lo), np.array(hi)
            meshes.append(box_mesh(tuple(hi - lo), tuple(0.5 * (lo + hi))))
            ca, cb = max(sa, 0.0), min(sb, L)  # inner face inside the room only
            if cb - ca > 1e-6:
                p = shell.to_world_xy(side, 0.5 * (ca + cb), 0.0)
                surfaces.append(
                    vertical_surface(
                        "wall",
                        (p[0], p[1], 0.5 * (za + zb)),
                        (nx, ny, 0.0),
                        0.5 * (cb - ca),
                        0.5 * (zb - za),
                    )
                )
    return meshes, surfaces


def choose_holes(
    rng: np.random.Generator,
    width: float,
    depth: float,
    height: float,
    door_sides: Sequence[str],
    window_sides: Sequence[str],
    n_windows: int,
    door_width: tuple[float, float] = (0.85, 1.0),
    door_height: tuple[float, float] = (2.0, 2.1),
    door_s: tuple[float, float] | None = None,
) -> list[HoleSpec]:
    """Pick one door and up to ``n_windows`` windows that do not overlap each other."""
    holes: list[HoleSpec] = []

    def length(side: str) -> float:
        return width if side in ("south", "north") else depth

    side = door_sides[int(rng.integers(len(door_sides)))]
    dw = float(np.round(rng.uniform(*door_width), 3))
    L = length(side)
    lo, hi = (0.4 + dw / 2, L - 0.4 - dw / 2) if door_s is None else door_s
    sc = float(np.round(rng.uniform(lo, max(lo, hi)), 3))
    dz = min(float(np.round(rng.uniform(*door_height), 3)), height)
    holes.append(HoleSpec(side, "door", sc - dw / 2, sc + dw / 2, 0.0, dz))
    for _ in range(n_windows):
        for _attempt in range(20):
            ws = window_sides[int(rng.integers(len(window_sides)))]
            L = length(ws)
            w = float(np.round(rng.uniform(0.8, 1.6), 3))
            if L < w + 1.0:
                continue
            sc = float(np.round(rng.uniform(0.5 + w / 2, L - 0.5 - w / 2), 3))
            s0, s1 = sc - w / 2, sc + w / 2
            if any(h.side == ws and s0 < h.s1 + 0.4 and h.s0 < s1 + 0.4 for h in holes):
                continue
            sill = float(np.round(rng.uniform(0.8, 1.0), 3))
            top = min(float(np.round(sill + rng.uniform(1.0, 1.4), 3)), height - 0.25)
            holes.append(HoleSpec(ws, "window", s0, s1, sill, top))
            break
    return holes


def snap_to_cell(x: float) -> float:
    return float(np.round(x / CELL_SIZE) * CELL_SIZE)


def indoor_shell(
    rng: np.random.Generator,
    w: tuple[float, float],
    d: tuple[float, float],
    h: tuple[float, float],
    n_windows: int,
    door_sides: Sequence[str] = WALL_SIDES,
    window_sides: Sequence[str] = WALL_SIDES,
) -> Shell:
    W, D = snap_to_cell(rng.uniform(*w)), snap_to_cell(rng.uniform(*d))
    H = float(np.round(rng.uniform(*h), 3))
    holes = choose_holes(rng, W, D, H, door_sides, window_sides, n_windows)
    return Shell(W, D, H, 0.12, WALL_SIDES, holes)

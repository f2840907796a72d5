"""How a cross-attention spreads over its keys: entropy, concentration, and whether it follows
geometry.

Written for SA-HMR's mesh <- scene cross-attention (rows = mesh query tokens, columns = scene
tokens), but model-free: every function takes plain arrays. A row is one query's weights over
the keys of one frame; padding keys are masked out by ``key_valid``; keys without a position
(SA-HMR's null token) have NaN coordinates in ``key_xyz`` and are left out of the geometric
statistics.

* `normalized_entropy`: ``H(row) / log(number of valid keys)``; 1 = uniform, 0 = one key.
* `top_mass`: the mass on the largest ``fraction`` of the valid keys (uniform:
  ``ceil(fraction * n) / n``).
* `row_spearman` of the weights against ``-distance`` from the query's position to each key's
  position: > 0 when nearer keys get more weight.
* `nearest_mass`: the share of a row's positioned-key mass on the nearest ``fraction`` of them.
* `log_linear_r2`: how much of a row's log-weights a linear function of the key position
  explains (1: the weights are ``exp(a . x + c)``, a ramp along one direction in space, which
  can correlate with distance either way without favouring near keys).

`CrossAttentionReport` gathers these per block over frames and summarises them (mean and
percentiles), split by the number of positioned keys per frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "PERCENTILES",
    "CrossAttentionReport",
    "FrameRows",
    "frame_rows",
    "log_linear_r2",
    "nearest_mass",
    "normalized_entropy",
    "row_pearson",
    "row_spearman",
    "summarize",
    "top_mass",
    "uniform_share",
]

PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95)
"""Percentiles reported by `summarize`."""


def _rows(weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be (Q, K), got shape {w.shape}")
    return w


def _mask(key_valid: np.ndarray | None, num_keys: int) -> np.ndarray:
    if key_valid is None:
        return np.ones(num_keys, dtype=bool)
    valid = np.asarray(key_valid, dtype=bool).reshape(-1)
    if valid.shape[0] != num_keys:
        raise ValueError(f"{valid.shape[0]} key flags for {num_keys} keys")
    return valid


def uniform_share(num_keys: int, fraction: float) -> float:
    """``ceil(fraction * n) / n``: what `top_mass` / `nearest_mass` give for uniform weights
    (NaN for no keys)."""
    if num_keys < 1:
        return math.nan
    return math.ceil(fraction * num_keys) / num_keys


def normalized_entropy(weights: np.ndarray, key_valid: np.ndarray | None = None) -> np.ndarray:
    """Entropy of each row over the valid keys, divided by ``log(number of valid keys)``.

    Rows are renormalised over the valid keys first (padding carries no mass anyway in a
    masked softmax).

    Args:
        weights: (Q, K) non-negative attention weights, rows = queries.
        key_valid: (K,) bool, False for padding keys; None: all valid.

    Returns:
        (Q,) float64 in [0, 1]: 1 = uniform over the valid keys, 0 = all mass on one key; NaN
        with fewer than two valid keys or a row without mass.
    """
    w = _rows(weights)
    valid = _mask(key_valid, w.shape[1])
    n = int(valid.sum())
    if n < 2:
        return np.full(w.shape[0], np.nan)
    p = w[:, valid]
    total = p.sum(axis=1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    out = -plogp.sum(axis=1) / math.log(n)
    return np.where(total[:, 0] > 0, np.clip(out, 0.0, 1.0), np.nan)


def top_mass(
    weights: np.ndarray, key_valid: np.ndarray | None = None, *, fraction: float = 0.1
) -> np.ndarray:
    """The share of each row's mass on its ``ceil(fraction * n)`` largest valid keys.

    Args:
        weights: (Q, K) non-negative weights.
        key_valid: (K,) bool, False for padding keys; None: all valid.
        fraction: Fraction of the n valid keys counted as the top, in (0, 1].

    Returns:
        (Q,) float64 in [0, 1] (`uniform_share` for uniform rows); NaN without valid keys or
        mass.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    w = _rows(weights)
    valid = _mask(key_valid, w.shape[1])
    n = int(valid.sum())
    if n == 0:
        return np.full(w.shape[0], np.nan)
    p = w[:, valid]
    k = math.ceil(fraction * n)
    top = -np.partition(-p, k - 1, axis=1)[:, :k]
    total = p.sum(axis=1)
    return np.divide(top.sum(axis=1), total, out=np.full(len(p), np.nan), where=total > 0)


def row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``.

    Args:
        a: (Q, K).
        b: (Q, K) or (K,) (one row for every query).

    Returns:
        (Q,) float64; NaN for a row that is constant in either input or has fewer than two
        keys.
    """
    x = _rows(a)
    y = np.broadcast_to(np.asarray(b, dtype=np.float64), x.shape)
    if x.shape[1] < 2:
        return np.full(x.shape[0], np.nan)

    def centred(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = v - v.mean(axis=1, keepdims=True)
        norm = np.sqrt((c * c).sum(axis=1))
        # a constant row centres to rounding noise only: call it constant
        return c, norm, norm > 1e-9 * np.abs(v).max(axis=1) * math.sqrt(v.shape[1])

    xc, xn, x_ok = centred(x)
    yc, yn, y_ok = centred(y)
    ok = x_ok & y_ok
    num = (xc * yc).sum(axis=1)
    return np.divide(num, xn * yn, out=np.full(x.shape[0], np.nan), where=ok)


def row_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per row (Pearson of the average ranks; ties share a rank).

    Args:
        a: (Q, K).
        b: (Q, K) or (K,).

    Returns:
        (Q,) float64 in [-1, 1]; NaN as in `row_pearson`.
    """
    x = _rows(a)
    y = np.broadcast_to(np.asarray(b, dtype=np.float64), x.shape)
    return row_pearson(rankdata(x, axis=1), rankdata(y, axis=1))


def nearest_mass(
    weights: np.ndarray, distances: np.ndarray, *, fraction: float = 0.1
) -> np.ndarray:
    """The share of each row's mass on the ``ceil(fraction * K)`` keys nearest its query.

    Args:
        weights: (Q, K) non-negative weights over positioned keys only.
        distances: (Q, K) distance from each query to each key (any unit).
        fraction: Fraction of the K keys counted as near, in (0, 1].

    Returns:
        (Q,) float64 in [0, 1], renormalised over the K keys (`uniform_share` for uniform
        rows); NaN without keys or mass.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    w = _rows(weights)
    d = np.asarray(distances, dtype=np.float64)
    if d.shape != w.shape:
        raise ValueError(f"distances {d.shape} do not match weights {w.shape}")
    if w.shape[1] == 0:
        return np.full(w.shape[0], np.nan)
    k = math.ceil(fraction * w.shape[1])
    near = np.argpartition(d, k - 1, axis=1)[:, :k]
    total = w.sum(axis=1)
    mass = np.take_along_axis(w, near, axis=1).sum(axis=1)
    return np.divide(mass, total, out=np.full(len(w), np.nan), where=total > 0)


def log_linear_r2(weights: np.ndarray, key_xyz: np.ndarray) -> np.ndarray:
    """R^2 of the least-squares fit ``log w ~ a . x + c`` per row, over the keys' positions.

    Args:
        weights: (Q, K) positive weights over positioned keys only.
        key_xyz: (K, 3) key positions.

    Returns:
        (Q,) float64 in [0, 1]; NaN with fewer than 5 keys or a constant row.
    """
    w = _rows(weights)
    x = np.asarray(key_xyz, dtype=np.float64)
    if x.shape != (w.shape[1], 3):
        raise ValueError(f"key_xyz must be ({w.shape[1]}, 3), got {x.shape}")
    if w.shape[1] < 5:
        return np.full(w.shape[0], np.nan)
    y = np.log(np.maximum(w, np.finfo(np.float64).tiny)).T  # (K, Q)
    design = np.c_[x - x.mean(axis=0), np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    ss_res = ((y - design @ coef) ** 2).sum(axis=0)
    yc = y - y.mean(axis=0)
    ss_tot = (yc**2).sum(axis=0)
    ok = ss_tot > 1e-18 * np.maximum((y**2).sum(axis=0), 1.0)
    unexplained = np.divide(ss_res, ss_tot, out=np.full(w.shape[0], np.nan), where=ok)
    return np.clip(1.0 - unexplained, 0.0, 1.0)


@dataclass
class FrameRows:
    """Per-query statistics of one frame's cross-attention in one block.

    Attributes:
        entropy: (Q,) `normalized_entropy` over the valid keys.
        top_mass: (Q,) `top_mass` over the valid keys.
        keyless_mass: (Q,) mass on valid keys without a position (SA-HMR: the null token).
        spearman: Per position set (e.g. ``"predicted"``, ``"ground_truth"``) (Q,)
            `row_spearman` of the weights over the positioned keys against ``-distance``; NaN
            with fewer than ``min_keys`` positioned keys.
        nearest_mass: Per position set (Q,) `nearest_mass` over the positioned keys.
        log_linear_r2: (Q,) `log_linear_r2` over the positioned keys (NaN with fewer than
            ``max(min_keys, 5)``).
        num_valid: Valid keys n.
        num_positioned: Valid keys with a position.
        fraction: The ``fraction`` used.
    """

    entropy: np.ndarray
    top_mass: np.ndarray
    keyless_mass: np.ndarray
    spearman: dict[str, np.ndarray]
    nearest_mass: dict[str, np.ndarray]
    log_linear_r2: np.ndarray
    num_valid: int
    num_positioned: int
    fraction: float


def frame_rows(
    weights: np.ndarray,
    key_valid: np.ndarray,
    key_xyz: np.ndarray,
    query_xyz: dict[str, np.ndarray],
    *,
    fraction: float = 0.1,
    min_keys: int = 3,
) -> FrameRows:
    """All row statistics of one frame's cross-attention (one block).

    Args:
        weights: (Q, K) weights of Q queries over K keys (padding included).
        key_valid: (K,) bool, False for padding.
        key_xyz: (K, 3) key positions; NaN rows for keys without one (and for padding).
        query_xyz: Named (Q, 3) query positions in the frame of ``key_xyz`` (e.g. the
            predicted and the ground-truth positions of the tokens).
        fraction: Share of keys counted as "top" / "near".
        min_keys: Fewest positioned keys for the geometric statistics.

    Returns:
        `FrameRows`.
    """
    w = _rows(weights)
    valid = _mask(key_valid, w.shape[1])
    xyz = np.asarray(key_xyz, dtype=np.float64)
    if xyz.shape != (w.shape[1], 3):
        raise ValueError(f"key_xyz must be ({w.shape[1]}, 3), got {xyz.shape}")
    placed = valid & np.isfinite(xyz).all(axis=1)
    total = w[:, valid].sum(axis=1)
    keyless = w[:, valid & ~placed].sum(axis=1)
    spearman: dict[str, np.ndarray] = {}
    near: dict[str, np.ndarray] = {}
    for name, q in query_xyz.items():
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (w.shape[0], 3):
            raise ValueError(f"query_xyz[{name!r}] must be ({w.shape[0]}, 3), got {q.shape}")
        if placed.sum() < max(min_keys, 2):
            spearman[name] = near[name] = np.full(w.shape[0], np.nan)
            continue
        dist = np.linalg.norm(q[:, None, :] - xyz[None, placed, :], axis=-1)
        spearman[name] = row_spearman(w[:, placed], -dist)
        near[name] = nearest_mass(w[:, placed], dist, fraction=fraction)
    enough = placed.sum() >= max(min_keys, 5)
    return FrameRows(
        entropy=normalized_entropy(w, valid),
        top_mass=top_mass(w, valid, fraction=fraction),
        keyless_mass=np.divide(keyless, total, out=np.full(len(w), np.nan), where=total > 0),
        spearman=spearman,
        nearest_mass=near,
        log_linear_r2=(
            log_linear_r2(w[:, placed], xyz[placed]) if enough else np.full(len(w), np.nan)
        ),
        num_valid=int(valid.sum()),
        num_positioned=int(placed.sum()),
        fraction=float(fraction),
    )


def summarize(values: np.ndarray | Sequence[float]) -> dict[str, float | int]:
    """Mean, `PERCENTILES` and count of the finite values (NaN stats when there are none)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": math.nan, **{f"p{p}": math.nan for p in PERCENTILES}, "count": 0}
    pct = np.percentile(v, PERCENTILES)
    return {"mean": float(v.mean()), **{f"p{p}": float(x) for p, x in zip(PERCENTILES, pct)},
            "count": int(v.size)}  # fmt: skip


@dataclass
class _Frame:
    name: str
    num_positioned: int
    blocks: list[FrameRows] = field(default_factory=list)


class CrossAttentionReport:
    """Collects `FrameRows` per frame and block; summarises them as a JSON-ready dict.

    Args:
        min_keys: Frames with fewer positioned keys (SA-HMR: contact tokens) are summarised
            apart and listed.
    """

    def __init__(self, *, min_keys: int = 10) -> None:
        self.min_keys = int(min_keys)
        self.frames: list[_Frame] = []

    def add(self, name: str, blocks: Sequence[FrameRows]) -> None:
        """Record one frame: its `FrameRows` per block (same number of blocks every frame)."""
        if self.frames and len(blocks) != len(self.frames[0].blocks):
            raise ValueError(f"{len(blocks)} blocks, earlier frames had "
                             f"{len(self.frames[0].blocks)}")  # fmt: skip
        positioned = blocks[0].num_positioned if blocks else 0
        self.frames.append(_Frame(name, positioned, list(blocks)))

    @property
    def num_blocks(self) -> int:
        """Blocks per frame."""
        return len(self.frames[0].blocks) if self.frames else 0

    def few(self, frame: _Frame) -> bool:
        """Whether a frame has fewer than ``min_keys`` positioned keys."""
        return frame.num_positioned < self.min_keys

    def entropies(self, block: int, *, few: bool | None = None) -> np.ndarray:
        """The finite normalised entropies of all rows of a block (``few``: only / without the
        frames with fewer than ``min_keys`` positioned keys)."""
        rows = [f.blocks[block].entropy for f in self.frames if few is None or self.few(f) == few]
        e = np.concatenate(rows) if rows else np.zeros(0)
        return e[np.isfinite(e)]

    def _group(self, block: int, frames: list[_Frame]) -> dict[str, Any]:
        rows = [f.blocks[block] for f in frames]

        def cat(get: Any) -> np.ndarray:
            return np.concatenate([get(r) for r in rows]) if rows else np.zeros(0)

        fraction = rows[0].fraction if rows else math.nan
        out: dict[str, Any] = {
            "frames": len(rows),
            "entropy": summarize(cat(lambda r: r.entropy)),
            "top_mass": summarize(cat(lambda r: r.top_mass)),
            "top_mass_if_uniform": summarize([uniform_share(r.num_valid, fraction) for r in rows])[
                "mean"
            ],
            "keyless_mass": summarize(cat(lambda r: r.keyless_mass)),
        }
        names = sorted({n for r in rows for n in r.spearman})
        for n in names:
            out[f"spearman_{n}"] = summarize(cat(lambda r, n=n: r.spearman[n]))
            out[f"nearest_mass_{n}"] = summarize(cat(lambda r, n=n: r.nearest_mass[n]))
        out["log_linear_r2"] = summarize(cat(lambda r: r.log_linear_r2))
        shares = [uniform_share(r.num_positioned, fraction) for r in rows if r.num_positioned >= 2]
        out["nearest_mass_if_uniform"] = summarize(shares)["mean"]
        return out

    def to_dict(self) -> dict[str, Any]:
        """Per block the summaries over all frames, frames with fewer than ``min_keys``
        positioned keys and the others; the few-key frames listed with their per-block means;
        the positioned keys per frame."""
        few = [f for f in self.frames if self.few(f)]
        rest = [f for f in self.frames if not self.few(f)]
        blocks = [
            {"block": k, "all": self._group(k, self.frames), "few_keys": self._group(k, few),
             "enough_keys": self._group(k, rest)}
            for k in range(self.num_blocks)
        ]  # fmt: skip
        listed = [
            {
                "frame": f.name,
                "positioned_keys": f.num_positioned,
                "entropy_mean": [float(np.nanmean(b.entropy)) if np.isfinite(b.entropy).any()
                                 else math.nan for b in f.blocks],
                "keyless_mass_mean": [float(np.nanmean(b.keyless_mass)) for b in f.blocks],
            }
            for f in few
        ]  # fmt: skip
        counts = [f.num_positioned for f in self.frames]
        return {
            "frames": len(self.frames),
            "min_keys": self.min_keys,
            "positioned_keys_per_frame": summarize(counts),
            "blocks": blocks,
            "few_key_frames": listed,
        }

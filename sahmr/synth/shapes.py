"""Body shapes for the synthetic data generator: short, tall, light and heavy bodies.

Betas come from a two-part mixture (`ShapeRanges`):

* the core, ``N(0, std^2)`` clipped to ``[-clip, clip]`` on every component (the shapes
  near the average that most people have);
* with probability ``tail_fraction``, the first ``len(tail_limits)`` components are instead
  drawn uniformly from ``tail_min[k] <= |beta_k| <= tail_limits[k]`` (random sign), the rest
  from the core. On the license-free body component 0 is a uniform scale about the soles
  (+6.0 cm of stature per unit: beta0 = +-4.5 spans about 1.44-1.98 m around the 1.71 m
  mean) and component 1 is girth ("weight": volume about +-10 % per unit, -28 % / +34 % at
  -3 / +3); the other components move stature by at most ~1 cm per unit
  (`sahmr.body.license_free.shape_space`). A real SMPL model orders its components by
  variance instead (its beta0 and beta1 mix stature and girth); the same mixture applies.

`rest_stature` measures the stature (m) of a shape in the rest pose, the number the dataset
stores per sample (``height``). Frames: the body model's rest frame (y up, metres).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["ShapeRanges", "StatureMeter", "rest_stature", "sample_shape"]


@dataclass(kw_only=True)
class ShapeRanges:
    """The distribution body shapes are drawn from (see the module docstring).

    Attributes:
        std: Standard deviation of the core normal draw, in betas units.
        clip: Absolute bound of core draws.
        tail_fraction: Share of bodies whose first components come from the wide draw.
        tail_limits: Per leading component ``k``, the largest ``|beta_k|`` of a wide draw.
        tail_min: Per leading component, the smallest ``|beta_k|`` of a wide draw (0 =
            uniform over the whole interval; > 0 keeps only shapes away from the average).
    """

    std: float = 1.0
    clip: float = 2.5
    tail_fraction: float = 0.3
    tail_limits: Sequence[float] = field(default=(4.5, 3.0))
    tail_min: Sequence[float] = field(default=(0.0, 0.0))

    def __post_init__(self) -> None:
        self.tail_limits = tuple(float(x) for x in self.tail_limits)
        self.tail_min = tuple(float(x) for x in self.tail_min)
        if len(self.tail_min) != len(self.tail_limits):
            raise ValueError(
                f"shape.tail_min has {len(self.tail_min)} entries, shape.tail_limits "
                f"{len(self.tail_limits)}: give one per leading component"
            )
        if any(not 0.0 <= a <= b for a, b in zip(self.tail_min, self.tail_limits)):
            raise ValueError(
                f"shape: need 0 <= tail_min <= tail_limits, got {list(self.tail_min)} and "
                f"{list(self.tail_limits)}"
            )
        if not 0.0 <= self.tail_fraction <= 1.0:
            raise ValueError(f"shape.tail_fraction {self.tail_fraction} is not in [0, 1]")
        if self.std < 0 or self.clip < 0:
            raise ValueError(f"shape.std {self.std} and shape.clip {self.clip} must be >= 0")


def sample_shape(rng: np.random.Generator, ranges: ShapeRanges, num_betas: int = 10) -> np.ndarray:
    """Draws one body shape from the core / wide mixture.

    Args:
        rng: Random generator.
        ranges: The distribution.
        num_betas: Number of coefficients.

    Returns:
        (num_betas,) float64 betas.
    """
    betas = np.clip(rng.normal(0.0, ranges.std, size=num_betas), -ranges.clip, ranges.clip)
    if rng.random() < ranges.tail_fraction:
        k = min(len(ranges.tail_limits), num_betas)
        lo = np.asarray(ranges.tail_min[:k], dtype=np.float64)
        hi = np.asarray(ranges.tail_limits[:k], dtype=np.float64)
        sign = np.where(rng.random(k) < 0.5, -1.0, 1.0)
        betas[:k] = sign * rng.uniform(lo, hi)
    return betas


def rest_stature(
    v_template: np.ndarray, shapedirs: np.ndarray, betas: np.ndarray, up_axis: int = 1
) -> np.ndarray:
    """Stature of shapes in the rest pose: extent of the shaped template along the up axis.

    Args:
        v_template: (V, 3) rest vertices, metres, body rest frame.
        shapedirs: (V, 3, L) shape blend shapes, metres per unit beta.
        betas: (L',) or (B, L') coefficients (the first ``min(L, L')`` are used).
        up_axis: Index of the up axis of the rest frame (SMPL: 1, y up).

    Returns:
        () or (B,) float64 statures, metres.
    """
    b = np.atleast_2d(np.asarray(betas, dtype=np.float64))
    n = min(b.shape[1], shapedirs.shape[2])
    up = np.asarray(v_template, dtype=np.float64)[:, up_axis]
    up = up[None] + b[:, :n] @ np.asarray(shapedirs, dtype=np.float64)[:, up_axis, :n].T
    h = up.max(axis=1) - up.min(axis=1)
    return h[0] if np.ndim(betas) == 1 else h


class StatureMeter:
    """`rest_stature` of one body model with its arrays converted once.

    Args:
        body: A `sahmr.body.BodyModel` (``v_template`` (V, 3), ``shapedirs`` (V, 3, L)).
    """

    def __init__(self, body: object) -> None:
        self._v = np.asarray(body.v_template.detach().cpu().numpy(), dtype=np.float64)
        self._dirs = np.asarray(body.shapedirs.detach().cpu().numpy(), dtype=np.float64)

    def __call__(self, betas: np.ndarray) -> float:
        """Stature (m) of one shape, (L,) betas."""
        return float(rest_stature(self._v, self._dirs, np.asarray(betas).reshape(-1)))

"""Colours: contact regions, scalar colour maps, per-vertex -> per-face colours.

All colours are float RGB in [0, 1] unless a function says uint8. Region labels follow
`sahmr.body.constants.CONTACT_REGION_NAMES` (0 none, 1 left foot, ..., 7 thighs).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BODY_COLOR",
    "REGION_COLORS",
    "SCENE_COLOR",
    "body_vertex_colors",
    "colormap",
    "face_colors_from_vertices",
    "region_colors",
    "to_uint8",
]

BODY_COLOR = (0.85, 0.62, 0.48)
"""Default body colour (skin-like)."""
SCENE_COLOR = (0.78, 0.78, 0.76)
"""Default colour of scene geometry without colours of its own."""

REGION_COLORS = np.array(
    [
        [0.75, 0.75, 0.75],  # 0 none
        [0.12, 0.47, 0.71],  # 1 left foot: blue
        [0.09, 0.75, 0.81],  # 2 right foot: cyan
        [0.17, 0.63, 0.17],  # 3 left hand: green
        [0.74, 0.74, 0.13],  # 4 right hand: olive-yellow
        [0.84, 0.15, 0.16],  # 5 back: red
        [0.58, 0.40, 0.74],  # 6 gluteus: purple
        [1.00, 0.50, 0.05],  # 7 thighs: orange
    ]
)
"""(8, 3) colour of each contact region label (row = label, `CONTACT_REGION_NAMES` order)."""


def region_colors(labels: np.ndarray, none_color: tuple[float, float, float] | None = None
                  ) -> np.ndarray:
    """Colour per contact label.

    Args:
        labels: int array (N,) of labels 0..7 (values outside clip to the range).
        none_color: Colour of label 0 (default `REGION_COLORS[0]`).

    Returns:
        (N, 3) float64 RGB in [0, 1].
    """
    lab = np.clip(np.asarray(labels, dtype=np.int64).reshape(-1), 0, len(REGION_COLORS) - 1)
    out = REGION_COLORS[lab].copy()
    if none_color is not None:
        out[lab == 0] = none_color
    return out


def body_vertex_colors(
    vertex_labels: np.ndarray | None,
    num_vertices: int,
    base: tuple[float, float, float] = BODY_COLOR,
) -> np.ndarray:
    """Body colours with contact vertices painted by region.

    Args:
        vertex_labels: int (V,) contact label per vertex (0 = not in contact) or None.
        num_vertices: V.
        base: Colour of vertices not in contact.

    Returns:
        (V, 3) float64 RGB.
    """
    if vertex_labels is None:
        return np.tile(np.asarray(base, dtype=np.float64), (num_vertices, 1))
    return region_colors(vertex_labels, none_color=base)


_FALLBACK_ANCHORS = np.array(
    [[0.267, 0.005, 0.329], [0.230, 0.322, 0.546], [0.128, 0.567, 0.551],
     [0.369, 0.789, 0.383], [0.993, 0.906, 0.144]]
)
"""Viridis at 0, 1/4, ..., 1: the colour map used when matplotlib is not installed."""


def colormap(values: np.ndarray, name: str = "viridis", vmin: float | None = None,
             vmax: float | None = None) -> np.ndarray:
    """Map scalars to colours with a matplotlib colour map.

    Without matplotlib (e.g. the GPU machine) every name falls back to a piecewise-linear
    viridis, except ``"gray"``.

    Args:
        values: Array of any shape.
        name: Matplotlib colour-map name.
        vmin: Value mapped to the low end (default: the minimum).
        vmax: Value mapped to the high end (default: the maximum).

    Returns:
        Array of shape ``values.shape + (3,)``, float64 RGB in [0, 1]. Constant input maps to
        the low end.
    """
    v = np.asarray(values, dtype=np.float64)
    lo = float(np.nanmin(v)) if vmin is None else float(vmin)
    hi = float(np.nanmax(v)) if vmax is None else float(vmax)
    t = np.clip((v - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(v)
    t = np.nan_to_num(t)
    try:
        from matplotlib import colormaps  # lazy: matplotlib is slow to import
    except ImportError:
        if name in ("gray", "grey"):
            return np.repeat(t[..., None], 3, axis=-1)
        x = np.linspace(0.0, 1.0, len(_FALLBACK_ANCHORS))
        return np.stack([np.interp(t, x, _FALLBACK_ANCHORS[:, c]) for c in range(3)], -1)
    return colormaps[name](t)[..., :3]


def face_colors_from_vertices(vertex_colors: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-face colours as the mean of the face's vertex colours.

    Args:
        vertex_colors: (V, 3) float RGB.
        faces: (F, 3) int vertex indices.

    Returns:
        (F, 3) float64 RGB.
    """
    return np.asarray(vertex_colors, dtype=np.float64)[np.asarray(faces)].mean(axis=1)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] -> uint8 (rounded, clipped)."""
    return (np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

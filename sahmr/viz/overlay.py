"""Body meshes drawn over images, plus boxes and 2-D points (headless, `sahmr.viz.render`).

Frames: vertices are in the image's OpenCV camera frame (``verts_cam``, metres); ``K`` maps
them to the image's pixels. Only the image window the body projects into is ray cast, so
overlays on large images (RICH, PROX) stay cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from sahmr.viz.colors import BODY_COLOR, face_colors_from_vertices, to_uint8
from sahmr.viz.render import MeshToRender, render

logger = logging.getLogger(__name__)

__all__ = ["draw_bbox", "draw_points", "render_mesh_layer", "render_overlay"]


def _projected_window(
    vertices_cam: np.ndarray, K: np.ndarray, width: int, height: int, pad: int = 2
) -> tuple[int, int, int, int] | None:
    """Pixel window ``(j0, i0, j1, i1)`` (exclusive ends) the mesh can cover, or None when
    it covers nothing; the whole image when a vertex is at or behind the camera plane."""
    z = vertices_cam[:, 2]
    if np.any(z <= 1e-6):
        return 0, 0, width, height
    uv = vertices_cam[:, :2] / z[:, None] @ K[:2, :2].T + K[:2, 2]
    j0 = max(int(np.floor(uv[:, 0].min())) - pad, 0)
    i0 = max(int(np.floor(uv[:, 1].min())) - pad, 0)
    j1 = min(int(np.ceil(uv[:, 0].max())) + pad + 1, width)
    i1 = min(int(np.ceil(uv[:, 1].max())) + pad + 1, height)
    if j0 >= j1 or i0 >= i1:
        return None
    return j0, i0, j1, i1


def render_mesh_layer(
    vertices_cam: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    *,
    color: tuple[float, float, float] = BODY_COLOR,
    vertex_colors: np.ndarray | None = None,
    supersample: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one mesh seen by an image's camera, without background.

    Args:
        vertices_cam: (V, 3) vertices, camera frame, metres.
        faces: (F, 3) int triangles.
        K: (3, 3) image intrinsics, pixels.
        width: W, pixels.
        height: H, pixels.
        color: Mesh colour where ``vertex_colors`` is None.
        vertex_colors: Optional (V, 3) float RGB per vertex (faces take their mean).
        supersample: Rays per pixel along each axis (anti-aliasing of the colours).

    Returns:
        ``(rgb (H, W, 3) uint8, mask (H, W) bool, depth (H, W) float32 camera z, inf off
        the mesh)``.
    """
    v = np.asarray(vertices_cam, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    rgb = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), bool)
    depth = np.full((height, width), np.inf, np.float32)
    window = _projected_window(v, K, width, height)
    if window is None:
        return rgb, mask, depth
    j0, i0, j1, i1 = window
    K_win = K.copy()
    K_win[0, 2] -= j0
    K_win[1, 2] -= i0
    fc = None if vertex_colors is None else face_colors_from_vertices(vertex_colors, faces)
    out = render(
        [MeshToRender(v, np.asarray(faces), color, fc)],
        K_win,
        np.eye(4),
        j1 - j0,
        i1 - i0,
        background=(0.0, 0.0, 0.0),
        supersample=supersample,
    )
    rgb[i0:i1, j0:j1] = out.rgb
    mask[i0:i1, j0:j1] = out.instance >= 0
    depth[i0:i1, j0:j1] = out.depth
    return rgb, mask, depth


def render_overlay(
    image: np.ndarray,
    vertices_cam: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    *,
    alpha: float = 0.8,
    color: tuple[float, float, float] = BODY_COLOR,
    vertex_colors: np.ndarray | None = None,
    supersample: int = 1,
) -> np.ndarray:
    """Draw a mesh over an image.

    Args:
        image: (H, W, 3) uint8 RGB (or (H, W) grey).
        vertices_cam: (V, 3) vertices, the image's camera frame, metres.
        faces: (F, 3) int triangles.
        K: (3, 3) intrinsics of the image, pixels.
        alpha: Mesh opacity in [0, 1].
        color: Mesh colour where ``vertex_colors`` is None.
        vertex_colors: Optional (V, 3) float RGB per vertex.
        supersample: Rays per pixel along each axis.

    Returns:
        (H, W, 3) uint8 RGB: the image with the shaded mesh blended where it covers a pixel.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3].astype(np.uint8)
    H, W = img.shape[:2]
    rgb, mask, _ = render_mesh_layer(
        vertices_cam, faces, K, W, H, color=color, vertex_colors=vertex_colors,
        supersample=supersample,
    )
    out = img.astype(np.float64)
    out[mask] = alpha * rgb[mask] + (1.0 - alpha) * out[mask]
    return (out + 0.5).astype(np.uint8)


def draw_bbox(
    image: np.ndarray,
    bbox: Sequence[float],
    color: tuple[float, float, float] = (0.1, 0.9, 0.1),
    width: int = 2,
    label: str | None = None,
) -> np.ndarray:
    """Draw a box ``x0, y0, x1, y1`` (pixels) on a copy of an (H, W, 3) uint8 image."""
    pil = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    draw = ImageDraw.Draw(pil)
    c = tuple(int(v) for v in to_uint8(np.asarray(color)))
    x0, y0, x1, y1 = (float(v) for v in bbox)
    draw.rectangle([x0, y0, x1, y1], outline=c, width=width)
    if label:
        draw.text((x0 + 3, max(y0 - 12, 0)), label, fill=c)
    return np.asarray(pil)


def draw_points(
    image: np.ndarray,
    uv: np.ndarray,
    colors: np.ndarray | tuple[float, float, float] = (1.0, 0.1, 0.1),
    radius: float = 2.0,
) -> np.ndarray:
    """Draw filled discs at pixel positions on a copy of an (H, W, 3) uint8 image.

    Args:
        image: (H, W, 3) uint8.
        uv: (N, 2) pixel positions (u right, v down); non-finite rows are skipped.
        colors: One float RGB or (N, 3).
        radius: Disc radius, pixels.

    Returns:
        (H, W, 3) uint8.
    """
    pil = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    draw = ImageDraw.Draw(pil)
    pts = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    cols = np.asarray(colors, dtype=np.float64)
    cols = np.broadcast_to(cols.reshape(-1, 3) if cols.ndim > 1 else cols, (len(pts), 3))
    cols8 = to_uint8(cols)
    for (u, v), c in zip(pts, cols8):
        if np.isfinite(u) and np.isfinite(v):
            draw.ellipse([u - radius, v - radius, u + radius, v + radius],
                         fill=tuple(int(x) for x in c))
    return np.asarray(pil)

"""Overlays: mesh pixels where the projection says, windowed render = full render; colours."""

import numpy as np
import pytest

from sahmr.viz.colors import (
    BODY_COLOR,
    REGION_COLORS,
    body_vertex_colors,
    colormap,
    face_colors_from_vertices,
    region_colors,
    to_uint8,
)
from sahmr.viz.overlay import draw_bbox, draw_points, render_mesh_layer, render_overlay
from sahmr.viz.render import MeshToRender, render

W, H = 160, 120
K = np.array([[150.0, 0.0, 79.5], [0.0, 150.0, 59.5], [0.0, 0.0, 1.0]])


def _triangle_mask(tri_cam: np.ndarray) -> np.ndarray:
    """Slow reference: pixel centres inside the projected triangle (same-side test)."""
    uv = tri_cam[:, :2] / tri_cam[:, 2:] @ K[:2, :2].T + K[:2, 2]
    jj, ii = np.meshgrid(np.arange(W, dtype=float), np.arange(H, dtype=float))
    sides = []
    for k in range(3):
        a, b = uv[k], uv[(k + 1) % 3]
        sides.append((b[0] - a[0]) * (ii - a[1]) - (b[1] - a[1]) * (jj - a[0]))
    s = np.stack(sides)
    return (s >= 0).all(0) | (s <= 0).all(0)


def test_overlay_covers_the_projected_triangle():
    tri = np.array([[-0.3, -0.2, 2.0], [0.4, -0.1, 2.5], [0.0, 0.35, 2.2]])
    faces = np.array([[0, 1, 2]])
    image = np.full((H, W, 3), 40, np.uint8)
    out = render_overlay(image, tri, faces, K, alpha=1.0)
    changed = np.any(out != image, axis=-1)
    ref = _triangle_mask(tri)
    # Agreement everywhere except on the edge pixels of the triangle.
    from scipy.ndimage import binary_dilation, binary_erosion

    edge = binary_dilation(ref) & ~binary_erosion(ref)
    assert ref.sum() > 700
    np.testing.assert_array_equal(changed[~edge], ref[~edge])


def test_windowed_layer_equals_full_render_and_blends():
    rng = np.random.default_rng(0)
    verts = rng.normal(0.0, 0.15, (40, 3)) + np.array([0.2, -0.1, 2.0])
    faces = rng.integers(0, 40, (60, 3))
    colors = rng.random((40, 3))
    rgb, mask, depth = render_mesh_layer(verts, faces, K, W, H, vertex_colors=colors)
    full = render([MeshToRender(verts, faces, BODY_COLOR,
                                face_colors_from_vertices(colors, faces))],
                  K, np.eye(4), W, H, background=(0.0, 0.0, 0.0))
    ref_mask = full.instance >= 0
    assert mask.sum() > 100
    assert (mask != ref_mask).sum() <= 3
    both = mask & ref_mask
    assert np.abs(rgb[both].astype(int) - full.rgb[both]).max() <= 1
    np.testing.assert_allclose(depth[both], full.depth[both], atol=1e-5)
    assert np.isinf(depth[~mask]).all() and (rgb[~mask] == 0).all()
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = render_overlay(image, verts, faces, K, vertex_colors=colors, alpha=0.25)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    expect = (0.25 * rgb[mask] + 0.75 * image[mask].astype(float) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[mask], expect)


def test_mesh_outside_or_behind():
    faces = np.array([[0, 1, 2]])
    off = np.array([[5.0, 5.0, 2.0], [5.5, 5.0, 2.0], [5.0, 5.5, 2.0]])
    _, mask, _ = render_mesh_layer(off, faces, K, W, H)
    assert not mask.any()
    behind = np.array([[-1.0, -1.0, -2.0], [1.0, -1.0, 3.0], [0.0, 1.0, 3.0]])
    _, mask, _ = render_mesh_layer(behind, faces, K, W, H)  # crosses the camera plane
    assert mask.any()


def test_boxes_points_and_grey_images():
    image = np.zeros((H, W), np.uint8)
    out = render_overlay(image, np.array([[0, 0, 2.0], [0.1, 0, 2.0], [0, 0.1, 2.0]]),
                         np.array([[0, 1, 2]]), K)
    assert out.shape == (H, W, 3)
    boxed = draw_bbox(np.zeros((H, W, 3), np.uint8), [20, 30, 60, 90], width=1)
    assert boxed[30, 40].any() and boxed[60, 20].any() and not boxed[50, 40].any()
    dots = draw_points(np.zeros((H, W, 3), np.uint8), np.array([[10.0, 10.0], [np.nan, 1.0]]),
                       radius=2)
    assert dots[10, 10, 0] > 200 and dots.any(axis=-1).sum() < 30


def test_colors():
    labels = np.array([0, 1, 5, 7, 9, -1])
    rc = region_colors(labels)
    np.testing.assert_array_equal(rc[:4], REGION_COLORS[[0, 1, 5, 7]])
    np.testing.assert_array_equal(rc[4:], REGION_COLORS[[7, 0]])  # clipped
    assert len({tuple(c) for c in REGION_COLORS}) == len(REGION_COLORS)
    bc = body_vertex_colors(np.array([0, 3]), 2)
    np.testing.assert_allclose(bc, [BODY_COLOR, REGION_COLORS[3]])
    assert body_vertex_colors(None, 4).shape == (4, 3)
    cm = colormap(np.array([0.0, 0.5, 1.0]), "gray")
    np.testing.assert_allclose(cm[:, 0], [0.0, 0.5, 1.0], atol=0.01)
    np.testing.assert_allclose(colormap(np.ones(3)), colormap(np.zeros(3)))
    vc = np.random.default_rng(1).random((5, 3))
    faces = np.array([[0, 1, 2], [2, 3, 4]])
    ref = np.stack([vc[f].sum(0) / 3 for f in faces])
    np.testing.assert_allclose(face_colors_from_vertices(vc, faces), ref)
    np.testing.assert_array_equal(to_uint8(np.array([-1.0, 0.5, 2.0])), [0, 128, 255])


@pytest.mark.parametrize("supersample", [1, 2])
def test_supersampled_overlay_shape(supersample):
    tri = np.array([[-0.3, -0.2, 2.0], [0.4, -0.1, 2.5], [0.0, 0.35, 2.2]])
    out = render_overlay(np.zeros((H, W, 3), np.uint8), tri, np.array([[0, 1, 2]]), K,
                         supersample=supersample)
    assert out.shape == (H, W, 3) and out.any()


def test_colormap_without_matplotlib(monkeypatch):
    import sys

    ref = colormap(np.array([0.0, 0.25, 1.0]), "viridis")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    fallback = colormap(np.array([0.0, 0.25, 1.0]), "viridis")
    np.testing.assert_allclose(fallback, ref, atol=0.01)
    np.testing.assert_allclose(colormap(np.array([0.0, 1.0]), "gray"), [[0, 0, 0], [1, 1, 1]])

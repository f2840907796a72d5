"""Body visibility: vertices behind a wall / the body's far side / outside the image, and the
person mask against a per-pixel brute-force reference."""

from __future__ import annotations

import numpy as np
import trimesh

from sahmr.geometry.distortion import distort_pixels
from sahmr.geometry.raycast import MeshRaycaster
from sahmr.scene.visibility import (
    MASK_BACKGROUND,
    MASK_OCCLUDED,
    MASK_VISIBLE,
    SCENE_TOLERANCE_M,
    occlusion_ratio,
    person_view,
    vertex_visibility,
)

K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])
SIZE = (100, 80)  # (W, H)


def _wall(x=(-2.0, 0.0), z=2.0):
    """A thin wall facing the camera (at the origin, looking along +z) over x in ``x``."""
    box = trimesh.creation.box(extents=[x[1] - x[0], 4.0, 0.02])
    box.apply_translation([(x[0] + x[1]) / 2, 0.0, z + 0.01])  # front face at z
    return box


def test_vertex_behind_a_wall_is_hidden_in_front_is_seen():
    wall = MeshRaycaster(_wall().vertices, _wall().faces)  # front face at z = 2, 2 cm thick
    verts = np.array([
        [-0.5, 0.0, 3.0],   # behind the wall
        [0.5, 0.0, 3.0],    # beside it: seen
        [-0.5, 0.0, 1.5],   # in front of it
        [-0.5, 0.1, 2.0 + SCENE_TOLERANCE_M / 2],  # just behind its surface: tolerated
        [-0.5, 0.1, 2.0 + SCENE_TOLERANCE_M * 2],  # further behind: hidden
    ])  # fmt: skip
    vis = vertex_visibility(verts, K, np.eye(4), SIZE, scene=wall)
    assert vis.in_image.all() and not vis.self_hidden.any()
    np.testing.assert_array_equal(vis.scene_hidden, [True, False, False, False, True])
    np.testing.assert_array_equal(vis.visible, ~vis.scene_hidden)
    loose = vertex_visibility(verts, K, np.eye(4), SIZE, scene=wall, scene_tolerance=0.1)
    np.testing.assert_array_equal(loose.visible, [False, True, True, True, True])
    # no scan given: nothing hides the body
    assert vertex_visibility(verts, K, np.eye(4), SIZE).visible.all()


def test_far_side_of_the_body_is_hidden():
    centre = np.array([0.1, -0.05, 3.0])
    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    ball.apply_translation(centre)
    verts = np.asarray(ball.vertices)
    body = MeshRaycaster(verts, ball.faces)
    vis = vertex_visibility(verts, K, np.eye(4), SIZE, body=body)
    # a vertex of a convex mesh is seen iff one of its faces faces the camera
    tri = verts[ball.faces]
    to_cam = -tri.mean(axis=1)
    to_cam /= np.linalg.norm(to_cam, axis=1, keepdims=True)
    facing = np.einsum("ij,ij->i", ball.face_normals, to_cam)  # cos, per face
    best = np.full(len(verts), -1.0)
    for k in range(3):
        np.maximum.at(best, ball.faces[:, k], facing)
    assert (best > 0.02).sum() > 100 and (best < -0.02).sum() > 100
    np.testing.assert_array_equal(vis.visible[np.abs(best) > 0.02], best[np.abs(best) > 0.02] > 0)
    assert vis.visible[verts[:, 2] < centre[2] - 0.2].all()  # the near cap
    assert not vis.visible[verts[:, 2] > centre[2] + 0.05].any()  # the far side
    assert not vis.scene_hidden.any()


def test_vertices_outside_the_image_are_not_visible():
    w, h = SIZE
    z = 2.0

    def at(u, v):  # the world point that projects to pixel (u, v) at depth z
        return [(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z]

    verts = np.array([at(10, 10), at(-0.6, 10), at(-0.4, 10), at(w - 0.6, 10),
                      at(w - 0.4, 10), at(10, h + 3), [0.0, 0.0, -2.0]])  # fmt: skip
    vis = vertex_visibility(verts, K, np.eye(4), SIZE)
    np.testing.assert_array_equal(vis.in_image, [True, False, True, True, False, False, False])
    np.testing.assert_array_equal(vis.visible, vis.in_image)
    # with lens distortion the test is where the lens puts the point in the stored image
    dist = np.array([0.4, 0.0, 0.0, 0.0, 0.0])  # pushes points outwards
    verts = np.array([at(u, v) for u in (2, 20, 50, 85, 98) for v in (1, 40, 78)])
    vis = vertex_visibility(verts, K, np.eye(4), SIZE, dist_coeffs=dist)
    uv = distort_pixels(verts[:, :2] / verts[:, 2:] * 100.0 + K[:2, 2], K, dist)
    want = (uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < h - 0.5)
    assert 0 < want.sum() < len(want) - 1  # the lens moves some points out of the image
    np.testing.assert_array_equal(vis.in_image, want)


def _brute_force_mask(body_mesh, scene_mesh, Kv, w, h):
    """Per pixel: nearest body and scene hit with trimesh's plain ray tracer."""
    from trimesh.ray.ray_triangle import RayMeshIntersector

    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    pix = np.column_stack([jj.ravel(), ii.ravel(), np.ones(w * h)])
    dirs = pix @ np.linalg.inv(Kv).T
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = np.zeros_like(dirs)

    def nearest(mesh):
        d = np.full(len(dirs), np.inf)
        locs, ray, _ = RayMeshIntersector(mesh).intersects_location(origins, dirs)
        np.minimum.at(d, ray, np.linalg.norm(locs, axis=1))
        return d

    d_body, d_scene = nearest(body_mesh), nearest(scene_mesh)
    mask = np.full(w * h, MASK_BACKGROUND, np.uint8)
    hit = np.isfinite(d_body)
    mask[hit] = np.where(d_scene[hit] < d_body[hit], MASK_OCCLUDED, MASK_VISIBLE)
    return mask.reshape(h, w)


def test_person_view_matches_a_brute_force_mask():
    body = trimesh.creation.icosphere(subdivisions=2, radius=0.4)
    body.apply_translation([0.0, 0.0, 3.0])
    scene = _wall(x=(-2.0, 0.1))
    w, h = 40, 32
    Kv = np.array([[90.0, 0.0, 19.5], [0.0, 90.0, 15.5], [0.0, 0.0, 1.0]])
    view = person_view(MeshRaycaster(scene.vertices, scene.faces),
                       MeshRaycaster(body.vertices, body.faces), Kv, np.eye(4), w, h)  # fmt: skip
    ref = _brute_force_mask(body, scene, Kv, w, h)
    assert view.mask.shape == (h, w) and view.mask.dtype == np.uint8
    assert (ref == MASK_OCCLUDED).sum() > 100 and (ref == MASK_VISIBLE).sum() > 100
    assert (view.mask != ref).sum() <= 2  # silhouette pixels may flip on float rounding
    assert view.person_pixels == int((view.mask > 0).sum())
    assert view.occlusion == occlusion_ratio(view.person_pixels, view.visible_pixels)
    assert view.occlusion == 1 - (view.mask == MASK_VISIBLE).sum() / (view.mask > 0).sum()
    assert np.isnan(occlusion_ratio(0, 0))


def test_scene_hidden_share_counts_the_vertices_behind_the_scan():
    """A wall over x < 0 hides exactly the grid points left of the camera's axis; points
    beside the image or in front of the wall are not counted as hidden, and a body with no
    vertex in the image has share 0."""
    from sahmr.scene.visibility import scene_hidden_share

    wall = MeshRaycaster(_wall().vertices, _wall().faces)
    xs = np.linspace(-0.75, 0.75, 6)  # three left of the axis, three right (none on its edge)
    grid = np.array([[x, y, 3.0] for x in xs for y in (-0.3, 0.0, 0.3)])
    # brute force: a point is hidden when its x < 0 (the wall spans x in [-2, 0] at z = 2)
    assert scene_hidden_share(grid, K, np.eye(4), SIZE, wall) == (xs < 0).mean()
    in_front = grid.copy()
    in_front[:, 2] = 1.5
    assert scene_hidden_share(in_front, K, np.eye(4), SIZE, wall) == 0.0
    beside = np.vstack([grid, [[50.0, 0.0, 3.0]]])  # one more point outside the image
    assert scene_hidden_share(beside, K, np.eye(4), SIZE, wall) == (xs < 0).mean()
    behind_camera = grid.copy()
    behind_camera[:, 2] = -3.0
    assert scene_hidden_share(behind_camera, K, np.eye(4), SIZE, wall) == 0.0

"""Scene views: orbit cameras aim at the body, occluders avoided, contacts coloured."""

import numpy as np
import pytest
import trimesh

from sahmr.viz.colors import REGION_COLORS
from sahmr.viz.render import look_at
from sahmr.viz.scene_views import (
    ViewCamera,
    choose_orbit_views,
    contact_spheres,
    orbit_cameras,
    region_legend,
    render_scene_views,
    up_vector,
)

RED = np.array([1.0, 0.0, 0.0])


def _room():
    """Floor 6 x 6 m at z = 0 and four 0.2 m thick, 2.5 m walls (closed boxes)."""
    parts = [trimesh.creation.box([6.0, 6.0, 0.1], trimesh.transformations.translation_matrix(
        [0, 0, -0.05]))]
    for c, size in (([3.1, 0, 1.25], [0.2, 6.4, 2.5]), ([-3.1, 0, 1.25], [0.2, 6.4, 2.5]),
                    ([0, 3.1, 1.25], [6.4, 0.2, 2.5]), ([0, -3.1, 1.25], [6.4, 0.2, 2.5])):
        parts.append(trimesh.creation.box(size, trimesh.transformations.translation_matrix(c)))
    m = trimesh.util.concatenate(parts)
    return np.asarray(m.vertices), np.asarray(m.faces)


def _body():
    """A 0.4 x 0.3 x 1.7 m box standing near the +x wall: stand-in for a body."""
    b = trimesh.creation.box([0.4, 0.3, 1.7],
                             trimesh.transformations.translation_matrix([2.4, 0.0, 0.85]))
    return np.asarray(b.vertices), np.asarray(b.faces)


def test_up_vector():
    np.testing.assert_array_equal(up_vector("z"), [0, 0, 1])
    np.testing.assert_array_equal(up_vector("-y"), [0, -1, 0])


def test_orbit_cameras_aim_at_the_target():
    target = np.array([1.0, 2.0, 0.9])
    ref = np.array([5.0, 2.0, 1.0])
    cams = orbit_cameras(target, 1.5, np.array([0, 0, 1.0]), azimuths_deg=[0, 90],
                         elevations_deg=[30, 60], reference_world=ref, size=(200, 100))
    for cam, el in zip(cams, (30, 60)):
        p = cam.T_w2c[:3, :3] @ target + cam.T_w2c[:3, 3]
        uv = (cam.K @ (p / p[2]))[:2]
        np.testing.assert_allclose(uv, cam.K[:2, 2], atol=1e-6)
        d = cam.center_world - target
        assert np.degrees(np.arcsin(d[2] / np.linalg.norm(d))) == pytest.approx(el)
        assert 0 < cam.near < np.linalg.norm(d) - 1.5 + 1e-6
        assert cam.cull_back_faces and (cam.width, cam.height) == (200, 100)
    assert cams[0].center_world[0] > target[0]  # azimuth 0 faces the reference point


def test_contact_spheres():
    assert contact_spheres(np.zeros((0, 3)), np.zeros(0)) is None
    m = contact_spheres(np.array([[0, 0, 0], [1, 0, 0.0]]), np.array([1, 5]), radius=0.05)
    assert len(m.faces) == 2 * 80 and len(m.vertices) == 2 * 42
    np.testing.assert_array_equal(m.face_colors[0], REGION_COLORS[1])
    np.testing.assert_array_equal(m.face_colors[-1], REGION_COLORS[5])
    assert np.linalg.norm(m.vertices[:42], axis=1).max() == pytest.approx(0.05)


def test_view_choice_avoids_occluders():
    room = _room()
    bv, _ = _body()
    target = bv.mean(0)
    # Candidate 0 looks at the body through the +x wall from outside, candidate 1 from inside.
    cams = [ViewCamera(np.eye(3), look_at(e, target, np.array([0, 0, 1.0])), 10, 10,
                       near=0.3, cull_back_faces=True)
            for e in (np.array([5.0, 0.0, 1.0]), np.array([-1.0, 0.5, 1.5]))]
    chosen = choose_orbit_views(room, bv, cams, 1)
    assert chosen[0] is cams[1]
    assert choose_orbit_views(None, bv, cams, 1)[0] is cams[0]


def _tiles(img, n, size):
    W, H = size
    return [img[4:4 + H, 4 + k * (W + 4): 4 + k * (W + 4) + W] for k in range(n)]


def test_scene_views_show_the_body_and_contacts():
    room = _room()
    bv, bf = _body()
    size = (120, 90)
    cam_T = look_at(np.array([-2.5, -2.5, 1.6]), bv.mean(0), np.array([0, 0, 1.0]))
    K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
    contacts = np.array([[2.3, 0.0, 0.0], [2.5, 0.05, 0.0]])
    img = render_scene_views(
        scene_mesh=room, body_vertices=bv, body_faces=bf, contact_points=contacts,
        contact_labels=np.array([1, 2]), body_vertex_colors=np.tile(RED, (len(bv), 1)),
        input_camera=ViewCamera(K, cam_T, 320, 240), num_orbit_views=2, size=size,
    )
    assert img.dtype == np.uint8 and img.shape == (4 + 90 + 4 + 22, 4 + 3 * 124, 3)
    for tile in _tiles(img, 3, size):
        red = (tile[..., 0] > 120) & (tile[..., 1] < 40) & (tile[..., 2] < 40)
        assert red.sum() > 20  # the body is seen in every view, walls notwithstanding
    legend = img[-22:]
    blue = np.all(np.abs(legend.astype(int) - (REGION_COLORS[1] * 255).astype(int)) < 3, -1)
    assert blue.sum() > 50  # "left foot" swatch
    # the input camera kept only to turn the orbit views: the same two orbit views, alone
    orbits = render_scene_views(
        scene_mesh=room, body_vertices=bv, body_faces=bf, contact_points=contacts,
        contact_labels=np.array([1, 2]), body_vertex_colors=np.tile(RED, (len(bv), 1)),
        input_camera=ViewCamera(K, cam_T, 320, 240), num_orbit_views=2, size=size,
        show_input_camera=False,
    )
    assert orbits.shape == (4 + 90 + 4 + 22, 4 + 2 * 124, 3)
    for got, want in zip(_tiles(orbits, 2, size), _tiles(img, 3, size)[1:], strict=True):
        np.testing.assert_array_equal(got, want)


def test_point_cloud_scan_views():
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-2, 2, (4000, 2)), np.zeros(4000)]
    bv, bf = _body()
    bv = bv - [2.4, 0, 0]
    img = render_scene_views(scene_mesh=None, body_vertices=bv, body_faces=bf,
                             scene_points=pts, scene_point_normals=np.tile([0, 0, 1.0],
                                                                           (4000, 1)),
                             num_orbit_views=2, size=(100, 80), legend=False)
    assert img.shape == (88, 212, 3)
    for tile in _tiles(img, 2, (100, 80)):
        assert (tile.astype(int).sum(-1) < 700).mean() > 0.2  # floor points and the body


def test_region_legend():
    assert region_legend([], 200).shape == (22, 200, 3)
    leg = region_legend([0, 3, 3, 6], 300)
    for lab in (3, 6):
        c = (REGION_COLORS[lab] * 255 + 0.5).astype(int)
        assert np.all(np.abs(leg.astype(int) - c) < 2, -1).sum() > 50


def test_near_scan_points_are_drawn_large_enough_to_close_the_surface():
    """A wall of points 2 cm apart, 1 m in front of a camera of focal 300 px (6 px apart in
    the image, +-150 px wide): 3 x 3 splats leave much of it background; splats grown by the
    points' spacing close it."""
    from sahmr.viz.scene_views import render_scene_view

    g = np.arange(-0.5, 0.5, 0.02)
    wall = np.c_[np.repeat(g, len(g)), np.tile(g, len(g)), np.full(len(g) ** 2, 1.0)]
    cam = ViewCamera(np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]]), np.eye(4), 320, 240)
    bv, bf = _body()
    normals = np.tile([0, 0, -1.0], (len(wall), 1))  # facing the camera

    def background(spacing):
        img = render_scene_view(cam, scene_mesh=None, body_vertices=bv + np.array([0, 0, 50.0]),
                                body_faces=bf, scene_points=wall, scene_point_normals=normals,
                                scene_point_spacing_m=spacing)  # the body far behind the wall
        assert img.shape == (240, 320, 3)
        return (img[20:220, 30:290].astype(int).sum(-1) == 765).mean()  # inside the wall

    assert background(None) > 0.3
    assert background(0.02) < 0.01

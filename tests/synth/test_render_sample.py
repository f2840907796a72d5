"""Crop rendering: agrees with the full frame and with sahmr.viz.render; occlusion ratio."""

import numpy as np
import trimesh
from synth_helpers import floor_mesh, plain_appearance, standing_vertices

from sahmr.synth.cameras import Camera, CameraRanges, person_bbox
from sahmr.synth.render_sample import (
    MASK_OCCLUDED,
    MASK_VISIBLE,
    BodyRaycaster,
    RoomRaycaster,
    crop_intrinsics,
    render_sample,
    render_view,
)
from sahmr.viz.render import MeshToRender, intrinsics_from_fov, look_at, render


def _scene(extra=None):
    verts, faces = standing_vertices()
    room_mesh = floor_mesh(extra)
    room = RoomRaycaster(room_mesh.vertices, room_mesh.faces)
    body = BodyRaycaster(verts, faces)
    look = plain_appearance(len(faces), len(room_mesh.faces))
    return verts, faces, room_mesh, room, body, look


def _camera(eye=(0.3, -4.0, 1.2)):
    K = intrinsics_from_fov(640, 480, 60.0)
    return Camera(K, look_at(np.array(eye), np.array([0.0, 0.0, 0.9]), [0, 0, 1]), 640, 480)


def test_crop_render_equals_crop_of_full_frame():
    verts, _, _, room, body, look = _scene()
    cam = _camera()
    full = render_view(room, body, look, cam.K, cam.T_w2c, cam.width, cam.height)
    # A square box of side 224 / 1.2 centred half-way between pixels (OpenCV centres are
    # integers) makes the 224 x 224 crop an exact window of the full frame:
    # crop pixel (i, j) = full pixel (ky - 111 + i, kx - 111 + j) (sahmr.geometry.crops).
    box = person_bbox(cam, verts)
    kx, ky = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
    half = 112 / 1.2
    bbox = np.array([kx + 0.5 - half, ky + 0.5 - half, kx + 0.5 + half, ky + 0.5 + half])
    Kc = crop_intrinsics(cam.K, bbox, 224)
    crop = render_view(room, body, look, Kc, cam.T_w2c, 224, 224)
    win = (slice(ky - 111, ky + 113), slice(kx - 111, kx + 113))
    diff = np.abs(crop.rgb.astype(int) - full.rgb[win].astype(int))
    assert np.mean(diff.max(-1) > 2) < 0.002  # edge pixels may flip on float rounding
    assert np.mean(crop.mask != full.mask[win]) < 0.002
    fin = np.isfinite(crop.depth) & np.isfinite(full.depth[win])
    np.testing.assert_allclose(crop.depth[fin], full.depth[win][fin], atol=1e-4)
    assert crop.person_pixels > 1000


def test_fast_renderer_matches_viz_render():
    verts, faces, room_mesh, room, body, look = _scene()
    cam = _camera()
    mine = render_view(room, body, look, cam.K, cam.T_w2c, 160, 120)
    # Both put pixel centres at integer coordinates (OpenCV).
    K_ref = cam.K.copy()
    ref = render(
        [MeshToRender(room_mesh.vertices, room_mesh.faces, face_colors=look.room_face_colors),
         MeshToRender(verts, faces, face_colors=look.body_face_colors)],
        K_ref, cam.T_w2c, 160, 120, background=tuple(look.background), ambient=look.ambient,
        light_dir_world=look.light_dir_world,
    )  # fmt: skip
    same = (mine.mask == MASK_VISIBLE) == (ref.instance == 1)
    assert same.mean() > 0.998
    fin = np.isfinite(ref.depth)
    assert np.array_equal(fin, np.isfinite(mine.depth))
    np.testing.assert_allclose(mine.depth[fin], ref.depth[fin], atol=1e-4)
    assert np.mean(np.abs(mine.rgb.astype(int) - ref.rgb.astype(int)).max(-1) > 2) < 0.002


def test_occlusion_zero_when_clear_and_positive_behind_a_box():
    ranges = CameraRanges()
    verts, _, _, room, body, look = _scene()
    cam = _camera(eye=(0.0, -4.0, 1.2))
    clear, reason = render_sample(room, body, verts, look, cam, ranges, full_frame_scale=0.25)
    assert clear is not None, reason
    assert clear.occlusion == 0.0
    assert clear.crop.rgb.shape == (224, 224, 3)
    assert clear.image.shape == (120, 160, 3)
    box = person_bbox(cam, verts)
    assert 0 <= box[0] < box[2] <= 640 and 0 <= box[1] < box[3] <= 480
    # a 1 m high box half-way between camera and person hides the legs
    wall = trimesh.creation.box(extents=(1.5, 0.2, 1.0))
    wall.apply_translation((0.0, -2.0, 0.5))
    verts, _, _, room2, body2, look2 = _scene([wall])
    occ, reason = render_sample(room2, body2, verts, look2, cam, ranges)
    assert occ is not None, reason
    assert 0.1 < occ.occlusion < 0.6
    assert np.any(occ.crop.mask == MASK_OCCLUDED)
    total = occ.crop.person_pixels
    assert total == clear.crop.person_pixels  # the person alone does not depend on the box
    assert occ.occlusion == 1 - np.sum(occ.crop.mask == MASK_VISIBLE) / total
    # more than max_occlusion hidden -> rejected
    tall = trimesh.creation.box(extents=(1.5, 0.2, 3.0))
    tall.apply_translation((0.0, -2.0, 1.5))
    verts, _, _, room3, body3, look3 = _scene([tall])
    rej, reason = render_sample(room3, body3, verts, look3, cam, ranges)
    assert rej is None and reason == "occlusion"

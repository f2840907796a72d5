"""Synthetic occluders: placement constraints, rendering as if part of the scene, labels."""

import numpy as np
import pytest
import trimesh
from synth_helpers import floor_mesh, plain_appearance, standing_vertices

from sahmr.synth.bundled import load_bundled_room
from sahmr.synth.cameras import Camera, CameraRanges, person_bbox
from sahmr.synth.occluders import OCCLUDER_KINDS, Occluder, OccluderRanges, sample_occluder
from sahmr.synth.render_sample import (
    MASK_OCCLUDED,
    MASK_VISIBLE,
    BodyRaycaster,
    RoomRaycaster,
    render_sample,
    render_view,
)
from sahmr.viz.render import intrinsics_from_fov, look_at


def _camera(eye=(0.0, -4.0, 1.2), size=(640, 480)):
    K = intrinsics_from_fov(size[0], size[1], 60.0)
    T = look_at(np.array(eye, dtype=np.float64), np.array([0.0, 0.0, 0.9]), [0, 0, 1])
    return Camera(K, T, size[0], size[1])


def _pole(x: float, y: float, radius: float = 0.15, height: float = 2.0) -> Occluder:
    mesh = trimesh.creation.cylinder(radius=radius, height=height, sections=16)
    v = mesh.vertices + np.array([x, y, height / 2.0])
    return Occluder("cylinder", v, np.asarray(mesh.faces), np.array([0.2, 0.7, 0.2]), 0.0)


def test_occluder_layer_renders_like_scene_geometry():
    """Slow reference: the occluder baked into the room mesh, rendered by the plain path."""
    verts, faces = standing_vertices()
    occ = _pole(0.1, -2.0)
    floor = floor_mesh()
    baked = floor_mesh([trimesh.Trimesh(occ.vertices_world, occ.faces, process=False)])
    look = plain_appearance(len(faces), len(baked.faces))
    look.room_face_colors[len(floor.faces) :] = occ.color  # the pole's faces, pole colour
    cam = _camera().scaled(0.25)  # 160 x 120
    body = BodyRaycaster(verts, faces)
    ref = render_view(
        RoomRaycaster(baked.vertices, baked.faces), body, look, cam.K, cam.T_w2c, 160, 120
    )
    look_floor = plain_appearance(len(faces), len(floor.faces))
    mine = render_view(
        RoomRaycaster(floor.vertices, floor.faces),
        body,
        look_floor,
        cam.K,
        cam.T_w2c,
        160,
        120,
        occ,
    )
    np.testing.assert_array_equal(mine.mask, ref.mask)
    assert mine.person_pixels == ref.person_pixels and mine.visible_pixels == ref.visible_pixels
    fin = np.isfinite(ref.depth)
    assert np.array_equal(fin, np.isfinite(mine.depth))
    np.testing.assert_allclose(mine.depth[fin], ref.depth[fin], atol=1e-4)
    assert np.mean(np.abs(mine.rgb.astype(int) - ref.rgb.astype(int)).max(-1) > 2) < 0.002
    assert (mine.mask == MASK_OCCLUDED).sum() > 50  # the pole hides part of the body


def test_occluded_sample_mask_and_ratio_reflect_the_occluder():
    verts, faces = standing_vertices()
    floor = floor_mesh()
    room = RoomRaycaster(floor.vertices, floor.faces)
    body = BodyRaycaster(verts, faces)
    look = plain_appearance(len(faces), len(floor.faces))
    cam, ranges = _camera(), CameraRanges()
    clear, _ = render_sample(room, body, verts, look, cam, ranges, crop_size=96)
    occ = _pole(0.12, -2.0, radius=0.05)
    hidden, reason = render_sample(room, body, verts, look, cam, ranges, crop_size=96, occluder=occ)
    assert reason == "" and hidden.occluder is occ
    assert clear.occlusion == pytest.approx(0.0, abs=1e-9)
    # the ratio is exactly the share of person pixels the mask marks hidden
    person = np.isin(hidden.crop.mask, (MASK_VISIBLE, MASK_OCCLUDED))
    share = (hidden.crop.mask == MASK_OCCLUDED).sum() / person.sum()
    assert hidden.occlusion == pytest.approx(share) and 0.05 < hidden.occlusion < 0.6
    np.testing.assert_array_equal(person, clear.crop.mask == MASK_VISIBLE)  # same silhouette
    # the hidden pixels are those where the pole lies in front of the body (crop camera rays)
    from sahmr.geometry.raycast import MeshRaycaster, pixel_rays

    origin, dirs = pixel_rays(hidden.K_crop, cam.T_w2c, 96, 96)
    _, d_pole = MeshRaycaster(occ.vertices_world, occ.faces).cast(origin, dirs)
    _, d_body = body.cast(origin, dirs)
    expect = (np.isfinite(d_body) & (d_pole < d_body)).reshape(96, 96)
    np.testing.assert_array_equal(hidden.crop.mask == MASK_OCCLUDED, expect)
    assert OCCLUDER_KINDS[occ.code] == "cylinder"


def test_sampled_occluders_stand_between_camera_and_person_and_clear_everything():
    room = load_bundled_room("gym")
    verts0, _ = standing_vertices()
    cells = room.free_space.cell_centers()[room.free_space.walkable]
    xy = cells[np.argmin(np.linalg.norm(cells, axis=1))]
    verts = verts0 + np.array([xy[0], xy[1], 0.0])
    pelvis = np.array([xy[0], xy[1], 0.95])
    ranges = OccluderRanges()
    rng = np.random.default_rng(0)
    made = {"box": 0, "cylinder": 0}
    for k in range(40):
        a = 2 * np.pi * k / 40
        eye = (xy[0] + 3.5 * np.cos(a), xy[1] + 3.5 * np.sin(a), 1.0 + (k % 3) * 0.6)
        K = intrinsics_from_fov(640, 480, 60.0)
        cam = Camera(K, look_at(np.array(eye), pelvis, [0, 0, 1]), 640, 480)
        box = person_bbox(cam, verts)
        occ = sample_occluder(rng, room, cam, verts, pelvis, box, ranges)
        if occ is None:
            continue
        made[occ.kind] += 1
        v = occ.vertices_world
        assert v[:, 2].min() == pytest.approx(0.0, abs=1e-9)  # stands on the floor
        assert ranges.coverage[0] <= occ.coverage <= ranges.coverage[1]
        centre = v[:, :2].mean(axis=0)
        to_person = np.linalg.norm(pelvis[:2] - np.array(eye[:2]))
        along = np.dot(centre - np.array(eye[:2]), pelvis[:2] - np.array(eye[:2])) / to_person
        assert 0.0 < along < to_person  # between camera and person
        # clearance from the body (slow reference: exact distance to the occluder mesh)
        mesh = trimesh.Trimesh(v, occ.faces, process=False)
        _, dist, _ = trimesh.proximity.closest_point(mesh, verts[::7])
        assert dist.min() >= ranges.clearance - 1e-6
        assert not mesh.contains(np.array([eye]))[0]
        for obj in room.furniture:  # clear of furniture boxes
            lo, hi = v.min(axis=0), v.max(axis=0)
            assert not (np.all(hi > obj.bbox_min) and np.all(lo < obj.bbox_max))
    assert made["box"] >= 5 and made["cylinder"] >= 5


def test_occluder_ranges_reject_bad_values():
    with pytest.raises(ValueError, match="kinds"):
        OccluderRanges(kinds={"sphere": 1.0})
    with pytest.raises(ValueError, match="fraction"):
        OccluderRanges(fraction=2.0)

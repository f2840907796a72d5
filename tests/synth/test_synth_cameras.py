"""Camera sampling: intrinsics ranges, positions inside the room and outside furniture."""

import numpy as np
import pytest
from synth_helpers import standing_vertices

from sahmr.synth.bundled import load_bundled_room
from sahmr.synth.cameras import (
    Camera,
    CameraRanges,
    camera_position_ok,
    person_bbox,
    person_bbox_ok,
    sample_camera,
)


@pytest.fixture(scope="module")
def room():
    return load_bundled_room("living_room")


def test_camera_constraints_hold_over_many_samples(room):
    ranges = CameraRanges()
    rng = np.random.default_rng(0)
    walkable = room.free_space.cell_centers()[room.free_space.walkable]
    made = 0
    for _ in range(300):
        xy = walkable[rng.integers(len(walkable))]
        target = np.array([xy[0], xy[1], 0.95])
        cam = sample_camera(rng, room, target, ranges)
        if cam is None:
            continue
        made += 1
        w, h = cam.width, cam.height
        assert (w, h) in [tuple(s) for s in ranges.image_sizes]
        fov = np.rad2deg(2 * np.arctan(0.5 * w / cam.K[0, 0]))
        assert 50.0 - 1e-6 <= fov <= 90.0 + 1e-6
        assert abs(cam.K[0, 2] - w / 2) < 0.06 * w and abs(cam.K[1, 2] - h / 2) < 0.06 * h
        c = cam.center_world
        assert 0.5 <= c[2] <= 2.5
        assert 1.5 - 1e-6 <= np.linalg.norm(c[:2] - target[:2]) <= 8.0 + 1e-6
        assert camera_position_ok(room, c, ranges)
        for obj in room.furniture:
            assert not (np.all(c > obj.bbox_min) and np.all(c < obj.bbox_max))
        fs = room.free_space
        hi = fs.origin + np.array(fs.grid.shape[::-1]) * fs.cell_size
        assert np.all(c[:2] > fs.origin) and np.all(c[:2] < hi)
        # aimed near the person: the target projects inside the image, in front
        p = cam.T_w2c[:3, :3] @ target + cam.T_w2c[:3, 3]
        assert p[2] > 0
        uv = cam.K[:2, :2] @ (p[:2] / p[2]) + cam.K[:2, 2]
        assert 0 <= uv[0] <= w and 0 <= uv[1] <= h
        R = cam.T_w2c[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert made > 200


def test_bbox_inside_frame_check():
    verts, _ = standing_vertices()
    from sahmr.viz.render import intrinsics_from_fov, look_at

    K = intrinsics_from_fov(640, 480, 60.0)
    near = Camera(K, look_at([0, -1.0, 1.0], [0, 0, 1.0], [0, 0, 1]), 640, 480)
    far = Camera(K, look_at([0, -5.0, 1.0], [0, 0, 1.0], [0, 0, 1]), 640, 480)
    ranges = CameraRanges()
    assert not person_bbox_ok(near, person_bbox(near, verts), ranges)  # cut by the frame
    box = person_bbox(far, verts)
    assert person_bbox_ok(far, box, ranges)
    assert 0 <= box[0] < box[2] <= 640 and 0 <= box[1] < box[3] <= 480
    scaled = far.scaled(0.5)
    assert (scaled.width, scaled.height) == (320, 240)
    np.testing.assert_allclose(person_bbox(scaled, verts), box * 0.5, atol=1e-6)

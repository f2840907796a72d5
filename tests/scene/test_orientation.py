"""Scan orientation: downward rays meet up-facing surfaces in a room-facing scan, down-facing in
a flipped one; the vectorised ray casting matches a slow per-ray loop."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from sahmr.scene.orientation import (
    UnorientedScanError,
    check_scan_orientation,
    scan_orientation,
    up_vector,
)
from sahmr.synth.bundled import bundled_scene_dir


def _open_room() -> trimesh.Trimesh:
    """A 4 x 3 m open room (z up): floor and walls facing in, plus a closed box seat."""
    parts = []
    floor = trimesh.Trimesh([[0, 0, 0], [4, 0, 0], [4, 3, 0], [0, 3, 0]], [[0, 1, 2], [0, 2, 3]])
    parts.append(floor)  # normal +z
    for x, flip in ((0.0, False), (4.0, True)):  # walls x = 0 / 4, normals into the room
        wall = trimesh.Trimesh([[x, 0, 0], [x, 3, 0], [x, 3, 2.5], [x, 0, 2.5]],
                               [[0, 1, 2], [0, 2, 3]])  # fmt: skip
        if flip:
            wall.invert()
        parts.append(wall)
    seat = trimesh.creation.box([0.5, 0.5, 0.45])
    seat.apply_translation([1.0, 1.0, 0.225])
    parts.append(seat)
    return trimesh.util.concatenate(parts)


def _flipped(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    out = mesh.copy()
    out.invert()
    return out


def test_open_room_faces_the_room_and_its_flip_does_not():
    room = _open_room()
    votes = scan_orientation(room.vertices, room.faces, up_vector("z"))
    assert votes.judged and votes.up_fraction == 1.0 and votes.faces_room
    flipped = _flipped(room)
    votes = scan_orientation(flipped.vertices, flipped.faces, up_vector("z"))
    assert votes.judged and votes.up_fraction == 0.0 and not votes.faces_room


def test_closed_slab_floor_counts_its_top_face():
    slab = trimesh.creation.box([5.0, 4.0, 0.2])  # watertight floor slab, outward normals
    slab.apply_translation([0, 0, -0.1])
    wall = trimesh.creation.box([0.2, 4.0, 2.5])
    wall.apply_translation([2.4, 0, 1.25])
    room = trimesh.util.concatenate([slab, wall])
    assert scan_orientation(room.vertices, room.faces, up_vector("z")).faces_room
    flipped = _flipped(room)
    assert not scan_orientation(flipped.vertices, flipped.faces, up_vector("z")).faces_room


@pytest.mark.parametrize("up_axis", ["x", "y", "-y", "-z"])
def test_other_up_axes(up_axis):
    room = _open_room()
    target = up_vector(up_axis)
    R = trimesh.geometry.align_vectors([0, 0, 1], target)  # z-up room -> up_axis-up room
    room.apply_transform(R)
    assert scan_orientation(room.vertices, room.faces, target).up_fraction == 1.0
    flipped = _flipped(room)
    assert scan_orientation(flipped.vertices, flipped.faces, target).up_fraction == 0.0


def test_walls_only_are_not_judged():
    room = _open_room()
    walls = trimesh.Trimesh(room.vertices, room.faces[2:6])  # the two walls
    votes = scan_orientation(walls.vertices, walls.faces, up_vector("z"))
    assert not votes.judged and votes.faces_room


@pytest.mark.parametrize("name", ["living_room", "office", "outdoor_platform"])
def test_bundled_scenes_face_the_room(name):
    mesh = trimesh.load(bundled_scene_dir(name) / "mesh.ply", process=False)
    assert check_scan_orientation(mesh.vertices, mesh.faces, "z", "mesh.ply").up_fraction > 0.99
    flipped = _flipped(mesh)
    with pytest.raises(UnorientedScanError) as info:
        check_scan_orientation(flipped.vertices, flipped.faces, "z", f"{name}/mesh.ply")
    message = str(info.value)
    assert message.startswith(f"{name}/mesh.ply: ") and "face down" in message
    assert "\n" not in message


def _slow_first_hits(vertices, faces, up, grid_side):
    """Per ray: loop over all faces, keep the highest crossing below mid-height."""
    from sahmr.scene.orientation import _frame

    R = _frame(up)
    local = vertices @ R.T
    start = 0.5 * (local[:, 2].min() + local[:, 2].max())
    lo, hi = local[:, :2].min(0), local[:, :2].max(0)
    step = (hi - lo) / grid_side
    ups = []
    for i in range(grid_side):
        for j in range(grid_side):
            p = lo + (np.array([i, j]) + 0.5) * step
            best, best_up = -np.inf, None
            for f in faces:
                a, b, c = local[f]
                m = np.array([[b[0] - a[0], c[0] - a[0]], [b[1] - a[1], c[1] - a[1]]])
                det = np.linalg.det(m)
                if abs(det) <= 1e-12:
                    continue
                u, v = np.linalg.solve(m, p - a[:2])
                if u < 0 or v < 0 or u + v > 1:
                    continue
                z = a[2] + u * (b[2] - a[2]) + v * (c[2] - a[2])
                if z < start and z > best:
                    best, best_up = z, det > 0
            if best_up is not None:
                ups.append(best_up)
    return len(ups), (float(np.mean(ups)) if ups else float("nan"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_rays_match_a_slow_loop(seed):
    rng = np.random.default_rng(seed)
    centres = rng.uniform([0, 0, 0], [3, 2, 2], size=(40, 3))
    vertices = (centres[:, None, :] + rng.normal(scale=0.4, size=(40, 3, 3))).reshape(-1, 3)
    faces = np.arange(120).reshape(40, 3)
    for up_axis in ("z", "y"):
        up = up_vector(up_axis)
        fast = scan_orientation(vertices, faces, up, grid_side=10)
        hits, share = _slow_first_hits(vertices, faces, up, 10)
        assert fast.hits == hits and fast.rays == 100
        assert fast.up_fraction == pytest.approx(share)


def _quad(x0, x1, y0, y1, z, facing_camera: bool) -> trimesh.Trimesh:
    quad = trimesh.Trimesh([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]],
                           [[0, 1, 2], [0, 2, 3]])  # fmt: skip  normal +z: away from a camera at 0
    if facing_camera:
        quad.invert()
    return quad


def test_camera_vote_counts_only_what_the_camera_sees():
    """Left half: a near quad facing the camera hides a far one facing away; right half: a
    quad facing away. Seen: half facing, half not (by image area)."""
    from sahmr.scene.orientation import camera_facing_fraction

    scene = trimesh.util.concatenate([
        _quad(-2, 0, -2, 2, 2.0, True),       # u in [0, 100): left half, near
        _quad(-2.5, 0, -2.5, 2.5, 5.0, False),  # behind it: hidden
        _quad(0, 4, -4, 4, 4.0, False),        # u in [100, 200): right half
    ])  # fmt: skip
    K = np.array([[100.0, 0, 100], [0, 100.0, 100], [0, 0, 1]])
    share, cells = camera_facing_fraction(scene.vertices, scene.faces, K, np.eye(4), (200, 200))
    assert cells == 80 * 60 and share == pytest.approx(0.5, abs=0.02)
    moved = np.eye(4)
    moved[2, 3] = -10.0  # everything 10 m behind the camera: nothing seen
    assert camera_facing_fraction(scene.vertices, scene.faces, K, moved, (200, 200))[1] == 0


def test_camera_vote_on_a_solid_box_and_a_room():
    from sahmr.inference.camera_io import load_camera
    from sahmr.scene.orientation import camera_facing_fraction, check_scan_faces_camera

    box = trimesh.creation.box([1.0, 1.0, 1.0])  # a solid object seen from outside
    box.apply_translation([-1.0, 0.0, 3.0])
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    assert camera_facing_fraction(box.vertices, box.faces, K, np.eye(4), (640, 480))[0] == 1.0
    flipped = _flipped(box)
    assert camera_facing_fraction(flipped.vertices, flipped.faces, K, np.eye(4),
                                  (640, 480))[0] == 0.0  # fmt: skip
    folder = bundled_scene_dir("living_room")
    room = trimesh.load(folder / "mesh.ply", process=False)
    cam = load_camera(folder / "demo" / "stand.camera.json")
    assert check_scan_faces_camera(room.vertices, room.faces, cam.K, cam.T_w2c, (640, 480),
                                   "mesh.ply") > 0.7  # fmt: skip
    flipped = _flipped(room)
    with pytest.raises(UnorientedScanError, match="the camera sees faces away"):
        check_scan_faces_camera(flipped.vertices, flipped.faces, cam.K, cam.T_w2c, (640, 480),
                                "mesh.ply")  # fmt: skip

"""Camera checks against a hand-made room: a good camera passes, wrong ones are refused."""

from __future__ import annotations

import re

import numpy as np
import pytest

from sahmr.scene.camera_checks import (
    CENTRE_MARGIN_M,
    MAX_UP_ANGLE_DEG,
    MIN_BOX_HIT_FRACTION,
    OPEN_SCAN_CAMERA_HEIGHT_M,
    OddCameraError,
    camera_view,
    check_camera_view,
    root_placement_problem,
)

ROOM = (6.0, 4.0, 2.8)  # x, y, z extent, metres; floor at z = 0, centred on x = y = 0
SPACING = 0.02  # the demo's scan points are 2 cm apart
K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])


def _grid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack(np.meshgrid(a, b, indexing="ij"), -1).reshape(-1, 2)


def room_points(size: tuple[float, float, float] = ROOM, ceiling: bool = True) -> np.ndarray:
    """(N, 3) points every `SPACING` m on the floor, walls and (optionally) ceiling of a box
    room, world z up."""
    sx, sy, sz = size[0] / 2, size[1] / 2, size[2]
    xs = np.arange(-sx, sx + 1e-9, SPACING)
    ys = np.arange(-sy, sy + 1e-9, SPACING)
    zs = np.arange(0.0, sz + 1e-9, SPACING)
    parts = []
    for z in (0.0, sz) if ceiling else (0.0,):
        xy = _grid(xs, ys)
        parts.append(np.c_[xy, np.full(len(xy), z)])
    for x in (-sx, sx):
        yz = _grid(ys, zs)
        parts.append(np.c_[np.full(len(yz), x), yz])
    for y in (-sy, sy):
        xz = _grid(xs, zs)
        parts.append(np.c_[xz[:, 0], np.full(len(xz), y), xz[:, 1]])
    return np.concatenate(parts)


def look_at(centre, target) -> np.ndarray:
    """(4, 4) world -> camera (OpenCV: x right, y down, z forward) of a level camera at
    ``centre`` looking at ``target``, world z up."""
    centre, target = np.asarray(centre, float), np.asarray(target, float)
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z])
    T[:3, 3] = -T[:3, :3] @ centre
    return T


def inverse(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def person_box(T: np.ndarray, feet=(0.0, 1.0, 0.0), height: float = 1.7) -> np.ndarray:
    """Box of a 0.5 m wide person standing at ``feet``."""
    fx, fy, fz = feet
    corners = np.array([[fx + dx, fy, fz + dz] for dx in (-0.25, 0.25) for dz in (0.0, height)])
    cam = corners @ T[:3, :3].T + T[:3, 3]
    uv = cam[:, :2] / cam[:, 2:] @ K[:2, :2].T + K[:2, 2]
    return np.r_[uv.min(0), uv.max(0)]


CENTRE = (0.0, -1.8, 1.5)  # 0.2 m in front of the wall y = -2, looking along +y
GOOD = look_at(CENTRE, (0.0, 1.0, 1.0))
BOX = person_box(GOOD)


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    return room_points()


def test_a_good_camera_passes(points):
    view = check_camera_view(points, K, GOOD, BOX)
    assert view.ok and view.problems() == []
    assert view.centre_outside_m == 0.0
    assert view.up_angle_deg == pytest.approx(np.degrees(np.arctan2(0.5, 2.8)), abs=0.01)
    assert view.box_hit_fraction == 1.0
    # the person stands 2.8 m away; the far wall is 3.8 m away, the floor at the feet nearer
    lo, hi = view.person_depth_m
    assert lo < 2.8 < hi
    assert 3.8 < view.farthest_surface_m < 4.1  # the far wall's corners, 3.8 m along +y


def test_camera_to_world_given_is_named(points):
    """The inverse of a camera looking along +y has its centre inside the room too, but the
    scan's up axis then points down in its image."""
    wrong = inverse(GOOD)
    view = camera_view(points, K, wrong, BOX)
    assert view.centre_ok and view.up_angle_deg > 160.0
    with pytest.raises(OddCameraError, match=r"^cam.json: the extrinsics look like "
                       r"camera-to-world \(up axis points down in the image; their inverse "
                       r"passes these checks\); pass world-to-camera, or its inverse$"):
        check_camera_view(points, K, wrong, BOX, source="cam.json")


def test_camera_turned_away_from_the_person_is_refused(points):
    """Turned 180 degrees about the vertical it faces the wall 0.2 m behind it: the person
    box's rays meet no scan between 0.3 and 30 m."""
    turned = look_at(CENTRE, (0.0, -4.0, 1.0))
    view = camera_view(points, K, turned, BOX)
    assert view.centre_ok and view.up_ok and view.box_hit_fraction == 0.0
    with pytest.raises(OddCameraError, match=r"cannot see the person.*person box meet the "
                                             r"scan between 0.3 and 30 m in 0% of the box"):
        check_camera_view(points, K, turned, BOX)


def test_camera_facing_a_near_wall_cannot_hold_the_person(points):
    """0.6 m from a wall filling the box: a person of that box stands 0.86 m away or more."""
    facing = look_at((2.4, 1.0, 1.5), (3.0, 1.0, 1.5))
    view = camera_view(points, K, facing, BOX)
    assert view.box_hit_fraction > MIN_BOX_HIT_FRACTION and view.farthest_surface_m < 0.7
    assert view.person_depth_m[0] == pytest.approx(0.86, abs=0.01)
    with pytest.raises(OddCameraError, match=r"fills the person box at 0\.\d m, nearer than"):
        check_camera_view(points, K, facing, BOX)


def test_camera_outside_the_room_is_refused(points):
    outside = look_at((0.0, -4.0, 1.5), (0.0, 1.0, 1.0))  # 2 m behind the wall y = -2
    view = camera_view(points, K, outside, BOX)
    assert view.centre_outside_m == pytest.approx(2.0 - CENTRE_MARGIN_M)
    with pytest.raises(OddCameraError, match=r"its centre \[0\.0, -4\.0, 1\.5\] lies 1\.5 m "
                                             r"outside the scan"):
        check_camera_view(points, K, outside, BOX)


def test_upside_down_camera_is_refused(points):
    upside = np.diag([-1.0, -1.0, 1.0, 1.0]) @ GOOD  # rolled 180 degrees about its axis
    view = camera_view(points, K, upside, BOX)
    assert view.centre_ok and view.up_angle_deg > 160.0
    with pytest.raises(OddCameraError, match=r"up axis points 1\d\d deg from image-up"):
        check_camera_view(points, K, upside, BOX)


@pytest.mark.parametrize("roll, refused", [(60.0, False), (MAX_UP_ANGLE_DEG + 5, True)])
def test_tilted_camera_up_to_the_limit_passes(points, roll, refused):
    c, s = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    rolled = np.eye(4)
    rolled[:2, :2] = [[c, -s], [s, c]]
    T = rolled @ look_at(CENTRE, (0.0, 1.0, 1.5))  # level, then rolled about the optical axis
    assert camera_view(points, K, T, None).up_angle_deg == pytest.approx(roll, abs=1e-6)
    assert camera_view(points, K, T, None).ok is not refused


def test_camera_above_an_open_scan(points):
    """Over a scan without a ceiling a camera may stand up to 3 m above the lowest point."""
    platform = room_points((6.0, 4.0, 1.0), ceiling=False)  # parapets 1 m high
    high = look_at((0.0, -1.8, 2.8), (0.0, 1.0, 1.0))
    assert camera_view(platform, K, high, None).centre_ok
    too_high = look_at((0.0, -1.8, OPEN_SCAN_CAMERA_HEIGHT_M + 1.0), (0.0, 1.0, 1.0))
    assert camera_view(platform, K, too_high, None).centre_outside_m == pytest.approx(1.0)
    assert camera_view(points, K, too_high, None).centre_outside_m == pytest.approx(0.7)


def test_a_box_that_is_not_usable_is_left_to_the_box_checks(points):
    for box in (None, np.array([10.0, 10.0, 5.0, 5.0]), np.array([np.nan, 0, 1, 1])):
        view = camera_view(points, K, GOOD, box)
        assert np.isnan(view.box_hit_fraction) and view.ok


def test_centre_outside_matches_a_plain_reference(points):
    rng = np.random.default_rng(0)
    lo, hi = points.min(0), points.max(0)
    for _ in range(50):
        c = rng.uniform(lo - 3.0, hi + 3.0)
        T = np.eye(4)
        T[:3, 3] = -c
        top = max(hi[2] + CENTRE_MARGIN_M, lo[2] + OPEN_SCAN_CAMERA_HEIGHT_M)
        want = np.linalg.norm([
            max(lo[0] - CENTRE_MARGIN_M - c[0], c[0] - hi[0] - CENTRE_MARGIN_M, 0.0),
            max(lo[1] - CENTRE_MARGIN_M - c[1], c[1] - hi[1] - CENTRE_MARGIN_M, 0.0),
            max(lo[2] - CENTRE_MARGIN_M - c[2], c[2] - top, 0.0),
        ])
        assert camera_view(points, K, T, None).centre_outside_m == pytest.approx(want)


@pytest.mark.parametrize("root, problem", [
    ((0.0, 1.0, 0.9), None),
    ((0.0, 9.0, 0.9), r"lands 7\.0 m outside the scan's bounds"),
    ((0.0, -1.9, 1.5), r"not land in front of the camera \(root \[0\.0, -1\.9, 1\.5\] at "
                       r"depth -0\.10 m"),
    ((np.nan, 1.0, 0.9), r"outside the scan's bounds \(root \[nan"),
])  # fmt: skip
def test_root_placement(points, root, problem):
    got = root_placement_problem(np.array(root), points, GOOD, 0.0)
    if problem is None:
        assert got is None
    else:
        assert got is not None and re.search(problem, got), got
    assert root_placement_problem(np.array((0.0, -1.9, 1.5)), points, None, 0.0) is None


@pytest.mark.parametrize("up_axis", ["y", "-y", "x", "-z"])
def test_a_scan_in_another_up_convention_names_its_axis(points, up_axis):
    """The same room and camera written with another axis up (a y-up glTF or OBJ export,
    ...): read as z-up, the camera is refused and the axis that passes is named; read with
    that axis, it passes."""
    R = {"y": [[1, 0, 0], [0, 0, 1], [0, -1, 0]], "-y": [[1, 0, 0], [0, 0, -1], [0, 1, 0]],
         "x": [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], "-z": [[1, 0, 0], [0, -1, 0], [0, 0, -1]]}
    M = np.eye(4)
    M[:3, :3] = np.asarray(R[up_axis], float)  # z-up world -> the other convention
    np.testing.assert_allclose(M[:3, :3] @ [0, 0, 1.0], np.eye(3)["xyz".index(up_axis[-1])]
                               * (-1 if up_axis.startswith("-") else 1))  # fmt: skip
    pts = points @ M[:3, :3].T
    cam = GOOD @ inverse(M)
    with pytest.raises(OddCameraError, match=re.escape(
            f"; with up axis {up_axis!r} it passes them (--up-axis {up_axis})")):
        check_camera_view(pts, K, cam, BOX)
    assert check_camera_view(pts, K, cam, BOX, up_axis).ok


def test_no_axis_is_named_when_none_passes(points):
    """A camera outside the room fails with every axis: no axis is suggested."""
    outside = look_at((0.0, -9.0, 1.5), (0.0, 1.0, 1.0))
    with pytest.raises(OddCameraError) as info:
        check_camera_view(points, K, outside, person_box(outside))
    assert "--up-axis" not in str(info.value)

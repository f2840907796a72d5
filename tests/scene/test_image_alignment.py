"""Image alignment against a hand-made furnished box room rendered from a known camera: the
right camera lines up best, its inverse and turned forms are refused naming the camera that
lines up, and the person box is ignored."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from sahmr.geometry.raycast import MeshRaycaster, pixel_rays
from sahmr.scene.image_alignment import (
    MARGIN,
    ImageAlignmentError,
    alignment_score,
    alternative_cameras,
    check_image_alignment,
    image_alignment,
    orientation_field,
)

K = np.array([[260.0, 0.0, 159.5], [0.0, 260.0, 119.5], [0.0, 0.0, 1.0]])
SIZE = (320, 240)
BBOX = np.array([150.0, 60.0, 200.0, 200.0])  # where the (unscanned) person stands


def _room() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 6 x 4 x 2.8 m room (floor, four walls) with three pieces of furniture placed
    asymmetrically; returns ``(vertices, faces, grey level per face)``."""
    parts = [  # (extent, centre, grey)
        ((6.0, 4.0, 0.1), (0.0, 0.0, -0.05), 0.35),  # floor
        ((6.0, 0.1, 2.8), (0.0, 2.05, 1.4), 0.8),  # walls
        ((6.0, 0.1, 2.8), (0.0, -2.05, 1.4), 0.7),
        ((0.1, 4.0, 2.8), (3.05, 0.0, 1.4), 0.9),
        ((0.1, 4.0, 2.8), (-3.05, 0.0, 1.4), 0.6),
        ((1.6, 0.8, 0.75), (1.5, 1.2, 0.375), 0.45),  # table
        ((0.5, 1.8, 2.0), (2.7, -1.0, 1.0), 0.25),  # shelf
        ((0.9, 0.9, 0.45), (-1.6, 1.3, 0.225), 0.55),  # stool
    ]
    verts, faces, grey = [], [], []
    n = 0
    for extent, centre, g in parts:
        box = trimesh.creation.box(extents=extent)
        verts.append(box.vertices + np.asarray(centre))
        faces.append(box.faces + n)
        grey.append(np.full(len(box.faces), g))
        n += len(box.vertices)
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(grey)


def _look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World -> camera (OpenCV) of a camera at ``centre`` looking at ``target``, z up."""
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ centre
    return T


@pytest.fixture(scope="module")
def scene() -> tuple[MeshRaycaster, np.ndarray, np.ndarray]:
    """The room's caster, the right camera and the photo it took (flat shading, a light from
    above and the side, a person drawn in the box)."""
    verts, faces, grey = _room()
    caster = MeshRaycaster(verts, faces)
    T = _look_at(np.array([-2.2, -1.4, 1.6]), np.array([1.5, 0.8, 0.6]))
    origin, dirs = pixel_rays(K, T, *SIZE)
    face, _ = caster.cast(origin, dirs)
    light = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    shade = 0.5 + 0.5 * np.abs(caster.normals @ light)
    value = np.where(face >= 0, grey[face] * shade[face], 0.95)
    photo = np.repeat((value.reshape(SIZE[1], SIZE[0], 1) * 255).astype(np.uint8), 3, axis=2)
    rng = np.random.default_rng(0)
    x0, y0, x1, y1 = BBOX.astype(int)
    photo[y0 + 10 : y1 - 10, x0 + 8 : x1 - 8] = rng.integers(0, 255, (y1 - y0 - 20, 1, 3))
    return caster, T, photo


def test_right_camera_scores_best(scene):
    caster, T, photo = scene
    a = image_alignment(caster, photo, K, T, BBOX)
    assert a.verdict == "ok" and a.ok
    assert a.score > 0.5
    assert set(a.alternative_scores) == {
        "inverse",
        "turned 90 deg",
        "turned 180 deg",
        "turned 270 deg",
    }
    assert all(np.isnan(s) or s < a.score - MARGIN for s in a.alternative_scores.values())
    assert a.best_alternative_score == max(
        s for s in a.alternative_scores.values() if not np.isnan(s)
    )


@pytest.mark.parametrize(
    "wrong, undone_by",
    [
        ("inverse", "inverse"),
        ("turned 90 deg", "turned 270 deg"),
        ("turned 180 deg", "turned 180 deg"),
        ("turned 270 deg", "turned 90 deg"),
    ],
)
def test_inverted_and_turned_cameras_score_worse_and_are_refused(scene, wrong, undone_by):
    caster, T, photo = scene
    right = image_alignment(caster, photo, K, T, BBOX)
    a = image_alignment(caster, photo, K, alternative_cameras(T)[wrong], BBOX)
    assert not (a.score >= right.score - MARGIN)  # nan (sees nothing) counts as worse
    assert a.verdict == "misaligned" and not a.ok
    assert a.best_alternative == undone_by
    assert a.best_alternative_score == pytest.approx(right.score, abs=1e-6)


def test_the_person_box_is_ignored(scene):
    caster, T, photo = scene
    other = photo.copy()
    x0, y0, x1, y1 = BBOX.astype(int)
    other[y0:y1, x0:x1] = np.random.default_rng(1).integers(0, 255, (y1 - y0, x1 - x0, 3))
    a = image_alignment(caster, photo, K, T, BBOX)
    b = image_alignment(caster, other, K, T, BBOX)
    assert b.score == pytest.approx(a.score, abs=1e-9)
    assert b.alternative_scores == pytest.approx(a.alternative_scores, abs=1e-9, nan_ok=True)
    # without the box, the noise drawn there counts
    assert image_alignment(caster, other, K, T, None).score < a.score - 0.01


def test_message_names_the_camera_and_the_alternative(scene):
    caster, T, photo = scene
    assert check_image_alignment(caster, photo, K, T, BBOX, source="camera cam.json").ok
    with pytest.raises(ImageAlignmentError) as exc:
        check_image_alignment(
            caster,
            photo,
            K,
            alternative_cameras(T)["turned 180 deg"],
            BBOX,
            source="camera cam.json",
        )
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(
        "camera cam.json: the scan seen from this camera does not line up "
        "with the image (edge alignment "
    )
    assert "; the camera turned 180 deg about the up axis lines up better (0." in msg
    with pytest.raises(
        ImageAlignmentError,
        match=r"; its inverse \(the extrinsics look like "
        r"camera-to-world\) lines up better",
    ):
        check_image_alignment(caster, photo, K, alternative_cameras(T)["inverse"], BBOX)


def test_a_blank_image_is_not_judged(scene):
    caster, T, _ = scene
    blank = np.full((SIZE[1], SIZE[0], 3), 128, dtype=np.uint8)
    for cam in (T, alternative_cameras(T)["turned 180 deg"]):
        a = image_alignment(caster, blank, K, cam, BBOX)
        assert a.ok and np.isnan(a.best_alternative_score) and np.isnan(a.score)


def test_alternative_cameras_keep_the_centre_and_the_up_axis():
    T = _look_at(np.array([0.5, -1.0, 1.4]), np.array([2.0, 1.0, 0.5]))
    alts = alternative_cameras(T)
    centre = -T[:3, :3].T @ T[:3, 3]
    np.testing.assert_allclose(alts["inverse"], np.linalg.inv(T), atol=1e-12)
    for name, deg in (("turned 90 deg", 90), ("turned 180 deg", 180), ("turned 270 deg", 270)):
        Ta = alts[name]
        np.testing.assert_allclose(-Ta[:3, :3].T @ Ta[:3, 3], centre, atol=1e-12)
        np.testing.assert_allclose(Ta[:3, :3] @ [0, 0, 1.0], T[:3, :3] @ [0, 0, 1.0], atol=1e-12)
        fwd, fwd_a = T[2, :2], Ta[2, :2]  # optical axis in the ground plane, turned by deg
        cross = fwd[0] * fwd_a[1] - fwd[1] * fwd_a[0]
        turn = np.degrees(np.arctan2(cross, fwd @ fwd_a)) % 360
        assert turn == pytest.approx(deg)
    back = alternative_cameras(alts["turned 90 deg"])["turned 270 deg"]
    np.testing.assert_allclose(back, T, atol=1e-12)


def _naive_score(scan, image, keep, max_shift):
    """The best over shifts of the correlation, by padding and slicing one shift at a time."""
    s, i = np.where(keep, scan, 0), np.where(keep, image, 0)
    den = np.sqrt((np.abs(s) ** 2).sum() * (np.abs(i) ** 2).sum())
    p = max_shift
    padded = np.pad(i, p)
    h, w = s.shape
    return max(
        (s * np.conj(padded[p + dy : p + dy + h, p + dx : p + dx + w])).real.sum() / den
        for dy in range(-p, p + 1)
        for dx in range(-p, p + 1)
    )


@pytest.mark.parametrize("max_shift", [0, 1, 3])
def test_alignment_score_matches_a_naive_reference(max_shift):
    rng = np.random.default_rng(2)
    a = orientation_field(rng.random((30, 40)), 2.0)
    b = orientation_field(np.roll(rng.random((30, 40)), 2, axis=1), 2.0)
    keep = np.ones((30, 40), dtype=bool)
    keep[5:12, 8:20] = False
    assert alignment_score(a, b, keep, max_shift) == pytest.approx(
        _naive_score(a, b, keep, max_shift), abs=1e-12
    )
    assert alignment_score(a, a, keep) == pytest.approx(1.0)
    assert np.isnan(alignment_score(a, np.zeros_like(a), keep))

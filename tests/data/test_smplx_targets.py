"""sahmr.data.smplx_targets helpers against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from sahmr.data.smplx_targets import (
    ScanPoints,
    contact_targets,
    distance_contact,
    project_bbox,
    scan_distance,
)
from sahmr.scene.contact import CONTACT_THRESHOLD_M


def test_scan_distance_matches_brute_force_and_the_exact_mesh() -> None:
    rng = np.random.default_rng(0)
    mesh = trimesh.creation.box(extents=[2.0, 2.0, 0.2])
    pts = trimesh.sample.sample_surface(mesh, 20000, seed=1)[0]  # ~2 cm apart
    verts = rng.uniform(-1.2, 1.2, size=(50, 3))
    verts[:10, :2] = rng.uniform(-0.9, 0.9, size=(10, 2))
    verts[:10, 2] = 0.1 + rng.uniform(0.0, 0.05, 10)  # just above the top face
    dist, closest = scan_distance(verts, pts)
    brute = np.linalg.norm(verts[:, None] - pts[None], axis=2)
    np.testing.assert_allclose(dist, brute.min(1))
    np.testing.assert_allclose(closest, pts[brute.argmin(1)])
    exact, closest_m = scan_distance(verts, pts, mesh)
    near = brute.min(1) < CONTACT_THRESHOLD_M + 0.02
    assert near[:10].all()
    np.testing.assert_allclose(exact[:10], verts[:10, 2] - 0.1, atol=1e-9)  # to the top face
    np.testing.assert_allclose(closest_m[:10, 2], 0.1, atol=1e-9)
    np.testing.assert_allclose(exact[~near], dist[~near])  # far ones keep the point distance


def test_distance_contact_rule_and_contact_targets() -> None:
    d = np.array([0.0, 0.069, 0.071, 0.01, 0.5])
    regions = np.array([1, 2, 3, 0, 5])
    labels = distance_contact(d, regions)
    np.testing.assert_array_equal(labels, [1, 2, 0, 0, 0])  # < 7 cm and in a region
    closest = np.arange(15, dtype=float).reshape(5, 3)
    vc, pts, reg = contact_targets(labels, closest)
    np.testing.assert_array_equal(vc, labels)
    np.testing.assert_array_equal(pts, closest[:2])
    np.testing.assert_array_equal(reg, [1, 2])


def test_project_bbox_by_hand() -> None:
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    verts = np.array([[0.0, 0.0, 2.0], [0.2, -0.1, 2.0], [-0.1, 0.3, 1.0]])
    box = project_bbox(verts, K, np.eye(4), (100, 80))
    # u = 100 x / z + 50: 50, 60, 40; v = 100 y / z + 40: 40, 35, 70
    np.testing.assert_allclose(box, [40, 35, 60, 70])
    assert project_bbox(-verts, K, np.eye(4), (100, 80)) is None  # behind the camera


def test_scan_points_are_cached(tmp_path) -> None:
    calls = []

    def mesh_fn(scene):
        calls.append(scene)
        return trimesh.creation.box(extents=[1.0, 1.0, 1.0])

    sp = ScanPoints(mesh_fn, ["a"], tmp_path)
    pts = sp["a"]
    assert pts.dtype == np.float32 and len(pts) > 1000 and (tmp_path / "a_points.npz").is_file()
    again = ScanPoints(mesh_fn, ["a"], tmp_path)["a"]  # from the file, no new mesh read
    np.testing.assert_array_equal(pts, again)
    assert calls == ["a"] and list(sp) == ["a"] and len(sp) == 1
    with pytest.raises(KeyError):
        sp["b"]

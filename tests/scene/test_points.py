"""The one scene-point sampler (sahmr.scene.points) against the samplers it replaced."""

from __future__ import annotations

import numpy as np
import trimesh

from sahmr.scene.io import SceneMesh
from sahmr.scene.points import (
    SCENE_VOXEL_SIZE_M,
    ScenePoints,
    sample_scene_points,
    voxel_downsample,
)


def _room() -> trimesh.Trimesh:
    box = trimesh.creation.box(extents=(3.0, 2.5, 2.4))
    table = trimesh.creation.box(extents=(1.0, 0.6, 0.05))
    table.apply_translation((0.4, 0.2, -0.4))
    return trimesh.util.concatenate([box, table])


def _generator_sampler(mesh: trimesh.Trimesh, spacing: float, seed: int = 0) -> np.ndarray:
    """The generator's former sampler (sahmr.synth.generate.sample_scene_points), verbatim."""
    count = int(min(4e6, max(1000, 2.0 * mesh.area / spacing**2)))
    pts, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    cells = np.floor(pts / spacing).astype(np.int64)
    cells -= cells.min(axis=0)
    dims = cells.max(axis=0) + 1
    keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    _, first = np.unique(keys, return_index=True)
    return pts[np.sort(first)].astype(np.float32)


def _demo_point_cloud_sampler(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """The demo's former point-cloud path (inference pipeline without open3d), verbatim."""
    cells = np.floor(points / voxel_size).astype(np.int64)
    _, first = np.unique(cells, axis=0, return_index=True)
    return points[np.sort(first)]


def test_mesh_points_identical_to_the_generators():
    mesh = _room()
    for spacing, seed in ((SCENE_VOXEL_SIZE_M, 0), (0.05, 3)):
        np.testing.assert_array_equal(
            sample_scene_points(mesh, spacing, seed=seed), _generator_sampler(mesh, spacing, seed)
        )


def test_demo_and_training_get_the_same_points():
    mesh = _room()
    scene = SceneMesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces), up_axis="z")
    demo = voxel_downsample(scene, 0.05)
    training = _generator_sampler(trimesh.Trimesh(scene.vertices, scene.faces, process=False),
                                  0.05)
    np.testing.assert_array_equal(demo.points, training)
    assert demo.voxel_size == 0.05 and demo.up_axis == "z" and demo.normals is None


def test_point_cloud_path_identical_to_the_demos():
    rng = np.random.default_rng(0)
    pts = (rng.random((5000, 3)) * [3.0, 2.0, 1.0] - 1.0).astype(np.float32)
    out = voxel_downsample(ScenePoints(pts, up_axis="-y"), 0.1)
    np.testing.assert_array_equal(out.points, _demo_point_cloud_sampler(pts, 0.1))
    assert out.up_axis == "-y"


def _slow_normals(points: np.ndarray, k: int) -> np.ndarray:
    """Per point: brute-force k nearest (itself included), SVD of the centred patch, the last
    right singular vector (the obvious reference for `estimate_normals`)."""
    out = np.zeros_like(points)
    for i, p in enumerate(points):
        near = points[np.argsort(((points - p) ** 2).sum(1), kind="stable")[:k]]
        _, _, vt = np.linalg.svd(near - near.mean(0))
        out[i] = vt[-1]
    return out


def test_estimated_normals_match_a_per_point_svd():
    from sahmr.scene.points import estimate_normals

    pts = np.random.default_rng(4).normal(size=(300, 3)) * [1.0, 0.6, 0.3]
    fast = estimate_normals(pts, k=9, chunk=64).astype(np.float64)  # several chunks
    slow = _slow_normals(pts, 9)
    np.testing.assert_allclose(np.abs((fast * slow).sum(1)), 1.0, atol=1e-5)  # up to sign
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-6)


def test_estimated_normals_of_a_plane_and_a_sphere_face_the_given_point():
    from sahmr.scene.points import estimate_normals

    rng = np.random.default_rng(5)
    # a tilted plane through the origin, seen from a point on its normal's side
    n_true = np.array([0.3, -0.2, 0.93])
    n_true /= np.linalg.norm(n_true)
    a = np.cross(n_true, [1.0, 0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(n_true, a)
    plane = rng.uniform(-1, 1, (2000, 1)) * a + rng.uniform(-1, 1, (2000, 1)) * b
    n = estimate_normals(plane, towards=3.0 * n_true)
    np.testing.assert_allclose(n @ n_true, 1.0, atol=1e-5)
    n = estimate_normals(plane, towards=-3.0 * n_true)
    np.testing.assert_allclose(n @ n_true, -1.0, atol=1e-5)
    # a sphere seen from its centre: every normal points inwards (a room's walls from inside)
    d = rng.normal(size=(4000, 3))
    sphere = 2.0 * d / np.linalg.norm(d, axis=1, keepdims=True)
    n = estimate_normals(sphere, towards=np.zeros(3))
    assert ((n * -sphere / 2.0).sum(1) > 0.99).mean() > 0.99
    assert estimate_normals(np.zeros((0, 3))).shape == (0, 3)
    assert np.isfinite(estimate_normals(np.zeros((5, 3)))).all()  # a degenerate patch


def test_two_surfaces_5_cm_apart_keep_their_own_normals():
    """A generated room's floor and its slab's underside, 5 cm apart, as the demo samples a
    point scan (2 cm voxels): the default neighbourhood stays on one surface."""
    from sahmr.scene.points import estimate_normals

    rng = np.random.default_rng(6)
    top = np.c_[rng.uniform(0, 3, (40000, 2)), np.zeros(40000)]
    bottom = top.copy()
    bottom[:, 2] = -0.05
    pts = voxel_downsample(ScenePoints(np.r_[top, bottom].astype(np.float32)), 0.02).points
    n = estimate_normals(pts)
    assert np.percentile(np.abs(n[:, 2]), 5) > 0.99  # 16 neighbours: 0.92

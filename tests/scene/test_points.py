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

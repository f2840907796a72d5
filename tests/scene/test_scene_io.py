"""Scene loading of every format, validation messages, point down-sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from sahmr.scene.io import SceneMesh, load_scene
from sahmr.scene.points import ScenePoints, voxel_downsample


def _box(size=(2.0, 1.5, 1.0)):
    return trimesh.creation.box(extents=size)


@pytest.mark.parametrize("ext", ["ply", "obj", "glb"])
def test_mesh_formats(tmp_path, ext):
    mesh = _box()
    path = tmp_path / f"room.{ext}"
    mesh.export(path)
    scene = load_scene(path, up_axis="-y")
    assert isinstance(scene, SceneMesh)
    assert scene.up_axis == "-y"
    assert scene.vertices.dtype == np.float32 and scene.faces.shape[1] == 3
    np.testing.assert_allclose(np.ptp(scene.vertices, axis=0), [2.0, 1.5, 1.0], atol=1e-6)


def test_gltf_scene_merges_with_node_transforms(tmp_path):
    sc = trimesh.Scene()
    sc.add_geometry(_box((1, 1, 1)), node_name="a")
    T = np.eye(4)
    T[:3, 3] = [3.0, 0, 0]
    sc.add_geometry(_box((1, 1, 1)), node_name="b", transform=T)
    path = tmp_path / "scene.glb"
    sc.export(path)
    scene = load_scene(path)
    assert isinstance(scene, SceneMesh)
    assert scene.faces.shape[0] == 24
    np.testing.assert_allclose(scene.vertices.min(0), [-0.5, -0.5, -0.5], atol=1e-6)
    np.testing.assert_allclose(scene.vertices.max(0), [3.5, 0.5, 0.5], atol=1e-6)
    gltf = tmp_path / "scene.gltf"
    sc.export(gltf)
    assert load_scene(gltf).faces.shape[0] == 24


def test_point_formats(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.random((500, 3)) * [3, 2, 1]
    trimesh.PointCloud(pts).export(tmp_path / "pts.ply")
    sp = load_scene(tmp_path / "pts.ply")
    assert isinstance(sp, ScenePoints) and len(sp) == 500
    normals = np.tile([0, 0, 1.0], (500, 1))
    np.savez(tmp_path / "pts.npz", points=pts * 1000, normals=normals, colors=pts * 80)
    sp = load_scene(tmp_path / "pts.npz", scale=0.001)
    np.testing.assert_allclose(sp.points, pts, atol=1e-5)
    assert sp.normals is not None and sp.colors.max() <= 1.0
    t = sp.to_torch("cpu")
    assert t["points"].shape == (500, 3) and t["points"].dtype == torch.float32


def test_validation_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_scene(tmp_path / "missing.ply")
    big = _box((5320, 3000, 2500))
    big.export(tmp_path / "mm.ply")
    with pytest.raises(ValueError, match=r"extent 5320 m.*millimetres, pass --scale 0.001"):
        load_scene(tmp_path / "mm.ply")
    assert isinstance(load_scene(tmp_path / "mm.ply", scale=0.001), SceneMesh)
    _box((0.1, 0.1, 0.1)).export(tmp_path / "tiny.ply")
    with pytest.raises(ValueError, match="--scale"):
        load_scene(tmp_path / "tiny.ply")
    np.savez(tmp_path / "nan.npz", points=np.array([[0, 0, 0], [np.nan, 1, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        load_scene(tmp_path / "nan.npz")
    np.savez(tmp_path / "empty.npz", points=np.zeros((0, 3)))
    with pytest.raises(ValueError, match="no points"):
        load_scene(tmp_path / "empty.npz")
    (tmp_path / "junk.ply").write_bytes(b"not a ply at all")
    with pytest.raises(ValueError):
        load_scene(tmp_path / "junk.ply")
    np.savez(tmp_path / "obj.npz", points=np.array([object()], dtype=object))
    with pytest.raises(ValueError):
        load_scene(tmp_path / "obj.npz")
    with pytest.raises(ValueError, match="up_axis"):
        load_scene(tmp_path / "mm.ply", up_axis="up")


def test_downsample_mesh_and_points():
    mesh = _box((2.0, 1.0, 1.0))
    scene = SceneMesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces))
    sp = voxel_downsample(scene, voxel_size=0.05)
    assert sp.voxel_size == 0.05 and sp.points.dtype == np.float32
    # Every point lies on the box surface; area 10 m^2 at 5 cm gives ~4000 voxels.
    d = np.abs(np.abs(sp.points) - [1.0, 0.5, 0.5]).min(1)
    assert d.max() < 1e-5
    assert 3000 < len(sp) < 6000
    cells = np.floor(sp.points / 0.05).astype(np.int64)
    assert len(np.unique(cells, axis=0)) == len(sp)  # one point per voxel
    raw = ScenePoints(sp.points.copy())
    again = voxel_downsample(raw, voxel_size=0.1)
    assert len(again) < len(sp)

"""A scan's solid ground: the union of the mesh's solid with everything below a height.

The defect it fixes: a closed floor slab (a generated room's is 5 cm thick) has a negative
signed distance only down to half its thickness; below that, the bottom face is the closest
surface and the sign turns positive, so a body sunk 10 cm into the floor read as floating.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from sahmr.scene.sdf import (
    GROUND_KEY,
    MeshSignedDistance,
    SDFGrid,
    SolidGround,
    build_sdf_grid,
    declared_ground,
    load_or_build_sdf,
    load_scene_sdf,
    resolve_ground,
)

SLAB = 0.05  # floor thickness, metres, as the generator's rooms


def slab_floor(half: float = 1.0) -> trimesh.Trimesh:
    """A closed floor slab, top at z = 0, ``2 half`` metres square."""
    box = trimesh.creation.box(extents=(2 * half, 2 * half, SLAB))
    box.apply_translation((0.0, 0.0, -SLAB / 2))
    return box


def write_room(folder, meta: dict | None) -> str:
    """``folder/mesh.ply`` (the slab) and, unless None, ``folder/meta.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    slab_floor().export(folder / "mesh.ply")
    if meta is not None:
        (folder / "meta.json").write_text(json.dumps(meta))
    return folder / "mesh.ply"


POINTS = torch.tensor(
    [
        [0.1, 0.2, 0.30],  # free space above the floor
        [0.1, 0.2, -0.01],  # in the slab's top half
        [0.1, 0.2, -0.10],  # under the slab: the defect
        [-0.3, 0.4, -0.60],  # below the grid (20 cm margin under the slab)
        [3.0, 0.0, -0.20],  # beside the grid, below the ground
    ],
    dtype=torch.float64,
)
WITH_GROUND = [0.30, -0.01, -0.10, -0.60, -0.20]


def test_closed_slab_alone_reads_free_space_under_its_middle():
    mesh = slab_floor()
    sd = MeshSignedDistance(np.asarray(mesh.vertices), np.asarray(mesh.faces), backend="torch",
                            device="cpu")  # fmt: skip
    got = sd(POINTS[:3].numpy())
    assert got[1] == pytest.approx(-0.01, abs=1e-6)
    assert got[2] == pytest.approx(+0.05, abs=1e-6)  # 5 cm under the slab's bottom: "outside"
    with_ground = MeshSignedDistance(np.asarray(mesh.vertices), np.asarray(mesh.faces),
                                     backend="torch", device="cpu", ground=SolidGround(0.0))
    np.testing.assert_allclose(with_ground(POINTS.numpy()), WITH_GROUND, atol=1e-6)


@pytest.mark.parametrize("path", ["grid", "banded", "exact", "sample_exact"])
def test_every_lookup_joins_the_ground(tmp_path, path):
    mesh_path = write_room(tmp_path / "room", {GROUND_KEY: 0.0})
    sdf = load_scene_sdf(mesh_path, voxel_size=0.04, cache_dir=tmp_path / "cache",
                         backend="torch", device="cpu")  # fmt: skip
    assert sdf.grid.ground == SolidGround(0.0, "z")
    if path == "grid":
        got = sdf.sample(POINTS)
    elif path == "banded":
        got = sdf.sample_banded(POINTS.float(), 0.12).double()
    elif path == "exact":
        got = sdf.exact(POINTS)
    else:
        got = sdf.sample_exact(POINTS)
    # the plane is linear, so even the grid's trilinear value is exact under the slab
    np.testing.assert_allclose(got.numpy(), WITH_GROUND, atol=2e-6 if path != "grid" else 1e-4)


def test_without_ground_the_same_scan_reads_the_defect(tmp_path):
    mesh_path = write_room(tmp_path / "room", {GROUND_KEY: 0.0})
    sdf = load_scene_sdf(mesh_path, voxel_size=0.04, cache_dir=tmp_path / "cache",
                         backend="torch", device="cpu", ground=None)  # fmt: skip
    assert sdf.grid.ground is None
    got = sdf.sample_exact(POINTS[:3])
    assert got[2] == pytest.approx(0.05, abs=1e-6)
    # the cache holds the mesh's own grid: the ground is joined after loading, both ways
    again = load_or_build_sdf(mesh_path, 0.04, cache_dir=tmp_path / "cache")
    assert again.ground == SolidGround(0.0)
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_with_solid_ground_matches_nodes_any_up_axis():
    mesh = slab_floor()
    grid = build_sdf_grid(mesh, voxel_size=0.1, margin=0.2, coarse_factor=1, backend="torch",
                          device="cpu")  # fmt: skip
    for ground in (SolidGround(0.0, "z"), SolidGround(0.3, "-y"), SolidGround(-0.2, "x")):
        joined = grid.with_solid_ground(ground)
        D, H, W = grid.values.shape
        k, j, i = np.meshgrid(np.arange(D), np.arange(H), np.arange(W), indexing="ij")
        nodes = grid.origin.astype(np.float64) + grid.voxel_size * np.stack([i, j, k], -1)
        want = np.minimum(grid.values, ground.signed_distance(nodes))
        np.testing.assert_allclose(joined.values, want, atol=1e-6)
        assert joined.ground == ground
        np.testing.assert_array_equal(joined.with_solid_ground(ground).values, joined.values)
    assert grid.with_solid_ground(None) is grid
    assert SolidGround(0.3, "-y").signed_distance(np.array([0.0, -1.0, 0.0])) == pytest.approx(0.7)


def test_save_and_load_keep_the_ground(tmp_path):
    grid = SDFGrid(np.zeros(3, np.float32), 0.1, np.ones((4, 5, 6), np.float32))
    grid.save(tmp_path / "plain.npz")
    assert SDFGrid.load(tmp_path / "plain.npz").ground is None  # files from before the ground
    joined = grid.with_solid_ground(SolidGround(0.15, "-z"))
    joined.save(tmp_path / "joined.npz")
    back = SDFGrid.load(tmp_path / "joined.npz")
    assert back.ground == SolidGround(0.15, "-z")
    np.testing.assert_array_equal(back.values, joined.values)


def test_declared_ground_from_metadata(tmp_path):
    assert declared_ground(write_room(tmp_path / "bare", None)) is None
    assert declared_ground(write_room(tmp_path / "new", {GROUND_KEY: 0.25, "up_axis": "y"})
                           ) == SolidGround(0.25, "y")  # fmt: skip
    assert declared_ground(write_room(tmp_path / "off", {GROUND_KEY: None})) is None
    # rooms generated before the key: their floor surfaces' height
    old = {"generator": "sahmr.synth.rooms", "up_axis": "z", "objects": [
        {"category": "floor", "surfaces": [{"kind": "floor", "center": [0.0, 0.0, 0.0]}]},
        {"category": "sofa", "surfaces": [{"kind": "seat", "center": [0.0, 0.0, 0.45]}]}]}
    assert declared_ground(write_room(tmp_path / "old", old)) == SolidGround(0.0, "z")
    # any mesh: <stem>.meta.json beside it
    slab_floor().export(tmp_path / "scan.ply")
    (tmp_path / "scan.meta.json").write_text(json.dumps({GROUND_KEY: -0.5}))
    assert declared_ground(tmp_path / "scan.ply") == SolidGround(-0.5, "z")
    (tmp_path / "bad").mkdir()
    slab_floor().export(tmp_path / "bad" / "mesh.ply")
    (tmp_path / "bad" / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable scan metadata"):
        declared_ground(tmp_path / "bad" / "mesh.ply")
    (tmp_path / "bad" / "meta.json").write_text(json.dumps({GROUND_KEY: "floor"}))
    with pytest.raises(ValueError, match="must be a number"):
        declared_ground(tmp_path / "bad" / "mesh.ply")


def test_resolve_ground(tmp_path):
    mesh_path = write_room(tmp_path / "room", {GROUND_KEY: 0.0})
    assert resolve_ground(mesh_path, "auto") == SolidGround(0.0)
    assert resolve_ground(mesh_path, "none") is None and resolve_ground(mesh_path, None) is None
    assert resolve_ground(mesh_path, 1.5, up_axis="y") == SolidGround(1.5, "y")
    given = SolidGround(2.0, "-y")
    assert resolve_ground(mesh_path, given) is given
    # metadata heights are metres along its own up axis: not used for another frame or unit
    assert resolve_ground(mesh_path, "auto", up_axis="y") is None
    assert resolve_ground(mesh_path, "auto", scale=0.001) is None
    with pytest.raises(ValueError, match="auto"):
        resolve_ground(mesh_path, "floor")
    with pytest.raises(ValueError):
        SolidGround(float("nan"))
    with pytest.raises(ValueError):
        SolidGround(0.0, "up")

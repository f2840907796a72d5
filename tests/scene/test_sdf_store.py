"""Room SDF grids packed on a device and looked up per frame (sahmr.scene.sdf_store)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sahmr.geometry.cameras import camera_to_world, transform_points
from sahmr.scene.sdf import SDFGrid, SolidGround
from sahmr.scene.sdf_store import SceneSDFStore, sample_frames


def _grid(seed: int, shape=(5, 7, 6), ground: SolidGround | None = None) -> SDFGrid:
    """A random grid (D, H, W) with values a float16 node holds exactly (before the ground)."""
    rng = np.random.default_rng(seed)
    values = (rng.integers(-64, 64, size=shape) / 64.0).astype(np.float32)
    origin = rng.uniform(-1, 1, size=3).astype(np.float32)
    return SDFGrid(origin, 0.1 + 0.05 * seed, values).with_solid_ground(ground)


def _points(grid: SDFGrid, n: int, seed: int) -> torch.Tensor:
    """Points in and around the grid (a margin of 2 voxels outside every face)."""
    rng = np.random.default_rng(seed)
    extent = np.array([(k - 1) * grid.voxel_size for k in grid.shape_xyz])
    lo, hi = grid.origin - 2 * grid.voxel_size, grid.origin + extent + 2 * grid.voxel_size
    return torch.from_numpy(rng.uniform(lo, hi, size=(n, 3)))


def test_lookup_matches_each_rooms_grid_sample():
    """Frames of mixed rooms, points inside, outside and below the ground: the one-pass lookup
    gives what each room's `SDFGrid.sample` gives (float64 points, exact nodes)."""
    grids = [
        _grid(0),
        _grid(1, (4, 6, 9), SolidGround(-0.2, "z")),
        _grid(2, ground=SolidGround(0.1, "-y")),
    ]
    store = SceneSDFStore()
    for k, g in enumerate(grids):
        assert store.add(f"room{k}", g) == k
    assert store.add("room1", grids[0]) == 1  # a known room is not replaced
    rooms = torch.tensor([1, 0, 2, 1])
    pts = torch.stack([_points(grids[r], 300, seed=10 + i) for i, r in enumerate(rooms.tolist())])
    got = sample_frames(pts, store.frames(rooms))
    assert got.dtype == torch.float64 and got.shape == (4, 300)
    for i, r in enumerate(rooms.tolist()):
        g = grids[r]  # the store keeps float16 nodes (the ground's plane rounds)
        ref = SDFGrid(
            g.origin, g.voxel_size, g.values.astype(np.float16).astype(np.float32), g.ground
        )
        ref = ref.sample(pts[i])
        torch.testing.assert_close(got[i], ref, atol=1e-9, rtol=1e-9)
    # below the '-y' ground (y above 0.1 is solid there) the ground wins over the grid
    below = grids[2].ground.signed_distance(pts[2]) < -0.05
    assert below.any() and (got[2][below] < 0).all()


def test_gradient_is_the_interpolations():
    """Autograd through the lookup matches central differences (inside and outside the grid)."""
    store = SceneSDFStore()
    grid = _grid(3, ground=SolidGround(-0.5, "z"))
    store.add("a", grid)
    pts = _points(grid, 64, seed=4)[None].clone().requires_grad_(True)
    frames = store.frames(torch.tensor([0]))
    sample_frames(pts, frames).sum().backward()
    h = 1e-6
    num = torch.zeros_like(pts)
    for axis in range(3):
        step = torch.zeros(3, dtype=pts.dtype)
        step[axis] = h
        with torch.no_grad():
            num[..., axis] = (
                sample_frames(pts + step, frames) - sample_frames(pts - step, frames)
            ) / (2 * h)
    torch.testing.assert_close(pts.grad, num, atol=1e-4, rtol=1e-4)


def test_float16_nodes_round_like_float16_and_float32_points_give_float32():
    rng = np.random.default_rng(5)
    values = rng.uniform(-2, 2, size=(4, 4, 4)).astype(np.float32)
    grid = SDFGrid(np.zeros(3, np.float32), 0.5, values)
    store = SceneSDFStore()
    store.add("a", grid)
    nodes = torch.tensor([[0.0, 0.0, 0.0], [0.5, 1.0, 1.5], [1.5, 1.5, 1.5]], dtype=torch.float32)
    got = sample_frames(nodes[None], store.frames(torch.tensor([0])))[0]
    want = torch.tensor([values[0, 0, 0], values[3, 2, 1], values[3, 3, 3]]).half().float()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert store.nbytes == 2 * 64


def test_bad_rooms_and_indices_are_refused():
    store = SceneSDFStore()
    with pytest.raises(IndexError, match="no rooms"):
        store.frames(torch.tensor([0]))
    with pytest.raises(ValueError, match="2 nodes"):
        store.add("flat", SDFGrid(np.zeros(3, np.float32), 0.1, np.zeros((1, 3, 3), np.float32)))
    store.add("a", _grid(0))
    with pytest.raises(IndexError, match="out of range"):
        store.frames(torch.tensor([0, 1]))


def test_camera_to_world_inverts_batched_poses_as_the_term_uses_it():
    rng = np.random.default_rng(6)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.from_numpy(q * np.sign(np.linalg.det(q)))
    T[:3, 3] = torch.tensor([0.3, -1.0, 2.0])
    pts_world = torch.from_numpy(rng.normal(size=(1, 20, 3)))
    pts_cam = transform_points(T, pts_world[0])[None]
    torch.testing.assert_close(camera_to_world(T[None], pts_cam), pts_world)

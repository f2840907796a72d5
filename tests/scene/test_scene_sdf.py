"""SDF grid: trilinear sampling, gradients, sign on an open room, sphere accuracy, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from sahmr.scene import sdf as sdf_mod
from sahmr.scene.io import SceneMesh
from sahmr.scene.sdf import SDFGrid, build_sdf_grid, load_or_build_sdf


def _random_grid(seed=0):
    rng = np.random.default_rng(seed)
    return SDFGrid(
        origin=np.array([-0.3, 0.2, 1.0], np.float32),
        voxel_size=0.1,
        values=rng.standard_normal((4, 5, 6)).astype(np.float32),  # (nz, ny, nx)
    )


def _trilinear_reference(grid: SDFGrid, p: np.ndarray) -> float:
    q = (p - grid.origin.astype(np.float64)) / grid.voxel_size  # (x, y, z) index units
    i0 = np.floor(q).astype(int)
    t = q - i0
    out = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (t[0] if dx else 1 - t[0]) * (t[1] if dy else 1 - t[1])
                w *= t[2] if dz else 1 - t[2]
                if w:
                    out += w * grid.values[i0[2] + dz, i0[1] + dy, i0[0] + dx]
    return out


def test_sample_matches_numpy_trilinear():
    grid = _random_grid()
    rng = np.random.default_rng(1)
    nx, ny, nz = grid.shape_xyz
    upper = np.array([nx - 1, ny - 1, nz - 1]) * grid.voxel_size - 1e-9
    pts = grid.origin + rng.random((2, 50, 3)) * upper
    got = grid.sample(torch.from_numpy(pts))
    assert got.shape == (2, 50)
    ref = np.array([_trilinear_reference(grid, p) for p in pts.reshape(-1, 3)]).reshape(2, 50)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)
    # Nodes sample their own value; outside points get value at the box + distance to it.
    node = torch.tensor(grid.origin, dtype=torch.float64) + torch.tensor([0.2, 0.1, 0.3])
    assert abs(float(grid.sample(node)) - grid.values[3, 1, 2]) < 1e-6
    out = torch.tensor(grid.origin, dtype=torch.float64) - torch.tensor([0.5, 0.0, 0.0])
    assert abs(float(grid.sample(out)) - (grid.values[0, 0, 0] + 0.5)) < 1e-6
    # A batch mixing inside and outside points (the slow path) agrees with the fast path.
    mixed = torch.cat([torch.from_numpy(pts.reshape(-1, 3)), out[None]])
    np.testing.assert_allclose(grid.sample(mixed)[:-1].numpy(), ref.reshape(-1), atol=1e-6)


def test_sample_gradcheck():
    grid = _random_grid(2)
    rng = np.random.default_rng(3)
    pts = grid.origin + 0.05 + rng.random((6, 3)) * 0.2
    p = torch.from_numpy(pts).requires_grad_(True)
    assert torch.autograd.gradcheck(grid.sample, (p,), eps=1e-6, atol=1e-4)


def _box(lo, hi, open_bottom=True):
    m = trimesh.creation.box(bounds=np.array([lo, hi]))
    if open_bottom:
        keep = ~(np.abs(m.triangles_center[:, 2] - lo[2]) < 1e-9)
        m = trimesh.Trimesh(m.vertices, m.faces[keep], process=False)
    return m


def _quad(corners, facing):
    """Two triangles over 4 corners, wound so the normal points towards ``facing``."""
    v = np.array(corners, float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    n = np.cross(v[1] - v[0], v[2] - v[0])
    if np.dot(n, np.asarray(facing) - v.mean(0)) < 0:
        faces = faces[:, ::-1]
    return trimesh.Trimesh(v, faces, process=False)


def _open_room() -> SceneMesh:
    """Floor z=0 and four walls facing the room, no ceiling; an open-bottom table box and
    a floating chair seat (a single quad, normal +z)."""
    c = (2.0, 1.5, 1.25)
    parts = [
        _quad([[0, 0, 0], [4, 0, 0], [4, 3, 0], [0, 3, 0]], c),
        _quad([[0, 0, 0], [0, 3, 0], [0, 3, 2.5], [0, 0, 2.5]], c),
        _quad([[4, 0, 0], [4, 3, 0], [4, 3, 2.5], [4, 0, 2.5]], c),
        _quad([[0, 0, 0], [4, 0, 0], [4, 0, 2.5], [0, 0, 2.5]], c),
        _quad([[0, 3, 0], [4, 3, 0], [4, 3, 2.5], [0, 3, 2.5]], c),
        _box([1.0, 1.0, 0.0], [2.0, 2.0, 0.75]),
        _quad([[3.0, 1.0, 0.45], [3.5, 1.0, 0.45], [3.5, 1.5, 0.45], [3.0, 1.5, 0.45]],
              (3.25, 1.25, 1.0)),
    ]
    m = trimesh.util.concatenate(parts)
    return SceneMesh(np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int64))


def test_sign_on_open_room():
    room = _open_room()
    grid = build_sdf_grid(room, voxel_size=0.05, margin=0.2)
    s = lambda *p: float(grid.sample(torch.tensor(p, dtype=torch.float64)))  # noqa: E731
    # Free space: positive, about the distance to the nearest surface.
    # (Away from surfaces the value comes from the coarse grid: 0.45 here, at a ridge.)
    assert s(0.5, 0.5, 1.0) == pytest.approx(0.5, abs=0.06)
    assert s(2.5, 1.5, 1.5) > 0.4
    assert s(1.5, 1.5, 1.0) == pytest.approx(0.25, abs=0.03)  # above the table top
    assert s(3.25, 1.25, 0.6) == pytest.approx(0.15, abs=0.03)  # above the seat
    assert s(0.5, 2.5, 0.1) == pytest.approx(0.1, abs=0.03)  # just above the floor
    # Inside furniture / under the floor / behind walls: negative.
    assert s(1.5, 1.5, 0.5) < -0.2  # inside the open-bottom table
    assert s(1.05, 1.5, 0.3) < 0
    assert s(2.5, 1.5, -0.1) == pytest.approx(-0.1, abs=0.03)
    assert s(-0.1, 1.5, 1.0) < 0
    assert s(3.25, 1.25, 0.4) < 0  # just under the seat
    # Coarse + narrow band equals the all-exact grid within interpolation error far away
    # and exactly near surfaces.
    exact = build_sdf_grid(room, voxel_size=0.05, margin=0.2, coarse_factor=1)
    near = np.abs(exact.values) < 0.15
    np.testing.assert_allclose(grid.values[near], exact.values[near], atol=1e-5)
    assert np.mean(np.sign(grid.values) == np.sign(exact.values)) > 0.995


def test_sphere_sdf_accuracy():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    mesh = SceneMesh(np.asarray(sphere.vertices, np.float32), np.asarray(sphere.faces))
    rng = np.random.default_rng(0)
    p = (rng.random((2000, 3)) - 0.5) * 1.3
    analytic = np.linalg.norm(p, axis=1) - 0.5
    exact = build_sdf_grid(mesh, voxel_size=0.04, margin=0.2, coarse_factor=1)
    err = np.abs(exact.sample(torch.from_numpy(p)).numpy() - analytic)
    assert err.max() < exact.voxel_size / 2, err.max()
    # Default (coarse grid + exact narrow band): same bound within the band, coarse pitch
    # / 2 beyond it (worst at the distance field's ridge, the sphere centre).
    grid = build_sdf_grid(mesh, voxel_size=0.04, margin=0.2)
    err = np.abs(grid.sample(torch.from_numpy(p)).numpy() - analytic)
    band = np.abs(analytic) < 4 * 0.04
    assert err[band].max() < grid.voxel_size / 2, err[band].max()
    assert err.max() < 4 * grid.voxel_size / 2, err.max()


def test_cache_hit(tmp_path, monkeypatch):
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    path = tmp_path / "ball.ply"
    sphere.export(path)
    monkeypatch.setenv("SAHMR_CACHE_DIR", str(tmp_path / "cache"))
    g1 = load_or_build_sdf(path, voxel_size=0.05, margin=0.1)
    files = list((tmp_path / "cache" / "sdf").glob("*.npz"))
    assert len(files) == 1

    def boom(*a, **k):
        raise AssertionError("should come from the cache")

    monkeypatch.setattr(sdf_mod, "build_sdf_grid", boom)
    g2 = load_or_build_sdf(path, voxel_size=0.05, margin=0.1)
    np.testing.assert_array_equal(g1.values, g2.values)
    with pytest.raises(AssertionError):
        load_or_build_sdf(path, voxel_size=0.06, margin=0.1)  # other parameters: rebuild


@pytest.mark.gpu
def test_sample_cuda_matches_cpu():
    grid = _random_grid(4)
    pts = torch.from_numpy(grid.origin).float() + torch.rand(3, 100, 3) * 0.6 - 0.05
    torch.testing.assert_close(grid.sample(pts.cuda()).cpu(), grid.sample(pts), atol=1e-5,
                               rtol=1e-5)


def _room_like_grid(voxel=0.02):
    """Analytic SDF of a floor (z = 0) and a 0.3 m ball at (0.5, 0.5, 0.5), on a grid."""
    xs = np.arange(0.0, 1.2 + 1e-9, voxel)
    zs = np.arange(-0.2, 1.0 + 1e-9, voxel)
    z, y, x = np.meshgrid(zs, xs, xs, indexing="ij")
    ball = np.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2 + (z - 0.5) ** 2) - 0.3
    values = np.minimum(z, ball).astype(np.float32)
    return SDFGrid(origin=np.array([0.0, 0.0, -0.2], np.float32), voxel_size=voxel, values=values)


@pytest.mark.parametrize("factor", [2, 4, 5])
def test_sample_banded_is_exact_below_the_band(factor):
    grid = _room_like_grid()
    gen = torch.Generator().manual_seed(factor)
    # points inside and a few outside the grid
    pts = torch.rand(20000, 3, generator=gen) * torch.tensor([1.4, 1.4, 1.4]) - 0.1
    band = 0.08
    full = grid.sample(pts)
    banded = grid.sample_banded(pts, band, factor=factor)
    near = full < band
    assert torch.equal(banded[near], full[near])
    assert (banded[~near] >= band).all() and (banded <= full + 1e-6).all()
    assert (~near).float().mean() > 0.3  # most points skip the fine lookup here
    # flagged points are always exact
    exact = torch.zeros(20000, dtype=torch.bool)
    exact[::7] = True
    forced = grid.sample_banded(pts, band, exact=exact, factor=factor)
    assert torch.equal(forced[exact], full[exact])
    # metric thresholds below the band give the same answers
    for t in (0.0, 0.05, 0.07):
        assert torch.equal(forced.abs() < t, full.abs() < t)
        assert torch.equal(forced < 0, full < 0)


def test_torch_closest_points_match_a_brute_force_reference():
    from sahmr.scene.sdf import closest_points_on_triangles

    rng = np.random.default_rng(0)
    tri = rng.normal(size=(7, 3, 3))
    pts = rng.normal(size=(300, 3)) * 1.5
    closest, idx, w = closest_points_on_triangles(torch.from_numpy(pts), torch.from_numpy(tri))
    # reference: dense sampling of each triangle (barycentric grid) -> nearest sample
    n = 120
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = i + j <= n
    bary = np.stack([(n - i - j)[keep], i[keep], j[keep]], 1) / n
    samples = np.einsum("sk,fkd->fsd", bary, tri).reshape(-1, 3)
    d_ref = np.sqrt(((pts[:, None] - samples[None]) ** 2).sum(-1)).min(1)
    d = np.linalg.norm(pts - closest.numpy(), axis=1)
    assert (d <= d_ref + 1e-9).all() and np.abs(d - d_ref).max() < 0.02
    # barycentric weights are convex and reproduce the closest point on the chosen triangle
    w = w.numpy()
    assert (w > -1e-9).all() and np.allclose(w.sum(1), 1.0)
    np.testing.assert_allclose(np.einsum("pk,pkd->pd", w, tri[idx.numpy()]), closest, atol=1e-9)


def test_torch_backend_matches_open3d_on_an_open_room():
    room = _open_room()
    # A pitch that does not line up with the room's planes: no node is equidistant to two
    # features, so distances and signs must agree everywhere.
    kw = dict(voxel_size=0.037, margin=0.1, coarse_factor=1)
    ref = build_sdf_grid(room, backend="open3d", **kw)
    got = build_sdf_grid(room, backend="torch", device="cpu", **kw)
    np.testing.assert_allclose(got.values, ref.values, atol=2e-5)
    # On a grid aligned with the planes, ties between open features may be broken the other
    # way (sign), but distances still agree.
    kw["voxel_size"] = 0.05
    ref = build_sdf_grid(room, backend="open3d", **kw)
    got = build_sdf_grid(room, backend="torch", device="cpu", **kw)
    np.testing.assert_allclose(np.abs(got.values), np.abs(ref.values), atol=2e-5)
    assert (np.sign(got.values) != np.sign(ref.values)).mean() < 0.005


def test_sdf_builds_without_open3d(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "open3d", None)  # as on the GPU machine
    grid = build_sdf_grid(_open_room(), voxel_size=0.05, margin=0.1)
    assert np.isfinite(grid.values).all() and (grid.values < 0).any() and (grid.values > 0).any()

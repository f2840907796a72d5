"""Mesh ray casting against a naive ray-triangle reference; pixel rays by hand."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import trimesh

from sahmr.geometry.raycast import MeshRaycaster, cast_in_projection, pixel_rays


def _naive_cast(vertices, faces, origin, dirs):
    """Moller-Trumbore over every (ray, face) pair: nearest face and distance per ray."""
    tri = vertices[faces]  # (F, 3, 3)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    face = np.full(len(dirs), -1)
    dist = np.full(len(dirs), np.inf)
    for r, d in enumerate(dirs):
        p = np.cross(d, e2)
        det = np.einsum("fi,fi->f", e1, p)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = origin - tri[:, 0]
        u = np.einsum("fi,fi->f", s, p) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = np.einsum("fi,fi->f", e2, q) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        if hit.any():
            t = np.where(hit, t, np.inf)
            face[r], dist[r] = int(np.argmin(t)), float(t.min())
    return face, dist


def _mesh():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    sphere.apply_translation([0.2, -0.1, 3.0])
    wall = trimesh.creation.box(extents=[1.0, 2.0, 0.05])
    wall.apply_translation([-0.6, 0.0, 2.0])
    return trimesh.util.concatenate([sphere, wall])


def _rays(n=300, seed=0):
    rng = np.random.default_rng(seed)
    d = np.column_stack([rng.uniform(-0.5, 0.5, (n, 2)), np.ones(n)])
    return np.array([0.05, 0.02, -0.1]), d / np.linalg.norm(d, axis=1, keepdims=True)


def test_cast_and_occluded_match_the_naive_reference():
    mesh = _mesh()
    origin, dirs = _rays()
    caster = MeshRaycaster(mesh.vertices, mesh.faces)
    face, dist = caster.cast(origin, dirs)
    ref_face, ref_dist = _naive_cast(
        np.asarray(mesh.vertices), np.asarray(mesh.faces), origin, dirs
    )
    assert (ref_face >= 0).sum() > 100 and (ref_face < 0).sum() > 20  # hits and misses
    np.testing.assert_array_equal(face >= 0, ref_face >= 0)
    hit = ref_face >= 0
    np.testing.assert_allclose(dist[hit], ref_dist[hit], atol=1e-5)
    assert np.mean(face[hit] == ref_face[hit]) > 0.98  # ties on shared edges may differ
    # any-hit within a distance agrees with the nearest hit
    limit = np.where(hit, ref_dist, 5.0)
    assert not caster.occluded(origin, dirs, limit - 1e-3).any()
    np.testing.assert_array_equal(caster.occluded(origin, dirs, limit + 1e-3), hit)


def test_fallback_without_embreex_gives_the_same_hits(monkeypatch):
    mesh = _mesh()
    origin, dirs = _rays(60, seed=1)
    fast = MeshRaycaster(mesh.vertices, mesh.faces)
    monkeypatch.setitem(sys.modules, "embreex", None)  # import fails: trimesh's intersector
    slow = MeshRaycaster(mesh.vertices, mesh.faces)
    assert slow._scene is None
    np.testing.assert_allclose(slow.cast(origin, dirs)[1], fast.cast(origin, dirs)[1], atol=1e-5)
    d = fast.cast(origin, dirs)[1]
    np.testing.assert_array_equal(slow.occluded(origin, dirs, np.where(np.isinf(d), 9, d) + 1e-3),
                                  np.isfinite(d))  # fmt: skip


def test_pixel_rays_project_to_their_pixels_and_projection_casting_is_exact():
    K = np.array([[30.0, 0.0, 11.5], [0.0, 32.0, 8.0], [0.0, 0.0, 1.0]])
    angle = 0.3
    T = np.eye(4)
    T[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    T[:3, 3] = [0.1, -0.2, 0.5]
    w, h = 24, 18
    origin, dirs = pixel_rays(K, T, w, h)
    np.testing.assert_allclose(T[:3, :3] @ origin + T[:3, 3], 0.0, atol=1e-12)  # camera centre
    cam = dirs.astype(np.float64) @ T[:3, :3].T  # directions in the camera frame
    uv = cam[:, :2] / cam[:, 2:] @ K[:2, :2].T + K[:2, 2]
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    np.testing.assert_allclose(uv, np.column_stack([jj.ravel(), ii.ravel()]), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-6)
    # a small mesh in view: casting only inside its projected rectangle changes nothing
    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    ball.apply_translation(np.linalg.inv(T)[:3, :3] @ np.array([0.1, 0.0, 3.0]) + origin)
    caster = MeshRaycaster(ball.vertices, ball.faces)
    face, dist = cast_in_projection(caster, origin, dirs, K, T, w, h)
    all_face, all_dist = caster.cast(origin, dirs)
    assert (face >= 0).sum() > 20
    np.testing.assert_array_equal(face, all_face)
    np.testing.assert_array_equal(dist, all_dist)


@pytest.mark.parametrize("behind", [True, False])
def test_projection_casting_with_a_vertex_behind_the_camera(behind):
    K = np.array([[20.0, 0.0, 8.0], [0.0, 20.0, 8.0], [0.0, 0.0, 1.0]])
    box = trimesh.creation.box(extents=[0.4, 0.4, 4.0 if behind else 1.0])
    box.apply_translation([0.0, 0.0, 1.5])  # reaches z = -0.5 when long
    caster = MeshRaycaster(box.vertices, box.faces)
    origin, dirs = pixel_rays(K, np.eye(4), 16, 16)
    np.testing.assert_array_equal(
        cast_in_projection(caster, origin, dirs, K, np.eye(4), 16, 16)[0],
        caster.cast(origin, dirs)[0],
    )

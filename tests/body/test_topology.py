"""Tests of sahmr.body.topology on a fabricated body (and on the shipped one when built)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from _fabricated_body import make_fake_body

from sahmr.body import CONTACT_REGION_NAMES, BodyModel, BodyTopology, save_body_model_npz
from sahmr.body.constants import CONTACT_REGION_MIRROR, H36M_MIRROR, SMPL_JOINT_INDEX
from sahmr.body.io import content_hash, validate_body_model_data
from sahmr.body.topology import body_axes, cache_path, h36m_targets, rest_joints

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def data():
    return validate_body_model_data(make_fake_body())


@pytest.fixture(scope="module")
def topo(data, tmp_path_factory):
    return BodyTopology.from_model(data, cache_dir=tmp_path_factory.mktemp("cache"))


def _check_hierarchy(topo, num_v):
    assert topo.num_vertices[0] == num_v
    for lv in range(topo.num_levels - 1):
        fine, coarse = topo.num_vertices[lv], topo.num_vertices[lv + 1]
        assert coarse == -(-fine // 4)  # exact ceil(V / 4) on a closed genus-0 mesh
        d, u = topo.down[lv], topo.up[lv]
        assert d.shape == (coarse, fine) and u.shape == (fine, coarse)
        for mat in (d, u):
            assert mat.min() >= 0
            np.testing.assert_allclose(np.asarray(mat.sum(axis=1)).ravel(), 1.0, atol=1e-9)
        assert np.all(np.diff(d.indptr) == 1)  # one representative per coarse vertex
        rep = d.indices
        assert np.all(topo.clusters[lv][rep] == np.arange(coarse))  # rep is in its cluster
        np.testing.assert_allclose(topo.templates[lv + 1], topo.templates[lv][rep])


def test_hierarchy_sizes_and_convex_rows(topo, data):
    _check_hierarchy(topo, len(data["v_template"]))


def _posed_vertices(model: BodyModel, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pose = 0.4 * torch.randn(batch, 69, generator=g, dtype=torch.float64)
    return model(body_pose=pose, global_orient=torch.randn(batch, 3, generator=g,
                 dtype=torch.float64)).vertices  # fmt: skip


def _round_trip(topo, verts):
    errs = []
    for lv in (1, 2):
        back = topo.upsample(topo.downsample(verts, lv), lv, 0)
        errs.append(float((back - verts).norm(dim=-1).mean()) * 1000.0)
    return errs


def test_down_up_round_trip_fake(tmp_path, data):
    path = save_body_model_npz(data, tmp_path / "fake.npz")
    model = BodyModel(path, dtype=torch.float64, topology_cache_dir=tmp_path)
    verts = _posed_vertices(model, 4)
    e1, e2 = _round_trip(model.topology, verts)
    logger.info("fake body round trip: %.1f mm (1 level), %.1f mm (2 levels)", e1, e2)
    assert e1 < 25.0 and e2 < 45.0  # coarse 1.2k-vertex body; tighter bounds on the asset
    # unbatched input and gradient flow
    x = verts[0].clone().requires_grad_(True)
    model.topology.downsample(x, 2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_regressor_convex_and_reproduces_targets(topo, data):
    reg = topo.j_regressor_h36m
    assert reg.shape == (17, len(data["v_template"]))
    assert reg.min() >= 0
    np.testing.assert_allclose(reg.sum(axis=1), 1.0, atol=1e-9)
    err = np.linalg.norm(reg @ data["v_template"] - h36m_targets(data), axis=1)
    assert err.max() < 0.005, err
    assert topo.j_regressor_j14.shape == (14, reg.shape[1])


def _check_h36m_order(joints, data):
    up, left, _ = body_axes(rest_joints(data))
    h = joints @ up
    assert h[10] > h[9] > h[8] > h[7] > h[0] > h[2] > h[3]  # head top .. pelvis .. ankle
    assert h[0] > h[5] > h[6]
    assert joints[4] @ left > joints[1] @ left  # left hip on the left
    assert joints[11] @ left > joints[14] @ left
    assert joints[13] @ left > joints[12] @ left > joints[11] @ left  # arm outward


def test_regressor_order(topo, data):
    _check_h36m_order(topo.j_regressor_h36m @ data["v_template"], data)


def _check_regions(topo, data, min_size):
    labels = topo.contact_labels[0]
    assert labels.shape == (len(data["v_template"]),) and labels.dtype == np.int64
    counts = np.bincount(labels, minlength=len(CONTACT_REGION_NAMES))
    assert len(counts) == len(CONTACT_REGION_NAMES)
    assert np.all(counts[1:] >= min_size), counts
    assert counts[0] > 0.3 * len(labels)
    v = data["v_template"]
    joints = rest_joints(data)
    up, left, _ = body_axes(joints)
    h = v @ up
    for label in (1, 2):
        sole = h[labels == label]
        assert sole.max() < h.min() + 0.05 * np.ptp(h)  # at the bottom
    for side, label in (("left", 3), ("right", 4)):
        hand = v[labels == label]
        wrist = joints[SMPL_JOINT_INDEX[f"{side}_wrist"]]
        elbow = joints[SMPL_JOINT_INDEX[f"{side}_elbow"]]
        assert np.all((hand - elbow) @ (wrist - elbow) > 0)  # beyond the elbow
        sign = 1 if side == "left" else -1
        assert np.all(sign * (hand @ left) > sign * (wrist @ left) - 0.03)
    for lv in range(1, topo.num_levels):
        assert topo.contact_labels[lv].shape == (topo.num_vertices[lv],)
        assert topo.contact_labels_majority(lv).shape == (topo.num_vertices[lv],)
    return counts


def test_contact_regions(topo, data):
    counts = _check_regions(topo, data, min_size=5)
    logger.info("fake region counts %s", dict(zip(CONTACT_REGION_NAMES, counts.tolist())))


def test_cache_reuse_new_model_and_corruption(data, tmp_path, monkeypatch):
    calls = []
    original = BodyTopology.derive.__func__

    def spy(cls, *args, **kwargs):
        calls.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(BodyTopology, "derive", classmethod(spy))
    t0 = time.perf_counter()
    a = BodyTopology.from_model(data, cache_dir=tmp_path)
    cold = time.perf_counter() - t0
    path = cache_path(content_hash(data), tmp_path)
    assert path.is_file() and len(calls) == 1
    mtime = path.stat().st_mtime_ns
    t0 = time.perf_counter()
    b = BodyTopology.from_model(data, cache_dir=tmp_path)
    warm = time.perf_counter() - t0
    logger.info("fake topology: cold %.3f s, cached %.3f s", cold, warm)
    assert len(calls) == 1 and path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(a.j_regressor_h36m, b.j_regressor_h36m)
    assert (a.down[1] != b.down[1]).nnz == 0
    other = dict(data)
    other["v_template"] = data["v_template"] * 1.01
    BodyTopology.from_model(other, cache_dir=tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("topology_*.npz"))) == 2
    path.write_bytes(b"not a zip file")
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        c = BodyTopology.from_model(data, cache_dir=tmp_path)
    assert len(calls) == 3
    np.testing.assert_array_equal(c.contact_labels[0], a.contact_labels[0])
    assert BodyTopology.load(path).model_hash == content_hash(data)


def test_env_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SAHMR_CACHE_DIR", str(tmp_path))
    assert cache_path("ab" * 32).parent == tmp_path / "topology"


def test_from_files_official_layouts(topo, data, tmp_path):
    # METRO layout: npz of object arrays A, U, D (lists of scipy sparse matrices)
    def objs(mats):
        arr = np.empty(len(mats), dtype=object)
        for i, m in enumerate(mats):
            arr[i] = m
        return arr

    adj = [sp.csc_matrix(sp.eye(n)) for n in topo.num_vertices]
    down = [sp.csc_matrix(d) for d in topo.down]
    up = [sp.csc_matrix(u) for u in topo.up]
    mesh_path = tmp_path / "mesh_downsampling.npz"
    np.savez(mesh_path, A=objs(adj), U=objs(up), D=objs(down))
    reg = np.random.default_rng(0).random((17, topo.num_vertices[0]))
    reg /= reg.sum(axis=1, keepdims=True)
    reg_path = tmp_path / "J_regressor_h36m.npy"
    np.save(reg_path, reg)
    with pytest.raises(PermissionError, match="allow_pickle"):
        BodyTopology.from_files(data, mesh_downsampling=mesh_path, cache_dir=tmp_path)
    t = BodyTopology.from_files(
        data, mesh_downsampling=mesh_path, j_regressor_h36m=reg_path, allow_pickle=True,
        cache_dir=tmp_path,
    )  # fmt: skip
    assert t.num_vertices == topo.num_vertices
    np.testing.assert_array_equal(t.j_regressor_h36m, reg)
    np.testing.assert_array_equal(t.contact_labels[2], topo.contact_labels[2])
    x = torch.as_tensor(data["v_template"])[None]
    torch.testing.assert_close(t.downsample(x, 2), topo.downsample(x, 2))
    bad = tmp_path / "bad.npy"
    np.save(bad, reg[:, :-1])
    with pytest.raises(ValueError, match="expected shape"):
        BodyTopology.from_files(data, j_regressor_h36m=bad, cache_dir=tmp_path)
    np.savez(tmp_path / "bad.npz", A=objs(adj), D=objs(down))
    with pytest.raises(ValueError, match="missing"):
        BodyTopology.from_files(data, mesh_downsampling=tmp_path / "bad.npz",
                                allow_pickle=True, cache_dir=tmp_path)  # fmt: skip
    m = BodyModel(save_body_model_npz(data, tmp_path / "m.npz"), j_regressor_h36m=reg_path,
                  topology_cache_dir=tmp_path)  # fmt: skip
    out = m(betas=torch.zeros(1, 10))
    torch.testing.assert_close(out.joints_h36m[0].double(), torch.as_tensor(reg @ data[
        "v_template"]), atol=1e-5, rtol=0)  # fmt: skip


# ------------------------------------------------------------------ the shipped body


@pytest.fixture(scope="module")
def asset_model(tmp_path_factory):
    from sahmr.body.model import license_free_model_path

    try:
        license_free_model_path()
    except FileNotFoundError:
        pytest.skip("license-free asset not built yet")
    return BodyModel(dtype=torch.float64, topology_cache_dir=tmp_path_factory.mktemp("c"))


def _mirror_map(v, data):
    joints = rest_joints(data)
    _, left, _ = body_axes(joints)
    centre = joints[SMPL_JOINT_INDEX["pelvis"]]
    mirrored = v - 2.0 * ((v - centre) @ left)[:, None] * left
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(v).query(mirrored)
    return idx, dist


def test_asset_topology(asset_model):
    data = asset_model._data
    t0 = time.perf_counter()
    topo = asset_model.topology
    logger.info("asset topology in %.2f s: %s", time.perf_counter() - t0, topo.num_vertices)
    _check_hierarchy(topo, asset_model.num_vertices)
    verts = _posed_vertices(asset_model, 8)
    e1, e2 = _round_trip(topo, verts)
    logger.info("asset round trip: %.1f mm (1 level), %.1f mm (2 levels)", e1, e2)
    assert e1 < 15.0 and e2 < 25.0
    reg = topo.j_regressor_h36m
    err = np.linalg.norm(reg @ data["v_template"] - h36m_targets(data), axis=1)
    assert err.max() < 0.005, err
    joints = reg @ data["v_template"]
    _check_h36m_order(joints, data)
    _, left, _ = body_axes(rest_joints(data))
    centre = rest_joints(data)[0]
    mirrored = joints - 2.0 * ((joints - centre) @ left)[:, None] * left
    assert np.abs(mirrored[list(H36M_MIRROR)] - joints).max() < 0.01
    counts = _check_regions(topo, data, min_size=50)
    logger.info("asset region counts %s", dict(zip(CONTACT_REGION_NAMES, counts.tolist())))
    # left/right mirror symmetry: the mesh is symmetric in shape but not vertex for vertex,
    # so compare labels of mirrored nearest vertices and the region areas
    labels = topo.contact_labels[0]
    idx, _ = _mirror_map(data["v_template"], data)
    agree = np.mean(np.asarray(CONTACT_REGION_MIRROR)[labels] == labels[idx])
    assert agree > 0.95, agree
    tri = data["v_template"][data["f"]]
    face_area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    area = np.zeros(len(labels))
    for k in range(3):
        np.add.at(area, data["f"][:, k], face_area / 3.0)
    region_area = np.bincount(labels, weights=area, minlength=len(CONTACT_REGION_NAMES))
    logger.info("asset region areas (cm^2) %s", np.round(region_area * 1e4, 1).tolist())
    for a, b in ((1, 2), (3, 4)):
        assert abs(region_area[a] / region_area[b] - 1.0) < 0.15

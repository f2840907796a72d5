"""Tests for the license-free SMPL-format neutral body (the shipped npz asset)."""

import logging
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
import trimesh
from smplx.lbs import batch_rigid_transform, batch_rodrigues
from smplx.utils import Struct
from smplx.vertex_ids import vertex_ids as smplx_vertex_ids

import sahmr
from sahmr.body.license_free import (
    build_license_free_body,
    landmark_vertex_ids,
    smpl_pickle_dict,
    to_storage,
)
from sahmr.body.license_free.shape_space import semantic_fields
from sahmr.body.license_free.skeleton import SOLE_Y
from sahmr.body.poses import STANDARD_POSE_NAMES, standard_pose
from sahmr.body.regressor import regressor_residual

ASSET = Path(sahmr.__file__).parent / "body" / "assets" / "license_free_neutral.npz"
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
SMPL_JOINTS = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
]  # fmt: skip


@pytest.fixture(scope="module")
def model() -> dict:
    with np.load(ASSET, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def smpl(model) -> smplx.SMPL:
    logging.getLogger("smplx").setLevel(logging.ERROR)
    return smplx.SMPL(model_path=str(ASSET.parent), data_struct=Struct(**model),
                      vertex_ids=landmark_vertex_ids(model))


def _volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume (m^3) by the tetrahedron sum."""
    tri = verts[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def _height(verts: np.ndarray) -> float:
    return float(verts[:, 1].max() - verts[:, 1].min())


def test_asset_size_and_keys(model):
    assert ASSET.stat().st_size < 10e6
    for key in ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights",
                "kintree_table", "joint_names", "J_rest", "landmark_names",
                "landmark_vertex_ids", "shape_names", "shape_std", "format_version",
                "builder_version", "builder_notes"):
        assert key in model
    assert model["posedirs"].shape == (6890, 3, 207)
    assert not model["posedirs"].any()
    assert "posedirs are all zeros" in str(model["builder_notes"])


def test_topology_is_closed_genus0_outward(model):
    verts, faces = model["v_template"], model["f"]
    assert verts.shape == (6890, 3) and faces.shape == (13776, 3)
    mesh = trimesh.Trimesh(verts, faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.body_count == 1 and mesh.euler_number == 2
    assert len(np.unique(faces)) == 6890
    assert _volume(verts, faces) > 0.04  # outward orientation, adult-sized


def test_skeleton_and_rest_frame(model):
    assert list(model["joint_names"]) == SMPL_JOINTS
    assert model["kintree_table"].shape == (2, 24)
    assert list(model["kintree_table"][0, 1:]) == SMPL_PARENTS[1:]
    joints, verts = model["J_rest"], model["v_template"]
    np.testing.assert_allclose(joints[0], [0.0, -0.22, 0.03], atol=0.03)
    assert 1.65 <= _height(verts) <= 1.80
    left, right = SMPL_JOINTS.index("left_wrist"), SMPL_JOINTS.index("right_wrist")
    assert joints[left, 0] > 0.6 and joints[right, 0] < -0.6  # T-pose, left at +x
    assert abs(joints[left, 1] - joints[SMPL_JOINTS.index("left_shoulder"), 1]) < 0.03
    toe = SMPL_JOINTS.index("left_foot")
    assert joints[toe, 2] > joints[SMPL_JOINTS.index("left_ankle"), 2]  # toes forward
    nose = verts[model["landmark_vertex_ids"][0]]
    assert nose[2] > 0.1  # faces +z
    # flat sole: a large patch of vertices exactly on the sole plane
    assert verts[:, 1].min() == pytest.approx(SOLE_Y, abs=1e-3)
    assert (np.abs(verts[:, 1] - SOLE_Y) < 1e-3).sum() > 40
    # arm reaches about the hips: wrist-to-shoulder length vs shoulder-to-hip drop
    arm = np.linalg.norm(joints[left] - joints[SMPL_JOINTS.index("left_shoulder")])
    drop = joints[SMPL_JOINTS.index("left_shoulder"), 1] - joints[1, 1]
    assert 0.85 * drop < arm < 1.2 * drop


def test_joint_regressor_is_convex_and_exact(model):
    reg = model["J_regressor"].astype(np.float64)
    assert reg.shape == (24, 6890)
    assert np.all(reg >= 0.0)
    np.testing.assert_allclose(reg.sum(axis=1), 1.0, atol=1e-9)
    assert regressor_residual(reg, model["v_template"], model["J_rest"]).max() < 1e-3


def test_skinning_weights(model):
    w = model["weights"].astype(np.float64)
    assert w.shape == (6890, 24) and np.all(w >= 0.0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)
    assert (w > 0).sum(axis=1).max() <= 4
    # smooth: weights of edge neighbours differ little
    edges = trimesh.Trimesh(model["v_template"], model["f"], process=False).edges_unique
    assert np.abs(w[edges[:, 0]] - w[edges[:, 1]]).max() < 0.5


@pytest.mark.parametrize("name", STANDARD_POSE_NAMES)
def test_posed_volume_and_sanity(model, smpl, name):
    go, bp = standard_pose(name)
    glob = torch.from_numpy(go)[None]
    body = torch.from_numpy(bp)[None]
    smpl = smpl.double()
    out = smpl(body_pose=body, global_orient=glob, transl=torch.zeros(1, 3, dtype=torch.float64))
    verts = out.vertices[0].detach().numpy()
    faces = model["f"]
    rest_vol = _volume(model["v_template"].astype(np.float64), faces)
    assert abs(_volume(verts, faces) / rest_vol - 1.0) < 0.05
    # every vertex stays near the rigid motion of at least one of its bones
    full = torch.cat([glob, body], dim=1).reshape(-1, 3)
    rot = batch_rodrigues(full).reshape(1, 24, 3, 3)
    joints = smpl.J_regressor @ smpl.v_template
    _, rel = batch_rigid_transform(rot, joints[None], smpl.parents)
    rest = torch.cat([smpl.v_template, torch.ones(6890, 1, dtype=torch.float64)], dim=1)
    rigid = torch.einsum("jab,vb->vja", rel[0], rest)[..., :3].numpy()  # (V, 24, 3)
    dist = np.linalg.norm(rigid - verts[:, None], axis=-1)
    dist[model["weights"] == 0] = np.inf
    nearest = dist.min(axis=1)
    # LBS blends rigid motions, so vertices in a wide blend zone around a strongly bent
    # joint (buttocks at 90+ degrees of hip flexion) sit up to r * sin(theta / 2) from
    # either bone; require 5 cm for 95% of the vertices and 12 cm for all of them.
    assert np.quantile(nearest, 0.95) < 0.05
    assert nearest.max() < 0.12
    # no edge is stretched or crushed absurdly
    edges = trimesh.Trimesh(model["v_template"], faces, process=False).edges_unique
    rest_len = np.linalg.norm(np.diff(model["v_template"][edges], axis=1)[:, 0], axis=1)
    posed_len = np.linalg.norm(np.diff(verts[edges], axis=1)[:, 0], axis=1)
    ratio = posed_len / np.maximum(rest_len, 0.005)  # decimation leaves a few tiny edges
    assert ratio.max() < 8.0  # LBS stretches armpit / back-of-knee skin
    assert np.isfinite(verts).all()


def _shaped(model, k: int, beta: float) -> np.ndarray:
    return model["v_template"] + model["shapedirs"][:, :, k].astype(np.float64) * beta


def test_shape_directions_orthonormal(model):
    nb = model["shapedirs"].shape[-1]
    assert nb >= 10 and len(model["shape_names"]) == nb
    units = model["shapedirs"].reshape(-1, nb).astype(np.float64) / model["shape_std"]
    assert np.abs(units.T @ units - np.eye(nb)).max() < 1e-5
    assert model["shape_names"][0] == "height"


def test_height_component(model):
    heights = [_height(_shaped(model, 0, b)) for b in (-3, -1, 0, 1, 3)]
    assert np.all(np.diff(heights) > 0)
    assert 0.05 <= heights[3] - heights[2] <= 0.08
    assert 1.45 < heights[0] and heights[-1] < 2.05
    soles = [_shaped(model, 0, b)[:, 1].min() for b in (-3, 3)]
    np.testing.assert_allclose(soles, SOLE_Y, atol=1e-3)  # scaled about the soles


def test_semantic_effects(model):
    names = list(model["shape_names"])
    faces, rest = model["f"], model["v_template"]
    rest_vol = _volume(rest, faces)
    k_w = names.index("weight")
    assert _volume(_shaped(model, k_w, 2.0), faces) > 1.1 * rest_vol
    assert _volume(_shaped(model, k_w, -2.0), faces) < 0.9 * rest_vol
    joints_of = {n: i for i, n in enumerate(SMPL_JOINTS)}
    reg = model["J_regressor"]

    def joint(k, b, name):
        return reg[joints_of[name]] @ _shaped(model, k, b)

    k = names.index("shoulder_width")
    assert joint(k, 1, "left_shoulder")[0] - joint(k, -1, "left_shoulder")[0] > 0.01
    k = names.index("arm_length")
    assert np.linalg.norm(joint(k, 1, "left_wrist") - joint(k, 1, "left_shoulder")) > \
        np.linalg.norm(joint(k, -1, "left_wrist") - joint(k, -1, "left_shoulder")) + 0.01
    k = names.index("leg_length")

    def leg_fraction(b):
        ankle, hip, head = (joint(k, b, n)[1] for n in ("left_ankle", "left_hip", "head"))
        return (hip - ankle) / (head - ankle)

    assert leg_fraction(1) > leg_fraction(-1) + 0.01
    for b in (-3.0, 3.0):  # plausible at +-3 for every component
        for k in range(len(names)):
            h = _height(_shaped(model, k, b))
            assert 1.40 < h < 2.10
            assert _volume(_shaped(model, k, b), faces) > 0.5 * rest_vol


def test_joints_follow_shape(model):
    """Regressed joints follow each component's semantic joint motion and stay inside."""
    reg = model["J_regressor"].astype(np.float64)
    nb = model["shapedirs"].shape[-1]
    faces = model["f"]
    for k in range(nb):
        for beta in (-1.0, 1.0, 3.0):
            verts = _shaped(model, k, beta)
            expected = model["J_rest"] + model["J_shapedirs"][:, :, k] * beta
            err = np.linalg.norm(reg @ verts - expected, axis=1).max()
            assert err < (0.01 if abs(beta) <= 1.0 else 0.02)
            mesh = trimesh.Trimesh(verts, faces, process=False)
            assert mesh.contains(reg @ verts).all()


def test_semantic_joint_dirs_match_raw_fields(model):
    """J_shapedirs[:, :, 0] (height) is the raw height field at the joints, scaled."""
    raw = semantic_fields(model["J_rest"], None, model["J_rest"])[:, :, 0]
    dirs = model["J_shapedirs"][:, :, 0].astype(np.float64)
    scale = dirs[SMPL_JOINTS.index("head"), 1] / raw[SMPL_JOINTS.index("head"), 1]
    np.testing.assert_allclose(dirs, raw * scale, atol=1e-6)


def test_landmarks(model):
    assert list(model["landmark_names"]) == list(smplx_vertex_ids["smplh"].keys())
    ids = model["landmark_vertex_ids"]
    assert ids.shape == (21,) and len(np.unique(ids)) == 21
    pts = dict(zip(model["landmark_names"], model["v_template"][ids]))
    assert pts["leye"][0] > 0 > pts["reye"][0]
    assert pts["lthumb"][2] > pts["lpinky"][2]
    assert pts["LBigToe"][2] > pts["LHeel"][2] + 0.2


def test_smplx_builds_with_extra_joints(smpl):
    out = smpl(betas=torch.zeros(1, 10, dtype=smpl.shapedirs.dtype))
    assert out.vertices.shape == (1, 6890, 3) and out.joints.shape == (1, 45, 3)


def test_exported_pickle_matches_npz_route(model, smpl, tmp_path):
    import pickle

    with open(tmp_path / "SMPL_NEUTRAL.pkl", "wb") as fh:
        pickle.dump(smpl_pickle_dict(model), fh)
    plain = smplx.SMPL(model_path=str(tmp_path), gender="neutral",
                       vertex_ids=landmark_vertex_ids(model))
    torch.manual_seed(0)
    betas = torch.randn(4, 10)
    body = torch.randn(4, 69) * 0.3
    glob = torch.randn(4, 3) * 0.5
    a = plain(betas=betas, body_pose=body, global_orient=glob)
    b = smpl.float()(betas=betas, body_pose=body, global_orient=glob)
    torch.testing.assert_close(a.vertices, b.vertices, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.joints, b.joints, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_rebuild_reproduces_asset(model):
    rebuilt = to_storage(build_license_free_body(seed=0))
    for key in ("v_template", "f", "weights", "J_regressor", "shapedirs"):
        np.testing.assert_allclose(rebuilt[key], model[key], atol=1e-6, rtol=0, err_msg=key)

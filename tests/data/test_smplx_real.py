"""The SMPL-X call through the REAL ``smplx`` package, on a small made-up SMPL-X model file.

The model has SMPL-X's sizes (10,475 vertices, 55 joints) and file layout, but made-up,
consistent arrays: the template is a 25-ring x 419-column cylinder, skinning is rigid (every
vertex on the root, except a patch of the top ring on the first left-hand joint), joints are
ring centres, pose blend shapes are zero. So posed vertices can be computed by hand: zero pose
-> template (the patch turned by the mean hand pose), translation moves every vertex, the
global orientation rotates about the root joint. The user's layouts are the ones tested: a
model folder holding ``SMPLX_NEUTRAL.npz`` with pickled dict members (as the official files)
and ``SMPLX_MALE.pkl`` read through the opt-in restricted unpickler, through `SmplxPoser`,
`SmplTargets` and the RICH / PROX datasets (`tests/engine/fake_real_datasets.py` trees).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sahmr.body.smplx_files import (
    NUM_SMPLX_JOINTS,
    default_cache_dir,
    find_smplx_model_file,
    load_smplx_model_data,
    plain_smplx_model_file,
)
from sahmr.body.smplx_to_smpl import NUM_SMPLX_VERTICES, save_vertex_map
from sahmr.data.smplx_targets import SmplTargets, SmplxPoser
from sahmr.geometry.rotations import axis_angle_to_matrix

RINGS, COLUMNS = 25, 419  # 25 x 419 = 10,475 vertices
ROOT_RING = 12
HAND_JOINT = 25  # SMPL-X's first left-hand joint (left_index1)
HAND_VERTS = np.arange((RINGS - 1) * COLUMNS, (RINGS - 1) * COLUMNS + 100)  # top ring patch
HAND_MEAN = 0.3  # mean left-hand pose: 0.3 rad about x at HAND_JOINT
BETA_DIR_SCALE = 0.05
EXPR_SHIFT = np.array([0.0, 0.0, 0.02])


def _rot(aa) -> np.ndarray:
    return axis_angle_to_matrix(torch.as_tensor(np.asarray(aa, np.float64))).numpy()


def make_smplx_model() -> dict[str, np.ndarray]:
    """Arrays of a made-up SMPL-X model (see the module docstring), SMPL-X's y-up frame."""
    assert RINGS * COLUMNS == NUM_SMPLX_VERTICES
    angle = 2 * np.pi * np.arange(COLUMNS) / COLUMNS
    height = np.linspace(0.2, 1.8, RINGS)
    x = np.broadcast_to(0.15 * np.cos(angle)[None] + 0.1, (RINGS, COLUMNS))
    y = np.broadcast_to(height[:, None], (RINGS, COLUMNS))
    z = np.broadcast_to(0.15 * np.sin(angle)[None] - 0.05, (RINGS, COLUMNS))
    v = np.stack([x, y, z], -1).reshape(-1, 3)
    idx = np.arange(NUM_SMPLX_VERTICES).reshape(RINGS, COLUMNS)
    a, b = idx[:-1], np.roll(idx[:-1], -1, axis=1)
    c, d = np.roll(idx[1:], -1, axis=1), idx[1:]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                        np.stack([a, c, d], -1).reshape(-1, 3)])  # fmt: skip
    j = NUM_SMPLX_JOINTS
    ring_of_joint = (np.arange(j) * (RINGS - 1)) // (j - 1)
    ring_of_joint[0] = ROOT_RING
    J_regressor = np.zeros((j, NUM_SMPLX_VERTICES))
    for joint, ring in enumerate(ring_of_joint):
        J_regressor[joint, idx[ring]] = 1.0 / COLUMNS
    weights = np.zeros((NUM_SMPLX_VERTICES, j))
    weights[:, 0] = 1.0
    weights[HAND_VERTS, 0], weights[HAND_VERTS, HAND_JOINT] = 0.0, 1.0
    kintree = np.stack([np.zeros(j, np.int64), np.arange(j)])
    kintree[0, 0] = 4294967295  # the root's "parent", as stored in the official files
    shapedirs = np.zeros((NUM_SMPLX_VERTICES, 3, 20))
    radial = v - v.mean(axis=0)
    radial[:, 1] = 0.0
    shapedirs[:, :, 0] = BETA_DIR_SCALE * radial / np.linalg.norm(radial, axis=1, keepdims=True)
    shapedirs[idx[-1], :, 10] = EXPR_SHIFT  # expression 0 lifts the top ring
    hands_mean = np.zeros(45)
    hands_mean[0] = HAND_MEAN
    rng = np.random.default_rng(0)
    return {
        "v_template": v,
        "f": f.astype(np.uint32),
        "shapedirs": shapedirs,
        "posedirs": np.zeros((NUM_SMPLX_VERTICES, 3, (j - 1) * 9), np.float32),
        "J_regressor": J_regressor,
        "weights": weights,
        "kintree_table": kintree,
        "hands_componentsl": np.eye(45),
        "hands_componentsr": np.eye(45),
        "hands_meanl": hands_mean,
        "hands_meanr": np.zeros(45),
        "lmk_faces_idx": np.arange(51, dtype=np.int64),
        "lmk_bary_coords": np.full((51, 3), 1.0 / 3.0),
        "dynamic_lmk_faces_idx": rng.integers(0, len(f), (79, 17)),
        "dynamic_lmk_bary_coords": np.full((79, 17, 3), 1.0 / 3.0),
    }


def write_model_folder(folder: Path) -> Path:
    """``SMPLX_NEUTRAL.npz`` (with a pickled dict member, as the official files) and
    ``SMPLX_MALE.pkl`` (sparse ``J_regressor``, Python-2 style protocol 2 pickle)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = make_smplx_model()
    joint2num = np.empty((), dtype=object)
    joint2num[()] = {"pelvis": 0}
    np.savez_compressed(folder / "SMPLX_NEUTRAL.npz", **data, joint2num=joint2num)
    male = dict(data, J_regressor=sp.csc_matrix(data["J_regressor"]))
    (folder / "SMPLX_MALE.pkl").write_bytes(pickle.dumps(male, protocol=2))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_folder(tmp_path_factory.mktemp("smplx_models") / "models")


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache(cache_root, monkeypatch):
    """Plain model copies (60 MB each here) are written once for the module."""
    monkeypatch.setenv("SAHMR_CACHE_DIR", str(cache_root))


def _params(**given) -> dict[str, np.ndarray]:
    """RICH / PROXD-style parameters: 12 hand PCA components, 10 betas and expressions."""
    params = {"betas": np.zeros(10), "global_orient": np.zeros(3), "body_pose": np.zeros(63),
              "transl": np.zeros(3), "left_hand_pose": np.zeros(12),
              "right_hand_pose": np.zeros(12), "jaw_pose": np.zeros(3), "leye_pose": np.zeros(3),
              "reye_pose": np.zeros(3), "expression": np.zeros(10)}  # fmt: skip
    params.update({k: np.asarray(v, np.float64) for k, v in given.items()})
    return {k: v.astype(np.float32) for k, v in params.items()}


def expected_vertices(params: dict[str, np.ndarray]) -> np.ndarray:
    """The posed model by hand: rigid skinning, zero pose blend shapes, hand PCA = identity."""
    data = make_smplx_model()
    v = data["v_template"] + data["shapedirs"][:, :, 0] * params["betas"][0]
    v = v + data["shapedirs"][:, :, 10] * params["expression"][0]
    joints = data["J_regressor"] @ v
    root, hand = joints[0], joints[HAND_JOINT]
    hand_aa = np.array(params["left_hand_pose"][:3], np.float64)  # PCA basis = identity
    hand_aa[0] += HAND_MEAN
    v[HAND_VERTS] = (v[HAND_VERTS] - hand) @ _rot(hand_aa).T + hand
    R = _rot(params["global_orient"])
    return (v - root) @ R.T + root + params["transl"]


def test_the_made_up_model_reads_as_an_smplx_model(model_dir, tmp_path):
    data = load_smplx_model_data(model_dir / "SMPLX_NEUTRAL.npz")
    assert "joint2num" not in data and data["v_template"].shape == (NUM_SMPLX_VERTICES, 3)
    with pytest.raises(PermissionError, match="allow_pickle"):
        load_smplx_model_data(model_dir / "SMPLX_MALE.pkl")
    male = load_smplx_model_data(model_dir / "SMPLX_MALE.pkl", allow_pickle=True)
    np.testing.assert_allclose(male["J_regressor"], data["J_regressor"])  # sparse -> dense
    # the folder layouts smplx uses; a .pkl only with the opt-in, which the message names
    assert find_smplx_model_file(model_dir, "neutral") == model_dir / "SMPLX_NEUTRAL.npz"
    with pytest.raises(FileNotFoundError, match=r"SMPLX_MALE\.pkl exists: opt in"):
        find_smplx_model_file(model_dir, "male")
    assert find_smplx_model_file(model_dir, "male", allow_pickle=True).suffix == ".pkl"
    nested = tmp_path / "nested"
    (nested / "smplx").mkdir(parents=True)
    (nested / "smplx" / "SMPLX_FEMALE.npz").write_bytes(b"")
    assert find_smplx_model_file(nested, "female") == nested / "smplx" / "SMPLX_FEMALE.npz"
    # an .npz of plain arrays is handed to smplx as it is; the official layout gets a copy
    plain = tmp_path / "plain" / "SMPLX_NEUTRAL.npz"
    plain.parent.mkdir()
    np.savez_compressed(plain, **make_smplx_model())
    assert plain_smplx_model_file(plain.parent, "neutral") == plain.resolve()
    copy = plain_smplx_model_file(model_dir, "neutral")
    assert copy.parent.parent == default_cache_dir()
    assert plain_smplx_model_file(model_dir, "neutral") == copy  # written once
    with np.load(copy, allow_pickle=False) as z:  # loads without any pickle
        assert "joint2num" not in z.files and z["v_template"].shape == (NUM_SMPLX_VERTICES, 3)
    bad = dict(make_smplx_model(), weights=np.ones((NUM_SMPLX_VERTICES, 24)))
    np.savez(tmp_path / "SMPLX_BAD.npz", **bad)
    with pytest.raises(ValueError, match="weights must be"):
        load_smplx_model_data(tmp_path / "SMPLX_BAD.npz")


class _Boom:
    """Unpickling this would create a marker file."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_members_are_never_unpickled(tmp_path, monkeypatch):
    """A hostile object member in an .npz is dropped, not unpickled, before smplx reads it."""
    marker = tmp_path / "ran"
    _Boom.marker = marker
    member = np.empty((), dtype=object)
    member[()] = _Boom()
    folder = tmp_path / "hostile"
    folder.mkdir()
    np.savez_compressed(folder / "SMPLX_NEUTRAL.npz", **make_smplx_model(), evil=member)
    verts = SmplxPoser(folder)(_params(), None)
    assert not marker.exists()
    np.testing.assert_allclose(verts, expected_vertices(_params()), atol=1e-5)
    # and the restricted unpickler refuses such a .pkl outright
    (folder / "SMPLX_MALE.pkl").write_bytes(pickle.dumps({"v_template": _Boom()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        SmplxPoser(folder, allow_pickle=True)(_params(), "male")
    assert not marker.exists()


def test_real_smplx_poses_the_model_as_computed_by_hand(model_dir):
    import smplx

    poser = SmplxPoser(model_dir)
    assert type(poser._model("neutral")) is smplx.SMPLX  # the real package, not a stand-in
    data = make_smplx_model()
    template = data["v_template"]
    zero = poser(_params(), None)  # default gender: neutral
    assert zero.shape == (NUM_SMPLX_VERTICES, 3)
    others = np.setdiff1d(np.arange(NUM_SMPLX_VERTICES), HAND_VERTS)
    np.testing.assert_allclose(zero[others], template[others], atol=1e-5)  # zero pose: template
    assert np.abs(zero[HAND_VERTS] - template[HAND_VERTS]).max() > 0.01  # mean hand pose
    np.testing.assert_allclose(zero, expected_vertices(_params()), atol=1e-5)
    # a pure translation moves every vertex by it
    shift = np.array([0.3, -1.2, 2.5])
    np.testing.assert_allclose(poser(_params(transl=shift), None), zero + shift, atol=1e-5)
    # the global orientation rotates about the root joint (ring ROOT_RING's centre)
    aa = np.array([0.3, -0.9, 0.5])
    turned = poser(_params(global_orient=aa, transl=shift), None)
    root = template[ROOT_RING * COLUMNS : (ROOT_RING + 1) * COLUMNS].mean(axis=0)
    np.testing.assert_allclose(turned, (zero - root) @ _rot(aa).T + root + shift, atol=1e-5)
    # shape, expression and the 12 hand PCA components reach the model
    given = _params(betas=[1.5, *[0.0] * 9], expression=[2.0, *[0.0] * 9],
                    left_hand_pose=[0.4, *[0.0] * 11], global_orient=aa)  # fmt: skip
    np.testing.assert_allclose(poser(given, "neutral"), expected_vertices(given), atol=1e-5)
    # the male model is the opt-in .pkl (same arrays): the same vertices
    with pytest.raises(FileNotFoundError, match="opt in"):
        poser(_params(), "male")
    pickled = SmplxPoser(model_dir, allow_pickle=True)
    np.testing.assert_allclose(pickled(given, "male"), expected_vertices(given), atol=1e-5)
    assert set(pickled._models) == {"male"}  # one smplx model per gender, built on demand
    # entries smplx does not take (PROXD's VPoser code, camera) are left out
    extra = dict(given, pose_embedding=np.ones(32, np.float32))
    np.testing.assert_allclose(poser(extra, "neutral"), expected_vertices(given), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="not found"):
        SmplxPoser(model_dir / "missing")


def _transfer(path: Path) -> Path:
    """SMPL vertex i = SMPL-X vertex i (a made-up selection, 6890 x 10475)."""
    from sahmr.body import BodyModel

    n = BodyModel().num_vertices
    m = sp.csr_matrix((np.ones(n), (np.arange(n), np.arange(n))), shape=(n, NUM_SMPLX_VERTICES))
    return save_vertex_map(m, path)


def test_rich_and_prox_targets_through_real_smplx(model_dir, tmp_path):
    """The datasets' loading path (SmplTargets -> SmplxPoser -> smplx.SMPLX -> transfer ->
    world frame) on the fake RICH / PROX trees, against the hand-posed model."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
    try:
        import fake_real_datasets as fake
    finally:
        sys.path.pop(0)
    from sahmr.data.prox import ProxDataset
    from sahmr.data.rich import RichDataset

    transfer = _transfer(tmp_path / "smplx2smpl.npz")
    targets = SmplTargets(transfer, smplx_model_dir=model_dir, allow_pickle=True)
    rich = RichDataset(fake.make_rich(tmp_path / "rich", frames=(1, 0, 0)), "train",
                       allow_pickle=True, targets=targets, visibility=False)  # fmt: skip
    prox = ProxDataset(fake.make_prox(tmp_path / "prox", frames=1), allow_pickle=True,
                       targets=targets, visibility=False)  # fmt: skip
    for ds, gender in ((rich, "neutral"), (prox, "male")):  # PROX subject 00034: male
        s = ds[0]
        assert s.extra.get("gender", "neutral") == gender
        want = expected_vertices(s.extra["smplx_params_fit"])[: targets.num_vertices]
        T = s.extra["T_fit2world"].astype(np.float64)
        np.testing.assert_allclose(s.vertices_world, want @ T[:3, :3].T + T[:3, 3], atol=1e-4)
        np.testing.assert_allclose(s.joints_world, targets.J_regressor @ s.vertices_world,
                                   atol=1e-4)  # fmt: skip
    assert set(targets.vertices_fn._models) == {"neutral", "male"}

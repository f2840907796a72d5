"""PROX loader on a tiny fabricated PROX tree (exact on-disk layout, fake values)."""

import json
import pickle

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from sahmr.data.collate import collate_samples
from sahmr.data.prox import (
    ProxDataset,
    load_prox_camera,
    load_prox_color_calibration,
    load_prox_scene_mesh,
    load_prox_sdf,
)
from sahmr.data.safe_pickle import load_data_pickle
from sahmr.geometry.rotations import axis_angle_to_matrix

REC = "N0Sofa_00162_01"
SCENE = "N0Sofa"
FRAMES = ("s001_frame_00001__00.00.00.029", "s001_frame_00002__00.00.00.062")
W, H = 32, 24
K = np.array([[30.0, 0.0, 15.5], [0.0, 31.0, 11.5], [0.0, 0.0, 1.0]])
J0 = np.array([0.01, -0.35, 0.02])  # fake SMPL-X rest pelvis


def _T_c2w():
    T = np.eye(4)
    T[:3, :3] = axis_angle_to_matrix(torch.tensor([0.4, -0.2, 1.0], dtype=torch.float64)).numpy()
    T[:3, 3] = [1.0, -2.0, 0.5]
    return T


def _fit(i):
    return {
        "camera_rotation": np.eye(3, dtype=np.float32)[None],
        "camera_translation": np.zeros((1, 3), np.float32),
        "betas": np.full((1, 10), 0.1 * i, np.float32),
        "global_orient": np.array([[0.0, 0.0, 0.0]], np.float32),
        "transl": np.array([[0.1, 0.2, 2.0 + i]], np.float32),
        "left_hand_pose": np.zeros((1, 12), np.float32),
        "right_hand_pose": np.zeros((1, 12), np.float32),
        "jaw_pose": np.zeros((1, 3), np.float32),
        "leye_pose": np.zeros((1, 3), np.float32),
        "reye_pose": np.zeros((1, 3), np.float32),
        "expression": np.zeros((1, 10), np.float32),
        "pose_embedding": np.zeros((1, 32), np.float32),
        "body_pose": np.full((1, 63), 0.01, np.float32),
    }


@pytest.fixture
def prox_root(tmp_path):
    root = tmp_path / "prox"
    color = root / "recordings" / REC / "Color"
    color.mkdir(parents=True)
    for name in FRAMES:
        # Stored mirrored: red on the stored left half, blue on the stored right half.
        img = np.zeros((H, W, 3), np.uint8)
        img[:, : W // 2] = (255, 0, 0)
        img[:, W // 2 :] = (0, 0, 255)
        Image.fromarray(img).save(color / f"{name}.jpg", quality=95)
    (root / "calibration").mkdir()
    calib = {
        "c": [K[0, 2], K[1, 2]], "f": [K[0, 0], K[1, 1]], "k": [0.1, -0.05, 0.0, 0.0, 0.0],
        "camera_mtx": K.tolist(), "view_mtx": np.eye(4)[:3].tolist(), "R": [0, 0, 0],
        "T": [0, 0, 0],
    }  # fmt: skip
    (root / "calibration" / "Color.json").write_text(json.dumps(calib))
    (root / "cam2world").mkdir()
    (root / "cam2world" / f"{SCENE}.json").write_text(json.dumps(_T_c2w().tolist()))
    (root / "scenes").mkdir()
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 1]], float)
    faces = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    trimesh.Trimesh(verts, faces, process=False).export(root / "scenes" / f"{SCENE}.ply")
    (root / "sdf").mkdir()
    ix, iy, iz = np.meshgrid(np.arange(3), np.arange(3), np.arange(3), indexing="ij")
    np.save(root / "sdf" / f"{SCENE}_sdf.npy", (100 * ix + 10 * iy + iz).astype(np.float32))
    sdf_meta = {"min": [-1.0, -2.0, 0.0], "max": [1.0, 2.0, 3.0], "dim": 3}
    (root / "sdf" / f"{SCENE}.json").write_text(json.dumps(sdf_meta))
    # PROXD fit for the first frame only.
    fit_dir = root / "PROXD" / REC / "results" / FRAMES[0]
    fit_dir.mkdir(parents=True)
    with (fit_dir / "000.pkl").open("wb") as fh:
        pickle.dump(_fit(0), fh, protocol=2)
    kp_dir = root / "keypoints" / REC
    kp_dir.mkdir(parents=True)
    joints = np.zeros((25, 3))
    joints[:3] = [[10, 5, 0.9], [20, 15, 0.8], [12, 9, 0.05]]  # last one below confidence
    people = {"people": [{"pose_keypoints_2d": joints.ravel().tolist()}]}
    (kp_dir / f"{FRAMES[0]}_keypoints.json").write_text(json.dumps(people))
    return root


def test_camera_and_calibration(prox_root):
    cam = load_prox_camera(prox_root, SCENE)
    np.testing.assert_allclose(cam.K, K)
    np.testing.assert_allclose(cam.dist, [0.1, -0.05, 0, 0, 0])
    np.testing.assert_allclose(cam.T_c2w, _T_c2w())
    np.testing.assert_allclose(cam.T_w2c @ cam.T_c2w, np.eye(4), atol=1e-12)
    bad = json.loads((prox_root / "calibration" / "Color.json").read_text())
    bad["f"] = [99.0, 99.0]
    (prox_root / "calibration" / "Color.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="disagrees with f/c"):
        load_prox_color_calibration(prox_root / "calibration" / "Color.json")


def test_sdf_axes_origin_spacing(prox_root):
    sdf = load_prox_sdf(prox_root, SCENE)
    assert sdf.values.shape == (3, 3, 3) and sdf.values.dtype == np.float32
    np.testing.assert_allclose(sdf.origin, [-1.0, -2.0, 0.0])
    np.testing.assert_allclose(sdf.voxel_size, [1.0, 2.0, 1.5])
    assert not sdf.is_isotropic
    for i, j, k in [(0, 0, 0), (2, 1, 0), (1, 2, 2), (0, 1, 2)]:
        assert sdf.values[k, j, i] == 100 * i + 10 * j + k  # [z, y, x] order


def test_scene_mesh(prox_root):
    verts, faces = load_prox_scene_mesh(prox_root, SCENE)
    assert verts.shape == (5, 3) and faces.shape == (4, 3)


def test_pickles_refused_without_opt_in(prox_root):
    ds = ProxDataset(prox_root)
    assert len(ds) == 1
    with pytest.raises(PermissionError, match="allow_pickle=True"):
        ds[0]


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_restricted_unpickler_blocks_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"betas": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_data_pickle(path, allow_pickle=True)
    sparse_like = tmp_path / "scipy.pkl"
    import scipy.sparse as sp

    sparse_like.write_bytes(pickle.dumps({"m": sp.eye(3, format="csr")}))
    with pytest.raises(pickle.UnpicklingError, match="scipy"):
        load_data_pickle(sparse_like, allow_pickle=True)


def test_sample_fields_flip_and_world_transform(prox_root):
    ds = ProxDataset(prox_root, allow_pickle=True, root_joint_fn=lambda betas: J0, keep_image=True)
    assert len(ds) == 1
    s = ds[0]
    assert (s.source, s.scene_id, s.sequence_id, s.frame_index) == ("prox", SCENE, REC, 1)
    assert s.extra["gender"] == "female" and s.extra["frame_name"] == FRAMES[0]
    np.testing.assert_allclose(s.K, K, rtol=1e-6)
    np.testing.assert_allclose(s.T_w2c, np.linalg.inv(_T_c2w()), atol=1e-6)
    assert s.image_size.tolist() == [W, H] and s.image.shape == (H, W, 3)
    # Un-mirrored: blue now on the left, red on the right.
    left, right = s.image[:, : W // 2 - 2].mean((0, 1)), s.image[:, W // 2 + 2 :].mean((0, 1))
    assert left[2] > 200 and left[0] < 50 and right[0] > 200 and right[2] < 50
    # OpenPose box of the two confident joints, enlarged by 10 % about its centre.
    np.testing.assert_allclose(s.bbox, [9.5, 4.5, 20.5, 15.5], atol=1e-5)
    assert s.extra["bbox_source"] == "openpose"
    assert s.crop.shape == (224, 224, 3) and s.crop.dtype == np.uint8
    assert s.betas is None and s.body_pose is None  # SMPL-X only: no SMPL params
    fit = s.extra["smplx_params_fit"]
    assert fit["body_pose"].shape == (63,) and fit["betas"].shape == (10,)
    np.testing.assert_allclose(fit["transl"], [0.1, 0.2, 2.0])
    # Known camera-frame pelvis J0 + transl maps to T_c2w @ it in the world frame.
    world = s.extra["smplx_params_world"]
    pelvis_world = _T_c2w()[:3, :3] @ (J0 + np.array([0.1, 0.2, 2.0])) + _T_c2w()[:3, 3]
    np.testing.assert_allclose(J0 + world["transl"], pelvis_world, atol=1e-5)
    R_world = axis_angle_to_matrix(torch.as_tensor(world["global_orient"], dtype=torch.float64))
    np.testing.assert_allclose(R_world.numpy(), _T_c2w()[:3, :3], atol=1e-5)
    np.testing.assert_allclose(s.extra["T_fit2world"], _T_c2w(), atol=1e-6)
    batch = collate_samples([s, s])
    assert batch.K.shape == (2, 3, 3) and batch.betas is None


def test_frames_without_fits_and_full_image_box(prox_root):
    ds = ProxDataset(prox_root, [REC], allow_pickle=True, require_fits=False)
    assert len(ds) == 2
    s = ds[1]
    assert s.frame_index == 2 and "smplx_params_fit" not in s.extra
    np.testing.assert_allclose(s.bbox, [0, 0, W, H])
    assert s.extra["bbox_source"] == "full_image"
    given = ProxDataset(prox_root, bboxes={f"{REC}/{FRAMES[0]}": [1, 2, 3, 4]}, allow_pickle=True)
    np.testing.assert_allclose(given[0].bbox, [1, 2, 3, 4])
    with pytest.raises(ValueError, match="<scene>_<subject>_<seq>"):
        ProxDataset(prox_root, ["badname"])


def test_vposer_body_pose_kept_as_embedding(prox_root):
    fit = _fit(0)
    fit["body_pose"] = np.zeros((1, 32), np.float32)
    del fit["pose_embedding"]
    path = prox_root / "PROXD" / REC / "results" / FRAMES[0] / "000.pkl"
    path.write_bytes(pickle.dumps(fit, protocol=2))
    params = ProxDataset(prox_root, allow_pickle=True)[0].extra["smplx_params_fit"]
    assert "body_pose" not in params and params["vposer_embedding"].shape == (32,)

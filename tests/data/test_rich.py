"""RICH loader on a tiny fabricated RICH tree (exact on-disk layout, fake values)."""

import json
import pickle

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from sahmr.data.rich import (
    RichDataset,
    load_rich_camera,
    load_rich_hsc,
    load_rich_multicam2world,
    load_rich_scene_mesh,
)
from sahmr.geometry.rotations import axis_angle_to_matrix

SEQ = "ParkingLot1_005_pushup2"
SCENE = "ParkingLot1"
W, H = 32, 24
K = np.array([[40.0, 0.0, 16.0], [0.0, 41.0, 12.0], [0.0, 0.0, 1.0]])
NX = 8  # fake SMPL-X vertex count
NS = 6  # fake SMPL vertex count


def _rot(v):
    return axis_angle_to_matrix(torch.tensor(v, dtype=torch.float64)).numpy()


def _ext(cam):
    T = np.eye(4)
    T[:3, :3] = _rot([0.1 * cam, 0.3, -0.2])
    T[:3, 3] = [0.5, -0.1 * cam, 3.0]
    return T


def _xml(T):
    fmt = " ".join(f"{v:.12g}" for v in T[:3].ravel())
    kfmt = " ".join(f"{v:.12g}" for v in K.ravel())
    return f"""<?xml version="1.0"?>
<opencv_storage>
<CameraMatrix type_id="opencv-matrix"><rows>3</rows><cols>4</cols><dt>d</dt>
  <data>{fmt}</data></CameraMatrix>
<Intrinsics type_id="opencv-matrix"><rows>3</rows><cols>3</cols><dt>d</dt>
  <data>{kfmt}</data></Intrinsics>
<Distortion type_id="opencv-matrix"><rows>1</rows><cols>5</cols><dt>d</dt>
  <data>0.01 -0.02 0. 0. 0.</data></Distortion>
</opencv_storage>
"""


@pytest.fixture
def rich_root(tmp_path):
    root = tmp_path / "rich"
    for cam in (0, 3):
        d = root / "images" / "train" / SEQ / f"cam_{cam:02d}"
        d.mkdir(parents=True)
        for frame in (150, 151):
            Image.fromarray(np.full((H, W, 3), 40 * cam, np.uint8)).save(
                d / f"{frame:05d}_{cam:02d}.png"
            )
    calib = root / "scan_calibration" / SCENE / "calibration"
    calib.mkdir(parents=True)
    for cam in (0, 3):
        (calib / f"{cam:03d}.xml").write_text(_xml(_ext(cam)))
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 1]], float)
    faces = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    mesh = trimesh.Trimesh(verts, faces, process=False)
    mesh.export(root / "scan_calibration" / SCENE / "scan_camcoord.ply")
    (root / "multicam2world").mkdir()
    m2w = {"R": _rot([0.0, 0.0, 0.5]).tolist(), "t": [1.0, 2.0, 3.0], "c": 1.0}
    (root / "multicam2world" / f"{SCENE}_multicam2world.json").write_text(json.dumps(m2w))
    body = root / "bodies" / "train" / SEQ / "00150"
    body.mkdir(parents=True)
    params = {
        "betas": np.zeros((1, 10), np.float32),
        "global_orient": np.zeros((1, 3), np.float32),
        "transl": np.array([[0.2, 0.3, 4.0]], np.float32),
        "body_pose": np.zeros((1, 63), np.float32),
        "left_hand_pose": np.zeros((1, 12), np.float32),
        "expression": np.zeros((1, 10), np.float32),
    }
    (body / "005.pkl").write_bytes(pickle.dumps(params, protocol=2))
    hsc = root / "human_scene_contact" / "train" / SEQ / "00150"
    hsc.mkdir(parents=True)
    s2m = np.full((NX, 3), 1.0, np.float32)
    s2m[[1, 4]] = 0.01  # two SMPL-X vertices within 7 cm of the scan
    tris = np.zeros((NX, 3, 3), np.float32)
    tris[1] = [[0, 0, 0], [3, 0, 0], [0, 3, 0]]  # centroid (1, 1, 0)
    tris[4] = [[0, 0, 3], [0, 0, 3], [0, 0, 3]]  # centroid (0, 0, 3)
    contact = np.array([0, 1, 1, 0, 0, 1], np.float64)
    data = {"contact": contact, "s2m_dist_id": s2m, "closest_triangles_id": tris}
    (hsc / "005.pkl").write_bytes(pickle.dumps(data, protocol=2))
    return root


def test_camera_xml(rich_root):
    cam = load_rich_camera(rich_root, SCENE, 3)
    np.testing.assert_allclose(cam.K, K)
    np.testing.assert_allclose(cam.T_w2c, _ext(3), atol=1e-10)
    np.testing.assert_allclose(cam.dist, [0.01, -0.02, 0, 0, 0])
    with pytest.raises(FileNotFoundError):
        load_rich_camera(rich_root, SCENE, 7)


def test_multicam2world_and_scan(rich_root):
    c, S = load_rich_multicam2world(rich_root, SCENE)
    x = np.array([0.3, -0.4, 1.2])
    want = c * x @ _rot([0.0, 0.0, 0.5]) + np.array([1.0, 2.0, 3.0])  # toolkit's row form
    np.testing.assert_allclose(S[:3, :3] @ x + S[:3, 3], want)
    verts, faces = load_rich_scene_mesh(rich_root, SCENE)
    assert verts.shape == (5, 3) and faces.shape == (4, 3)


def test_hsc_parser(rich_root):
    path = rich_root / "human_scene_contact" / "train" / SEQ / "00150" / "005.pkl"
    with pytest.raises(PermissionError, match="allow_pickle=True"):
        load_rich_hsc(path)
    hsc = load_rich_hsc(path, allow_pickle=True)
    assert hsc["contact"].tolist() == [0, 1, 1, 0, 0, 1] and hsc["contact"].dtype == np.int64
    assert hsc["s2m"].shape == (NX, 3) and hsc["closest_triangles"].shape == (NX, 3, 3)


def test_dataset_scan_frame(rich_root):
    ds = RichDataset(rich_root, "train", allow_pickle=True, keep_image=True)
    assert len(ds) == 2  # frame 151 has no body file
    assert sorted(f.cam_id for f in ds.frames) == [0, 3]
    s = next(ds[i] for i in range(2) if ds.frames[i].cam_id == 3)
    assert (s.source, s.scene_id, s.sequence_id, s.frame_index) == ("rich", SCENE, SEQ, 150)
    assert s.action == "pushup2" and s.extra["subject"] == "005" and s.extra["cam_id"] == 3
    np.testing.assert_allclose(s.T_w2c, _ext(3), atol=1e-6)
    np.testing.assert_allclose(s.K, K)
    assert s.image_size.tolist() == [W, H] and s.image[0, 0, 0] == 120
    assert s.extra["bbox_source"] == "full_image"
    np.testing.assert_allclose(s.extra["smplx_params_fit"]["transl"], [0.2, 0.3, 4.0])
    assert s.extra["hsc_contact_smpl"].tolist() == [0, 1, 1, 0, 0, 1]
    pts = s.extra["hsc_contact_points_world"]
    np.testing.assert_allclose(pts, [[1, 1, 0], [0, 0, 3]], atol=1e-6)
    assert s.contact_points_world.shape == (0, 3) and s.vertex_contact is None
    with pytest.raises(PermissionError):
        RichDataset(rich_root, "train")[0]


def test_dataset_regions_gravity_and_downscale(rich_root):
    smpl_regions = np.array([0, 1, 2, 3, 4, 5])
    smplx_regions = np.zeros(NX, np.int64)
    smplx_regions[1] = 6  # vertex 4 has no region -> dropped from labelled contacts
    ds = RichDataset(
        rich_root, "train", cameras=[0], allow_pickle=True, world_frame="gravity",
        smpl_vertex_regions=smpl_regions, smplx_vertex_regions=smplx_regions,
        image_downscale=4.0, root_joint_fn=lambda betas: np.zeros(3),
        bboxes={f"{SEQ}/00/00150": [2, 3, 12, 20]},
    )  # fmt: skip
    assert len(ds) == 1
    s = ds[0]
    _, S = load_rich_multicam2world(rich_root, SCENE)
    np.testing.assert_allclose(s.T_w2c, _ext(0) @ np.linalg.inv(S), atol=1e-6)
    np.testing.assert_allclose(s.K[:2], K[:2] / 4, atol=1e-6)
    assert s.vertex_contact.tolist() == [0, 1, 2, 0, 0, 5]
    np.testing.assert_allclose(
        s.contact_points_world, [S[:3, :3] @ [1, 1, 0] + S[:3, 3]], atol=1e-5
    )
    assert s.contact_point_region.tolist() == [6]
    np.testing.assert_allclose(s.bbox, [2, 3, 12, 20])
    world = s.extra["smplx_params_world"]
    np.testing.assert_allclose(world["transl"], S[:3, :3] @ [0.2, 0.3, 4.0] + S[:3, 3], atol=1e-5)
    # A point seen by the camera projects identically through either world frame.
    p_m = np.array([0.1, 0.2, 1.0, 1.0])
    np.testing.assert_allclose(s.T_w2c @ (S @ p_m), _ext(0) @ p_m, atol=1e-5)


def test_gravity_refuses_scale(rich_root):
    path = rich_root / "multicam2world" / f"{SCENE}_multicam2world.json"
    data = json.loads(path.read_text())
    data["c"] = 1.1
    path.write_text(json.dumps(data))
    ds = RichDataset(rich_root, "train", allow_pickle=True, world_frame="gravity")
    with pytest.raises(ValueError, match=r"scale c=1\.1"):
        ds[0]

"""Camera and bbox files: sahmr JSON/YAML, RICH XML, PROX Color.json + cam2world, boxes."""

import json

import numpy as np
import pytest

from sahmr.inference.camera_io import (
    CameraSpec,
    camera_from_dict,
    load_camera,
    parse_bbox,
    read_bbox_file,
    save_camera,
)
from sahmr.inference.errors import BBoxError, CameraError, MissingFileError


def _rigid(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    T = np.eye(4)
    T[:3, :3] = q
    T[:3, 3] = rng.normal(size=3)
    return T


K = np.array([[500.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])


def _project(K, T, X):
    p = X @ T[:3, :3].T + T[:3, 3]
    return p[:, :2] / p[:, 2:] @ K[:2, :2].T + K[:2, 2]


def test_json_round_trip(tmp_path):
    cam = CameraSpec(K=K, T_w2c=_rigid(), image_size=(640, 480))
    path = save_camera(tmp_path / "cam.json", cam)
    back = load_camera(path)
    np.testing.assert_allclose(back.K, K)
    np.testing.assert_allclose(back.T_w2c, cam.T_w2c, atol=1e-12)
    assert back.image_size == (640, 480) and back.source == "sahmr"
    assert not back.mirrored_images
    np.testing.assert_allclose(back.T_c2w @ back.T_w2c, np.eye(4), atol=1e-12)


def test_yaml_with_camera_to_world_and_fx_form(tmp_path):
    T = _rigid(1)
    T_c2w = np.linalg.inv(T)
    text = "fx: 500\nfy: 510\ncx: 320\ncy: 240\nT_c2w: " + json.dumps(T_c2w.tolist()) + "\n"
    (tmp_path / "cam.yaml").write_text(text)
    cam = load_camera(tmp_path / "cam.yaml")
    np.testing.assert_allclose(cam.K, K)
    np.testing.assert_allclose(cam.T_w2c, T, atol=1e-9)
    assert cam.image_size is None


def test_opengl_convention_flips_y_and_z():
    T = _rigid(2)
    cam = camera_from_dict({"K": K.tolist(), "T_w2c": T.tolist(), "convention": "opengl"})
    np.testing.assert_allclose(cam.T_w2c, np.diag([1.0, -1.0, -1.0, 1.0]) @ T)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"T_w2c": np.eye(4).tolist()}, "needs 'K'"),
        ({"K": K.tolist()}, "exactly one"),
        ({"K": K.tolist(), "T_w2c": np.eye(4).tolist(), "T_c2w": np.eye(4).tolist()},
         "exactly one"),
        ({"K": K.tolist(), "T_w2c": (2 * np.eye(4)).tolist()}, "proper rotation"),
        ({"K": [[-1, 0, 0], [0, 1, 0], [0, 0, 1]], "T_w2c": np.eye(4).tolist()}, "fx, fy > 0"),
        ({"K": K.tolist(), "T_w2c": np.eye(4).tolist(), "image_size": [640]}, "image_size"),
        ({"K": K.tolist(), "T_w2c": np.eye(4).tolist(), "version": 99}, "newer"),
        ({"K": K.ravel().tolist()[:8], "T_w2c": np.eye(4).tolist()}, "9 values"),
    ],
)
def test_malformed_camera_files(data, match):
    with pytest.raises(CameraError, match=match):
        camera_from_dict(data, "cam.json")


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(MissingFileError, match="camera file not found"):
        load_camera(tmp_path / "nope.json")
    (tmp_path / "cam.txt").write_text("1 2 3")
    with pytest.raises(CameraError, match="unknown camera file type"):
        load_camera(tmp_path / "cam.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CameraError, match="cannot parse"):
        load_camera(tmp_path / "bad.json")


def _opencv_matrix(tag: str, m: np.ndarray) -> str:
    rows, cols = m.shape
    data = " ".join(f"{v:.12g}" for v in m.ravel())
    return (f'<{tag} type_id="opencv-matrix"><rows>{rows}</rows><cols>{cols}</cols>'
            f"<dt>d</dt><data>{data}</data></{tag}>")


def test_rich_xml(tmp_path):
    T = _rigid(3)
    xml = ('<?xml version="1.0"?>\n<opencv_storage>' + _opencv_matrix("CameraMatrix", T[:3])
           + _opencv_matrix("Intrinsics", K) + _opencv_matrix("Distortion", np.zeros((1, 5)))
           + "</opencv_storage>\n")
    (tmp_path / "004.xml").write_text(xml)
    cam = load_camera(tmp_path / "004.xml", scale=0.25)
    assert cam.source == "rich" and cam.image_size is None
    np.testing.assert_allclose(cam.T_w2c, T, atol=1e-10)
    # Down-scaled intrinsics: pixel-centre consistent resize (u + 0.5) * s - 0.5.
    X = np.random.default_rng(0).normal(size=(5, 3)) + T[:3, :3].T @ ([0, 0, 5] - T[:3, 3])
    np.testing.assert_allclose(_project(cam.K, T, X), (_project(K, T, X) + 0.5) * 0.25 - 0.5)


def test_prox_color_calibration_with_cam2world(tmp_path):
    (tmp_path / "calibration").mkdir()
    (tmp_path / "cam2world").mkdir()
    color = {"camera_mtx": K.tolist(), "k": [0.1, 0, 0, 0, 0], "f": [500.0, 510.0],
             "c": [320.0, 240.0]}
    (tmp_path / "calibration" / "Color.json").write_text(json.dumps(color))
    T_c2w = np.linalg.inv(_rigid(4))
    (tmp_path / "cam2world" / "N3OpenArea.json").write_text(json.dumps(T_c2w.tolist()))
    with pytest.raises(CameraError, match="--cam2world"):
        load_camera(tmp_path / "calibration" / "Color.json")
    cam = load_camera(tmp_path / "calibration" / "Color.json",
                      cam2world=tmp_path / "cam2world" / "N3OpenArea.json")
    assert cam.source == "prox" and cam.mirrored_images
    np.testing.assert_allclose(cam.T_w2c @ T_c2w, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(cam.K, K)
    # cam2world elsewhere than <root>/cam2world/ is read too.
    (tmp_path / "c2w.json").write_text(json.dumps(T_c2w.tolist()))
    cam2 = load_camera(tmp_path / "calibration" / "Color.json", cam2world=tmp_path / "c2w.json")
    np.testing.assert_allclose(cam2.T_w2c, cam.T_w2c)
    # cam2world with a non-PROX camera file is a mistake.
    save_camera(tmp_path / "mine.json", CameraSpec(K=K, T_w2c=np.eye(4)))
    with pytest.raises(CameraError, match="PROX"):
        load_camera(tmp_path / "mine.json", cam2world=tmp_path / "c2w.json")


def test_bbox_parsing_and_files(tmp_path):
    np.testing.assert_allclose(parse_bbox("10,20.5, 30 ,4e1"), [10, 20.5, 30, 40])
    np.testing.assert_allclose(parse_bbox("[1 2 3 4]"), [1, 2, 3, 4])
    for bad in ("1,2,3", "1,2,3,4,5", "a,b,c,d", "1,2,3,4x"):
        with pytest.raises(BBoxError):
            parse_bbox(bad)
    (tmp_path / "a.txt").write_text("1 2 3 4\n")
    (tmp_path / "b.json").write_text("[5, 6, 7, 8]")
    (tmp_path / "c.json").write_text('{"bbox": [9, 10, 11, 12]}')
    people = {"people": [
        {"pose_keypoints_2d": [100, 50, 0.9, 140, 200, 0.8, 120, 120, 0.05]},
        {"pose_keypoints_2d": [10, 10, 0.2, 12, 12, 0.2]},
    ]}
    (tmp_path / "f_keypoints.json").write_text(json.dumps(people))
    np.testing.assert_allclose(read_bbox_file(tmp_path / "a.txt"), [1, 2, 3, 4])
    np.testing.assert_allclose(read_bbox_file(tmp_path / "b.json"), [5, 6, 7, 8])
    np.testing.assert_allclose(read_bbox_file(tmp_path / "c.json"), [9, 10, 11, 12])
    np.testing.assert_allclose(read_bbox_file(tmp_path / "f_keypoints.json"), [100, 50, 140, 200])
    (tmp_path / "d.json").write_text('{"box": [1, 2, 3, 4]}')
    with pytest.raises(BBoxError, match="bbox"):
        read_bbox_file(tmp_path / "d.json")
    with pytest.raises(MissingFileError):
        read_bbox_file(tmp_path / "missing.json")

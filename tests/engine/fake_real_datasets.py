"""Small fake RICH and PROX trees in the released on-disk layouts, with a fake SMPL-X body.

No licensed model is needed: the "SMPL-X" body is the shipped license-free SMPL-format body
posed by `sahmr.body.BodyModel` (the first 21 body joints from the 63-D SMPL-X body pose),
whose vertices are stored in REVERSED order followed by `NUM_EXTRA` extra vertices, so a
fake "SMPL-X" mesh has 6890 + NUM_EXTRA vertices. The transfer matrix undoes the reversal
(a permutation, 6890 x (6890 + NUM_EXTRA), extra columns unused), so targets are right only
if the matrix is really applied. Runs through the tools use it by monkeypatching
`sahmr.data.smplx_targets.SmplxPoser` with `FakeSmplxPoser`.

Scenes: a 4 m x 4 m floor slab (top at z = 0, world z up); one person standing on it, one
camera 3 m in front looking along +y; with ``wall=True`` also a low wall (`WALL`) between
the camera and the person that hides the legs.
"""

from __future__ import annotations

import functools
import json
import pickle
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

from sahmr.body.smplx_to_smpl import save_vertex_map

NUM_EXTRA = 5
W, H = 80, 60
K = np.array([[70.0, 0.0, 40.0], [0.0, 70.0, 30.0], [0.0, 0.0, 1.0]])
DIST = np.array([0.02, -0.01, 0.001, 0.0005, 0.0])
RICH_SEQS = {"train": "Gym_010_lunge1", "val": "Gym_011_pushup1", "test": "Gym_012_squat1"}
PROX_RECORDING = "MPH1Library_00034_01"


@functools.lru_cache(maxsize=1)
def _body():
    from sahmr.body import BodyModel

    return BodyModel()


def pose_smpl(params: dict) -> np.ndarray:
    """(6890, 3) float64 vertices of the license-free body for SMPL-X-style params."""
    body_pose = np.zeros(69)
    body_pose[:63] = np.asarray(params["body_pose"]).reshape(-1)[:63]

    def t(x):
        return torch.as_tensor(np.asarray(x, np.float32).reshape(1, -1))

    with torch.no_grad():
        out = _body()(
            betas=t(params["betas"]),
            global_orient=t(params["global_orient"]),
            body_pose=t(body_pose),
            transl=t(params["transl"]),
        )
    return out.vertices[0].double().numpy()


class FakeSmplx:
    """``(params, gender) -> (6890 + NUM_EXTRA, 3)`` fake SMPL-X vertices (see module doc)."""

    def __call__(self, params: dict, gender: str | None = None) -> np.ndarray:
        v = pose_smpl(params)
        return np.concatenate([v[::-1], v[:NUM_EXTRA] + 1.0])


class FakeSmplxPoser(FakeSmplx):
    """Stands in for `sahmr.data.smplx_targets.SmplxPoser` (same constructor), so configs
    name only the project's classes (checkpoints refuse other ``_target_``s)."""

    def __init__(self, model_dir, **kwargs) -> None:
        self.model_dir = Path(model_dir)


def write_transfer(path: Path) -> Path:
    """The (6890, 6890 + NUM_EXTRA) permutation undoing `FakeSmplx`'s reversal."""
    n = _body().num_vertices
    m = np.zeros((n, n + NUM_EXTRA), np.float32)
    m[np.arange(n), n - 1 - np.arange(n)] = 1.0
    return save_vertex_map(m, path)


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def world_params(shift: float = 0.0) -> dict:
    """SMPL-X params (world frame, z up) of a person standing on the floor at x = shift."""
    params = {
        "betas": np.zeros((1, 10), np.float32),
        "global_orient": np.array([[np.pi / 2, 0, 0]], np.float32),  # template y-up -> z-up
        "body_pose": np.zeros((1, 63), np.float32),
        "transl": np.zeros((1, 3), np.float32),
        "left_hand_pose": np.zeros((1, 12), np.float32),
        "right_hand_pose": np.zeros((1, 12), np.float32),
        "jaw_pose": np.zeros((1, 3), np.float32),
        "leye_pose": np.zeros((1, 3), np.float32),
        "reye_pose": np.zeros((1, 3), np.float32),
        "expression": np.zeros((1, 10), np.float32),
    }
    v = pose_smpl(params)
    params["transl"] = np.array([[shift, 0.0, -v[:, 2].min() + 0.005]], np.float32)
    return params


def T_w2c() -> np.ndarray:
    """Camera at (0, -3, 0.9) looking along +y (x right, y down = -z)."""
    R = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ np.array([0.0, -3.0, 0.9])
    return T


WALL = {"y": (-1.0, -0.9), "top": 0.8}
"""The optional wall: 2 m wide (x in [-1, 1]), between y = -1.0 and -0.9, from the floor to
z = 0.8 (camera at height 0.9, 3 m away: it hides body points below about 0.75 m)."""


def floor_mesh(wall: bool = False) -> trimesh.Trimesh:
    box = trimesh.creation.box(extents=[4.0, 4.0, 0.1])
    box.apply_translation([0.0, 0.0, -0.05])
    if not wall:
        return box
    (y0, y1), top = WALL["y"], WALL["top"]
    low = trimesh.creation.box(extents=[2.0, y1 - y0, top])
    low.apply_translation([0.0, (y0 + y1) / 2, top / 2])
    return trimesh.util.concatenate([box, low])


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)


def _xml(T: np.ndarray) -> str:
    ext = " ".join(f"{v:.12g}" for v in T[:3].ravel())
    kk = " ".join(f"{v:.12g}" for v in K.ravel())
    dd = " ".join(f"{v:.12g}" for v in DIST)
    return f"""<?xml version="1.0"?>
<opencv_storage>
<CameraMatrix type_id="opencv-matrix"><rows>3</rows><cols>4</cols><dt>d</dt>
  <data>{ext}</data></CameraMatrix>
<Intrinsics type_id="opencv-matrix"><rows>3</rows><cols>3</cols><dt>d</dt>
  <data>{kk}</data></Intrinsics>
<Distortion type_id="opencv-matrix"><rows>1</rows><cols>5</cols><dt>d</dt>
  <data>{dd}</data></Distortion>
</opencv_storage>
"""


def hsc_contact(verts: np.ndarray) -> np.ndarray:
    """RICH-style 0/1 contact per SMPL vertex: within 3 cm of the floor top."""
    return (verts[:, 2] < 0.03).astype(np.float64)


def make_rich(root: Path, frames: tuple[int, ...] = (4, 2, 2), *, wall: bool = False) -> Path:
    """images/, scan_calibration/, multicam2world/, bodies/, human_scene_contact/; ``frames``
    per split (train, val, test), one camera; ``wall``: see `floor_mesh`."""
    scene = "Gym"
    calib = root / "scan_calibration" / scene / "calibration"
    calib.mkdir(parents=True)
    (calib / "000.xml").write_text(_xml(T_w2c()))
    floor_mesh(wall).export(root / "scan_calibration" / scene / "scan_camcoord.ply")
    (root / "multicam2world").mkdir()
    m2w = {"R": np.eye(3).tolist(), "t": [0.0, 0.0, 0.0], "c": 1.0}
    (root / "multicam2world" / f"{scene}_multicam2world.json").write_text(json.dumps(m2w))
    for k, (split, seq) in enumerate(RICH_SEQS.items()):
        subject = seq.split("_")[1]
        for f in range(frames[k]):
            frame = f"{f:05d}"
            img_dir = root / "images" / split / seq / "cam_00"
            img_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_image(10 * k + f)).save(img_dir / f"{frame}_00.png")
            params = world_params(shift=0.1 * f - 0.05 * k)
            for folder, obj in (
                ("bodies", params),
                ("human_scene_contact", None),
            ):
                d = root / folder / split / seq / frame
                d.mkdir(parents=True, exist_ok=True)
                if obj is None:
                    verts = pose_smpl(params)
                    nx = len(verts) + NUM_EXTRA
                    obj = {
                        "contact": hsc_contact(verts),
                        "s2m_dist_id": np.ones((nx, 3), np.float32),
                        "closest_triangles_id": np.zeros((nx, 3, 3), np.float32),
                    }
                (d / f"{subject}.pkl").write_bytes(pickle.dumps(obj, protocol=2))
    return root


def make_prox(root: Path, frames: int = 4, *, wall: bool = False) -> Path:
    """recordings/<rec>/Color (mirrored jpgs), calibration/Color.json, cam2world/, scenes/,
    PROXD/<rec>/results/<frame>/000.pkl (camera-frame fits); ``wall``: see `floor_mesh`."""
    from sahmr.data.sample import rest_root_joint, rigid_transform_body_params

    scene = PROX_RECORDING.split("_")[0]
    (root / "calibration").mkdir(parents=True)
    color = {
        "camera_mtx": K.tolist(),
        "f": [K[0, 0], K[1, 1]],
        "c": [K[0, 2], K[1, 2]],
        "k": [0.0] * 5,
        "view_mtx": np.eye(4)[:3].tolist(),
    }
    (root / "calibration" / "Color.json").write_text(json.dumps(color))
    (root / "cam2world").mkdir()
    T_c2w = np.linalg.inv(T_w2c())
    (root / "cam2world" / f"{scene}.json").write_text(json.dumps(T_c2w.tolist()))
    (root / "scenes").mkdir()
    floor_mesh(wall).export(root / "scenes" / f"{scene}.ply")
    color_dir = root / "recordings" / PROX_RECORDING / "Color"
    color_dir.mkdir(parents=True)
    data = _body()._data
    for f in range(frames):
        name = f"s001_frame_{f + 1:05d}__00.00.00.{f:03d}"
        Image.fromarray(_image(100 + f)[:, ::-1].copy()).save(color_dir / f"{name}.jpg")
        params = world_params(shift=0.1 * f)
        root_rest = rest_root_joint(
            data["v_template"], data["shapedirs"], data["J_regressor"], params["betas"][0]
        )
        orient, transl = rigid_transform_body_params(
            T_w2c(), params["global_orient"][0], params["transl"][0], root_rest
        )
        fit = dict(params)
        fit.update(
            global_orient=orient[None].astype(np.float32),
            transl=transl[None].astype(np.float32),
            camera_rotation=np.eye(3, dtype=np.float32)[None],
            camera_translation=np.zeros((1, 3), np.float32),
            pose_embedding=np.zeros((1, 32), np.float32),
        )
        d = root / "PROXD" / PROX_RECORDING / "results" / name
        d.mkdir(parents=True)
        (d / "000.pkl").write_bytes(pickle.dumps(fit, protocol=2))
    return root

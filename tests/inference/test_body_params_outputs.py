"""Every inference output carries body parameters (regressed or fitted) that reload in plain
smplx, and the body placed in the scan is written as one .glb."""

from __future__ import annotations

import json

import numpy as np
import pytest
import smplx
import torch
import trimesh
from PIL import Image
from smplx.utils import Struct
from torch import nn

from sahmr.body import BodyModel
from sahmr.body.model import license_free_model_path
from sahmr.geometry.cameras import project, transform_points
from sahmr.inference.camera_io import CameraSpec
from sahmr.inference.frames import FrameSpec
from sahmr.inference.method import LoadedMethod
from sahmr.inference.outputs import _up_to_gltf_y, write_frame_outputs
from sahmr.inference.pipeline import InferencePipeline, params_cam_to_world
from sahmr.inference.scene import load_scene_data
from sahmr.records import BodyPrediction
from sahmr.viz.render import intrinsics_from_fov, look_at

W, H = 320, 240
PARAM_KEYS = ("betas", "global_orient", "body_pose", "transl")


@pytest.fixture(scope="module")
def body():
    return BodyModel()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("room")
    floor = trimesh.Trimesh([[-2, -2, 0], [2, -2, 0], [2, 2, 0], [-2, 2, 0]],
                            [[0, 1, 2], [0, 2, 3]], process=False)
    wall = trimesh.Trimesh([[-2, 2, 0], [2, 2, 0], [2, 2, 2], [-2, 2, 2]],
                           [[0, 2, 1], [0, 3, 2]], process=False)
    trimesh.util.concatenate([floor, wall]).export(root / "room.ply")
    return load_scene_data(root / "room.ply", voxel_size=0.05, cache_dir=root / "cache")


@pytest.fixture(scope="module")
def camera():
    K = intrinsics_from_fov(W, H, 60.0)
    # 0.4 m beyond the scanned floor: inside the scan's bounds widened by 0.5 m (camera checks)
    T = look_at(np.array([0.3, -2.4, 1.5]), np.array([0.0, 0.0, 0.9]), np.array([0, 0, 1.0]))
    return CameraSpec(K=K, T_w2c=T, image_size=(W, H))


class PlaneSDF:
    """Analytic SDF of the floor z = 0."""

    voxel_size = 0.0

    def sample(self, points):
        return points[..., 2]


class OracleMethod(nn.Module):
    """A fixed world-frame body seen through the frame's camera; vertices only unless
    ``params_cam`` is given (like the shipped SA-HMR checkpoint / a parametric method)."""

    def __init__(self, vertices_world, joints_world, params_cam=None):
        super().__init__()
        self.vertices_world, self.joints_world = vertices_world, joints_world
        self.params_cam = params_cam

    def predict(self, inputs):
        T = inputs.T_w2c.double()
        v = transform_points(T, self.vertices_world.double()).float()
        j = transform_points(T, self.joints_world.double()).float()
        params = None if self.params_cam is None else {
            k: t.float() for k, t in self.params_cam.items()}
        return BodyPrediction(
            verts_cam=v, joints_cam=j, root_cam=j[:, 0],
            contact_points_cam=v[0, :5], contact_point_region=torch.tensor([1, 2, 3, 6, 7]),
            contact_batch_idx=torch.zeros(5, dtype=torch.int64), params=params)


def _world_body(body):
    """A sitting-ish body standing on the floor (z up), world frame, float64 params."""
    g = torch.Generator().manual_seed(3)
    params = {
        "betas": torch.randn(1, 10, generator=g, dtype=torch.float64),
        "global_orient": torch.tensor([[np.pi / 2, 0.0, 0.3]], dtype=torch.float64),
        "body_pose": 0.2 * torch.randn(1, 69, generator=g, dtype=torch.float64),
        "transl": torch.tensor([[0.1, 0.2, 0.0]], dtype=torch.float64),
    }
    with torch.no_grad():
        out = body(**{k: v.float() for k, v in params.items()})
    params["transl"][0, 2] = -float(out.vertices[0, :, 2].min())
    with torch.no_grad():
        out = body(**{k: v.float() for k, v in params.items()})
    return params, out


def _plain_smplx():
    """smplx.SMPL from the shipped body's arrays (np.load, no pickle, no sahmr code)."""
    path = license_free_model_path()
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    return smplx.SMPL(model_path=str(path), data_struct=Struct(**data), num_betas=10)


def _run(body, scene, camera, tmp_path, params_cam=None, name="f"):
    params_w, out = _world_body(body)
    oracle = OracleMethod(out.vertices, out.joints, params_cam)
    method = LoadedMethod(oracle, "oracle", tmp_path / "x.pt", None, torch.device("cpu"))
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(tmp_path / f"{name}.png")
    uv = project(torch.as_tensor(camera.K),
                 transform_points(torch.as_tensor(camera.T_w2c), out.vertices.double()))[0]
    bbox = np.array([*uv.min(0).values.tolist(), *uv.max(0).values.tolist()])
    pipe = InferencePipeline(method=method, scene=scene, body=body, sdf=PlaneSDF())
    res = pipe.run(FrameSpec(name, tmp_path / f"{name}.png", camera, bbox))
    folder = tmp_path / name
    folder.mkdir()
    summary = write_frame_outputs(folder, res, scene, body.faces, view_size=(120, 90),
                                  num_orbit_views=1)
    return params_w, out, res, folder, summary


def test_vertex_only_method_gets_fitted_world_params_that_reload_in_smplx(
        body, scene, camera, tmp_path):
    _, out, res, folder, summary = _run(body, scene, camera, tmp_path)
    assert res.params_source == "fitted" and "fit_body" in res.timings
    assert res.method_mesh_distance_mm < 0.1  # a noise-free body is matched exactly
    assert summary["has_smpl_params"] is True
    assert summary["body_params"]["source"] == "fitted"
    assert summary["body_params"]["method_mesh_distance_mm"] < 0.1
    assert json.loads((folder / "summary.json").read_text())["body_params"]["source"] == "fitted"
    with np.load(folder / "body_params.npz", allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}
    for k in PARAM_KEYS:
        assert f"{k}_cam" in saved
    assert str(saved["params_source"]) == "fitted"
    np.testing.assert_allclose(saved["vertices_method"], out.vertices[0].numpy(), atol=1e-4)
    # The saved world-frame parameters, in plain smplx, give body_world.ply within 1 mm.
    with torch.no_grad():
        again = _plain_smplx()(**{k: torch.as_tensor(saved[k], dtype=torch.float32)[None]
                                  for k in PARAM_KEYS}).vertices[0].double().numpy()
    ply = np.asarray(trimesh.load(folder / "body_world.ply", process=False).vertices)
    assert np.linalg.norm(again - ply, axis=1).max() < 1e-3
    np.testing.assert_allclose(saved["vertices"], ply, atol=1e-5)
    # and it is the true body: the fit recovers the generating parameters' mesh
    assert np.linalg.norm(ply - out.vertices[0].numpy(), axis=1).mean() < 1e-4
    # camera-frame copies agree with the world ones through T_w2c
    T = saved["T_w2c"]
    np.testing.assert_allclose(saved["vertices_cam"], ply @ T[:3, :3].T + T[:3, 3], atol=1e-4)


def test_regressed_params_are_kept_and_reload_in_smplx(body, scene, camera, tmp_path):
    params_w, _ = _world_body(body)
    T = torch.as_tensor(camera.T_w2c)[None]
    params_c = params_cam_to_world(params_w, torch.linalg.inv(T), body)
    _, _, res, folder, summary = _run(body, scene, camera, tmp_path, params_cam=params_c)
    assert res.params_source == "regressed" and "fit_body" not in res.timings
    assert summary["body_params"]["source"] == "regressed"
    with np.load(folder / "body_params.npz", allow_pickle=False) as z:
        saved = {k: z[k] for k in PARAM_KEYS}
    for k in PARAM_KEYS:
        np.testing.assert_allclose(saved[k], params_w[k][0].numpy(), atol=1e-4)
    with torch.no_grad():
        again = _plain_smplx()(**{k: torch.as_tensor(v)[None] for k, v in saved.items()})
    ply = np.asarray(trimesh.load(folder / "body_world.ply", process=False).vertices)
    assert np.linalg.norm(again.vertices[0].numpy() - ply, axis=1).max() < 1e-3


def test_fit_can_be_turned_off(body, scene, camera, tmp_path):
    _, out = _world_body(body)
    oracle = OracleMethod(out.vertices, out.joints)
    method = LoadedMethod(oracle, "oracle", tmp_path / "x.pt", None, torch.device("cpu"))
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(tmp_path / "f.png")
    pipe = InferencePipeline(method=method, scene=scene, body=body, penetration=False,
                             fit_body=False)
    res = pipe.run(FrameSpec("f", tmp_path / "f.png", camera, np.array([10, 10, 300, 230.0])))
    assert res.params_world is None and res.params_source is None
    np.testing.assert_allclose(res.vertices_world, out.vertices[0].numpy(), atol=1e-4)


def test_scene_body_glb_reloads_with_scan_body_and_contacts(body, scene, camera, tmp_path):
    _, _, res, folder, summary = _run(body, scene, camera, tmp_path)
    assert "scene_body.glb" in summary["files"]
    loaded = trimesh.load(folder / "scene_body.glb")
    assert isinstance(loaded, trimesh.Scene)
    assert {"scan", "body", "contact_points"} <= set(loaded.geometry)
    up = _up_to_gltf_y(scene.up_axis)
    np.testing.assert_allclose(up[:3, :3] @ np.array([0, 0, 1.0]), [0, 1.0, 0], atol=1e-12)
    meshes = {}
    for node in loaded.graph.nodes_geometry:
        transform, geom = loaded.graph[node]
        m = loaded.geometry[geom].copy()
        m.apply_transform(np.linalg.inv(up) @ transform)  # back to the world frame
        meshes[geom] = m
    body_mesh = meshes["body"]
    assert len(body_mesh.vertices) == body.num_vertices and len(body_mesh.faces) == len(body.faces)
    np.testing.assert_allclose(body_mesh.vertices, res.vertices_world, atol=1e-5)
    assert len(meshes["scan"].faces) == len(scene.mesh.faces)
    np.testing.assert_allclose(np.sort(meshes["scan"].vertices, axis=0),
                               np.sort(scene.mesh.vertices, axis=0), atol=1e-5)
    # body contact vertices carry their region colours, the rest the body colour
    from sahmr.viz.colors import body_vertex_colors, region_colors

    want = (body_vertex_colors(res.body_contact, body.num_vertices) * 255 + 0.5).astype(np.uint8)
    colors = np.asarray(body_mesh.visual.vertex_colors)[:, :3]
    np.testing.assert_array_equal(colors, want)
    assert (res.body_contact > 0).any()
    # five contact points, one coloured sphere each, centred on the points
    balls = meshes["contact_points"]
    per = len(balls.vertices) // 5
    centres = balls.vertices.reshape(5, per, 3).mean(1)
    np.testing.assert_allclose(centres, res.contact_points_world, atol=1e-4)
    ball_colors = np.asarray(balls.visual.vertex_colors)[::per, :3]
    np.testing.assert_array_equal(
        ball_colors, (region_colors(res.contact_point_region) * 255 + 0.5).astype(np.uint8))

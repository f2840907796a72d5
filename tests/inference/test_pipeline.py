"""The one-image inference pipeline: inputs as in training, world-frame results, checks."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from torch import nn

from sahmr.body import BodyModel
from sahmr.data.collate import Batch
from sahmr.data.prepare import prepare_inputs
from sahmr.geometry.cameras import camera_to_world, project, transform_points
from sahmr.geometry.crops import crop_image, square_bbox
from sahmr.inference.camera_io import CameraSpec
from sahmr.inference.errors import (
    BBoxError,
    CameraError,
    CheckpointError,
    EmptyFrustumError,
    ImageSizeError,
    InputError,
    ScanUnitsError,
)
from sahmr.inference.frames import FrameSpec, frame_inputs_from_image, prepare_frame
from sahmr.inference.method import LoadedMethod, bundled_checkpoint
from sahmr.inference.outputs import staged_output, write_frame_outputs
from sahmr.inference.pipeline import InferencePipeline, params_cam_to_world
from sahmr.inference.scene import load_scene_data
from sahmr.records import BodyPrediction
from sahmr.scene.frontend import CROP_BBOX_SCALE, SceneBank
from sahmr.viz.render import intrinsics_from_fov, look_at

W, H = 320, 240


@pytest.fixture(scope="module")
def body():
    return BodyModel()


def _room_mesh() -> trimesh.Trimesh:
    """A 4 x 4 m floor at z = 0 and a 2 m wall at y = 2 (normals into the room)."""
    floor = trimesh.Trimesh([[-2, -2, 0], [2, -2, 0], [2, 2, 0], [-2, 2, 0]],
                            [[0, 1, 2], [0, 2, 3]], process=False)
    wall = trimesh.Trimesh([[-2, 2, 0], [2, 2, 0], [2, 2, 2], [-2, 2, 2]],
                           [[0, 2, 1], [0, 3, 2]], process=False)
    return trimesh.util.concatenate([floor, wall])


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("room")
    _room_mesh().export(root / "room.ply")
    return load_scene_data(root / "room.ply", voxel_size=0.05, cache_dir=root / "cache")


@pytest.fixture(scope="module")
def camera():
    K = intrinsics_from_fov(W, H, 60.0)
    # 0.4 m beyond the scanned floor: inside the scan's bounds widened by 0.5 m (camera checks)
    T = look_at(np.array([0.3, -2.4, 1.5]), np.array([0.0, 0.0, 0.9]), np.array([0, 0, 1.0]))
    return CameraSpec(K=K, T_w2c=T, image_size=(W, H))


def _posed(body, dtype=torch.float64, seed=0):
    """Standing-ish body, feet 2 cm below the floor (z = 0), world frame; returns params."""
    g = torch.Generator().manual_seed(seed)
    params = {
        "betas": 0.5 * torch.randn(1, 10, generator=g, dtype=dtype),
        "global_orient": torch.tensor([[np.pi / 2, 0.0, 0.0]], dtype=dtype),
        "body_pose": 0.1 * torch.randn(1, 69, generator=g, dtype=dtype),
        "transl": torch.zeros(1, 3, dtype=dtype),
    }
    with torch.no_grad():
        out = body(**{k: v.float() for k, v in params.items()})
    params["transl"] = torch.tensor([[0.0, 0.0, -float(out.vertices[0, :, 2].min()) - 0.02]],
                                    dtype=dtype)
    with torch.no_grad():
        out = body(**{k: v.float() for k, v in params.items()})
    return params, out


class OracleMethod(nn.Module):
    """Returns a fixed world-frame body seen through the frame's camera (with params)."""

    def __init__(self, vertices_world, joints_world, params_cam):
        super().__init__()
        self.vertices_world, self.joints_world = vertices_world, joints_world
        self.params_cam = params_cam

    def predict(self, inputs):
        T = inputs.T_w2c.double()
        v = transform_points(T, self.vertices_world.double())
        j = transform_points(T, self.joints_world.double())
        return BodyPrediction(
            verts_cam=v.float(), joints_cam=j.float(), root_cam=j[:, 0].float(),
            contact_points_cam=v[0, :3].float(),
            contact_point_region=torch.tensor([1, 2, 7]),
            contact_batch_idx=torch.zeros(3, dtype=torch.int64),
            params={k: t.float() for k, t in self.params_cam.items()},
        )


class PlaneSDF:
    """Analytic SDF of the floor: z (the wall is far from the body)."""

    voxel_size = 0.0

    def sample(self, points):
        return points[..., 2]


def _bbox(camera, vertices_world):
    uv = project(torch.as_tensor(camera.K), transform_points(torch.as_tensor(camera.T_w2c),
                                                             vertices_world.double()))[0]
    return np.array([*uv.min(0).values.tolist(), *uv.max(0).values.tolist()])


def test_frame_inputs_match_prepare_inputs(scene, camera):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    bbox = np.array([100.0, 40.0, 180.5, 220.0])
    bank = SceneBank({"other": rng.normal(size=(500, 3)) * 3, scene.name: scene.points_world})
    got = frame_inputs_from_image(image, bbox, camera.K, camera.T_w2c, bank, scene.name)
    # The dataset path: a Batch whose crop was cut the same way, through prepare_inputs.
    crop = crop_image(image, square_bbox(torch.tensor(bbox[None], dtype=torch.float32),
                                         CROP_BBOX_SCALE))
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None]  # noqa: E731
    batch = Batch(
        crop=torch.from_numpy(crop)[None], bbox=f32(bbox), K=f32(camera.K),
        T_w2c=f32(camera.T_w2c), image_size=torch.tensor([[W, H]]),
        frame_index=torch.zeros(1, dtype=torch.int64), occlusion=torch.zeros(1),
        scene_id=[scene.name], source=["t"], sequence_id=["s"], action=["a"],
        contact_points_world=torch.zeros(0, 3), contact_point_region=torch.zeros(0),
        contact_batch_idx=torch.zeros(0, dtype=torch.int64),
    )
    ref = prepare_inputs(batch, bank)
    for name in ("image", "K_crop", "K", "bbox", "T_w2c", "scene_points_cam", "scene_batch_idx"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), msg=name)
    # Slow reference for the frustum: every world point, projected, inside bbox and depth.
    p = scene.points_world.astype(np.float64) @ camera.T_w2c[:3, :3].T + camera.T_w2c[:3, 3]
    uv = p[:, :2] / p[:, 2:] @ camera.K[:2, :2].T + camera.K[:2, 2]
    inside = ((p[:, 2] >= 0.5) & (p[:, 2] <= 12.5) & (uv[:, 0] >= bbox[0]) & (uv[:, 0] <= bbox[2])
              & (uv[:, 1] >= bbox[1]) & (uv[:, 1] <= bbox[3]))
    assert abs(int(inside.sum()) - got.scene_points_cam.shape[0]) <= 2  # float32 edge cases
    # The crop camera sends a world point to where its image content landed in the crop.
    target = np.array([0.1, 0.0, 1.0])
    pc = camera.T_w2c[:3, :3] @ target + camera.T_w2c[:3, 3]
    u, v = (camera.K @ (pc / pc[2]))[:2]
    dot = np.zeros((H, W, 3), np.uint8)
    iv, iu = round(float(v)), round(float(u))
    dot[iv - 1 : iv + 2, iu - 1 : iu + 2] = 255
    inp = frame_inputs_from_image(dot, bbox, camera.K, camera.T_w2c, None, None)
    uc, vc = (inp.K_crop[0].double().numpy() @ (pc / pc[2]))[:2]
    brightest = np.unravel_index(inp.image[0, 0].argmax().item(), inp.image.shape[-2:])
    assert abs(brightest[0] - vc) <= 2 and abs(brightest[1] - uc) <= 2


def test_params_cam_to_world_moves_the_body(body):
    params_w, out_w = _posed(body)
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    T = torch.eye(4, dtype=torch.float64)[None]
    T[0, :3, :3], T[0, :3, 3] = torch.as_tensor(q), torch.tensor([0.3, -0.2, 4.0])
    # Camera-frame params of the same body: found by moving world params to the camera.
    T_c2w_as_w2c = torch.linalg.inv(T)  # maps camera -> world, i.e. "world" = camera here
    params_c = params_cam_to_world(params_w, T_c2w_as_w2c, body)
    with torch.no_grad():
        verts_c = body(**{k: v.float() for k, v in params_c.items()}).vertices.double()
    torch.testing.assert_close(verts_c, transform_points(T, out_w.vertices.double()),
                               atol=2e-5, rtol=0)
    back = params_cam_to_world(params_c, T, body)
    for k in params_w:
        torch.testing.assert_close(back[k], params_w[k], atol=1e-6, rtol=0)


def test_pipeline_run_with_an_oracle_method(body, scene, camera, tmp_path):
    params_w, out = _posed(body)
    T = torch.as_tensor(camera.T_w2c)[None]
    params_c = params_cam_to_world(params_w, torch.linalg.inv(T), body)
    image = np.full((H, W, 3), 90, np.uint8)
    Image.fromarray(image).save(tmp_path / "f.png")
    np.savez(tmp_path / "f.gt.npz", **{k: v[0].numpy() for k, v in params_w.items()})
    oracle = OracleMethod(out.vertices, out.joints, params_c)
    method = LoadedMethod(oracle, "oracle", tmp_path / "x.pt", None, torch.device("cpu"))
    pipe = InferencePipeline(method=method, scene=scene, body=body, sdf=PlaneSDF())
    frame = FrameSpec("f", tmp_path / "f.png", camera, _bbox(camera, out.vertices),
                      tmp_path / "f.gt.npz")
    res = pipe.run(frame)
    v = out.vertices[0].double().numpy()
    np.testing.assert_allclose(res.vertices_world, v, atol=1e-4)
    np.testing.assert_allclose(res.root_world, out.joints[0, 0].numpy(), atol=1e-4)
    for k in ("global_orient", "transl", "body_pose", "betas"):
        np.testing.assert_allclose(res.params_world[k], params_w[k][0].numpy(), atol=1e-4)
    cpts = camera_to_world(T, transform_points(T, out.vertices[:, :3].double()))[0].numpy()
    np.testing.assert_allclose(res.contact_points_world, cpts, atol=1e-4)
    # Penetration against the slow reference: depths of vertices below the floor.
    z = res.vertices_world[:, 2]
    assert res.penetration["pen_count"] == int((z < 0).sum()) > 0
    assert res.penetration["pene_mm"] == pytest.approx(-z[z < 0].sum() * 1000, rel=1e-4)
    assert res.penetration["max_depth_mm"] == pytest.approx(-z.min() * 1000, rel=1e-4)
    labels = np.asarray(body.topology.contact_labels[0])
    np.testing.assert_array_equal(res.body_contact, np.where(np.abs(z) < 0.07, labels, 0))
    assert res.gt_errors["g_mpve_mm"] < 0.1 and res.gt_errors["root_error_mm"] < 0.1
    assert {"read_image", "prepare_inputs", "predict", "penetration"} <= set(res.timings)
    # Files: world-frame params readable by the evaluator's reader.
    summary = write_frame_outputs(tmp_path, res, scene, body.faces, view_size=(160, 120))
    with np.load(tmp_path / "body_params.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["vertices"], v, atol=1e-4)
        np.testing.assert_allclose(z["transl"], params_w["transl"][0].numpy(), atol=1e-4)
        assert "transl_cam" in z.files and str(z["scene"]) == scene.name
    assert trimesh.load(tmp_path / "body_world.obj", process=False).vertices.shape == v.shape
    assert summary["penetration"]["pen_count"] == res.penetration["pen_count"]
    for name in ("overlay.png", "scene_views.png", "contacts.json", "body_world.ply"):
        assert (tmp_path / name).is_file()


def test_prepare_frame_checks(scene, camera, tmp_path):
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "f.png")
    ok = FrameSpec("f", tmp_path / "f.png", camera, np.array([100.0, 40, 180, 220]))
    assert prepare_frame(ok, scene).inputs.scene_points_cam.shape[0] > 0
    cases = [
        (replace(ok, camera=replace(camera, image_size=(640, 480))), ImageSizeError, "640x480"),
        (replace(ok, bbox=np.array([400.0, 300, 500, 400])), BBoxError, "outside"),
        (replace(ok, bbox=np.array([50.0, 40, 20, 220])), BBoxError, "empty"),
        (replace(ok, camera=replace(camera, T_w2c=np.diag([-1.0, 1, -1, 1]) @ camera.T_w2c)),
         CameraError, "sees none of the scan"),
        # The top of the image looks over the 2 m wall into the void.
        (replace(ok, bbox=np.array([150.0, 0, 170, 4])), EmptyFrustumError, "no scene point"),
        (replace(ok, image_path=tmp_path / "missing.png"), InputError, "not found"),
    ]
    for frame, err, match in cases:
        with pytest.raises(err, match=match):
            prepare_frame(frame, scene)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot be read"):
        prepare_frame(replace(ok, image_path=tmp_path / "bad.png"), scene)


def test_scene_units_and_points_cache(tmp_path):
    mesh = _room_mesh()
    mesh.export(tmp_path / "room.ply")
    a = load_scene_data(tmp_path / "room.ply", voxel_size=0.1, cache_dir=tmp_path)
    b = load_scene_data(tmp_path / "room.ply", voxel_size=0.1, cache_dir=tmp_path)
    np.testing.assert_array_equal(a.points_world, b.points_world)
    assert len(list((tmp_path / "scene_points").glob("*.npz"))) == 1
    for factor in (1000.0, 30.0):  # millimetres (loader's own check) and > 100 m (ours)
        scaled = mesh.copy()
        scaled.apply_scale(factor)
        scaled.export(tmp_path / f"x{factor:g}.ply")
        with pytest.raises(ScanUnitsError, match="--scale"):
            load_scene_data(tmp_path / f"x{factor:g}.ply", use_cache=False)


def test_missing_bundled_checkpoint_names_the_file():
    with pytest.raises(CheckpointError, match=r"no_such_method_small\.pt"):
        bundled_checkpoint("no_such_method")


def test_staged_output_is_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_output(out) as tmp:
        (tmp / "a.txt").write_text("x")
        raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with staged_output(out) as tmp:
        (tmp / "summary.json").write_text('{"format": "sahmr.demo"}')
    assert (out / "summary.json").is_file()
    with staged_output(out) as tmp:  # a previous demo output is replaced
        (tmp / "b.txt").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    with pytest.raises(InputError, match="--overwrite"):
        with staged_output(out):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _plane_grid():
    """An `SDFGrid` of the floor z = 0 over the body's region: value = z."""
    from sahmr.scene.sdf import SDFGrid

    vs = 0.05
    origin = np.array([-1.5, -1.5, -0.5], np.float32)
    nz, ny, nx = 50, 60, 60
    z = origin[2] + vs * np.arange(nz, dtype=np.float32)
    values = np.broadcast_to(z[:, None, None], (nz, ny, nx)).copy()
    return SDFGrid(origin, vs, values)


def test_scene_fit_refiner_moves_the_body_out_of_the_floor(body, scene, camera, tmp_path):
    from sahmr.inference.refine import SceneFitRefiner

    params_w, out = _posed(body)
    params_w["transl"] = params_w["transl"] - torch.tensor([[0.0, 0.0, 0.06]],
                                                           dtype=torch.float64)
    with torch.no_grad():
        out = body(**{k: v.float() for k, v in params_w.items()})
    T = torch.as_tensor(camera.T_w2c)[None]
    params_c = params_cam_to_world(params_w, torch.linalg.inv(T), body)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(tmp_path / "f.png")
    oracle = OracleMethod(out.vertices, out.joints, params_c)
    method = LoadedMethod(oracle, "oracle", tmp_path / "x.pt", None, torch.device("cpu"))
    frame = FrameSpec("f", tmp_path / "f.png", camera, _bbox(camera, out.vertices))
    grid = _plane_grid()
    plain = InferencePipeline(method=method, scene=scene, body=body, sdf=grid).run(frame)
    refiner = SceneFitRefiner(body=BodyModel(), iterations=4, lr=0.02)
    fitted = InferencePipeline(method=method, scene=scene, body=body, sdf=grid,
                               refiner=refiner).run(frame)
    assert plain.penetration["pene_mm"] > 1000
    assert fitted.penetration["pene_mm"] < 0.5 * plain.penetration["pene_mm"]
    assert "scene_fit" in fitted.timings and fitted.params_world is not None
    # It stays on the image evidence: the root moves by centimetres, not more.
    assert np.linalg.norm(fitted.root_world - plain.root_world) < 0.15
    with pytest.raises(InputError, match="SMPL-format"):
        refiner.refine(replace(plain.prediction, params=None), prepare_frame(frame, scene).inputs,
                       grid)


def test_point_cloud_scan_has_no_penetration_but_all_files(body, camera, tmp_path):
    pts = trimesh.sample.sample_surface(_room_mesh(), 20000, seed=0)[0]
    np.savez(tmp_path / "room_points.npz", points=pts.astype(np.float32))
    scene = load_scene_data(tmp_path / "room_points.npz", voxel_size=0.05, use_cache=False)
    assert scene.mesh is None and scene.name == "room_points"
    params_w, out = _posed(body)
    T = torch.as_tensor(camera.T_w2c)[None]
    oracle = OracleMethod(out.vertices, out.joints,
                          params_cam_to_world(params_w, torch.linalg.inv(T), body))
    method = LoadedMethod(oracle, "oracle", tmp_path / "x.pt", None, torch.device("cpu"))
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(tmp_path / "f.png")
    pipe = InferencePipeline(method=method, scene=scene, body=body)
    res = pipe.run(FrameSpec("f", tmp_path / "f.png", camera, _bbox(camera, out.vertices)))
    assert res.penetration is None and res.body_contact is None and "point cloud" in pipe.sdf_note
    folder = tmp_path / "out"
    folder.mkdir()
    summary = write_frame_outputs(folder, res, scene, body.faces, view_size=(120, 90))
    assert summary["penetration"] is None
    # its pictures are shaded by normals estimated once from the points, facing the camera
    normals = scene.point_normals()
    assert normals.shape == scene.points_world.shape and scene.point_normals() is normals
    eye = -camera.T_w2c[:3, :3].T @ camera.T_w2c[:3, 3]
    faced = scene.point_normals(towards=eye)
    np.testing.assert_allclose(np.abs(faced), np.abs(normals))
    assert (((eye - scene.points_world) * faced).sum(1) >= 0).all()
    views = np.asarray(Image.open(folder / "scene_views.png"))
    assert views.shape == (4 + 90 + 4 + 22, 4 + 3 * 124, 3) and views.std() > 10


def test_prepare_frame_refuses_an_upside_down_camera_unless_told(scene, camera, tmp_path):
    """`check_frame_camera` (sahmr.scene.camera_checks) runs after the older checks."""
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "f.png")
    upside = replace(camera, T_w2c=np.diag([-1.0, -1.0, 1, 1]) @ camera.T_w2c)
    frame = FrameSpec("f", tmp_path / "f.png", upside, np.array([100.0, 40, 180, 220]))
    with pytest.raises(CameraError, match=r"^camera of frame f: the camera cannot see the "
                                          r"person in the scan: the scan's up axis points "
                                          r"1\d\d deg from image-up.*check_camera=False"):
        prepare_frame(frame, scene)
    assert prepare_frame(frame, scene, check_camera=False).inputs.scene_points_cam.shape[0] > 0

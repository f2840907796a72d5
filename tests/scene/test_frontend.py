"""The scene front end (`sahmr.scene.frontend`) and the batch adapters (`sahmr.data.prepare`)."""

import numpy as np
import pytest
import torch

from sahmr.body import BodyModel
from sahmr.data.collate import collate_samples
from sahmr.data.prepare import prepare_inputs, prepare_targets
from sahmr.data.sample import Sample
from sahmr.geometry.cameras import make_K
from sahmr.geometry.crops import square_bbox
from sahmr.scene.frontend import IMAGENET_MEAN, SceneBank, crop_intrinsics, normalize_crop


@pytest.fixture(scope="module")
def body():
    return BodyModel()


def _look_T_w2c(eye, target):
    """World (z up) -> OpenCV camera looking from eye at target."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ eye
    return T


def _sample(body, seed, scene_id):
    rng = np.random.default_rng(seed)
    transl = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
    orient = np.array([np.pi / 2, 0, 0])  # y-up body -> z-up world
    with torch.no_grad():
        out = body(
            global_orient=torch.tensor(orient[None], dtype=torch.float32),
            transl=torch.tensor(transl[None], dtype=torch.float32),
        )
    verts, joints = out.vertices[0].numpy(), out.joints[0].numpy()
    T = _look_T_w2c([0, -4, 1.5], joints[0])
    K = make_K(600.0, 600.0, 320.0, 240.0).numpy()
    cam = verts @ T[:3, :3].T + T[:3, 3]
    uv = cam[:, :2] / cam[:, 2:] * 600 + np.array([320, 240])
    bbox = np.concatenate([uv.min(0), uv.max(0)])
    contact = verts[verts[:, 2] < verts[:, 2].min() + 0.02][:5]
    return Sample(
        crop=rng.integers(0, 255, (224, 224, 3), dtype=np.uint8), bbox=bbox, K=K, T_w2c=T,
        image_size=np.array([640, 480]), scene_id=scene_id, source="test", sequence_id="s",
        frame_index=seed, betas=np.zeros(10), global_orient=orient, body_pose=np.zeros(69),
        transl=transl, vertices_world=verts, joints_world=joints,
        vertex_contact=np.zeros(len(verts), dtype=np.int64), contact_points_world=contact,
        contact_point_region=np.full(len(contact), 1, dtype=np.int64),
    )


def test_targets_in_camera_frame(body):
    batch = collate_samples([_sample(body, 0, "a"), _sample(body, 1, "b")])
    topo = body.topology
    reg = torch.as_tensor(topo.j_regressor_j14, dtype=torch.float32)
    t = prepare_targets(batch, topo, reg)
    T = batch.T_w2c[0].double()
    ref = batch.vertices_world[0].double() @ T[:3, :3].T + T[:3, 3]
    assert torch.allclose(t.verts_cam[0].double(), ref, atol=1e-5)
    assert [v.shape[1] for v in t.verts_cam_levels] == list(topo.num_vertices)
    assert torch.equal(t.root_cam, t.joints_cam[:, 0])
    # Root is in front of the camera and projects inside the crop.
    assert (t.root_cam[:, 2] > 1).all()
    assert ((t.joints2d_crop[:, 0] > 0) & (t.joints2d_crop[:, 0] < 224)).all()
    # Contact points transformed with their own frame's camera.
    k = batch.contact_batch_idx == 1
    Tb = batch.T_w2c[1]
    refc = batch.contact_points_world[k] @ Tb[:3, :3].T + Tb[:3, 3]
    assert torch.allclose(t.contact_points_cam[k], refc, atol=1e-5)
    # Root rotation in camera frame: R_cam = R_w2c R_world.
    from sahmr.geometry.rotations import axis_angle_to_matrix

    R = axis_angle_to_matrix(t.global_orient_cam)
    Rref = batch.T_w2c[:, :3, :3] @ axis_angle_to_matrix(batch.global_orient)
    assert torch.allclose(R, Rref, atol=1e-5)


def test_crop_intrinsics_map_bbox_to_crop(body):
    batch = collate_samples([_sample(body, 3, "a")])
    Kc = crop_intrinsics(batch.K, batch.bbox)
    cx, cy, side = square_bbox(batch.bbox, 1.2)
    # The square box centre maps to the crop centre; its side to 224 px.
    centre = torch.stack([cx, cy, torch.ones_like(cx)], -1)[0]
    mapped = Kc[0] @ torch.linalg.inv(batch.K[0]) @ centre
    assert torch.allclose(mapped[:2] / mapped[2], torch.tensor([111.5, 111.5]), atol=0.6)
    assert torch.isclose(Kc[0, 0, 0] / batch.K[0, 0, 0], 224 / side[0], rtol=1e-5)


def test_inputs_frustum_points_per_scene(body):
    batch = collate_samples([_sample(body, 0, "a"), _sample(body, 1, "b")])
    g = torch.Generator().manual_seed(0)
    floor = torch.rand(4000, 3, generator=g) * torch.tensor([4.0, 4.0, 0.0]) - torch.tensor(
        [2.0, 2.0, 0.0]
    )
    far = floor + torch.tensor([50.0, 0, 0])  # scene "b" lies far outside every view
    bank = SceneBank({"a": floor, "b": far})
    inp = prepare_inputs(batch, bank)
    assert inp.image.shape == (2, 3, 224, 224)
    counts = torch.bincount(inp.scene_batch_idx, minlength=2)
    assert counts[0] > 0 and counts[1] == 0
    # Every kept point projects inside its frame's bbox.
    uv = inp.scene_points_cam[:, :2] / inp.scene_points_cam[:, 2:] * 600 + torch.tensor(
        [320.0, 240.0]
    )
    bb = batch.bbox[0]
    assert ((uv >= bb[:2] - 1e-3) & (uv <= bb[2:] + 1e-3)).all()
    with pytest.raises(KeyError, match="no scene"):
        prepare_inputs(batch, SceneBank({"a": floor}))


def test_normalize_crop_values():
    crop = torch.full((1, 4, 4, 3), 255, dtype=torch.uint8)
    x = normalize_crop(crop)
    assert x.shape == (1, 3, 4, 4)
    assert torch.allclose(x[0, 0, 0, 0], torch.tensor((1 - IMAGENET_MEAN[0]) / 0.229))


def test_scene_bank_subsamples_deterministically():
    pts = {"a": np.random.default_rng(0).normal(size=(1000, 3))}
    b1 = SceneBank(pts, max_points_per_scene=100, seed=3)
    b2 = SceneBank(pts, max_points_per_scene=100, seed=3)
    assert b1.points_world.shape == (100, 3)
    assert torch.equal(b1.points_world, b2.points_world)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        SceneBank({"x": np.zeros((3, 2))})

"""A prediction's scene contacts written beside its body (`tools/eval_checkpoint.py
save_predictions=true`): per frame, in the world frame, and left on the scan when the body
slides."""

from __future__ import annotations

import math

import numpy as np
import torch
from engine_testkit import load_tool

from sahmr.engine.validation import predicted_contacts_world
from sahmr.records import BodyPrediction


def _camera(yaw: float, centre: list[float]) -> torch.Tensor:
    """world -> camera: rotation about z by ``yaw``, camera centre ``centre`` (world)."""
    c, s = math.cos(yaw), math.sin(yaw)
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = R
    T[:3, 3] = -R @ torch.tensor(centre, dtype=torch.float64)
    return T


def _prediction(points_cam, frame_of, regions, frames=3):
    return BodyPrediction(
        verts_cam=torch.zeros(frames, 5, 3),
        joints_cam=torch.zeros(frames, 2, 3),
        root_cam=torch.zeros(frames, 3),
        contact_points_cam=torch.tensor(points_cam, dtype=torch.float32),
        contact_point_region=torch.tensor(regions),
        contact_batch_idx=torch.tensor(frame_of),
    )


def test_contacts_come_back_per_frame_in_the_world_frame():
    T = torch.stack([_camera(0.0, [0, 0, 0]), _camera(math.pi / 2, [1.0, 2.0, 3.0]),
                     _camera(0.3, [0, 0, 1])])  # fmt: skip
    # frame 0: two points, frame 1: one, frame 2: none
    pred = _prediction([[1, 0, 2], [0, 1, 3], [1, 0, 0]], [0, 0, 1], [1, 6, 2])
    out = predicted_contacts_world(pred, T)
    world, regions = out["contact_points_world"], out["contact_point_region"]
    assert [w.shape for w in world] == [(2, 3), (1, 3), (0, 3)]
    np.testing.assert_allclose(world[0], [[1, 0, 2], [0, 1, 3]], atol=1e-6)  # identity camera
    # frame 1: R rotates world x onto camera y; camera-frame (1, 0, 0) is world (0, -1, 0)
    # from the centre (1, 2, 3)
    np.testing.assert_allclose(world[1], [[1.0, 1.0, 3.0]], atol=1e-6)
    assert [r.tolist() for r in regions] == [[1, 6], [2], []]
    assert world[0].dtype == np.float32 and regions[0].dtype == np.int64


def test_no_contacts_no_extras():
    pred = _prediction([[0, 0, 1]], [0], [1])
    pred.contact_points_cam = None
    assert predicted_contacts_world(pred, torch.eye(4).expand(3, 4, 4)) is None


def test_a_slid_body_leaves_its_contacts_on_the_scan():
    pred = _prediction([[1, 0, 2], [0, 1, 3]], [0, 2], [1, 2])
    moved = pred.translated(torch.tensor([[0.0, 0.0, 0.5], [0, 0, 0], [0, 0, -0.2]]))
    assert torch.equal(moved.contact_points_cam, pred.contact_points_cam)
    assert torch.allclose(moved.verts_cam[0] - pred.verts_cam[0], torch.tensor([0.0, 0.0, 0.5]))


def test_the_prediction_writer_keeps_the_contacts(tmp_path):
    from sahmr.evaluation.readers import BodyFrame, FolderReader

    writer = load_tool("eval_checkpoint").PredictionWriter(tmp_path / "pred")
    frame = BodyFrame(name="test-000003", vertices=np.ones((5, 3)), scene="room",
                      extras={"contact_points_world": np.zeros((2, 3), np.float32),
                              "contact_point_region": np.array([1, 7])})  # fmt: skip
    writer("test-000003", frame, None, 0)
    with np.load(tmp_path / "pred" / "test-000003.npz", allow_pickle=False) as z:
        assert z["contact_point_region"].tolist() == [1, 7]
        assert z["contact_points_world"].shape == (2, 3)
    # the evaluator still reads the file as a body
    back = FolderReader(tmp_path / "pred").load("test-000003")
    np.testing.assert_allclose(back.vertices, np.ones((5, 3)))

"""The demo without --bbox: people detected per image, nobody -> one clear error, --bbox wins."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sahmr.cli.demo import build_parser, collect_frames
from sahmr.detect.metrics import box_iou
from sahmr.detect.runtime import detector_available
from sahmr.inference.camera_io import read_bbox_file
from sahmr.inference.errors import InputError
from sahmr.synth.bundled import bundled_scene_dir

SCENE = bundled_scene_dir("living_room")
DEMO = SCENE / "demo"
needs_detector = pytest.mark.skipif(
    not detector_available(),
    reason="mediapipe is not installed in its private site (bash tools/install.sh)")


def _frames(*argv: str):
    args = build_parser().parse_args(list(argv))
    return collect_frames(args, True, SCENE)


@needs_detector
def test_without_bbox_the_person_is_detected(tmp_path):
    blank = tmp_path / "blank.jpg"
    Image.fromarray(np.full((480, 640, 3), 128, np.uint8)).save(blank)
    frames, batch = _frames("--image", str(DEMO / "stand.jpg"))
    assert not batch and len(frames) == 1
    assert box_iou(frames[0].bbox, read_bbox_file(DEMO / "stand.bbox.json")) > 0.8
    assert frames[0].gt_path == DEMO / "stand.gt.npz"
    kp, box = frames[0].keypoints2d, frames[0].bbox  # the scene fit's keypoints come along
    assert kp.shape == (24, 2) and frames[0].keypoint_confidence.shape == (24,)
    assert ((kp >= box[:2]) & (kp <= box[2:])).all()
    with pytest.raises(InputError, match=r"no person found in .*blank\.jpg"):
        _frames("--image", str(blank), "--camera", str(DEMO / "stand.camera.json"))
    with pytest.raises(InputError, match="--min-person-height"):
        _frames("--image", str(DEMO / "stand.jpg"), "--min-person-height", "2")


def test_given_bbox_wins(tmp_path):
    frames, _ = _frames("--image", str(DEMO / "stand.jpg"), "--bbox", "1,2,300,400")
    np.testing.assert_allclose(frames[0].bbox, [1, 2, 300, 400])
    assert frames[0].keypoints2d is None
    frames, _ = _frames("--image", str(DEMO / "stand.jpg"), "--bbox", "sidecar")
    np.testing.assert_allclose(frames[0].bbox, read_bbox_file(DEMO / "stand.bbox.json"))


def test_missing_detector_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SAHMR_MEDIAPIPE_SITE", str(tmp_path / "nothing"))
    with pytest.raises(InputError, match=r"no --bbox given .*not installed.*--bbox"):
        _frames("--image", str(DEMO / "stand.jpg"))
    assert Path(DEMO / "stand.jpg").is_file()


def test_scene_fit_refiner_fits_given_keypoints_by_confidence():
    """Detected keypoints 12 px to the right pull the fit; a zero-confidence outlier does not."""
    from types import SimpleNamespace

    import torch

    from sahmr.body import BodyModel
    from sahmr.geometry.cameras import project
    from sahmr.inference.refine import SceneFitRefiner
    from sahmr.records import BodyPrediction
    from sahmr.scene.sdf import SDFGrid

    body = BodyModel()
    params = {"betas": torch.zeros(1, 10), "global_orient": torch.tensor([[np.pi, 0.0, 0.0]]),
              "body_pose": torch.zeros(1, 69), "transl": torch.tensor([[0.0, 0.2, 3.0]])}
    with torch.no_grad():
        out = body(**params)
    K = torch.tensor([[[500.0, 0, 160], [0, 500, 120], [0, 0, 1]]])
    inputs = SimpleNamespace(K=K, T_w2c=torch.eye(4)[None], batch_size=1)
    free = SDFGrid(np.array([-2.0, -2.0, 0.0], np.float32), 0.1,
                   np.ones((60, 40, 40), np.float32))  # 1 m from any surface everywhere
    pred = BodyPrediction(verts_cam=out.vertices, joints_cam=out.joints,
                          root_cam=out.joints[:, 0], params=params)
    target = project(K, out.joints) + torch.tensor([12.0, 0.0])
    weights = torch.ones(1, 24)
    target[0, 20] += 300.0  # the left wrist far off, at confidence 0
    weights[0, 20] = 0.0
    torch.manual_seed(0)
    fitted = SceneFitRefiner(body=BodyModel(), iterations=8, lr=0.03).refine(
        pred, inputs, free, target, weights)
    err = (project(K, fitted.joints_cam) - target).norm(dim=-1)[0]
    keep = torch.arange(24) != 20
    assert err[keep].mean() < 6.0  # was 12 px (4.2 after these few steps)
    assert err[20] > 250.0  # the ignored keypoint did not drag the wrist

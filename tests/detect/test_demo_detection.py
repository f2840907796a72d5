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
    with pytest.raises(InputError, match=r"no person found in .*blank\.jpg"):
        _frames("--image", str(blank), "--camera", str(DEMO / "stand.camera.json"))
    with pytest.raises(InputError, match="--min-person-height"):
        _frames("--image", str(DEMO / "stand.jpg"), "--min-person-height", "2")


def test_given_bbox_wins(tmp_path):
    frames, _ = _frames("--image", str(DEMO / "stand.jpg"), "--bbox", "1,2,300,400")
    np.testing.assert_allclose(frames[0].bbox, [1, 2, 300, 400])
    frames, _ = _frames("--image", str(DEMO / "stand.jpg"), "--bbox", "sidecar")
    np.testing.assert_allclose(frames[0].bbox, read_bbox_file(DEMO / "stand.bbox.json"))


def test_missing_detector_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SAHMR_MEDIAPIPE_SITE", str(tmp_path / "nothing"))
    with pytest.raises(InputError, match=r"no --bbox given .*not installed.*--bbox"):
        _frames("--image", str(DEMO / "stand.jpg"))
    assert Path(DEMO / "stand.jpg").is_file()

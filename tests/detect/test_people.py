"""Choosing people, the detector on a bundled demo render, and its absence."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sahmr.detect.metrics import box_iou
from sahmr.detect.people import NoPersonError, people_from_landmarks, select_people
from sahmr.detect.runtime import DetectorUnavailableError, detector_available, run_pose

DEMO = Path(__file__).resolve().parents[2] / "scenes" / "living_room" / "demo"
needs_detector = pytest.mark.skipif(
    not detector_available(),
    reason="mediapipe is not installed in its private site (bash tools/install.sh)")


def _landmarks(x0, y0, x1, y1) -> np.ndarray:
    lm = np.zeros((33, 4), np.float32)
    lm[:, 0] = np.linspace(x0, x1, 33)
    lm[:, 1] = np.linspace(y0, y1, 33)
    lm[:, 3] = 1.0
    return lm


def test_select_people_threshold_and_largest():
    people = people_from_landmarks(np.stack([_landmarks(10, 10, 40, 40),
                                             _landmarks(100, 50, 180, 470),
                                             _landmarks(300, 100, 340, 300)]), (640, 480))
    assert np.all(people[1].bbox <= [640, 480, 640, 480]) and people[1].bbox[3] == 480
    kept = select_people(people, (640, 480))  # the 30 px person is under 10 % of 480
    assert kept == [people[1], people[2]]  # largest box first
    assert select_people(people, (640, 480), which="largest") == [people[1]]
    with pytest.raises(NoPersonError, match=r"no person found in x.jpg \(1 smaller"):
        select_people(people[:1], (640, 480), image_name="x.jpg")
    with pytest.raises(NoPersonError, match="--bbox"):
        select_people([], (640, 480))


def test_missing_detector_is_a_clear_error(tmp_path):
    with pytest.raises(DetectorUnavailableError, match=r"tools/install\.sh"):
        run_pose([np.zeros((8, 8, 3), np.uint8)], site=tmp_path)


def test_detect_package_does_not_import_mediapipe():
    code = ("import sys, sahmr.detect.people, sahmr.detect.keypoints, sahmr.detect.runtime; "
            "sys.exit('mediapipe' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.fixture(scope="module")
def detected():
    from PIL import Image

    from sahmr.detect.people import detect_people

    image = np.asarray(Image.open(DEMO / "stand.jpg").convert("RGB"))
    blank = np.full((240, 320, 3), 128, np.uint8)
    return image, detect_people([image, blank], max_people=3)


@needs_detector
def test_detector_finds_the_person_of_a_demo_render(detected):
    image, (people, nobody) = detected
    assert len(people) == 1
    gt = np.asarray(json.loads((DEMO / "stand.bbox.json").read_text())["bbox"])
    assert box_iou(people[0].bbox, gt) > 0.7
    person = select_people(people, (image.shape[1], image.shape[0]), which="largest")[0]
    inside = ((person.joints_smpl24 >= gt[:2] - 10) & (person.joints_smpl24 <= gt[2:] + 10))
    assert inside.all() and person.confidence_smpl24.mean() > 0.5
    assert nobody == []
    with pytest.raises(NoPersonError, match="no person found"):
        select_people(nobody, (320, 240))


@needs_detector
def test_crop_keypoints_on_a_demo_crop():
    from PIL import Image

    from sahmr.detect.people import crop_keypoints

    image = Image.open(DEMO / "stand.jpg").convert("RGB")
    x0, y0, x1, y1 = json.loads((DEMO / "stand.bbox.json").read_text())["bbox"]
    side = 1.2 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop = np.asarray(image.crop((round(cx - side / 2), round(cy - side / 2),
                                  round(cx + side / 2), round(cy + side / 2))).resize((224, 224)))
    blank = np.zeros((224, 224, 3), np.uint8)
    joints, conf, found = crop_keypoints([crop, blank], "lsp14")
    assert joints.shape == (2, 14, 2) and found.tolist() == [True, False]
    assert (joints[0] > 0).all() and (joints[0] < 224).all() and conf[0].mean() > 0.5
    assert not joints[1].any() and not conf[1].any()

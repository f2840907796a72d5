"""Landmark -> joint mapping, offsets, boxes (hand-checked on fixed landmark arrays)."""

import numpy as np
import pytest

from sahmr.body.constants import SMPL_JOINT_INDEX
from sahmr.detect.keypoints import (
    BASE_WEIGHTS,
    JOINT_NAMES,
    LANDMARK_INDEX,
    LANDMARK_NAMES,
    OFFSETS,
    box_from_landmarks,
    fit_offsets,
    landmarks_to_joints,
    mapping_matrix,
    symmetrise_offsets,
)


def _person() -> np.ndarray:
    """A fixed upright person facing the camera (image y down), all landmarks visible 0.9."""
    lm = np.zeros((33, 4))
    lm[:, 3] = 0.9
    pos = {
        "left_hip": (110, 200), "right_hip": (90, 200),
        "left_shoulder": (115, 120), "right_shoulder": (85, 120),
        "left_ear": (106, 80), "right_ear": (94, 80),
        "left_heel": (108, 390), "left_foot_index": (118, 395),
        "left_wrist": (140, 200), "left_index": (142, 220), "left_pinky": (138, 216),
    }
    for name, xy in pos.items():
        lm[LANDMARK_INDEX[name], :2] = xy
    return lm


def test_mapping_by_hand_without_offsets():
    lm = _person()
    lm[LANDMARK_INDEX["left_foot_index"], 3] = 0.4
    j, c = landmarks_to_joints(lm, "smpl24", offsets={})
    J = SMPL_JOINT_INDEX
    np.testing.assert_allclose(j[J["pelvis"]], [100, 200])
    np.testing.assert_allclose(j[J["left_hip"]], [110, 200])
    np.testing.assert_allclose(j[J["neck"]], [100, 120])
    np.testing.assert_allclose(j[J["spine1"]], [100, 180])  # 3/4 hips + 1/4 shoulders
    np.testing.assert_allclose(j[J["head"]], [100, 80])
    np.testing.assert_allclose(j[J["left_foot"]], [0.3 * 108 + 0.7 * 118, 0.3 * 390 + 0.7 * 395])
    np.testing.assert_allclose(j[J["left_hand"]], [0.5 * 140 + 0.25 * 142 + 0.25 * 138,
                                                   0.5 * 200 + 0.25 * 220 + 0.25 * 216])
    np.testing.assert_allclose(j[J["left_collar"]], [0.75 * 115 + 0.25 * 85, 120])
    assert c[J["left_foot"]] == pytest.approx(0.4)  # the least visible of heel and toe
    assert c[J["pelvis"]] == pytest.approx(0.9)


def test_mapping_by_hand_with_offsets():
    lm = _person()
    # e_hip = left_hip - right_hip = (20, 0); e_torso = mid shoulders - mid hips = (0, -80).
    j, _ = landmarks_to_joints(lm, "smpl24", offsets={"left_hip": (0.5, -0.1),
                                                      "pelvis": (0.0, 0.25)})
    np.testing.assert_allclose(j[SMPL_JOINT_INDEX["left_hip"]], [110 + 10, 200 + 8])
    np.testing.assert_allclose(j[SMPL_JOINT_INDEX["pelvis"]], [100, 200 - 20])


@pytest.mark.parametrize("joint_set", ["smpl24", "lsp14"])
def test_default_mapping_matches_slow_reference(joint_set):
    rng = np.random.default_rng(0)
    lm = np.concatenate([rng.uniform(0, 500, (5, 33, 2)), rng.uniform(0, 1, (5, 33, 1))], -1)
    fast, conf = landmarks_to_joints(lm, joint_set)
    ix = LANDMARK_INDEX
    for n in range(5):
        def p(name, n=n):
            return lm[n, ix[name], :2]

        e_hip = p("left_hip") - p("right_hip")
        e_torso = 0.5 * (p("left_shoulder") + p("right_shoulder") - p("left_hip") - p("right_hip"))
        for j, name in enumerate(JOINT_NAMES[joint_set]):
            base = sum(w * p(k) for k, w in BASE_WEIGHTS[joint_set][name].items())
            a, b = OFFSETS[joint_set].get(name, (0.0, 0.0))
            np.testing.assert_allclose(fast[n, j], base + a * e_hip + b * e_torso, rtol=1e-5)
            vis = min(lm[n, ix[k], 2] for k in BASE_WEIGHTS[joint_set][name])
            assert conf[n, j] == pytest.approx(vis, abs=1e-6)


def test_mapping_moves_with_the_image():
    """Rows sum to one, so a similarity transform of the landmarks moves the joints alike."""
    M = mapping_matrix("smpl24")
    np.testing.assert_allclose(M.sum(1), 1.0, atol=1e-12)
    lm = _person()
    j0, _ = landmarks_to_joints(lm)
    R = np.array([[0.0, -1.0], [1.0, 0.0]])
    moved = lm.copy()
    moved[:, :2] = 2.0 * lm[:, :2] @ R.T + [5.0, -7.0]
    j1, _ = landmarks_to_joints(moved)
    np.testing.assert_allclose(j1, 2.0 * j0 @ R.T + [5.0, -7.0], atol=1e-3)
    with pytest.raises(ValueError, match="joint set"):
        mapping_matrix("coco17")
    with pytest.raises(ValueError, match="33"):
        landmarks_to_joints(np.zeros((17, 3)))


def test_fit_offsets_recovers_known_offsets():
    rng = np.random.default_rng(1)
    lm = rng.uniform(0, 300, (200, 33, 2))
    truth = {"left_hip": (0.05, -0.1), "neck": (0.0, 0.12), "head": (-0.02, 0.3)}
    gt, _ = landmarks_to_joints(np.concatenate([lm, np.ones((200, 33, 1))], -1), "smpl24",
                                offsets=truth)
    gt = gt + rng.normal(0, 0.05, gt.shape)
    got = fit_offsets(lm, gt, "smpl24")
    for name in JOINT_NAMES["smpl24"]:
        np.testing.assert_allclose(got[name], truth.get(name, (0.0, 0.0)), atol=5e-3)


def test_symmetrise_offsets_by_hand():
    out = symmetrise_offsets({"left_hip": (0.04, -0.10), "right_hip": (0.02, -0.06),
                              "neck": (0.03, 0.12)})
    assert out["left_hip"] == pytest.approx((0.01, -0.08))
    assert out["right_hip"] == pytest.approx((-0.01, -0.08))
    assert out["neck"] == pytest.approx((0.0, 0.12))


def test_box_from_landmarks_by_hand():
    lm = np.zeros((33, 4))
    lm[:, 0] = np.linspace(100, 200, 33)  # width 100
    lm[:, 1] = np.linspace(50, 450, 33)  # height 400
    box = box_from_landmarks(lm, margins=(0.1, 0.05, 0.2, 0.0))
    np.testing.assert_allclose(box, [90, 30, 220, 450])
    assert box_from_landmarks(np.stack([lm, lm])).shape == (2, 4)
    assert len(LANDMARK_NAMES) == 33

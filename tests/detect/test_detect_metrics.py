"""Detection scores against hand-computed numbers."""

import numpy as np
import pytest

from sahmr.detect.metrics import box_iou, box_size, joint_errors, pck, summarise


def test_box_iou_and_size_by_hand():
    a = np.array([0.0, 0.0, 10.0, 10.0])
    assert box_iou(a, np.array([5.0, 0.0, 15.0, 10.0])) == pytest.approx(50 / 150)
    assert box_iou(a, a) == pytest.approx(1.0)
    assert box_iou(a, np.array([20.0, 20, 30, 30])) == 0.0
    np.testing.assert_allclose(box_iou(np.stack([a, a]), a[None]), [1.0, 1.0])
    assert box_size(np.array([0.0, 0.0, 10.0, 40.0])) == 40.0


def test_errors_pck_and_summary_by_hand():
    gt = np.zeros((2, 2, 2))
    pred = np.array([[[3.0, 4.0], [0.0, 1.0]], [[0.0, 20.0], [0.0, 0.0]]])
    err = joint_errors(pred, gt)
    np.testing.assert_allclose(err, [[5.0, 1.0], [20.0, 0.0]])
    np.testing.assert_array_equal(pck(err, np.array([40.0, 100.0])), [[False, True],
                                                                       [False, True]])
    s = summarise(err, np.array([40.0, 100.0]), np.array([True, False]), ("a", "b"))
    assert s["detection_rate"] == 0.5 and s["found"] == 1 and s["frames"] == 2
    assert s["mean_px"] == pytest.approx(3.0) and s["pck"] == pytest.approx(0.5)
    assert s["per_joint"]["a"]["pck"] == 0.0 and s["per_joint"]["b"]["mean_px"] == 1.0
    assert "pck" not in summarise(err, np.ones(2), np.zeros(2, bool), ("a", "b"))

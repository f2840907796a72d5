"""RCNet's contact scores: frames with nothing predicted and nothing to find are undefined."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from sahmr.evaluation.rcnet_metrics import f1_from_sums, rcnet_metrics


def _points(rows: list[tuple[int, float, int]]) -> tuple[torch.Tensor, ...]:
    """(frame, x, region) rows -> points (N, 3), region (N,), batch index (N,)."""
    pts = torch.tensor([[x, 0.0, 2.0] for _, x, _ in rows], dtype=torch.float64).reshape(-1, 3)
    region = torch.tensor([r for _, _, r in rows], dtype=torch.int64)
    batch = torch.tensor([b for b, _, _ in rows], dtype=torch.int64)
    return pts, region, batch


def test_empty_frames_are_undefined_not_one():
    # frame 0: one correct prediction (P = R = F1 = 1); frame 1: nothing predicted, nothing
    # labelled (undefined); frame 2: nothing predicted, one labelled (recall 0, F1 0).
    pred = _points([(0, 0.0, 1)])
    gt = _points([(0, 0.01, 1), (2, 0.5, 2)])
    root = torch.zeros(3, 3, dtype=torch.float64)
    output = SimpleNamespace(
        root_cam=root, root_coarse_cam=root, contact_points_cam=pred[0],
        contact_point_region=pred[1], contact_batch_idx=pred[2],
    )
    targets = SimpleNamespace(
        root_cam=root, contact_points_cam=gt[0], contact_point_region=gt[1],
        contact_batch_idx=gt[2],
    )
    m = rcnet_metrics(output, targets)
    f1 = m.per_frame["contact_f1"]
    assert f1[0] == 1 and math.isnan(f1[1]) and f1[2] == 0
    prec = m.per_frame["contact_precision"]
    assert prec[0] == 1 and math.isnan(prec[1]) and math.isnan(prec[2])
    assert m.per_frame["contact_recall"][2] == 0
    s, n = m.sums["contact_f1"]
    assert (s, n) == (1.0, 2.0)  # mean over the 2 frames where F1 is defined: 0.5
    # region 3 (left hand): nowhere predicted or labelled -> no frame, global F1 undefined
    assert m.sums["contact_f1/left_hand"] == (0.0, 0.0)
    glob = f1_from_sums(m.sums)
    assert math.isnan(glob["contact_f1_global/left_hand"])
    assert glob["contact_f1_global"] == pytest.approx(2 * 1 * 0.5 / 1.5)  # P 1/1, R 1/2
    assert glob["contact_f1_global/right_foot"] == 0.0  # labelled, never predicted

"""Scores of 2-D detections: box IoU, per-joint pixel error, PCK at a fraction of the box size."""

from __future__ import annotations

import numpy as np

__all__ = ["PCK_THRESHOLD", "box_iou", "box_size", "joint_errors", "pck", "summarise"]

PCK_THRESHOLD = 0.1
"""A joint is correct when nearer its ground truth than this fraction of the box size."""


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``x0, y0, x1, y1``.

    Args:
        a: (..., 4) boxes.
        b: (..., 4) boxes (broadcast against ``a``).

    Returns:
        (...) IoU in [0, 1].
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def box_size(box: np.ndarray) -> np.ndarray:
    """(...) larger side of boxes (..., 4), pixels."""
    box = np.asarray(box, np.float64)
    return np.maximum(box[..., 2] - box[..., 0], box[..., 3] - box[..., 1])


def joint_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, J) Euclidean distances, pixels, of (N, J, 2) predictions to (N, J, 2) truth."""
    return np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)


def pck(errors: np.ndarray, sizes: np.ndarray, threshold: float = PCK_THRESHOLD) -> np.ndarray:
    """(N, J) bool: error below ``threshold x size`` (sizes (N,), e.g. `box_size`)."""
    return np.asarray(errors) < threshold * np.asarray(sizes, np.float64)[:, None]


def summarise(errors: np.ndarray, sizes: np.ndarray, found: np.ndarray,
              names: tuple[str, ...], threshold: float = PCK_THRESHOLD) -> dict:
    """Mean/median error and PCK per joint and over all, on the frames where a person was found.

    Args:
        errors: (N, J) pixel errors (rows of frames without a person are ignored).
        sizes: (N,) box sizes, pixels.
        found: (N,) bool, a person was found.
        names: The J joint names.
        threshold: PCK threshold, fraction of the box size.

    Returns:
        ``{"frames", "found", "detection_rate", "pck_threshold", "mean_px", "median_px",
        "pck", "per_joint": {name: {"mean_px", "median_px", "pck"}}}``.
    """
    found = np.asarray(found, bool)
    e, s = np.asarray(errors, np.float64)[found], np.asarray(sizes, np.float64)[found]
    ok = pck(e, s, threshold)
    out: dict = {"frames": int(found.size), "found": int(found.sum()),
                 "detection_rate": float(found.mean()) if found.size else 0.0,
                 "pck_threshold": threshold}
    if not found.any():
        return out
    out.update(mean_px=float(e.mean()), median_px=float(np.median(e)), pck=float(ok.mean()))
    out["per_joint"] = {n: {"mean_px": float(e[:, j].mean()), "median_px": float(np.median(
        e[:, j])), "pck": float(ok[:, j].mean())} for j, n in enumerate(names)}
    return out

"""How much of a placed body's world error is depth: its error split along the camera ray.

A monocular method is least sure of depth. For each frame this splits the error of the body's
centre (mean vertex) into the part along the camera ray through the predicted centre, the part
across it, and the vertical part (along the scan's up axis), and scores the body again after
the one slide along that ray that removes the along-ray part (`depth_fixed_g_mpve`): an oracle
bound of what a perfect depth would give with the pose, shape and image position as predicted.

Two image-side checks go with it, to tell a depth error from a size error:
`box_height_ratio` (the predicted body's projected height over the person box the method was
given: near 1 means the body fills the box, so a body at the wrong depth has the wrong size) and
`lowest_height` (the lowest vertex of a set, e.g. the feet, above the scan's ground).

Units metres (errors reported in mm where the name says so), world frame = the scan,
``T_w2c`` world -> camera (OpenCV), ``K`` pixels. Computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RayErrors", "box_height_ratio", "lowest_height", "ray_errors"]


@dataclass(frozen=True)
class RayErrors:
    """Per-frame arrays (N,).

    Attributes:
        along_m: Signed error of the centre along the unit ray from the camera through the
            predicted centre (truth minus prediction; positive: the truth is farther).
        across_m: Length of the rest of the centre error (perpendicular to that ray).
        vertical_m: Signed error of the centre along the up axis (positive: the truth is higher).
        g_mpve_mm: Mean vertex error of the body as predicted, mm.
        depth_fixed_g_mpve_mm: The same after sliding the body by ``along_m`` along the ray.
        camera_distance_m: Distance from the camera to the predicted centre.
    """

    along_m: np.ndarray
    across_m: np.ndarray
    vertical_m: np.ndarray
    g_mpve_mm: np.ndarray
    depth_fixed_g_mpve_mm: np.ndarray
    camera_distance_m: np.ndarray


def ray_errors(
    pred_world: np.ndarray, gt_world: np.ndarray, camera_world: np.ndarray, up: np.ndarray
) -> RayErrors:
    """Splits each body's centre error along its camera ray.

    Args:
        pred_world: (N, V, 3) predicted vertices, world frame.
        gt_world: (N, V, 3) ground-truth vertices (the same topology), world frame.
        camera_world: (N, 3) each frame's camera centre, world frame.
        up: (3,) unit up vector of the scan.

    Returns:
        `RayErrors`.
    """
    pred = np.asarray(pred_world, dtype=np.float64)
    gt = np.asarray(gt_world, dtype=np.float64)
    cam = np.asarray(camera_world, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    if pred.ndim != 3 or pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be (N, V, 3)")
    if cam.shape != (pred.shape[0], 3):
        raise ValueError(f"camera_world must be ({pred.shape[0]}, 3), got {cam.shape}")
    centre_pred = pred.mean(axis=1)
    offset = centre_pred - cam
    distance = np.linalg.norm(offset, axis=1)
    ray = offset / distance[:, None]
    err = gt.mean(axis=1) - centre_pred
    along = (err * ray).sum(axis=1)
    across = np.linalg.norm(err - along[:, None] * ray, axis=1)
    fixed = pred + (along[:, None] * ray)[:, None, :]
    return RayErrors(
        along_m=along,
        across_m=across,
        vertical_m=err @ up,
        g_mpve_mm=np.linalg.norm(pred - gt, axis=-1).mean(axis=1) * 1000.0,
        depth_fixed_g_mpve_mm=np.linalg.norm(fixed - gt, axis=-1).mean(axis=1) * 1000.0,
        camera_distance_m=distance,
    )


def box_height_ratio(
    vertices_world: np.ndarray, K: np.ndarray, T_w2c: np.ndarray, bbox_xyxy: np.ndarray
) -> np.ndarray:
    """Projected height of each body over the height of its person box.

    Args:
        vertices_world: (N, V, 3), world frame (every vertex in front of the camera).
        K: (N, 3, 3) intrinsics, pixels.
        T_w2c: (N, 4, 4) world -> camera.
        bbox_xyxy: (N, 4) person boxes ``[x0, y0, x1, y1]``, pixels.

    Returns:
        (N,) ratios (1: the body spans the box's height); NaN for a body with a vertex on or
        behind its camera's plane, which has no projected height (one such prediction in the
        1,000 frames of the seed-11 test set once stopped `tools/diagnose_depth.py`).
    """
    V = np.asarray(vertices_world, dtype=np.float64)
    T = np.asarray(T_w2c, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    cam = np.einsum("nij,nvj->nvi", T[:, :3, :3], V) + T[:, None, :3, 3]
    behind = (cam[..., 2] <= 0).any(axis=1)
    z = np.where(cam[..., 2] > 0, cam[..., 2], 1.0)  # behind: any positive depth, then NaN
    v = K[:, 1, 1, None] * cam[..., 1] / z + K[:, 1, 2, None]
    box = np.asarray(bbox_xyxy, dtype=np.float64)
    ratio = (v.max(axis=1) - v.min(axis=1)) / (box[:, 3] - box[:, 1])
    return np.where(behind, np.nan, ratio)


def lowest_height(
    vertices_world: np.ndarray, vertex_ids: np.ndarray, up: np.ndarray, ground_height: np.ndarray
) -> np.ndarray:
    """Height above the ground of the lowest of ``vertex_ids`` in each body.

    Args:
        vertices_world: (N, V, 3), world frame.
        vertex_ids: (K,) vertex indices (e.g. the feet's).
        up: (3,) unit up vector.
        ground_height: (N,) each frame's ground height along ``up``.

    Returns:
        (N,) metres (negative: under the ground).
    """
    V = np.asarray(vertices_world, dtype=np.float64)[:, np.asarray(vertex_ids)]
    return (V @ np.asarray(up, dtype=np.float64)).min(axis=1) - np.asarray(ground_height, float)

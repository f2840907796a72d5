"""Skeleton of the license-free body: SMPL's 24 joints, kinematic tree and rest joints.

Frame of the rest pose (like SMPL's template): metres, y up, the body faces +z, the
person's left is +x; T-pose (arms horizontal along +-x, palms down); the pelvis joint sits
near (0, -0.22, 0.02) and the soles on the plane y = `SOLE_Y`.
"""

from __future__ import annotations

import numpy as np

#: SMPL's 24 joint names, in SMPL's order.
JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip

#: Parent index of each joint (-1 for the root), SMPL's kinematic tree.
PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
)  # fmt: skip

NUM_JOINTS = len(JOINT_NAMES)

#: Height of the flat soles in the rest frame (m).
SOLE_Y = -1.165

#: Top of the head in the rest frame at zero shape (m), used for documentation/tests.
HEAD_TOP_Y = 0.545

# Designed rest joints of the left side and the midline (m); right = mirror in x.
_MID = {
    "pelvis": (0.0, -0.22, 0.02),
    "spine1": (0.0, -0.10, 0.0),
    "spine2": (0.0, 0.03, 0.005),
    "spine3": (0.0, 0.085, 0.015),
    "neck": (0.0, 0.29, -0.015),
    "head": (0.0, 0.36, 0.025),
}
_LEFT = {
    "hip": (0.085, -0.31, 0.015),
    "knee": (0.10, -0.70, 0.02),
    "ankle": (0.09, -1.09, -0.035),
    "foot": (0.11, -1.145, 0.095),
    "collar": (0.075, 0.20, -0.01),
    "shoulder": (0.185, 0.235, -0.02),
    "elbow": (0.445, 0.225, -0.03),
    "wrist": (0.715, 0.225, -0.03),
    "hand": (0.805, 0.22, -0.03),
}


def mirror_x(points: np.ndarray) -> np.ndarray:
    """Mirrors points through the sagittal plane x = 0.

    Args:
        points: Array of shape (..., 3) in the rest frame (m).

    Returns:
        Array of the same shape with x negated.
    """
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] *= -1.0
    return out


def rest_joints() -> np.ndarray:
    """Designed rest-pose joint positions.

    Returns:
        Array of shape (24, 3), float64, metres, rest frame, in `JOINT_NAMES` order.
    """
    joints = np.zeros((NUM_JOINTS, 3), dtype=np.float64)
    for j, name in enumerate(JOINT_NAMES):
        if name in _MID:
            joints[j] = _MID[name]
            continue
        side, part = name.split("_", 1)
        pos = np.array(_LEFT[part])
        joints[j] = pos if side == "left" else mirror_x(pos)
    return joints


def kintree_table() -> np.ndarray:
    """SMPL's kinematic tree table.

    Returns:
        Int64 array of shape (2, 24): row 0 the parent of each joint (-1 for the root;
        smplx resets the root's parent to -1 whatever is stored), row 1 the joint index.
    """
    return np.stack([np.array(PARENTS, dtype=np.int64), np.arange(NUM_JOINTS, dtype=np.int64)])


def joint_index(name: str) -> int:
    """Index of a joint by its SMPL name.

    Args:
        name: One of `JOINT_NAMES`.

    Returns:
        The joint's index in [0, 24).
    """
    return JOINT_NAMES.index(name)

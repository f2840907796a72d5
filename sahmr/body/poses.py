"""Named standard poses in SMPL's parameterisation, for tests, showcases and samplers.

SMPL's rest frames are aligned with the body frame (x = the person's left, y up, z forward),
so a joint's axis-angle reads directly in those axes: hip flexion is a negative rotation
about x, knee flexion a positive one; the left arm is lowered by a negative rotation about z
and the right arm by a positive one.
"""

from __future__ import annotations

import numpy as np

NUM_BODY_JOINTS = 23

# Joint indices in SMPL order (0 is the pelvis, driven by global_orient).
_J = {
    "left_hip": 1, "right_hip": 2, "spine1": 3, "left_knee": 4, "right_knee": 5, "spine2": 6,
    "left_ankle": 7, "right_ankle": 8, "spine3": 9, "left_foot": 10, "right_foot": 11,
    "neck": 12, "left_collar": 13, "right_collar": 14, "head": 15, "left_shoulder": 16,
    "right_shoulder": 17, "left_elbow": 18, "right_elbow": 19, "left_wrist": 20,
    "right_wrist": 21, "left_hand": 22, "right_hand": 23,
}  # fmt: skip

# name -> ({joint: (rx, ry, rz) degrees}, global_orient degrees)
_POSES: dict[str, tuple[dict[str, tuple[float, float, float]], tuple[float, float, float]]] = {
    "T": ({}, (0.0, 0.0, 0.0)),
    "A": ({"left_shoulder": (0, 0, -45), "right_shoulder": (0, 0, 45)}, (0.0, 0.0, 0.0)),
    "sitting": (
        {
            "left_hip": (-90, 0, 0), "right_hip": (-90, 0, 0),
            "left_knee": (90, 0, 0), "right_knee": (90, 0, 0),
            "left_shoulder": (0, 0, -70), "right_shoulder": (0, 0, 70),
            "left_elbow": (0, -30, 0), "right_elbow": (0, 30, 0),
        },
        (0.0, 0.0, 0.0),
    ),
    "squat": (
        {
            "left_hip": (-115, 0, -10), "right_hip": (-115, 0, 10),
            "left_knee": (125, 0, 0), "right_knee": (125, 0, 0),
            "left_ankle": (-10, 0, 0), "right_ankle": (-10, 0, 0),
            "spine1": (20, 0, 0),
            "left_shoulder": (0, 30, -20), "right_shoulder": (0, -30, 20),
        },
        (0.0, 0.0, 0.0),
    ),
    "arms_up": (
        {
            "left_collar": (0, 0, 15), "right_collar": (0, 0, -15),
            "left_shoulder": (0, 0, 70), "right_shoulder": (0, 0, -70),
        },
        (0.0, 0.0, 0.0),
    ),
    "lying": (
        {"left_shoulder": (0, 0, -75), "right_shoulder": (0, 0, 75)},
        (-90.0, 0.0, 0.0),
    ),
    "walking": (
        {
            "left_hip": (-25, 0, 0), "right_hip": (20, 0, 0),
            "left_knee": (15, 0, 0), "right_knee": (35, 0, 0),
            "left_shoulder": (0, 20, -75), "right_shoulder": (0, 20, 75),
            "left_elbow": (0, -20, 0), "right_elbow": (0, 30, 0),
        },
        (0.0, 0.0, 0.0),
    ),
}  # fmt: skip

STANDARD_POSE_NAMES: tuple[str, ...] = tuple(_POSES)


def _axis_angle_from_euler_deg(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """Axis-angle (3,) of the rotation R = Rz @ Ry @ Rx for angles in degrees."""
    from scipy.spatial.transform import Rotation

    rx, ry, rz = angles_deg
    return Rotation.from_euler("ZYX", [rz, ry, rx], degrees=True).as_rotvec()


def standard_pose(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return a named standard pose.

    Args:
        name: one of ``STANDARD_POSE_NAMES`` ("T", "A", "sitting", "squat", "arms_up",
            "lying", "walking").

    Returns:
        ``(global_orient, body_pose)``: float64 arrays of shape (3,) and (69,), axis-angle
        in radians, SMPL joint order.
    """
    if name not in _POSES:
        raise KeyError(f"unknown pose {name!r}; choose from {', '.join(STANDARD_POSE_NAMES)}")
    joints, root = _POSES[name]
    body_pose = np.zeros((NUM_BODY_JOINTS, 3))
    for joint, angles in joints.items():
        body_pose[_J[joint] - 1] = _axis_angle_from_euler_deg(angles)
    return _axis_angle_from_euler_deg(root), body_pose.reshape(-1)

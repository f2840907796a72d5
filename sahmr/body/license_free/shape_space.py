"""Shape space of the license-free body: semantic displacement fields, orthonormalised.

Each component starts as a geometric displacement field of the rest vertices with a clear
meaning (`SHAPE_NAMES`). The flattened (V*3) fields are orthonormalised by Gram-Schmidt in
that fixed order (so component 0 stays pure "height"), and each unit direction is scaled by
a standard deviation (`shape_std`) chosen so that betas ~ N(0, 1) behave like SMPL's: one
unit of beta0 adds about 6 cm of height, and +-3 stays a plausible human.

The same linear combinations applied to the designed joints give ``J_shapedirs``, the joint
displacement each component is meant to cause; the joint regressor reproduces it (tested).

Frame: the rest frame (metres, y up, facing +z, left at +x).
"""

from __future__ import annotations

import logging

import numpy as np

from sahmr.body.license_free.skeleton import PARENTS, SOLE_Y, joint_index

logger = logging.getLogger(__name__)

#: Semantic name of each shape component, in Gram-Schmidt order.
SHAPE_NAMES: tuple[str, ...] = (
    "height", "weight", "shoulder_width", "hip_width", "arm_length", "leg_length",
    "torso_length", "head_size", "chest_belly_depth", "limb_thickness",
)  # fmt: skip

#: Size of one standard deviation of each raw field (its unit is stated per field).
_RAW_STD = {
    "height": 0.06 / (0.545 - SOLE_Y),  # uniform scale about the soles: +6 cm height
    "weight": 0.07,  # fraction of the distance to the bone axes
    "shoulder_width": 0.015,  # metres of lateral shift of each arm
    "hip_width": 0.12,  # fraction of the lateral offset of the hips/legs
    "arm_length": 0.04,  # fraction of the arm length
    "leg_length": 0.035,  # fraction of the leg length
    "torso_length": 0.04,  # fraction of the hip-to-shoulder length
    "head_size": 0.05,  # fraction of the head size
    "chest_belly_depth": 0.15,  # fraction of the front depth of the trunk
    "limb_thickness": 0.08,  # fraction of the distance to the limb axes
}

_TORSO = ("pelvis", "spine1", "spine2", "spine3", "neck")
_LIMB_PARTS = ("hip", "knee", "shoulder", "elbow", "collar")


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _soft_relu(x: np.ndarray, width: float) -> np.ndarray:
    return 0.5 * (x + np.sqrt(x * x + width * width)) - 0.5 * width


def _soft_clamp(x: np.ndarray, hi: float, width: float) -> np.ndarray:
    """Smooth version of min(max(x, 0), hi) for x >= 0-ish."""
    return _soft_relu(x, width) - _soft_relu(x - hi, width)


def bone_segments(joints: np.ndarray) -> np.ndarray:
    """Bone axis segment of each joint's rigid part (joint -> child, or a designed end).

    Args:
        joints: Array of shape (24, 3), rest joints (m).

    Returns:
        Array of shape (24, 2, 3): start and end of each joint's axis segment (m).
    """
    seg = np.zeros((len(joints), 2, 3))
    for j in range(len(joints)):
        children = [c for c, p in enumerate(PARENTS) if p == j]
        if j == joint_index("pelvis"):
            end = joints[joint_index("spine1")]
        elif j == joint_index("spine3"):
            end = joints[joint_index("neck")]
        elif children:
            end = joints[children[0]]
        else:  # leaves: continue along the parent bone (head: straight up)
            direction = joints[j] - joints[PARENTS[j]]
            if j == joint_index("head"):
                direction = np.array([0.0, 0.15, 0.0])
            end = joints[j] + 0.6 * direction
        seg[j] = (joints[j], end)
    return seg


def _radial(points: np.ndarray, skin: np.ndarray, seg: np.ndarray,
            gains: np.ndarray) -> np.ndarray:
    """Skin-weighted offset of points from their bones' axes, scaled per joint."""
    out = np.zeros_like(points)
    for j in np.flatnonzero(gains):
        a, b = seg[j]
        ab = b - a
        t = np.clip((points - a) @ ab / (ab @ ab), 0.0, 1.0)
        offset = points - (a + t[:, None] * ab)
        out += (gains[j] * skin[:, j])[:, None] * offset
    return out


def semantic_fields(
    points: np.ndarray, skin: np.ndarray | None, joints: np.ndarray
) -> np.ndarray:
    """Raw semantic displacement fields evaluated at points.

    Args:
        points: Array of shape (N, 3), rest-frame points (m).
        skin: Array of shape (N, 24), skinning weights of the points, or None when the
            points are the 24 joints themselves: each joint then moves with the body part
            it sits in (its parent's bone; the root with its own).
        joints: Array of shape (24, 3), rest joints (m).

    Returns:
        Array of shape (N, 3, len(SHAPE_NAMES)), displacement per raw unit (see `_RAW_STD`).
    """
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    zero = np.zeros_like(x)
    sign = np.sign(x)
    upper = _smoothstep(y, 0.05, 0.15)
    y_hip = joints[joint_index("left_hip"), 1]
    y_sh = joints[joint_index("left_shoulder"), 1]
    x_sh = joints[joint_index("left_shoulder"), 0]
    fields = {}
    fields["height"] = points - np.array([0.0, SOLE_Y, 0.0])
    seg = bone_segments(joints)
    gains_w = np.full(len(joints), 0.6)
    gains_l = np.zeros(len(joints))
    for name in _TORSO:
        gains_w[joint_index(name)] = 1.0
    for side in ("left_", "right_"):
        for part in _LIMB_PARTS:
            gains_l[joint_index(side + part)] = 1.0
        for part in ("wrist", "hand"):
            gains_w[joint_index(side + part)] = 0.2
    gains_w[joint_index("head")] = 0.2
    if skin is None:
        skin = np.zeros((len(points), len(joints)))
        skin[np.arange(len(points)), [max(p, 0) for p in PARENTS]] = 1.0
    fields["weight"] = _radial(points, skin, seg, gains_w)
    fields["limb_thickness"] = _radial(points, skin, seg, gains_l)
    fields["shoulder_width"] = np.stack(
        [sign * _smoothstep(np.abs(x), 0.04, 0.17) * upper, zero, zero], axis=1)
    lower = 1.0 - _smoothstep(y, -0.2, -0.02)
    fields["hip_width"] = np.stack([0.1 * np.tanh(x / 0.1) * lower, zero, zero], axis=1)
    fields["arm_length"] = np.stack(
        [sign * _soft_relu(np.abs(x) - x_sh, 0.04) * upper, zero, zero], axis=1)
    fields["leg_length"] = np.stack(
        [zero, _soft_clamp(y - SOLE_Y, y_hip - SOLE_Y, 0.08), zero], axis=1)
    fields["torso_length"] = np.stack(
        [zero, _soft_clamp(y - y_hip, y_sh - y_hip, 0.08), zero], axis=1)
    head_c = joints[joint_index("neck")] + np.array([0.0, 0.02, 0.0])
    fields["head_size"] = _smoothstep(y, 0.27, 0.34)[:, None] * (points - head_c)
    trunk = (1.0 - _smoothstep(np.abs(x), 0.12, 0.2)) * _smoothstep(y, -0.35, -0.2) * (
        1.0 - _smoothstep(y, 0.18, 0.26))
    fields["chest_belly_depth"] = np.stack(
        [zero, zero, _soft_relu(z - 0.0, 0.04) * trunk], axis=1)
    return np.stack([fields[n] for n in SHAPE_NAMES], axis=-1)


def build_shape_space(
    vertices: np.ndarray, skin: np.ndarray, joints: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormalised, scaled shape directions of the body.

    Args:
        vertices: Array of shape (V, 3), rest vertices (m).
        skin: Array of shape (V, 24), skinning weights.
        joints: Array of shape (24, 3), rest joints (m).

    Returns:
        Tuple of ``shapedirs`` (V, 3, NB) in metres per unit beta, ``shape_std`` (NB,) the
        scale of each unit direction (``shapedirs / shape_std`` is orthonormal when
        flattened to (V*3, NB)), and ``J_shapedirs`` (24, 3, NB), the joint displacement
        per unit beta of the same semantic deformation.
    """
    raw_v = semantic_fields(vertices, skin, joints)
    raw_j = semantic_fields(joints, None, joints)
    num_b = raw_v.shape[-1]
    std_raw = np.array([_RAW_STD[n] for n in SHAPE_NAMES])
    dv = raw_v.reshape(-1, num_b) * std_raw  # one standard deviation per column
    dj = raw_j.reshape(-1, num_b) * std_raw
    units = np.zeros_like(dv)
    jdirs = np.zeros_like(dj)
    shape_std = np.zeros(num_b)
    for k in range(num_b):  # modified Gram-Schmidt, tracked on the joints too
        rv, rj = dv[:, k].copy(), dj[:, k].copy()
        for i in range(k):
            c = units[:, i] @ rv
            rv -= c * units[:, i]
            rj -= c * jdirs[:, i] / shape_std[i]
        norm = np.linalg.norm(rv)
        units[:, k] = rv / norm
        shape_std[k] = norm
        jdirs[:, k] = rj
    shapedirs = (units * shape_std).reshape(-1, 3, num_b)
    return shapedirs, shape_std, jdirs.reshape(-1, 3, num_b)

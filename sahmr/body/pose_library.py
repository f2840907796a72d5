"""Procedural body poses for scene-interaction actions, within per-joint limits.

Every pose is written as per-joint Euler angles ``(rx, ry, rz)`` in degrees with the
rotation ``R = Rz @ Ry @ Rx`` (scipy's intrinsic ``"ZYX"``, the convention of
:mod:`sahmr.body.poses`), except the elbows, whose large flexion is about y: they use
``R = Ry @ Rz @ Rx`` (intrinsic ``"YZX"``, :data:`JOINT_EULER_ORDER`). SMPL's rest frames
are aligned with the BODY frame (x = the person's left, y up, z forward), so hip flexion is
a negative x angle, knee flexion a positive one, the left arm is lowered by a negative z
angle and swung forward by a negative y angle (mirrored for the right arm).

:data:`JOINT_LIMITS` gives a box of allowed Euler angles per joint; every sampled pose is
clamped to it. The range of each joint's MIDDLE Euler axis lies strictly inside (-90, 90)
degrees, so the Euler triple of a sampled joint is the unique decomposition of its rotation
and a pose can be checked against the limits from its axis-angle alone
(:func:`body_axis_angle_to_euler_deg`).

:data:`ACTIONS` names, per action, the pose template, the noise added around it and the
contacts a placement must realise (body contact regions of :data:`sahmr.body.constants.
CONTACT_REGION_NAMES` and the surface kinds of :data:`sahmr.synth.furniture.SURFACE_KINDS`
they must touch). Lying requires the back and buttocks on the lying surface; sitting comes
upright (``sit_chair``, ``sit_sofa``: buttocks and thighs on the seat, feet on the floor) and
leaning back (``sit_back_chair``, ``sit_back_sofa``, ``sit_back_bed``: the back on the
object's backrest or headboard as well).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from sahmr.body.constants import SMPL_MIRROR_INDEX

logger = logging.getLogger(__name__)

__all__ = [
    "ACTIONS",
    "BODY_JOINT_NAMES",
    "JOINT_EULER_ORDER",
    "JOINT_LIMITS",
    "JOINT_LIMITS_DEG",
    "ActionSpec",
    "ContactRequirement",
    "axis_angle_to_euler_deg",
    "body_axis_angle_to_euler_deg",
    "body_euler_deg_to_axis_angle",
    "body_euler_to_matrix",
    "clamp_euler_deg",
    "euler_deg_to_axis_angle",
    "euler_to_matrix",
    "sample_betas",
    "sample_pose",
    "sample_pose_euler",
]

BODY_JOINT_NAMES: tuple[str, ...] = (
    "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar",
    "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
    "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
"""The 23 joints of ``body_pose`` in SMPL order (SMPL joints 1..23)."""

_JI = {name: i for i, name in enumerate(BODY_JOINT_NAMES)}

# Allowed Euler angles (degrees): joint -> ((x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi)).
JOINT_LIMITS_DEG: dict[str, tuple[tuple[float, float], ...]] = {
    "left_hip": ((-130, 35), (-40, 40), (-30, 50)),
    "right_hip": ((-130, 35), (-40, 40), (-50, 30)),
    "spine1": ((-25, 45), (-30, 30), (-25, 25)),
    "left_knee": ((0, 150), (-5, 5), (-5, 5)),
    "right_knee": ((0, 150), (-5, 5), (-5, 5)),
    "spine2": ((-20, 35), (-25, 25), (-20, 20)),
    "left_ankle": ((-40, 35), (-20, 20), (-20, 20)),
    "right_ankle": ((-40, 35), (-20, 20), (-20, 20)),
    "spine3": ((-20, 30), (-25, 25), (-20, 20)),
    "left_foot": ((-25, 25), (-5, 5), (-5, 5)),
    "right_foot": ((-25, 25), (-5, 5), (-5, 5)),
    "neck": ((-40, 50), (-50, 50), (-35, 35)),
    "left_collar": ((-15, 15), (-20, 20), (-20, 30)),
    "right_collar": ((-15, 15), (-20, 20), (-30, 20)),
    "head": ((-30, 40), (-45, 45), (-30, 30)),
    "left_shoulder": ((-90, 90), (-88, 40), (-88, 90)),
    "right_shoulder": ((-90, 90), (-40, 88), (-90, 88)),
    "left_elbow": ((-15, 15), (-150, 0), (-15, 15)),
    "right_elbow": ((-15, 15), (0, 150), (-15, 15)),
    "left_wrist": ((-60, 60), (-30, 30), (-60, 60)),
    "right_wrist": ((-60, 60), (-30, 30), (-60, 60)),
    "left_hand": ((-20, 20), (-15, 15), (-20, 20)),
    "right_hand": ((-20, 20), (-15, 15), (-20, 20)),
}  # fmt: skip
"""Per-joint Euler limits in degrees (order :data:`JOINT_EULER_ORDER`), by joint name."""

JOINT_EULER_ORDER: dict[str, str] = {
    name: ("YZX" if name.endswith("_elbow") else "ZYX") for name in BODY_JOINT_NAMES
}
"""Per joint, the intrinsic Euler order (scipy notation): ``"ZYX"`` is ``Rz @ Ry @ Rx``."""

_ELBOWS = [i for i, n in enumerate(BODY_JOINT_NAMES) if JOINT_EULER_ORDER[n] == "YZX"]
_AXIS = {"X": 0, "Y": 1, "Z": 2}

JOINT_LIMITS: np.ndarray = np.deg2rad(
    np.array([JOINT_LIMITS_DEG[n] for n in BODY_JOINT_NAMES], dtype=np.float64)
)
"""Float64 array of shape (23, 3, 2): per joint and axis (x, y, z), [low, high] in radians."""

_Angles = dict[str, tuple[float, float, float]]
_ARMS_DOWN: _Angles = {
    "left_shoulder": (0, 0, -72), "right_shoulder": (0, 0, 72),
    "left_elbow": (0, -12, 0), "right_elbow": (0, 12, 0),
}  # fmt: skip
_SIT_LEGS: _Angles = {  # thighs sloping down a little: their backs touch a deep seat too
    "left_hip": (-83, 0, 4), "right_hip": (-83, 0, -4),
    "left_knee": (85, 0, 0), "right_knee": (85, 0, 0),
}  # fmt: skip

# template name -> (joint Euler angles in degrees, global orientation Euler in degrees)
_TEMPLATES: dict[str, tuple[_Angles, tuple[float, float, float]]] = {
    "stand": ({**_ARMS_DOWN, "left_hip": (-2, 0, 3), "right_hip": (-2, 0, -3),
               "left_knee": (4, 0, 0), "right_knee": (4, 0, 0)}, (0, 0, 0)),
    "walk": ({"left_hip": (-22, 0, 2), "right_hip": (18, 0, -2), "left_knee": (10, 0, 0),
              "right_knee": (35, 0, 0), "right_ankle": (5, 0, 0),
              "left_shoulder": (0, 20, -72), "right_shoulder": (0, 20, 72),
              "left_elbow": (0, -20, 0), "right_elbow": (0, 30, 0)}, (0, 0, 0)),
    "sit": ({**_SIT_LEGS, "left_shoulder": (0, -25, -65), "right_shoulder": (0, 25, 65),
             "left_elbow": (0, -45, 0), "right_elbow": (0, 45, 0)}, (0, 0, 0)),
    "sit_deep": ({"left_hip": (-80, 0, 5), "right_hip": (-80, 0, -5),
                  "left_knee": (72, 0, 0), "right_knee": (72, 0, 0),
                  "left_ankle": (8, 0, 0), "right_ankle": (8, 0, 0),
                  "left_shoulder": (0, -25, -65), "right_shoulder": (0, 25, 65),
                  "left_elbow": (0, -45, 0), "right_elbow": (0, 45, 0)}, (0, 0, 0)),
    "sit_high": ({"left_hip": (-85, 0, 4), "right_hip": (-85, 0, -4),
                  "left_knee": (65, 0, 0), "right_knee": (65, 0, 0),
                  "left_ankle": (15, 0, 0), "right_ankle": (15, 0, 0),
                  "left_shoulder": (0, -25, -65), "right_shoulder": (0, 25, 65),
                  "left_elbow": (0, -45, 0), "right_elbow": (0, 45, 0)}, (0, 0, 0)),
    "sit_low": ({"left_hip": (-110, 0, 8), "right_hip": (-110, 0, -8),
                 "left_knee": (115, 0, 0), "right_knee": (115, 0, 0),
                 "left_ankle": (-10, 0, 0), "right_ankle": (-10, 0, 0),
                 "spine1": (12, 0, 0), "left_shoulder": (0, -35, -60),
                 "right_shoulder": (0, 35, 60), "left_elbow": (0, -40, 0),
                 "right_elbow": (0, 40, 0)}, (0, 0, 0)),
    # leaning back: the root pitched back (negative x), the hips opened by as much and a
    # little more, so that the thighs slope down onto the seat
    "sit_back": ({"left_hip": (-74, 0, 4), "right_hip": (-74, 0, -4),
                  "left_knee": (85, 0, 0), "right_knee": (85, 0, 0),
                  "spine3": (4, 0, 0), "neck": (6, 0, 0),
                  "left_shoulder": (0, -25, -65), "right_shoulder": (0, 25, 65),
                  "left_elbow": (0, -45, 0), "right_elbow": (0, 45, 0)}, (-10, 0, 0)),
    "sit_recline": ({"left_hip": (-46, 0, 6), "right_hip": (-46, 0, -6),
                     "left_knee": (68, 0, 0), "right_knee": (68, 0, 0),
                     "left_ankle": (10, 0, 0), "right_ankle": (10, 0, 0),
                     "spine2": (5, 0, 0), "spine3": (8, 0, 0), "neck": (16, 0, 0),
                     "left_shoulder": (0, -20, -70), "right_shoulder": (0, 20, 70),
                     "left_elbow": (0, -30, 0), "right_elbow": (0, 30, 0)}, (-30, 0, 0)),
    "sit_long": ({"left_hip": (-79, 0, 4), "right_hip": (-79, 0, -4),
                  "left_knee": (4, 0, 0), "right_knee": (4, 0, 0),
                  "spine3": (4, 0, 0), "neck": (8, 0, 0),
                  "left_shoulder": (0, -30, -60), "right_shoulder": (0, 30, 60),
                  "left_elbow": (0, -20, 0), "right_elbow": (0, 20, 0)}, (-12, 0, 0)),
    "lie": ({"left_shoulder": (0, 0, -75), "right_shoulder": (0, 0, 75),
             "left_hip": (0, 0, 4), "right_hip": (0, 0, -4)}, (-90, 0, 0)),
    "lie_knees_up": ({"left_shoulder": (0, 0, -75), "right_shoulder": (0, 0, 75),
                      "left_hip": (-45, 0, 5), "right_hip": (-45, 0, -5),
                      "left_knee": (85, 0, 0), "right_knee": (85, 0, 0),
                      "left_ankle": (-25, 0, 0), "right_ankle": (-25, 0, 0)}, (-90, 0, 0)),
    "lean_table": ({"spine1": (15, 0, 0), "spine2": (10, 0, 0),
                    "left_hip": (-5, 0, 3), "right_hip": (-5, 0, -3),
                    "left_shoulder": (0, -45, -60), "right_shoulder": (0, 45, 60),
                    "left_elbow": (0, -8, 0), "right_elbow": (0, 8, 0)}, (0, 0, 0)),
    "lean_wall": ({**_ARMS_DOWN, "left_hip": (-6, 0, 3), "right_hip": (-6, 0, -3),
                   "left_knee": (6, 0, 0), "right_knee": (6, 0, 0),
                   "left_ankle": (3, 0, 0), "right_ankle": (3, 0, 0)}, (-6, 0, 0)),
    "touch_wall": ({"left_shoulder": (0, 0, -72), "left_elbow": (0, -12, 0),
                    "right_shoulder": (0, 72, -20), "right_elbow": (0, 8, 0),
                    "left_knee": (3, 0, 0), "right_knee": (3, 0, 0)}, (0, 0, 0)),
    "touch_table": ({"spine1": (12, 0, 0), "spine2": (8, 0, 0),
                     "left_shoulder": (0, 0, -72), "left_elbow": (0, -12, 0),
                     "right_shoulder": (0, 35, 75), "right_elbow": (0, 8, 0)}, (0, 0, 0)),
    "reach_both": ({"left_shoulder": (0, -72, 20), "right_shoulder": (0, 72, -20),
                    "left_elbow": (0, -8, 0), "right_elbow": (0, 8, 0),
                    "left_knee": (3, 0, 0), "right_knee": (3, 0, 0)}, (0, 0, 0)),
    "squat": ({"left_hip": (-115, 0, 10), "right_hip": (-115, 0, -10),
               "left_knee": (125, 0, 0), "right_knee": (125, 0, 0),
               "left_ankle": (-10, 0, 0), "right_ankle": (-10, 0, 0), "spine1": (20, 0, 0),
               "left_shoulder": (0, -30, -40), "right_shoulder": (0, 30, 40)}, (0, 0, 0)),
    "kneel": ({"left_hip": (-85, 0, 5), "left_knee": (88, 0, 0),
               "right_hip": (2, 0, -3), "right_knee": (92, 0, 0), "right_ankle": (-5, 0, 0),
               "left_shoulder": (0, -15, -70), "right_shoulder": (0, 10, 72),
               "left_elbow": (0, -30, 0), "right_elbow": (0, 15, 0)}, (0, 0, 0)),
}  # fmt: skip


@dataclass(frozen=True)
class ContactRequirement:
    """Body regions that must touch a surface of one of the given kinds.

    Attributes:
        regions: contact region labels (1 left foot sole, 2 right foot sole, 3 left hand,
            4 right hand, 5 back, 6 gluteus, 7 thighs); EVERY listed region must touch.
        surfaces: surface kinds (:data:`sahmr.synth.furniture.SURFACE_KINDS`) they touch.
    """

    regions: tuple[int, ...]
    surfaces: tuple[str, ...]


@dataclass(frozen=True)
class ActionSpec:
    """One action: pose template, variety and the contacts a placement must realise.

    Attributes:
        name: action name (key of :data:`ACTIONS`).
        template: pose template name.
        contacts: required contacts; the first is the PRIMARY one, whose surface is chosen
            as the placement target.
        placement: how the placer positions the body on the target surface: ``"floor"``
            (standing anywhere walkable), ``"seat"`` (sit on a seat, facing the object's
            front), ``"seat_back"`` (sit on the seat of an object with a backrest, the back
            against the backrest, facing away from it), ``"edge"`` (sit on an edge of a
            bed/step, facing outwards), ``"lie"`` (lie along a horizontal surface),
            ``"face"`` (stand facing a wall or a table edge, reaching it), ``"back_to"``
            (stand with the back to a wall).
        categories: object categories allowed for the target surface (empty: any).
        sigma_deg: standard deviation (degrees) of the Gaussian noise per joint angle.
        root_sigma_deg: standard deviation (degrees) of the noise on the root tilt.
    """

    name: str
    template: str
    contacts: tuple[ContactRequirement, ...]
    placement: str
    categories: tuple[str, ...] = ()
    sigma_deg: float = 6.0
    root_sigma_deg: float = 2.0

    @property
    def target_surfaces(self) -> tuple[str, ...]:
        """Surface kinds the primary contact may use."""
        return self.contacts[0].surfaces


_FEET = ContactRequirement((1, 2), ("floor",))
_BACKREST = ContactRequirement((5,), ("backrest",))
_SEATERS = ("chair", "bench", "box", "bollard")

ACTIONS: dict[str, ActionSpec] = {
    a.name: a
    for a in (
        ActionSpec("stand", "stand", (_FEET,), "floor"),
        ActionSpec("walk", "walk", (ContactRequirement((1,), ("floor",)),), "floor"),
        ActionSpec("sit_chair", "sit", (ContactRequirement((6, 7), ("seat",)), _FEET),
                   "seat", _SEATERS),
        ActionSpec("sit_sofa", "sit_deep", (ContactRequirement((6, 7), ("seat",)), _FEET),
                   "seat", ("sofa",)),
        ActionSpec("sit_back_chair", "sit_back",
                   (ContactRequirement((6, 7), ("seat",)), _BACKREST, _FEET), "seat_back",
                   ("chair",), sigma_deg=5.0),
        ActionSpec("sit_back_sofa", "sit_recline",
                   (ContactRequirement((6, 7), ("seat",)), _BACKREST, _FEET), "seat_back",
                   ("sofa",), sigma_deg=5.0),
        ActionSpec("sit_back_bed", "sit_long",
                   (ContactRequirement((6,), ("bed",)), _BACKREST), "seat_back", ("bed",),
                   sigma_deg=4.0),
        ActionSpec("sit_stool", "sit_high", (ContactRequirement((6, 7), ("seat",)),),
                   "seat", ("stool",)),
        ActionSpec("sit_bed_edge", "sit", (ContactRequirement((6, 7), ("bed",)), _FEET),
                   "edge", ("bed",)),
        ActionSpec("sit_step", "sit_low", (ContactRequirement((6,), ("step",)), _FEET),
                   "edge", ("step",)),
        ActionSpec("lie_bed", "lie", (ContactRequirement((5, 6), ("bed",)),), "lie",
                   ("bed",), root_sigma_deg=1.0),
        ActionSpec("lie_sofa", "lie_knees_up", (ContactRequirement((5, 6), ("seat",)),),
                   "lie", ("sofa",), root_sigma_deg=1.0),
        ActionSpec("lie_floor", "lie", (ContactRequirement((5, 6), ("floor", "mat")),),
                   "lie", root_sigma_deg=1.0),
        ActionSpec("lean_table", "lean_table",
                   (ContactRequirement((3, 4), ("tabletop",)), _FEET), "face",
                   ("table", "desk")),
        ActionSpec("lean_wall", "lean_wall", (ContactRequirement((5,), ("wall",)), _FEET),
                   "back_to", root_sigma_deg=1.0),
        ActionSpec("touch_wall", "touch_wall",
                   (ContactRequirement((4,), ("wall",)), _FEET), "face"),
        ActionSpec("touch_table", "touch_table",
                   (ContactRequirement((4,), ("tabletop",)), _FEET), "face",
                   ("table", "desk", "low_table")),
        ActionSpec("reach_wall", "reach_both",
                   (ContactRequirement((3, 4), ("wall",)), _FEET), "face"),
        ActionSpec("squat", "squat", (_FEET,), "floor", sigma_deg=4.0),
        ActionSpec("kneel", "kneel", (_FEET,), "floor", sigma_deg=4.0),
    )
}  # fmt: skip
"""Action name -> :class:`ActionSpec`."""


def _template_euler_deg(name: str) -> tuple[np.ndarray, np.ndarray]:
    joints, root = _TEMPLATES[name]
    euler = np.zeros((len(BODY_JOINT_NAMES), 3))
    for joint, angles in joints.items():
        euler[_JI[joint]] = angles
    return euler, np.asarray(root, dtype=np.float64)


def clamp_euler_deg(euler_deg: np.ndarray) -> np.ndarray:
    """Clamp body joint Euler angles to :data:`JOINT_LIMITS_DEG`.

    Args:
        euler_deg: array of shape (..., 23, 3), degrees, ``(rx, ry, rz)`` per joint.

    Returns:
        Clamped copy, same shape, float64.
    """
    lim = np.rad2deg(JOINT_LIMITS)
    return np.clip(np.asarray(euler_deg, dtype=np.float64), lim[..., 0], lim[..., 1])


def _axis_rotation(angle: Tensor, axis: int) -> Tensor:
    c, s_ = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        rows = [[one, zero, zero], [zero, c, -s_], [zero, s_, c]]
    elif axis == 1:
        rows = [[c, zero, s_], [zero, one, zero], [-s_, zero, c]]
    else:
        rows = [[c, -s_, zero], [s_, c, zero], [zero, zero, one]]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def euler_to_matrix(euler: Tensor, order: str = "ZYX") -> Tensor:
    """Rotation matrices from Euler angles (differentiable).

    Args:
        euler: Tensor of shape (..., 3), ``(rx, ry, rz)`` in radians.
        order: intrinsic order, ``"ZYX"`` gives ``Rz @ Ry @ Rx``.

    Returns:
        Tensor of shape (..., 3, 3).
    """
    mats = [_axis_rotation(euler[..., _AXIS[a]], _AXIS[a]) for a in order]
    return mats[0] @ mats[1] @ mats[2]


def body_euler_to_matrix(euler: Tensor) -> Tensor:
    """Joint rotation matrices from body Euler angles with :data:`JOINT_EULER_ORDER`.

    Closed form (one sine and cosine per angle, the nine entries of ``Rz @ Ry @ Rx``, or of
    ``Ry @ Rz @ Rx`` for the elbows): a few dozen tensor operations for any batch, which
    keeps the placer's refinement loop cheap. Equal to :func:`euler_to_matrix` per joint.

    Args:
        euler: Tensor of shape (..., 23, 3), radians.

    Returns:
        Tensor of shape (..., 23, 3, 3).
    """
    s, c = torch.sin(euler), torch.cos(euler)
    sx, sy, sz = s.unbind(-1)
    cx, cy, cz = c.unbind(-1)
    czsy, szsy = cz * sy, sz * sy
    zyx = (
        cz * cy, czsy * sx - sz * cx, czsy * cx + sz * sx,
        sz * cy, szsy * sx + cz * cx, szsy * cx - cz * sx,
        -sy, cy * sx, cy * cx,
    )  # fmt: skip
    R = torch.stack(zyx, dim=-1)
    if _ELBOWS:
        e = torch.as_tensor(_ELBOWS, device=euler.device)
        sx, sy, sz = s[..., e, :].unbind(-1)
        cx, cy, cz = c[..., e, :].unbind(-1)
        cysz, sysz = cy * sz, sy * sz
        yzx = (
            cy * cz, sy * sx - cysz * cx, cysz * sx + sy * cx,
            sz, cz * cx, -cz * sx,
            -sy * cz, sysz * cx + cy * sx, cy * cx - sysz * sx,
        )  # fmt: skip
        R = R.index_copy(R.dim() - 2, e, torch.stack(yzx, dim=-1))
    return R.reshape(*euler.shape[:-1], 3, 3)


def euler_deg_to_axis_angle(euler_deg: np.ndarray, order: str = "ZYX") -> np.ndarray:
    """Axis-angle vectors of Euler rotations.

    Args:
        euler_deg: array of shape (..., 3), ``(rx, ry, rz)`` in degrees.
        order: intrinsic order, ``"ZYX"`` gives ``Rz @ Ry @ Rx``.

    Returns:
        Float64 array of shape (..., 3), axis-angle in radians.
    """
    from scipy.spatial.transform import Rotation

    e = np.asarray(euler_deg, dtype=np.float64)
    flat = e.reshape(-1, 3)[:, [_AXIS[a] for a in order]]
    return Rotation.from_euler(order, flat, degrees=True).as_rotvec().reshape(e.shape)


def axis_angle_to_euler_deg(axis_angle: np.ndarray, order: str = "ZYX") -> np.ndarray:
    """Euler angles ``(rx, ry, rz)`` in degrees (middle angle within [-90, 90]).

    Args:
        axis_angle: array of shape (..., 3), radians.
        order: intrinsic order, ``"ZYX"`` gives ``Rz @ Ry @ Rx``.

    Returns:
        Float64 array of shape (..., 3), degrees.
    """
    from scipy.spatial.transform import Rotation

    a = np.asarray(axis_angle, dtype=np.float64)
    ang = Rotation.from_rotvec(a.reshape(-1, 3)).as_euler(order, degrees=True)
    out = np.empty_like(ang)
    out[:, [_AXIS[c] for c in order]] = ang
    return out.reshape(a.shape)


def body_euler_deg_to_axis_angle(euler_deg: np.ndarray) -> np.ndarray:
    """Body joint Euler angles (..., 23, 3) in degrees -> axis-angle (..., 23, 3), rad."""
    e = np.asarray(euler_deg, dtype=np.float64)
    out = euler_deg_to_axis_angle(e, "ZYX")
    out[..., _ELBOWS, :] = euler_deg_to_axis_angle(e[..., _ELBOWS, :], "YZX")
    return out


def body_axis_angle_to_euler_deg(axis_angle: np.ndarray) -> np.ndarray:
    """Body joint axis-angle (..., 23, 3), rad -> Euler angles (..., 23, 3), degrees."""
    a = np.asarray(axis_angle, dtype=np.float64)
    out = axis_angle_to_euler_deg(a, "ZYX")
    out[..., _ELBOWS, :] = axis_angle_to_euler_deg(a[..., _ELBOWS, :], "YZX")
    return out


def sample_pose_euler(action: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample a pose as Euler angles: the action's template plus clamped Gaussian noise.

    Args:
        action: a key of :data:`ACTIONS`.
        rng: numpy random generator (the only source of randomness).

    Returns:
        ``(root_euler_deg (3,), body_euler_deg (23, 3))``, float64, degrees, BODY frame;
        body angles within :data:`JOINT_LIMITS_DEG`.
    """
    if action not in ACTIONS:
        raise KeyError(f"unknown action {action!r}; choose from {', '.join(ACTIONS)}")
    spec = ACTIONS[action]
    body, root = _template_euler_deg(spec.template)
    body = clamp_euler_deg(body + rng.normal(0.0, spec.sigma_deg, size=body.shape))
    root = root + rng.normal(0.0, spec.root_sigma_deg, size=3) * np.array([1.0, 0.0, 1.0])
    return root, body


MIRROR_FRACTION = 0.5
"""Share of placed bodies drawn as their action's left/right mirror image: the pose library
is one-sided (walking on the left foot, touching with the right hand), and a network trained
on it alone recovers mirror-image poses far worse (docs/results.md, section (ae))."""

MIRRORED_REGION: dict[int, int] = {1: 2, 2: 1, 3: 4, 4: 3}
"""Contact region label -> its left/right partner (feet and hands; the back, gluteus and
thighs are their own)."""

MIRROR_ANGLE_SIGN = np.array([1.0, -1.0, -1.0])
"""Per-component sign of a joint rotation's mirror image through the body's sagittal plane
(``x -> -x``): rotations about x are kept, about y and z reversed. Holds for axis-angle
vectors and for Euler angles in any order alike."""

BODY_MIRROR_INDEX = np.array([j - 1 for j in SMPL_MIRROR_INDEX[1:]])  # body joint k = SMPL k + 1
"""For each of the 23 ``body_pose`` joints, the index of its left/right partner."""


def mirror_root_euler_deg(root_euler_deg: np.ndarray) -> np.ndarray:
    """Left-right mirror of a BODY-frame root rotation given as Euler angles (degrees).

    Mirroring through the body's sagittal plane (``x -> -x``) keeps a rotation about x and
    reverses rotations about y and z, whatever the order they are composed in.

    Args:
        root_euler_deg: Array of shape (..., 3).

    Returns:
        Float64 array of the same shape.
    """
    return np.asarray(root_euler_deg, dtype=np.float64) * MIRROR_ANGLE_SIGN


def mirror_body_euler_deg(euler_deg: np.ndarray) -> np.ndarray:
    """Left-right mirror of a body pose (swap left/right joints, negate y and z angles).

    Args:
        euler_deg: Array of shape (..., 23, 3), degrees.

    Returns:
        Float64 array of the same shape.
    """
    return np.asarray(euler_deg, dtype=np.float64)[..., BODY_MIRROR_INDEX, :] * MIRROR_ANGLE_SIGN


def mirror_action(spec: ActionSpec) -> ActionSpec:
    """The action's mirror image: the same name, template and placement, each required
    contact region swapped for its left/right partner (`MIRRORED_REGION`), e.g. ``touch_wall``
    with the left hand. Pose it with `mirror_root_euler_deg` / `mirror_body_euler_deg`."""
    contacts = tuple(
        replace(c, regions=tuple(MIRRORED_REGION.get(r, r) for r in c.regions))
        for c in spec.contacts
    )
    return replace(spec, contacts=contacts)


def sample_pose(action: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample an SMPL pose for an action in the BODY frame (y up, facing +z).

    Args:
        action: a key of :data:`ACTIONS`.
        rng: numpy random generator.

    Returns:
        ``(global_orient_body (3,), body_pose (69,))``: float64 axis-angle, radians, SMPL
        joint order; every joint within :data:`JOINT_LIMITS`.
    """
    root, body = sample_pose_euler(action, rng)
    return euler_deg_to_axis_angle(root), body_euler_deg_to_axis_angle(body).reshape(-1)


def sample_betas(
    rng: np.random.Generator, num_betas: int = 10, std: float = 1.0, clip: float = 2.5
) -> np.ndarray:
    """Sample body shape coefficients ``betas ~ N(0, std^2)`` clipped to ``[-clip, clip]``.

    Args:
        rng: numpy random generator.
        num_betas: number of coefficients.
        std: standard deviation.
        clip: absolute bound.

    Returns:
        Float64 array of shape (num_betas,).
    """
    return np.clip(rng.normal(0.0, std, size=num_betas), -clip, clip)
